//! Get and List: what Docker (and `docker volume inspect`) sees of a
//! volume. Only `ready` volumes exist for Docker.

use super::directory::image_ref;
use super::records::{EntryState, MountedBy, VolumeMeta};
use super::{EngineError, Inner, VolumeInfo};
use crate::ceph::{self, CephError};

impl Inner {
    /// Get's answer from the cache, if fresh, with this host's part added.
    pub(super) fn cached_status(&self, name: &str) -> Option<VolumeInfo> {
        let mut info = self.cache.status(name)?;
        self.add_local_status(&mut info);
        Some(info)
    }

    pub(super) fn get(&self, name: &str) -> Result<VolumeInfo, EngineError> {
        let store = self.ceph_store()?;
        let entry = match self.directory()?.get(name) {
            Some(e) if e.state == EntryState::Ready => e.clone(),
            _ => {
                // Not in the (possibly stale) cache: ask the directory itself.
                match self.dir_get(&store, name)? {
                    Some(e) if e.state == EntryState::Ready => e,
                    _ => return Err(EngineError::NotFound(name.into())),
                }
            }
        };
        let image = match store.cluster().open_pool(&entry.pool, &entry.namespace)?.open_image_read_only(name) {
            Ok(i) => i,
            Err(CephError::NotFound { .. }) => return Err(EngineError::NotFound(name.into())),
            Err(e) => return Err(e.into()),
        };
        let meta = image.metadata_list()?;
        let size = image.size()?;
        let mut status = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            status.insert(k.to_string(), v);
        };
        put("pool", entry.pool.clone().into());
        if !entry.namespace.is_empty() {
            put("namespace", entry.namespace.clone().into());
        }
        put("image", image_ref(name, &entry).to_string().into());
        put("size", format!("{} MiB", size >> 20).into());
        put("size_bytes", size.into());
        let vm = VolumeMeta::of(&meta, name);
        put("fstype", vm.as_ref().map(|v| v.fstype.as_str()).unwrap_or("ext4").into());
        put("features", ceph::features_to_string(image.features()?).into());
        if let Some(m) = vm.as_ref().map(|v| v.mount_options.clone()).filter(|m| !m.is_empty()) {
            put("mount_options", m.into());
        }
        if let Some(c) = vm.as_ref().and_then(|v| v.cloned_from.clone()) {
            put("cloned_from", c.into());
        }
        let by = MountedBy::of(&meta);
        put("mounted_by", by.as_ref().map(|b| b.host.clone()).unwrap_or_default().into());
        if let Some(b) = by {
            put("mounted_since", b.since.into());
        }
        let info = VolumeInfo { name: name.into(), mountpoint: None, created_at: vm.map(|v| v.created_at), status };
        self.cache.put_status(&info);
        let mut info = info;
        self.add_local_status(&mut info);
        Ok(info)
    }

    /// Whether volume `name` exists for Docker (`ready`): from the cached
    /// directory, else from the directory itself (it may be newer).
    pub(super) fn exists(&self, name: &str) -> Result<bool, EngineError> {
        if self.directory()?.get(name).is_some_and(|e| e.state == EntryState::Ready) {
            return Ok(true);
        }
        Ok(self.dir_get(&*self.store()?, name)?.is_some_and(|e| e.state == EntryState::Ready))
    }

    /// What only this host knows: mapper, device, mountpoint, containers.
    fn add_local_status(&self, info: &mut VolumeInfo) {
        if let Some(v) = self.mounted.lock().unwrap().get(&info.name) {
            info.mountpoint = Some(v.mountpoint.clone());
            info.status.insert("mapper".into(), v.mapper.clone().into());
            info.status.insert("device".into(), v.device.to_string_lossy().into_owned().into());
            info.status.insert("containers".into(), v.ref_count().into());
        }
    }

    pub(super) fn list(&self) -> Result<Vec<VolumeInfo>, EngineError> {
        let mounted = self.mounted.lock().unwrap().clone();
        Ok(self
            .directory()?
            .into_iter()
            .filter(|(_, e)| e.state == EntryState::Ready)
            .map(|(name, _)| VolumeInfo {
                mountpoint: mounted.get(&name).map(|v| v.mountpoint.clone()),
                name,
                created_at: None,
                status: serde_json::Map::new(),
            })
            .collect())
    }
}
