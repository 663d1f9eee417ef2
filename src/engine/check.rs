//! The periodic check of the volumes mounted here (serve runs it every few
//! seconds): one another host took over — this host was fenced — is
//! released here without another write; one whose image grew (`rbdvol
//! resize` on any host) gets its filesystem grown online.

use super::mount::Teardown;
use super::records::{self, FORMATTED_KEY};
use std::sync::Arc;

use super::fence::Renew;
use super::store::{Store, Volume};
use super::{Checked, Engine, EngineError, Inner};
use crate::ceph::{CephError, Lockers};
use crate::host::crash;
use crate::host::fs::{self, Fstype};
use crate::state::MountedVolume;

/// How long the clients of a dead mapping process stay blocklisted when
/// its mapping is reattached (as long as librbd's own break of a dead
/// owner's lock does).
const DEAD_CLIENT_BLOCKLIST: std::time::Duration = std::time::Duration::from_secs(3600);

impl Engine {
    /// Checks each volume mounted here against Ceph (one released, taken
    /// over, is reported as changed), and releases stale locks.
    pub async fn check_all_mounted(&self) {
        // Nothing to learn from a cluster that does not answer.
        if self.inner.health.down_anywhere().is_some() {
            return;
        }
        self.release_stale_locks().await;
        let names: Vec<String> = self.inner.mounted.lock().unwrap().keys().cloned().collect();
        for name in names {
            // It looks at Ceph without the volume's lock, which it takes only
            // to act: a cluster that stalls mid-check never holds up a
            // second container's Mount or one leaving.
            let (inner, n) = (Arc::clone(&self.inner), name.clone());
            match crate::ceph::offload(move || inner.check_volume(&n)).await {
                Ok(Checked::Released) => self.changed(&name),
                Ok(_) => {}
                // The cluster being unreachable is logged by the connection.
                Err(e) => tracing::debug!("cannot check volume '{name}': {e}"),
            }
        }
    }
}

impl Inner {
    /// Checks one volume mounted here: still ours, and its size.
    pub(super) fn check_volume(&self, name: &str) -> Result<Checked, EngineError> {
        let Some(v) = self.mounted.lock().unwrap().get(name).cloned() else { return Ok(Checked::Fine) };
        // Acts under the volume's lock, on the mount it looked at (not one
        // an Unmount and a Mount made meanwhile).
        let act = || {
            let guard = self.volume_lock_blocking(name);
            let same = self.mounted.lock().unwrap().get(name).is_some_and(|now| now.device == v.device && now.mountpoint == v.mountpoint);
            same.then_some(guard)
        };
        type Looked = (Arc<dyn Store>, Box<dyn Volume>, Lockers);
        let look = || -> Result<Looked, EngineError> {
            let store = self.store()?;
            let vol = self.header_of_mounted(&*store, &v)?;
            let lockers = vol.host_lockers()?;
            Ok((store, vol, lockers))
        };
        let looked = match look() {
            // This plugin's own client was fenced with the rest: look with a new one.
            Err(e @ EngineError::Ceph(CephError::Blocklisted { .. })) => {
                self.connection.forget_if_fenced(&e);
                look()
            }
            r => r,
        };
        let (store, vol, lockers) = match looked {
            Err(EngineError::Ceph(CephError::NotFound { .. })) => {
                let Some(_locked) = act() else { return Ok(Checked::Fine) };
                tracing::error!("volume '{name}' no longer exists in ceph (taken over and removed by another host): releasing it here");
                self.release_taken(&v, Teardown::Fenced);
                return Ok(Checked::Released);
            }
            r => r?,
        };
        // This machine's lock under another host id: RBDVOL_HOST_ID changed
        // while the volume was mounted. Nobody took it over: keep it.
        if let Some(l) = lockers.lockers.iter().find(|l| !self.is_own_lock(&l.cookie) && self.is_own_install(&l.cookie)) {
            tracing::warn!(
                "volume '{name}' is locked by this machine under another host id ('{}'): RBDVOL_HOST_ID changed while it was mounted; it stays mounted — unmount it everywhere here and mount it again to lock it under the new id",
                records::lock_host(&l.cookie)
            );
            let Some(_locked) = act() else { return Ok(Checked::Fine) };
            if let Err(e) = self.reattach_if_dead(&*store, &*vol, &v) {
                tracing::error!("volume '{name}': {e}");
            }
            if let Err(e) = self.remount_if_detached(&*vol, &v) {
                tracing::error!("volume '{name}': cannot mount it again (retried at the next check): {e}");
            }
            return Ok(Checked::Fine);
        }
        if !lockers.lockers.iter().any(|l| self.is_own_lock(&l.cookie)) {
            let Some(_locked) = act() else { return Ok(Checked::Fine) };
            // Looked again under the lock: an Unmount and a Mount meanwhile
            // (same mountpoint, same device number) hold a new lock of ours.
            if vol.host_lockers()?.lockers.iter().any(|l| self.is_own_lock(&l.cookie) || self.is_own_install(&l.cookie)) {
                return Ok(Checked::Fine);
            }
            // Fenced (recorded by the takeover before it blocklisted this
            // host's clients): its device is removed by force. A lock broken
            // without fencing (`rbdvol unlock --force`) leaves the clients
            // working: the device goes only once its users let go.
            let fenced = records::Fenced::parse_list(vol.metadata_get(records::FENCED_KEY)?.as_deref()).iter().any(|f| f.host == self.cfg.host_id);
            let by = lockers.lockers.first().map(|l| format!("host '{}'", records::lock_host(&l.cookie))).unwrap_or_else(|| "an admin (its lock was broken)".into());
            tracing::error!(
                "volume '{name}' was taken over by {by}: this host was fenced; releasing it here without writing to it (its {} container(s) get I/O errors)",
                v.ref_count()
            );
            self.release_taken(&v, if fenced { Teardown::Fenced } else { Teardown::Lost });
            return Ok(Checked::Released);
        }
        // A read-only volume: nobody fenced off it, its filesystem never grows.
        if !v.read_only {
            if let Err(e) = self.keep_fenced(&*store, &*vol, name, Renew::WhenDue) {
                tracing::warn!("volume '{name}': cannot renew the fencing of the hosts it was taken from: {e}");
            }
        }
        let Some(_locked) = act() else { return Ok(Checked::Fine) };
        // Still this host's (its lock, checked above): a mapping whose
        // process died gets a new one before the kernel gives up on it.
        if let Err(e) = self.reattach_if_dead(&*store, &*vol, &v) {
            tracing::error!("volume '{name}': {e}");
        }
        if let Err(e) = self.remount_if_detached(&*vol, &v) {
            tracing::error!("volume '{name}': cannot mount it again (retried at the next check): {e}");
            return Ok(Checked::Fine);
        }
        if v.read_only {
            return Ok(Checked::Fine);
        }
        self.grow_online(&*vol, &v)
    }

    /// Reattaches the mapping of `v` when its process died (rbd-nbd killed
    /// with the plugin): the dead process's clients — recorded at mount —
    /// are blocklisted first, so the OSDs drop their watches and the new
    /// process's librbd takes the image's exclusive lock at once instead of
    /// after the watch timeout (~30 s, during which the device's requests
    /// would wait); then the new client replaces them in the record a
    /// takeover fences.
    pub(super) fn reattach_if_dead(&self, store: &dyn Store, vol: &dyn Volume, v: &MountedVolume) -> Result<(), EngineError> {
        let mapping = self.mapping_of(v);
        if !self.mapper.needs_reattach(&mapping) {
            return Ok(());
        }
        let settings = self.connection.settings()?;
        let start = std::time::Instant::now();
        let mut by = vol.metadata_get(records::MOUNTED_KEY)?.as_deref().and_then(records::MountedBy::parse);
        // Looked at again under the volume's lock, right before a new client
        // may write: still this host's lock and record, not fenced off it. A
        // takeover since leaves the device to the next check's release.
        let still_ours = vol.host_lockers()?.lockers.iter().any(|l| self.is_own_lock(&l.cookie) || self.is_own_install(&l.cookie))
            && by.as_ref().is_none_or(|b| b.host == self.cfg.host_id)
            && !records::Fenced::parse_list(vol.metadata_get(records::FENCED_KEY)?.as_deref()).iter().any(|f| f.host == self.cfg.host_id);
        if !still_ours {
            return Err(EngineError::Host(crate::host::HostError::MapFailed {
                mapper: "nbd",
                image: v.image.clone(),
                reason: "not reattached: the volume's lock or record is no longer this host's (taken over?)".into(),
            }));
        }
        for dead in by.iter().flat_map(|b| b.clients.iter()) {
            // librbd itself blocklists the owner whose lock it breaks, for
            // the same hour (Ceph's default).
            store.blocklist(dead, DEAD_CLIENT_BLOCKLIST)?;
        }
        let before: std::collections::BTreeSet<String> = vol.watchers()?.into_iter().collect();
        self.mapper.reattach(&mapping, &settings)?;
        let new: Vec<String> = vol.watchers()?.into_iter().filter(|w| !before.contains(w)).collect();
        if let Some(by) = by.as_mut() {
            by.clients = new.clone();
            vol.metadata_set(records::MOUNTED_KEY, &by.to_json())?;
        }
        tracing::info!(
            "volume '{}': its {} process had died; a new one serves {} again, reattached in {} ms (new client {})",
            v.name,
            v.mapper,
            v.device.display(),
            start.elapsed().as_millis(),
            new.join(", ")
        );
        Ok(())
    }

    /// Mounts again a volume kept at start-up whose mount had gone with the
    /// plugin (`reconcile`), once its device serves again (reattached).
    fn remount_if_detached(&self, vol: &dyn Volume, v: &MountedVolume) -> Result<(), EngineError> {
        if !self.remount.lock().unwrap().contains(&v.name) {
            return Ok(());
        }
        if self.mapper.needs_reattach(&self.mapping_of(v)) {
            return Ok(()); // its reattach failed (logged): mounted once it works
        }
        // The recorded device must still be this image's: a device the
        // kernel let go (its reattach came too late) may be another
        // volume's by now. Then this volume is dropped here, its device
        // untouched, and its lock released in the background.
        let image = crate::host::ImageRef { pool: v.pool.clone(), namespace: v.namespace.clone(), image: v.image.clone() };
        if self.mapper.find(&image)?.is_none_or(|m| m.device != v.device) {
            tracing::error!("volume '{}': its device {} no longer maps it (not reattached in time); dropping the volume here without touching the device — mount it again", v.name, v.device.display());
            self.remount.lock().unwrap().remove(&v.name);
            self.tear_down(v, false, None, Teardown::Lenient)?;
            self.stale_locks.lock().unwrap().insert(v.name.clone());
            return Ok(());
        }
        let meta = records::VolumeMeta::of(&vol.metadata()?, &v.name).ok_or_else(|| EngineError::NotFound(v.name.clone()))?;
        let fstype = Fstype::parse(&v.fstype).unwrap_or(meta.fstype);
        super::fs_options::check_mount(fstype, &meta.mount_options)
            .map_err(|reason| EngineError::RefusedRecord { name: v.name.clone(), what: "mount options", key: records::VOLUME_KEY, reason })?;
        std::fs::create_dir_all(&v.mountpoint).map_err(crate::host::HostError::io("create", &v.mountpoint))?;
        self.mount_table.mount(&v.device, &v.mountpoint, fstype.as_str(), &super::mount::mount_options(&meta.mount_options, fstype, meta.read_only))?;
        self.remount.lock().unwrap().remove(&v.name);
        self.cache.invalidate(&v.name);
        tracing::info!("volume '{}': mounted again at {} from {}", v.name, v.mountpoint.display(), v.device.display());
        Ok(())
    }

    /// Grows the filesystem of a mounted volume whose image grew.
    fn grow_online(&self, vol: &dyn Volume, v: &MountedVolume) -> Result<Checked, EngineError> {
        let name = &v.name;
        let size = vol.size()?;
        let fs_size = records::parse_formatted(vol.metadata_get(FORMATTED_KEY)?.as_deref()).unwrap_or(size);
        if size <= fs_size || self.grow_failed.lock().unwrap().get(name) == Some(&size) {
            return Ok(Checked::Fine);
        }
        let fstype = Fstype::parse(&v.fstype).unwrap_or(Fstype::Ext4);
        let grown = self.mapper.refresh_size(&self.mapping_of(v), size).and_then(|_| {
            crash::point("grow.refreshed", name);
            fs::grow(&self.tools, fstype, &v.device, &v.mountpoint)
        });
        if let Err(e) = grown {
            tracing::warn!("volume '{name}' grew to {} MiB but its filesystem could not grow online ({e}); it grows at its next mount", size >> 20);
            self.grow_failed.lock().unwrap().insert(name.to_string(), size);
            return Ok(Checked::Fine);
        }
        crash::point("grow.grown", name);
        vol.metadata_set(FORMATTED_KEY, &size.to_string())?;
        self.cache.invalidate(name);
        tracing::info!("volume '{name}': filesystem grown online to {} MiB", size >> 20);
        Ok(Checked::Grown(size))
    }

    /// Lets go of a volume another host took over: nothing of it is written
    /// again from here (the mapping is fenced anyway). Then, in the
    /// background, the fencing is acknowledged (`release_stale_lock`).
    fn release_taken(&self, v: &MountedVolume, how: Teardown) {
        let _ = self.tear_down(v, true, Some(self.mapping_of(v)), how);
        self.stale_locks.lock().unwrap().insert(v.name.clone());
    }
}
