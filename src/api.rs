//! Docker's volume-plugin protocol over HTTP on a Unix socket. Handlers only
//! parse and forward to the engine; `reply_err` is the one place an engine
//! error becomes an `Err`.
//!
//! dockerd sends no Content-Type and sometimes an empty body, so bodies are
//! read as bytes; unknown fields are ignored; every answer is a JSON object.
//!
//! Every call is counted for the metrics, by endpoint and outcome, with how
//! long it took (`count`, the one place calls are observed).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::middleware::Next;
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::engine::{EngineError, VolumeDriver, VolumeInfo};

type Driver = Arc<dyn VolumeDriver>;

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct NameRequest {
    #[serde(rename = "Name")]
    name: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CreateRequest {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Opts")]
    opts: Option<BTreeMap<String, Value>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct MountRequest {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "ID")]
    id: String,
}

pub fn router(driver: Driver) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(activate))
        .route("/VolumeDriver.Capabilities", post(capabilities))
        .route("/VolumeDriver.Create", post(create))
        .route("/VolumeDriver.Remove", post(remove))
        .route("/VolumeDriver.Mount", post(mount))
        .route("/VolumeDriver.Unmount", post(unmount))
        .route("/VolumeDriver.Path", post(path))
        .route("/VolumeDriver.Get", post(get))
        .route("/VolumeDriver.List", post(list))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({ "Err": "unknown endpoint: rbdvol speaks docker.volumedriver/1.0" }))) })
        .with_state(driver)
        .layer(axum::middleware::from_fn(count))
}

/// Marks an answer that carries an `Err` (answered 200, as the protocol
/// wants), for the metrics.
#[derive(Clone, Copy)]
struct Failed;

/// An answer carrying `message` as its `Err`.
fn err_answer(message: String) -> Response {
    let mut r = Json(json!({ "Err": message })).into_response();
    r.extensions_mut().insert(Failed);
    r
}

/// Counts each call once answered: by its path, whether it failed, and
/// how long it took.
async fn count(req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let ok = resp.status().is_success() && resp.extensions().get::<Failed>().is_none();
    crate::metrics::global().docker_call(&path, ok, start.elapsed());
    resp
}

/// Parses a request body; empty means all defaults.
/// Its error is the answer itself, as the handlers return it (axum's
/// `Response` is large; boxing it here would only be unboxed there).
#[allow(clippy::result_large_err)]
fn parse<T: DeserializeOwned + Default>(endpoint: &str, body: &Bytes) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| err_answer(format!("invalid request body for {endpoint}: {e}")))
}

/// The one conversion from an engine error to the protocol's `Err`.
fn reply_err(endpoint: &str, name: &str, e: EngineError) -> Response {
    tracing::warn!("{endpoint} '{name}': {e}");
    err_answer(e.to_string())
}

fn volume_json(v: &VolumeInfo) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("Name".into(), v.name.clone().into());
    o.insert("Mountpoint".into(), v.mountpoint.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default().into());
    if let Some(c) = &v.created_at {
        o.insert("CreatedAt".into(), c.clone().into());
    }
    if !v.status.is_empty() {
        o.insert("Status".into(), Value::Object(v.status.clone()));
    }
    Value::Object(o)
}

async fn activate() -> Json<Value> {
    Json(json!({ "Implements": ["VolumeDriver"] }))
}

async fn capabilities() -> Json<Value> {
    Json(json!({ "Capabilities": { "Scope": "global" } }))
}

async fn create(State(d): State<Driver>, body: Bytes) -> Result<Response, Response> {
    let req: CreateRequest = parse("VolumeDriver.Create", &body)?;
    let mut opts = BTreeMap::new();
    for (k, v) in req.opts.unwrap_or_default() {
        let v = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(reply_err(
                    "VolumeDriver.Create",
                    &req.name,
                    EngineError::InvalidOption { option: k, value: other.to_string(), reason: "it must be a string".into() },
                ))
            }
        };
        opts.insert(k, v);
    }
    Ok(match d.create(&req.name, opts).await {
        Ok(how) => {
            tracing::info!("created volume '{}' ({how:?})", req.name);
            Json(json!({ "Err": "" })).into_response()
        }
        Err(e) => reply_err("VolumeDriver.Create", &req.name, e),
    })
}

async fn remove(State(d): State<Driver>, body: Bytes) -> Result<Response, Response> {
    let req: NameRequest = parse("VolumeDriver.Remove", &body)?;
    Ok(match d.remove(&req.name).await {
        Ok(how) => {
            tracing::info!("removed volume '{}' ({how:?})", req.name);
            Json(json!({ "Err": "" })).into_response()
        }
        Err(e) => reply_err("VolumeDriver.Remove", &req.name, e),
    })
}

async fn mount(State(d): State<Driver>, body: Bytes) -> Result<Response, Response> {
    let req: MountRequest = parse("VolumeDriver.Mount", &body)?;
    Ok(match d.mount(&req.name, &req.id).await {
        Ok(m) => {
            tracing::info!("mounted volume '{}' for {} at {}", req.name, req.id, m.path().display());
            Json(json!({ "Mountpoint": m.path().to_string_lossy(), "Err": "" })).into_response()
        }
        Err(e) => reply_err("VolumeDriver.Mount", &req.name, e),
    })
}

async fn unmount(State(d): State<Driver>, body: Bytes) -> Result<Response, Response> {
    let req: MountRequest = parse("VolumeDriver.Unmount", &body)?;
    Ok(match d.unmount(&req.name, &req.id).await {
        Ok(how) => {
            tracing::info!("unmounted volume '{}' for {} ({how:?})", req.name, req.id);
            Json(json!({ "Err": "" })).into_response()
        }
        Err(e) => reply_err("VolumeDriver.Unmount", &req.name, e),
    })
}

async fn path(State(d): State<Driver>, body: Bytes) -> Result<Response, Response> {
    let req: NameRequest = parse("VolumeDriver.Path", &body)?;
    Ok(match d.path(&req.name).await {
        Ok(p) => Json(json!({ "Mountpoint": p.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(), "Err": "" })).into_response(),
        Err(e) => reply_err("VolumeDriver.Path", &req.name, e),
    })
}

async fn get(State(d): State<Driver>, body: Bytes) -> Result<Response, Response> {
    let req: NameRequest = parse("VolumeDriver.Get", &body)?;
    Ok(match d.get(&req.name).await {
        Ok(v) => Json(json!({ "Volume": volume_json(&v), "Err": "" })).into_response(),
        Err(EngineError::NotFound(n)) => err_answer(format!("volume '{n}' does not exist")),
        Err(e) => reply_err("VolumeDriver.Get", &req.name, e),
    })
}

async fn list(State(d): State<Driver>) -> Response {
    match d.list().await {
        Ok(vs) => Json(json!({ "Volumes": vs.iter().map(volume_json).collect::<Vec<_>>(), "Err": "" })).into_response(),
        Err(e) => reply_err("VolumeDriver.List", "", e),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::engine::{Created, Mounted, Removed, Unmounted};

    /// Records what it was asked and answers from a script: the API layer
    /// only parses and forwards, which is what these tests check.
    #[derive(Default)]
    struct Fake {
        calls: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl VolumeDriver for Fake {
        async fn create(&self, name: &str, opts: BTreeMap<String, String>) -> Result<Created, EngineError> {
            self.calls.lock().unwrap().push(format!("create {name} {opts:?}"));
            if name == "bad" {
                return Err(EngineError::UnknownOption { option: "colour".into(), valid: "size".into() });
            }
            Ok(Created::New)
        }
        async fn remove(&self, name: &str) -> Result<Removed, EngineError> {
            self.calls.lock().unwrap().push(format!("remove {name}"));
            Ok(Removed::Removed)
        }
        async fn mount(&self, name: &str, id: &str) -> Result<Mounted, EngineError> {
            self.calls.lock().unwrap().push(format!("mount {name} {id}"));
            Ok(Mounted::First(PathBuf::from(format!("/mnt/{name}"))))
        }
        async fn unmount(&self, name: &str, id: &str) -> Result<Unmounted, EngineError> {
            self.calls.lock().unwrap().push(format!("unmount {name} {id}"));
            Ok(Unmounted::Released)
        }
        async fn path(&self, _name: &str) -> Result<Option<PathBuf>, EngineError> {
            Ok(None)
        }
        async fn get(&self, name: &str) -> Result<VolumeInfo, EngineError> {
            match name {
                "v" => Ok(VolumeInfo { name: "v".into(), mountpoint: None, created_at: Some("2026-01-01T00:00:00Z".into()), status: Default::default() }),
                _ => Err(EngineError::NotFound(name.into())),
            }
        }
        async fn list(&self) -> Result<Vec<VolumeInfo>, EngineError> {
            Ok(vec![])
        }
    }

    async fn post(fake: Arc<Fake>, path: &str, body: &'static str) -> (StatusCode, Value) {
        // As dockerd sends it: no Content-Type.
        let req = Request::post(path).header("Host", "plugin.moby.localhost").body(Body::from(body)).unwrap();
        let resp = router(fake).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).expect("every answer is JSON"))
    }

    #[tokio::test]
    async fn forwards_and_answers_json() {
        let fake = Arc::new(Fake::default());
        let (s, v) = post(fake.clone(), "/VolumeDriver.Create", r#"{"Name":"a","Opts":{"size":"1G","uid":1000}}"#).await;
        assert_eq!((s, v), (StatusCode::OK, json!({ "Err": "" })));
        let (_, v) = post(fake.clone(), "/VolumeDriver.Mount", r#"{"Name":"a","ID":"c1"}"#).await;
        assert_eq!(v, json!({ "Mountpoint": "/mnt/a", "Err": "" }));
        let (_, v) = post(fake.clone(), "/VolumeDriver.Unmount", r#"{"Name":"a","ID":"c1","Extra":true}"#).await;
        assert_eq!(v, json!({ "Err": "" }));
        assert_eq!(
            *fake.calls.lock().unwrap(),
            vec![r#"create a {"size": "1G", "uid": "1000"}"#.to_string(), "mount a c1".into(), "unmount a c1".into()]
        );
    }

    #[tokio::test]
    async fn empty_bodies_and_errors() {
        let fake = Arc::new(Fake::default());
        assert_eq!(post(fake.clone(), "/Plugin.Activate", "").await.1, json!({ "Implements": ["VolumeDriver"] }));
        assert_eq!(post(fake.clone(), "/VolumeDriver.List", "").await.1, json!({ "Volumes": [], "Err": "" }));
        let (_, v) = post(fake.clone(), "/VolumeDriver.Create", r#"{"Name":"bad","Opts":null}"#).await;
        assert_eq!(v["Err"], "unknown option 'colour': valid options are size");
        let (_, v) = post(fake.clone(), "/VolumeDriver.Get", r#"{"Name":"nope"}"#).await;
        assert_eq!(v, json!({ "Err": "volume 'nope' does not exist" }));
        let (_, v) = post(fake.clone(), "/VolumeDriver.Get", r#"{"Name":"v"}"#).await;
        assert_eq!(v["Volume"], json!({ "Name": "v", "Mountpoint": "", "CreatedAt": "2026-01-01T00:00:00Z" }));
        let (_, v) = post(fake.clone(), "/VolumeDriver.Mount", "not json").await;
        assert!(v["Err"].as_str().unwrap().starts_with("invalid request body for VolumeDriver.Mount"), "{v}");
        let (_, v) = post(fake.clone(), "/VolumeDriver.Create", r#"{"Name":"x","Opts":{"size":["1G"]}}"#).await;
        assert!(v["Err"].as_str().unwrap().contains("it must be a string"), "{v}");
        let (s, v) = post(fake, "/VolumeDriver.Teleport", "{}").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(v["Err"].is_string());
    }

    #[tokio::test]
    async fn answers_carrying_an_err_are_marked_failed_for_the_metrics() {
        let fake = Arc::new(Fake::default());
        let call = |path: &'static str, body: &'static str| {
            let req = Request::post(path).body(Body::from(body)).unwrap();
            router(fake.clone()).oneshot(req)
        };
        let failed = |r: &Response| r.extensions().get::<Failed>().is_some();
        assert!(!failed(&call("/VolumeDriver.Create", r#"{"Name":"a"}"#).await.unwrap()));
        assert!(failed(&call("/VolumeDriver.Create", r#"{"Name":"bad"}"#).await.unwrap()));
        assert!(failed(&call("/VolumeDriver.Get", r#"{"Name":"nope"}"#).await.unwrap()));
        assert!(failed(&call("/VolumeDriver.Mount", "not json").await.unwrap()));
    }
}
