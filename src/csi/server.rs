//! The CSI services on a unix socket, and what they share: the engine,
//! the plugin's stage and publish roots, and the key Swarm secrets carry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::proto::controller_server::ControllerServer;
use super::proto::identity_server::IdentityServer;
use super::proto::node_server::NodeServer;
use super::{request, CsiError};
use crate::config::swarm_key::SwarmKey;
use crate::ceph::CephError;
use crate::engine::{Engine, EngineError};

/// The plugin name GetPluginInfo gives (Swarm finds plugins by their
/// Docker name and ignores it).
pub const PLUGIN_NAME: &str = "csi.rbdvol";

/// Where Swarm stages and publishes volumes, in the plugin's own
/// filesystem: `<stage_root>/<id>`, `<publish_root>/<id>` (the managed
/// plugin's `propagatedMount` is the publish root).
#[derive(Debug, Clone)]
pub struct CsiPaths {
    pub stage_root: PathBuf,
    pub publish_root: PathBuf,
}

/// What the three services share. Cheap to clone.
#[derive(Clone)]
pub struct Csi {
    pub(super) engine: Engine,
    pub(super) paths: CsiPaths,
    key: SwarmKey,
    /// Held while a new key is tried (one at a time).
    key_change: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Where a key from a Swarm secret is kept (0600) for the calls that
    /// carry no secrets (NodeUnpublish, NodeUnstage) after a restart.
    key_file: PathBuf,
}

impl Csi {
    pub fn new(engine: Engine, paths: CsiPaths, key: SwarmKey, key_file: PathBuf) -> Csi {
        Csi { engine, paths, key, key_change: Default::default(), key_file }
    }

    /// Runs `op` with the key a call's secrets carry in force.
    ///
    /// A key other than the one in force is tried by one call at a time
    /// (`key_change`): put in force (the settings watchers resolve again at
    /// once; this waits for them, briefly), then `op`. Unless `op` worked
    /// with a connection made with it, the key before is put back — only
    /// if it is still this call's key; also when the caller goes away — so
    /// one volume's wrong secret never locks the node out of the others; a
    /// refusal by the cluster is this call's error. A key is kept on
    /// disk (0600, for the calls that carry no secrets after a restart)
    /// only once a connection was made with it.
    pub(super) async fn with_key<T>(&self, secrets: &HashMap<String, String>, op: impl std::future::Future<Output = Result<T, CsiError>>) -> Result<T, CsiError> {
        let Some(key) = request::key(secrets)? else { return op.await };
        if self.key.get().as_ref() == Some(&key) {
            let result = op.await;
            self.keep_if_used(&key);
            return result;
        }
        let _one_at_a_time = self.key_change.lock().await;
        let trial = KeyTrial { slot: self.key.clone(), key: key.clone(), previous: self.key.get(), settled: false };
        self.key.set(key.clone());
        self.wait_for_settings_with(Some(&key)).await;
        if !self.engine.has_settings_with_key(&key) {
            // Not put in force (a higher source gives a key): not this
            // call's to judge.
            drop(trial);
            return op.await;
        }
        let result = op.await;
        match &result {
            Err(CsiError::Engine(EngineError::Connect { source, .. })) if matches!(**source, CephError::Auth { .. }) => {
                let previous = trial.previous.clone();
                drop(trial);
                self.wait_for_settings_with(previous.as_ref()).await;
                Err(CsiError::Invalid("the cluster refuses the cephx key in this volume's swarm secret (--secret key=...; the key in force before stays): recreate the secret with the key of the plugin's user (RBD_CONF_KEYRING_USER)".into()))
            }
            // A connection made with it proves it (whatever the call's own
            // outcome): kept. Anything else (a call that needed no cluster,
            // an outage) proves nothing: the key before stays.
            _ if self.engine.connected_with_key(&key) => {
                trial.settle();
                self.keep_if_used(&key);
                result
            }
            _ => result,
        }
    }

    /// Waits (2 s at most) until the settings in force hold `key`.
    async fn wait_for_settings_with(&self, key: Option<&crate::config::Secret>) {
        let Some(key) = key else { return };
        for _ in 0..20 {
            if self.engine.has_settings_with_key(key) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keeps `key` on disk once the engine connected with it (a call that
    /// needed no cluster, or a key a keyring file outranks, proves nothing).
    fn keep_if_used(&self, key: &crate::config::Secret) {
        if !self.engine.connected_with_key(key) {
            return;
        }
        if std::fs::read(&self.key_file).is_ok_and(|kept| kept == key.expose().as_bytes()) {
            return;
        }
        match crate::state::write_atomic(&self.key_file, key.expose().as_bytes()) {
            Ok(()) => tracing::info!("a cephx key from a swarm secret works and is kept for restarts"),
            Err(e) => tracing::warn!("cannot keep the key from the swarm secret at {} (a restarted plugin waits for the next call that carries it): {e}", self.key_file.display()),
        }
    }
}

/// A key being tried: put back to the one before unless settled (also
/// when the call is dropped half-way, its caller gone).
struct KeyTrial {
    slot: SwarmKey,
    key: crate::config::Secret,
    previous: Option<crate::config::Secret>,
    settled: bool,
}

impl KeyTrial {
    fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for KeyTrial {
    fn drop(&mut self) {
        if !self.settled {
            self.slot.restore_if(&self.key, self.previous.take());
        }
    }
}

/// Serves CSI on `listener` until `shutdown` completes.
pub async fn serve(listener: tokio::net::UnixListener, csi: Csi, shutdown: impl std::future::Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(csi.clone()))
        .add_service(ControllerServer::new(csi.clone()))
        .add_service(NodeServer::new(csi))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), shutdown)
        .await
}
