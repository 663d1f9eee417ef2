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
use crate::engine::Engine;

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

    /// Puts the key a call's secrets carry in force (the settings watchers
    /// resolve again at once; this waits for them, briefly), and refuses a
    /// call that needs the cluster while no key is in force at all.
    pub(super) async fn take_key(&self, secrets: &HashMap<String, String>) -> Result<(), CsiError> {
        if let Some(key) = request::key(secrets)? {
            if self.key.set(key.clone()) {
                if let Err(e) = crate::state::write_atomic(&self.key_file, key.expose().as_bytes()) {
                    tracing::warn!("cannot keep the key from the swarm secret at {} (a restarted plugin waits for the next call that carries it): {e}", self.key_file.display());
                }
                tracing::info!("a cephx key from a swarm secret is in force where no other source gives one");
            }
        }
        for _ in 0..50 {
            if self.engine.has_settings() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
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
