//! Random requests through the API into the engine on the fake tier.

use super::*;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;

const ENDPOINTS: [&str; 9] = ["Create", "Remove", "Mount", "Unmount", "Path", "Get", "List", "Capabilities", "Activate"];

fn body() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![Just("v".to_string()), ".{0,30}", "[./a-z]{0,12}", Just("../../etc".to_string())];
    let json = (name, ".{0,20}", proptest::collection::btree_map(".{0,10}", ".{0,20}", 0..4)).prop_map(|(n, id, opts)| {
        serde_json::to_vec(&serde_json::json!({ "Name": n, "ID": id, "Opts": opts })).unwrap()
    });
    prop_oneof![json, proptest::collection::vec(any::<u8>(), 0..64)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Any request to any endpoint, through the API into the engine on
    /// the fake tier: a JSON object back, no panic, and nothing mounted
    /// anywhere but one level under the mount root.
    #[test]
    fn any_request_gets_a_json_answer_and_touches_nothing_outside_the_mount_root(endpoint in proptest::sample::select(ENDPOINTS.to_vec()), body in body()) {
        let bed = Bed::start(&["v"]);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let driver: Arc<dyn VolumeDriver> = Arc::new(bed.engine.clone());
        let path = if endpoint == "Activate" { "/Plugin.Activate".to_string() } else { format!("/VolumeDriver.{endpoint}") };
        let (status, json) = rt.block_on(async {
            let req = Request::post(path).body(Body::from(body)).unwrap();
            let resp = crate::api::router(driver).oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<serde_json::Value>(&bytes))
        });
        prop_assert!(status.is_success() || status.is_client_error());
        prop_assert!(json.as_ref().is_ok_and(|j| j.is_object()), "{:?}", json);
        let root = bed.dir.path().join("mnt");
        for target in bed.mounts.targets() {
            prop_assert_eq!(target.parent(), Some(root.as_path()), "mounted outside the root: {:?}", target);
        }
        // Nothing but rbdvol's own directories appeared in the test's
        // directory (mount root, state).
        let entries: Vec<String> = std::fs::read_dir(bed.dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        prop_assert!(entries.iter().all(|e| e == "mnt" || e == "state"), "{:?}", entries);
    }
}
