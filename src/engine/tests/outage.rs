//! The cluster down, as the health view says it (`health::Health::set`):
//! what needs it fails at once and changes nothing, what this host knows
//! answers from memory, and what a volume mounted here needs is done here.

use super::*;

#[test]
fn with_the_cluster_down_create_remove_and_a_first_mount_fail_at_once_and_change_nothing() {
    let bed = Bed::start(&["v"]);
    bed.clear_journal();
    bed.engine.inner.health.set(Some("asking the monitors: timed out"));
    let opts = BTreeMap::from([("size".to_string(), "64".to_string())]);
    for r in [
        block_on(bed.engine.create("n", opts)).map(drop),
        bed.mount("v", "c1").map(drop),
        block_on(bed.engine.remove("v")).map(drop),
    ] {
        let e = r.expect_err("done with the cluster down").to_string();
        assert!(e.contains("unreachable since") && e.contains("asking the monitors") && e.contains("nothing was changed"), "{e}");
    }
    assert!(bed.store.volume("n").is_none(), "a volume was made");
    assert!(bed.store.volume("v").is_some(), "the volume was removed");
    assert!(bed.journal().is_empty(), "{:?}", bed.journal());
    assert!(bed.lock_notes().is_empty());
    // It answers again: the same calls work.
    bed.engine.inner.health.set(None);
    bed.mount("v", "c1").unwrap();
}

#[test]
fn with_the_cluster_down_a_volume_mounted_here_takes_and_drops_containers_and_its_lock_goes_later() {
    let bed = Bed::start(&["v"]);
    bed.mount("v", "c1").unwrap();
    bed.engine.inner.health.set(Some("no answer"));
    assert!(matches!(bed.mount("v", "c2").unwrap(), Mounted::Again(_)));
    assert_eq!(bed.unmount("v", "c2").unwrap(), Unmounted::StillUsed(1));
    // The last container leaves: answered at once; unmounted and unmapped
    // here in the background; the host lock stays until the cluster answers.
    bed.clear_journal();
    let rt = super::safety::runtime();
    assert_eq!(rt.block_on(bed.engine.unmount("v", "c1")).unwrap(), Unmounted::Released);
    let start = std::time::Instant::now();
    while !bed.journal().iter().any(|j| j.starts_with("unmap ")) {
        assert!(start.elapsed() < Duration::from_secs(10), "never unmapped: {:?}", bed.journal());
        std::thread::sleep(Duration::from_millis(10));
    }
    while bed.engine.inner.mounted.lock().unwrap().contains_key("v") {
        assert!(start.elapsed() < Duration::from_secs(10), "never forgotten");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(bed.journal().iter().all(|j| !j.starts_with("host_unlock") && !j.starts_with("metadata_remove")), "the cluster was asked: {:?}", bed.journal());
    assert_eq!(bed.store.volume("v").unwrap().lockers.len(), 1, "released with the cluster down?");
    // Nothing is retried while it is down; once it answers, the lock goes.
    block_on(bed.engine.check_all_mounted());
    assert_eq!(bed.store.volume("v").unwrap().lockers.len(), 1);
    bed.engine.inner.health.set(None);
    block_on(bed.engine.check_all_mounted());
    bed.assert_nothing_left("v");
}

#[test]
fn with_the_cluster_down_list_get_and_path_answer_from_memory() {
    let bed = Bed::start(&["v", "w"]);
    bed.mount("v", "c1").unwrap();
    // Read while the cluster answered: the directory is in memory.
    let names: Vec<String> = block_on(bed.engine.list()).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["v", "w"]);
    bed.engine.inner.health.set(Some("no answer within 1500 ms"));
    bed.store.fail("entries");
    let listed = block_on(bed.engine.list()).unwrap();
    assert_eq!(listed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["v", "w"]);
    assert_eq!(listed[0].mountpoint, Some(bed.mountpoint("v")));
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), Some(bed.mountpoint("v")));
    assert_eq!(block_on(bed.engine.path("w")).unwrap(), None);
    assert!(matches!(block_on(bed.engine.path("nope")), Err(EngineError::NotFound(_))));
    // Get says how old its answer is and that the cluster does not answer.
    for name in ["v", "w"] {
        let info = block_on(bed.engine.get(name)).unwrap();
        let cluster = info.status["cluster"].as_str().unwrap();
        assert!(cluster.starts_with("unreachable since") && cluster.contains("no answer within"), "{cluster}");
        assert!(info.status["confirmed_at"].is_string(), "{:?}", info.status);
        assert_eq!(info.status["pool"], "rbd");
    }
    assert_eq!(block_on(bed.engine.get("v")).unwrap().status["containers"], 1);
    let e = block_on(bed.engine.get("nope")).unwrap_err().to_string();
    assert!(e.contains("does not exist as of") && e.contains("unreachable"), "{e}");
}

#[test]
fn a_volume_mounted_here_is_known_with_the_cluster_down_since_start_up() {
    let bed = Bed::start(&["v"]);
    bed.mount("v", "c1").unwrap();
    let bed = bed.restart();
    bed.engine.inner.health.set(Some("connecting: timed out"));
    let listed = block_on(bed.engine.list()).unwrap();
    assert_eq!(listed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["v"]);
    let info = block_on(bed.engine.get("v")).unwrap();
    assert_eq!(info.mountpoint, Some(bed.mountpoint("v")));
    assert_eq!(info.status["containers"], 1);
    // Nothing else can be told without the cluster.
    let e = block_on(bed.engine.get("w")).unwrap_err().to_string();
    assert!(e.contains("unreachable since"), "{e}");
}

/// Found by the hostile review: an older Get answer must not outlive a
/// newer directory read that no longer lists the volume.
#[test]
fn a_volume_gone_from_a_newer_directory_read_is_gone_for_get_too() {
    let bed = Bed::start(&["v", "w"]);
    let mut status = serde_json::Map::new();
    status.insert("pool".into(), "rbd".into());
    status.insert("mounted_by".into(), "host-b".into());
    bed.engine.inner.cache.put_status(&VolumeInfo { name: "w".into(), mountpoint: None, created_at: None, status });
    std::thread::sleep(Duration::from_millis(1100));
    // Another host removed w; the prober's next directory read sees it gone.
    let mut map = bed.engine.inner.read_directory().unwrap();
    map.remove("w");
    bed.engine.inner.cache.put_listing(map);
    bed.engine.inner.health.set(Some("no answer"));
    assert!(matches!(block_on(bed.engine.path("w")), Err(EngineError::NotFound(_))));
    let e = block_on(bed.engine.get("w")).unwrap_err().to_string();
    assert!(e.contains("does not exist as of"), "{e}");
}
