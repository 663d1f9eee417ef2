//! A CSI client speaking gRPC on a unix socket, as Swarm's manager and node
//! agent do, with blocking calls for the tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rbdvol::csi::proto::controller_client::ControllerClient;
use rbdvol::csi::proto::identity_client::IdentityClient;
use rbdvol::csi::proto::node_client::NodeClient;
use rbdvol::csi::proto::volume_capability::access_mode::Mode;
use rbdvol::csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use rbdvol::csi::proto::*;
use tonic::transport::{Channel, Endpoint, Uri};

#[allow(unused_imports)]
pub use tonic::Code;

pub struct CsiClient {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

/// A filesystem capability with access mode `mode`.
pub fn mount_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability { access_type: Some(AccessType::Mount(MountVolume::default())), access_mode: Some(AccessMode { mode: mode as i32 }) }
}

/// A block capability (`--type block`).
pub fn block_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability { access_type: Some(AccessType::Block(BlockVolume {})), access_mode: Some(AccessMode { mode: mode as i32 }) }
}

pub fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl CsiClient {
    pub fn connect(socket: &Path) -> CsiClient {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let path: PathBuf = socket.to_path_buf();
        let channel = rt
            .block_on(async {
                Endpoint::try_from("http://[::]:50051")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let p = path.clone();
                        async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
                    }))
                    .await
            })
            .unwrap_or_else(|e| panic!("connect to the CSI socket {}: {e}", socket.display()));
        CsiClient { rt, channel }
    }

    pub fn probe(&self) -> Option<bool> {
        let mut c = IdentityClient::new(self.channel.clone());
        self.rt.block_on(c.probe(ProbeRequest {})).unwrap().into_inner().ready
    }

    pub fn plugin_capabilities(&self) -> GetPluginCapabilitiesResponse {
        let mut c = IdentityClient::new(self.channel.clone());
        self.rt.block_on(c.get_plugin_capabilities(GetPluginCapabilitiesRequest {})).unwrap().into_inner()
    }

    pub fn node_info(&self) -> NodeGetInfoResponse {
        let mut c = NodeClient::new(self.channel.clone());
        self.rt.block_on(c.node_get_info(NodeGetInfoRequest {})).unwrap().into_inner()
    }

    pub fn node_capabilities(&self) -> NodeGetCapabilitiesResponse {
        let mut c = NodeClient::new(self.channel.clone());
        self.rt.block_on(c.node_get_capabilities(NodeGetCapabilitiesRequest {})).unwrap().into_inner()
    }

    pub fn create(&self, req: CreateVolumeRequest) -> Result<Volume, tonic::Status> {
        let mut c = ControllerClient::new(self.channel.clone());
        self.rt.block_on(c.create_volume(req)).map(|r| r.into_inner().volume.expect("a volume"))
    }

    /// CreateVolume as `docker volume create --type mount --sharing onewriter
    /// --scope single --required-bytes BYTES -o PARAMS NAME` sends it.
    pub fn create_writer(&self, name: &str, required: i64, params: &[(&str, &str)], secrets: &[(&str, &str)]) -> Result<Volume, tonic::Status> {
        self.create(CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange { required_bytes: required, limit_bytes: 0 }),
            volume_capabilities: vec![mount_cap(Mode::SingleNodeWriter)],
            parameters: map(params),
            secrets: map(secrets),
            ..Default::default()
        })
    }

    pub fn delete(&self, id: &str, secrets: &[(&str, &str)]) -> Result<(), tonic::Status> {
        let mut c = ControllerClient::new(self.channel.clone());
        self.rt.block_on(c.delete_volume(DeleteVolumeRequest { volume_id: id.into(), secrets: map(secrets) })).map(drop)
    }

    pub fn list(&self, max: i32, token: &str) -> Result<ListVolumesResponse, tonic::Status> {
        let mut c = ControllerClient::new(self.channel.clone());
        self.rt.block_on(c.list_volumes(ListVolumesRequest { max_entries: max, starting_token: token.into() })).map(|r| r.into_inner())
    }

    pub fn validate(&self, id: &str, cap: VolumeCapability) -> Result<ValidateVolumeCapabilitiesResponse, tonic::Status> {
        let mut c = ControllerClient::new(self.channel.clone());
        let req = ValidateVolumeCapabilitiesRequest { volume_id: id.into(), volume_capabilities: vec![cap], ..Default::default() };
        self.rt.block_on(c.validate_volume_capabilities(req)).map(|r| r.into_inner())
    }

    pub fn stage(&self, id: &str, staging: &Path, cap: VolumeCapability, secrets: &[(&str, &str)]) -> Result<(), tonic::Status> {
        let mut c = NodeClient::new(self.channel.clone());
        let req = NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(cap),
            secrets: map(secrets),
            ..Default::default()
        };
        self.rt.block_on(c.node_stage_volume(req)).map(drop)
    }

    pub fn publish(&self, id: &str, staging: &Path, target: &Path, cap: VolumeCapability, secrets: &[(&str, &str)]) -> Result<(), tonic::Status> {
        let mut c = NodeClient::new(self.channel.clone());
        let req = NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(cap),
            secrets: map(secrets),
            ..Default::default()
        };
        self.rt.block_on(c.node_publish_volume(req)).map(drop)
    }

    pub fn unpublish(&self, id: &str, target: &Path) -> Result<(), tonic::Status> {
        let mut c = NodeClient::new(self.channel.clone());
        self.rt.block_on(c.node_unpublish_volume(NodeUnpublishVolumeRequest { volume_id: id.into(), target_path: target.display().to_string() })).map(drop)
    }

    pub fn unstage(&self, id: &str, staging: &Path) -> Result<(), tonic::Status> {
        let mut c = NodeClient::new(self.channel.clone());
        self.rt.block_on(c.node_unstage_volume(NodeUnstageVolumeRequest { volume_id: id.into(), staging_target_path: staging.display().to_string() })).map(drop)
    }
}
