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
    /// Where a key from a Swarm secret is kept (0600) for the calls that
    /// carry no secrets (NodeUnpublish, NodeUnstage) after a restart.
    key_file: PathBuf,
}

impl Csi {
    pub fn new(engine: Engine, paths: CsiPaths, key: SwarmKey, key_file: PathBuf) -> Csi {
        Csi { engine, paths, key, key_file }
    }

    /// Runs `op` with the key a call's secrets carry in force (the
    /// settings watchers resolve again at once; this waits for them,
    /// briefly). A new key the cluster refuses is taken back (the one
    /// before stays in force: one volume's wrong secret must not lock the
    /// node out of the others); one that worked is kept (0600) for the
    /// calls that carry no secrets after a restart.
    pub(super) async fn with_key<T>(&self, secrets: &HashMap<String, String>, op: impl std::future::Future<Output = Result<T, CsiError>>) -> Result<T, CsiError> {
        let previous = self.key.get();
        let new = match request::key(secrets)? {
            Some(key) if self.key.set(key.clone()) => Some(key),
            _ => None,
        };
        if let Some(key) = &new {
            for _ in 0..20 {
                if self.engine.has_settings_with_key(key) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let result = op.await;
        let Some(key) = new else { return result };
        match &result {
            Err(CsiError::Engine(EngineError::Connect { source, .. })) if matches!(**source, CephError::Auth { .. }) => {
                self.key.restore(previous);
                Err(CsiError::Invalid("the cluster refuses the cephx key in this volume's swarm secret 'key' (the key in force before stays): recreate the secret with the key of the plugin's user (RBD_CONF_KEYRING_USER)".into()))
            }
            Ok(_) => {
                if let Err(e) = crate::state::write_atomic(&self.key_file, key.expose().as_bytes()) {
                    tracing::warn!("cannot keep the key from the swarm secret at {} (a restarted plugin waits for the next call that carries it): {e}", self.key_file.display());
                }
                tracing::info!("a cephx key from a swarm secret is in force where no other source gives one");
                result
            }
            Err(_) => result,
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
