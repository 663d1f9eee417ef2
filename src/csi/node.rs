//! The Node service: stage (map, mount, lock), publish (bind into the
//! propagated mount), and their undoing, on this host.

use tonic::{Request, Response, Status};

use super::access::{self, Access};
use super::error::status;
use super::proto::node_server::Node;
use super::proto::node_service_capability::{rpc, Rpc, Type as CapType};
use super::proto::*;
use super::request;
use super::server::Csi;
use super::CsiError;

impl Csi {
    async fn stage(&self, r: NodeStageVolumeRequest) -> Result<(), CsiError> {
        let name = request::volume(&r.volume_id)?;
        let staging = request::path_under(&self.paths.stage_root, &r.staging_target_path, "staging path")?;
        let cap = r.volume_capability.as_ref().ok_or_else(|| CsiError::Invalid("no volume capability given".into()))?;
        access::one(cap)?;
        self.with_key(&r.secrets, async { Ok(self.engine.stage(&name, &staging).await.map(drop)?) }).await
    }

    async fn publish(&self, r: NodePublishVolumeRequest) -> Result<(), CsiError> {
        let name = request::volume(&r.volume_id)?;
        let target = request::path_under(&self.paths.publish_root, &r.target_path, "target path")?;
        if !r.staging_target_path.is_empty() {
            request::path_under(&self.paths.stage_root, &r.staging_target_path, "staging path")?;
        }
        let cap = r.volume_capability.as_ref().ok_or_else(|| CsiError::Invalid("no volume capability given".into()))?;
        let read_only = r.readonly || access::one(cap)?.access == Access::ReadOnly;
        self.with_key(&r.secrets, async { Ok(self.engine.publish(&name, &target, read_only).await?) }).await
    }

    async fn unpublish(&self, r: NodeUnpublishVolumeRequest) -> Result<(), CsiError> {
        let name = request::volume(&r.volume_id)?;
        let target = request::path_under(&self.paths.publish_root, &r.target_path, "target path")?;
        let done = self.engine.unpublish(&name, &target).await?;
        tracing::info!("volume '{name}' unpublished from {}: {done:?}", target.display());
        Ok(())
    }

    async fn unstage(&self, r: NodeUnstageVolumeRequest) -> Result<(), CsiError> {
        let name = request::volume(&r.volume_id)?;
        let staging = request::path_under(&self.paths.stage_root, &r.staging_target_path, "staging path")?;
        self.engine.unstage(&name, &staging).await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl Node for Csi {
    async fn node_stage_volume(&self, req: Request<NodeStageVolumeRequest>) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = r.volume_id.clone();
        self.stage(r).await.map_err(|e| status("NodeStageVolume", &id, e))?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(&self, req: Request<NodeUnstageVolumeRequest>) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = r.volume_id.clone();
        self.unstage(r).await.map_err(|e| status("NodeUnstageVolume", &id, e))?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(&self, req: Request<NodePublishVolumeRequest>) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = r.volume_id.clone();
        self.publish(r).await.map_err(|e| status("NodePublishVolume", &id, e))?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(&self, req: Request<NodeUnpublishVolumeRequest>) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = r.volume_id.clone();
        self.unpublish(r).await.map_err(|e| status("NodeUnpublishVolume", &id, e))?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_capabilities(&self, _: Request<NodeGetCapabilitiesRequest>) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let stage = NodeServiceCapability { r#type: Some(CapType::Rpc(Rpc { r#type: rpc::Type::StageUnstageVolume as i32 })) };
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities: vec![stage] }))
    }

    async fn node_get_info(&self, _: Request<NodeGetInfoRequest>) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse { node_id: self.engine.host_id().to_string(), max_volumes_per_node: 0, accessible_topology: None }))
    }
}
