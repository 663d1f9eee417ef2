//! The Controller service: volumes made and deleted in Ceph. No
//! ControllerPublish: the host lock and fencing are taken by the node
//! that stages the volume (as Mount takes them), so Swarm's publish step
//! would add nothing to them.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use super::access::{self, Access};
use super::error::status;
use super::proto::controller_server::Controller;
use super::proto::controller_service_capability::{rpc, Rpc, Type as CapType};
use super::proto::validate_volume_capabilities_response::Confirmed;
use super::proto::*;
use super::request::{self, Capacity};
use super::server::Csi;
use super::CsiError;
use crate::engine::{Created, EngineError, VolumeDriver, VolumeInfo};

/// The size and read-only flag of a volume as Get reports them.
fn size_of(info: &VolumeInfo) -> u64 {
    info.status.get("size_bytes").and_then(|v| v.as_u64()).unwrap_or(0)
}

fn read_only(info: &VolumeInfo) -> bool {
    info.status.contains_key("readonly")
}

fn context_of(info: &VolumeInfo) -> HashMap<String, String> {
    ["pool", "namespace", "image"].iter().filter_map(|k| info.status.get(*k).and_then(|v| v.as_str()).map(|v| (k.to_string(), v.to_string()))).collect()
}

/// What an existing volume has that a CreateVolume of its name asked
/// otherwise: its pool, filesystem, source snapshot or adopted image.
fn differs(info: &VolumeInfo, opts: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let has = |key: &str| info.status.get(key).and_then(|v| v.as_str()).unwrap_or("");
    for (option, key) in [("pool", "pool"), ("fstype", "fstype"), ("from", "cloned_from")] {
        if let Some(asked) = opts.get(option).map(|v| v.trim()) {
            if has(key) != asked {
                return Some(format!("{option} '{}', not '{asked}' as asked", has(key)));
            }
        }
    }
    if let Some(image) = opts.get("image").map(|v| v.trim()) {
        let adopted = info.status.contains_key("adopted") && (has("image") == image || has("image").ends_with(&format!("/{image}")));
        if !adopted {
            return Some(format!("image '{}', not the adopted image '{image}' as asked", has("image")));
        }
    }
    None
}

fn volume_of(info: &VolumeInfo) -> Volume {
    Volume { capacity_bytes: size_of(info) as i64, volume_id: info.name.clone(), volume_context: context_of(info), ..Default::default() }
}

impl Csi {
    async fn create(&self, r: CreateVolumeRequest) -> Result<Volume, CsiError> {
        let name = request::volume(&r.name)?;
        if r.volume_content_source.is_some() {
            return Err(CsiError::Invalid("a volume content source is not taken: clone a snapshot with -o from=VOLUME@SNAPSHOT".into()));
        }
        let asked = access::asked(&r.volume_capabilities)?;
        let capacity = Capacity::from(r.capacity_range.as_ref())?;
        let opts = request::create_options(&r.parameters, &asked, capacity)?;
        let created = self.with_key(&r.secrets, async { Ok(self.engine.create(&name, opts.clone()).await?) }).await?;
        let info = self.engine.get(&name).await?;
        let (size, ro) = (size_of(&info), read_only(&info));
        if created == Created::AlreadyExisted {
            if ro != (asked.access == Access::ReadOnly) {
                let (is, asked) = if ro { ("read-only", "read-write") } else { ("read-write", "read-only") };
                return Err(CsiError::Conflict(format!("volume '{name}' exists {is}, not {asked} as asked: choose another name")));
            }
            if let Some(conflict) = differs(&info, &opts) {
                return Err(CsiError::Conflict(format!("volume '{name}' exists with {conflict}: choose another name")));
            }
        }
        if let Some(c) = capacity.filter(|c| !c.fits(size)) {
            let range = format!("{} to {} bytes", c.required, c.limit.map(|l| l.to_string()).unwrap_or_else(|| "any".into()));
            if created == Created::AlreadyExisted {
                return Err(CsiError::Conflict(format!("volume '{name}' exists with {size} bytes, outside the range asked ({range}): choose another name or resize it (rbdvol resize)")));
            }
            // Only a read-only volume has a size of its own (its source's).
            if let Err(e) = self.engine.remove(&name).await {
                tracing::warn!("volume '{name}' made outside the range asked could not be removed again: {e}");
            }
            return Err(CsiError::OutOfRange(format!("volume '{name}' would have its source's size, {size} bytes, outside the range asked ({range})")));
        }
        Ok(volume_of(&info))
    }

    async fn delete(&self, r: DeleteVolumeRequest) -> Result<(), CsiError> {
        let name = request::volume(&r.volume_id)?;
        self.with_key(&r.secrets, async {
            match self.engine.remove(&name).await {
                Ok(_) | Err(EngineError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn validate(&self, r: ValidateVolumeCapabilitiesRequest) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
        let name = request::volume(&r.volume_id)?;
        let info = self.engine.get(&name).await?;
        let message = match access::asked(&r.volume_capabilities) {
            Err(CsiError::Invalid(m)) => m,
            Err(e) => return Err(e),
            Ok(a) if read_only(&info) && a.access == Access::Writer => format!("volume '{name}' is read-only"),
            Ok(a) if !read_only(&info) && a.access == Access::ReadOnly => format!("volume '{name}' is read-write: only a volume made with --sharing readonly is read on many nodes"),
            Ok(_) => {
                let confirmed = Confirmed { volume_context: r.volume_context, volume_capabilities: r.volume_capabilities, parameters: r.parameters, mutable_parameters: r.mutable_parameters };
                return Ok(ValidateVolumeCapabilitiesResponse { confirmed: Some(confirmed), message: String::new() });
            }
        };
        Ok(ValidateVolumeCapabilitiesResponse { confirmed: None, message })
    }

    async fn list(&self, r: ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
        if r.max_entries < 0 {
            return Err(CsiError::Invalid("max_entries is negative".into()));
        }
        let start = match r.starting_token.as_str() {
            "" => 0,
            t => t.parse::<usize>().map_err(|_| CsiError::BadToken(format!("starting token '{t}' is not one this plugin gave")))?,
        };
        let mut all = self.engine.list().await?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        if start > all.len() {
            return Err(CsiError::BadToken(format!("starting token '{start}' is past the last volume")));
        }
        let end = if r.max_entries == 0 { all.len() } else { all.len().min(start + r.max_entries as usize) };
        let entries = all[start..end].iter().map(|v| list_volumes_response::Entry { volume: Some(volume_of(v)), status: None }).collect();
        let next_token = if end < all.len() { end.to_string() } else { String::new() };
        Ok(ListVolumesResponse { entries, next_token })
    }
}

#[tonic::async_trait]
impl Controller for Csi {
    async fn create_volume(&self, req: Request<CreateVolumeRequest>) -> Result<Response<CreateVolumeResponse>, Status> {
        let r = req.into_inner();
        let name = r.name.clone();
        let volume = self.create(r).await.map_err(|e| status("CreateVolume", &name, e))?;
        Ok(Response::new(CreateVolumeResponse { volume: Some(volume) }))
    }

    async fn delete_volume(&self, req: Request<DeleteVolumeRequest>) -> Result<Response<DeleteVolumeResponse>, Status> {
        let r = req.into_inner();
        let id = r.volume_id.clone();
        self.delete(r).await.map_err(|e| status("DeleteVolume", &id, e))?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(&self, req: Request<ValidateVolumeCapabilitiesRequest>) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let r = req.into_inner();
        let id = r.volume_id.clone();
        self.validate(r).await.map(Response::new).map_err(|e| status("ValidateVolumeCapabilities", &id, e))
    }

    async fn list_volumes(&self, req: Request<ListVolumesRequest>) -> Result<Response<ListVolumesResponse>, Status> {
        self.list(req.into_inner()).await.map(Response::new).map_err(|e| status("ListVolumes", "", e))
    }

    async fn controller_get_capabilities(&self, _: Request<ControllerGetCapabilitiesRequest>) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let cap = |t: rpc::Type| ControllerServiceCapability { r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })) };
        Ok(Response::new(ControllerGetCapabilitiesResponse { capabilities: vec![cap(rpc::Type::CreateDeleteVolume), cap(rpc::Type::ListVolumes)] }))
    }
}
