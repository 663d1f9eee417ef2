//! The Identity service: who the plugin is, what it serves, and whether it
//! is ready (the cluster answers).

use tonic::{Request, Response, Status};

use super::proto::identity_server::Identity;
use super::proto::plugin_capability::{service, Service, Type};
use super::proto::*;
use super::server::{Csi, PLUGIN_NAME};

#[tonic::async_trait]
impl Identity for Csi {
    async fn get_plugin_info(&self, _: Request<GetPluginInfoRequest>) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse { name: PLUGIN_NAME.into(), vendor_version: env!("CARGO_PKG_VERSION").into(), manifest: Default::default() }))
    }

    async fn get_plugin_capabilities(&self, _: Request<GetPluginCapabilitiesRequest>) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let controller = PluginCapability { r#type: Some(Type::Service(Service { r#type: service::Type::ControllerService as i32 })) };
        Ok(Response::new(GetPluginCapabilitiesResponse { capabilities: vec![controller] }))
    }

    /// Not ready while the cluster is known not to answer. Missing
    /// settings do not count: the key may come with the next call's
    /// secrets, which Swarm sends only to a ready plugin.
    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let ready = match self.engine.cluster_down() {
            Some(why) => {
                tracing::warn!("csi probe: not ready: the cluster is {why}");
                false
            }
            None => true,
        };
        Ok(Response::new(ProbeResponse { ready: Some(ready) }))
    }
}
