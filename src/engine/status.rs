//! Get and List: what Docker (and `docker volume inspect`) sees of a
//! volume. Only `ready` volumes exist for Docker.

use super::directory::image_ref;
use super::health::Down;
use super::records::{self, EntryState, MountedBy, VolumeMeta};
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
        let got = self.read_status(name);
        if let Err(EngineError::NotFound(_)) = &got {
            self.cache.invalidate(name); // memory must not answer for it
        }
        got
    }

    fn read_status(&self, name: &str) -> Result<VolumeInfo, EngineError> {
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
        let image = match store.cluster().open_pool(&entry.pool, &entry.namespace)?.open_image_read_only(entry.image(name)) {
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
        if entry.adopted.is_some() {
            put("adopted", "yes: rbdvol did not make this image; removing the volume forgets it and leaves the image in the pool".into());
        }
        if vm.as_ref().is_some_and(|v| v.read_only) {
            put("readonly", "yes: mounted read-only, on any number of hosts at once".into());
        }
        let qos = super::qos::limits_of(&meta);
        if !qos.is_empty() {
            put("qos", super::qos::describe(&qos).into());
        }
        let by = MountedBy::of(&meta);
        if vm.as_ref().is_some_and(|v| v.read_only) {
            // No one holder: every host that has it mounted holds a share.
            let readers: Vec<String> = image.header()?.host_lockers()?.lockers.iter().map(|l| records::lock_host(&l.cookie).to_string()).collect();
            put("mounted_by", readers.join(", ").into());
        } else {
            put("mounted_by", by.as_ref().map(|b| b.host.clone()).unwrap_or_default().into());
        }
        if let Some(b) = by {
            put("mounted_since", b.since.into());
        }
        put("confirmed_at", records::now_rfc3339().into());
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
            if v.mapper == "krbd" && info.status.contains_key("qos") {
                info.status.insert("qos_enforced".into(), "no: the kernel's rbd client (krbd) has no QoS; map with nbd or userspace to enforce it".into());
            }
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

    /// The pool volume `name` lives in, as last known (the directory, or
    /// this host's state).
    pub(super) fn known_pool(&self, name: &str) -> Option<String> {
        if let Some(v) = self.mounted.lock().unwrap().get(name) {
            return Some(v.pool.clone());
        }
        self.cache.known_listing().and_then(|(_, map)| map.get(name).map(|e| e.pool.clone()))
    }

    /// Get's answer from memory while the cluster does not answer: the last
    /// answer read from Ceph, else what the directory said, else what this
    /// host knows of a volume mounted here — saying when it was confirmed
    /// and that the cluster is unreachable.
    pub(super) fn remembered_status(&self, name: &str, down: &Down) -> Result<VolumeInfo, EngineError> {
        let listing = self.cache.known_listing();
        let mounted = self.mounted.lock().unwrap().get(name).cloned();
        let last = self.cache.last_status(name);
        // A directory read after that answer, without the volume: it went.
        if let (Some((said, _)), Some((listed, map)), None) = (&last, &listing, &mounted) {
            if listed > said && !map.get(name).is_some_and(|e| e.state == EntryState::Ready) {
                return Err(EngineError::NotFoundAsOf { name: name.into(), when: records::rfc3339(*listed), detail: down.describe() });
            }
        }
        let mut info = if let Some((when, info)) = last {
            let mut info = info;
            info.status.insert("confirmed_at".into(), records::rfc3339(when).into());
            info
        } else if let Some((when, entry)) = listing.as_ref().and_then(|(when, map)| map.get(name).filter(|e| e.state == EntryState::Ready).map(|e| (*when, e.clone()))) {
            let mut status = serde_json::Map::new();
            status.insert("pool".into(), entry.pool.clone().into());
            status.insert("image".into(), image_ref(name, &entry).to_string().into());
            status.insert("confirmed_at".into(), records::rfc3339(when).into());
            VolumeInfo { name: name.into(), mountpoint: None, created_at: None, status }
        } else if let Some(v) = mounted {
            let mut status = serde_json::Map::new();
            status.insert("pool".into(), v.pool.clone().into());
            let image = crate::host::ImageRef { pool: v.pool.clone(), namespace: v.namespace.clone(), image: v.image.clone() };
            status.insert("image".into(), image.to_string().into());
            status.insert("fstype".into(), v.fstype.clone().into());
            status.insert("mounted_by".into(), self.cfg.host_id.clone().into());
            VolumeInfo { name: name.into(), mountpoint: None, created_at: None, status }
        } else if let Some((when, _)) = listing {
            return Err(EngineError::NotFoundAsOf { name: name.into(), when: records::rfc3339(when), detail: down.describe() });
        } else {
            return Err(EngineError::ClusterUnreachable { detail: down.describe() });
        };
        info.status.insert("cluster".into(), down.describe().into());
        self.add_local_status(&mut info);
        Ok(info)
    }

    /// List's answer from memory: the last directory read, and every volume
    /// mounted here (known here even when the cluster has not answered
    /// since start-up).
    pub(super) fn remembered_list(&self) -> Vec<VolumeInfo> {
        let mounted = self.mounted.lock().unwrap().clone();
        let mut names: std::collections::BTreeSet<String> = self
            .cache
            .known_listing()
            .map(|(_, map)| map.into_iter().filter(|(_, e)| e.state == EntryState::Ready).map(|(n, _)| n).collect())
            .unwrap_or_default();
        names.extend(mounted.keys().cloned());
        names
            .into_iter()
            .map(|name| VolumeInfo { mountpoint: mounted.get(&name).map(|v| v.mountpoint.clone()), name, created_at: None, status: serde_json::Map::new() })
            .collect()
    }

    /// Whether `name` exists, from memory (Path of a volume not mounted here).
    pub(super) fn remembered_exists(&self, name: &str, down: &Down) -> Result<bool, EngineError> {
        match self.cache.known_listing() {
            Some((_, map)) => Ok(map.get(name).is_some_and(|e| e.state == EntryState::Ready)),
            None => Err(EngineError::ClusterUnreachable { detail: down.describe() }),
        }
    }
}
