//! What a previous run of rbdvol left on this host: at start-up, saved
//! state is matched against the host (volumes still mounted are taken back,
//! what a crash left half-done is undone); once the cluster answers, this
//! host's locks on volumes it no longer has are released, and deletions
//! left unfinished are resumed.

use std::collections::BTreeMap;
use std::path::Path;

use super::mount::Teardown;
use super::{Engine, EngineError, Inner};
use crate::ceph::CephError;
use crate::host::mapper::Mapping;
use crate::host::ImageRef;

impl Engine {
    /// Finishes what a previous run left: deletions (of any host) and this
    /// host's locks on volumes it no longer has mounted.
    pub async fn resume_background_work(&self) {
        self.resume_purges().await;
        self.release_stale_locks().await;
    }

    /// Releases this host's locks on volumes it no longer uses; what fails
    /// stays for the next call (serve calls it at every check).
    pub async fn release_stale_locks(&self) {
        if self.inner.health.down_anywhere().is_some() {
            return; // kept for when the cluster answers
        }
        let names = std::mem::take(&mut *self.inner.stale_locks.lock().unwrap());
        for name in names {
            let n = name.clone();
            if let Err(e) = self.locked("release", &name, move |inner| inner.release_stale_lock(&n)).await {
                tracing::debug!("cannot release this host's lock on volume '{name}' yet (retried): {e}");
                self.inner.stale_locks.lock().unwrap().insert(name);
            }
        }
    }
}

impl Inner {
    /// Matches saved state against the host: volumes still mounted are
    /// taken back (containers keep running on them); what a crash left
    /// half-done (mapped but not mounted, mounted but never recorded) is
    /// undone. Needs no cluster; host locks left behind are taken over by
    /// the next Mount here or released by the next Unmount.
    pub(super) fn reconcile(&self) -> Result<(), EngineError> {
        self.mapper.clean_up_dead()?;
        crate::host::fs::remove_leftover_scratch(&self.cfg.state_dir.join("format"));
        let mounts = self.mount_table.mounts()?;
        let mut kept = BTreeMap::new();
        for v in self.state.load_all()? {
            let still_mounted = mounts.iter().any(|m| m.target == v.mountpoint && Path::new(&m.source) == v.device);
            if still_mounted && v.ref_count() > 0 {
                tracing::info!("volume '{}' is still mounted at {} for {} reference(s): keeping it", v.name, v.mountpoint.display(), v.ref_count());
                kept.insert(v.name.clone(), v);
            } else if !still_mounted && v.ref_count() > 0 && self.device_still_serves(&v) {
                // Its mount went with the plugin (dockerd detaches a managed
                // plugin's mounts when it stops it), its containers did
                // not: their filesystem still works through the device.
                tracing::warn!(
                    "volume '{}' is no longer mounted at {} but its device {} still serves its {} container(s): keeping it, mounting it again",
                    v.name,
                    v.mountpoint.display(),
                    v.device.display(),
                    v.ref_count()
                );
                self.remount.lock().unwrap().insert(v.name.clone());
                kept.insert(v.name.clone(), v);
            } else {
                tracing::warn!("volume '{}' was recorded as mounted but is not: cleaning up", v.name);
                let image = ImageRef { pool: v.pool.clone(), namespace: v.namespace.clone(), image: v.image.clone() };
                // Found by image, never by the recorded device: after a
                // reboot that device may be another image's.
                // One volume that cannot be cleaned up (a device still busy)
                // never stops the others: it stays recorded, retried at the
                // next start, and its lock in the background.
                // Unmapped as it was mapped (its unmap options). A mapping
                // no mapper finds any more may have left its device (a
                // user-space server's loop device, its directory gone).
                let found = self.mapper.find(&image).map(|m| m.map(|m| Mapping { with: v.mapped_with.clone(), ..m }));
                if let Ok(None) = found {
                    if let Err(e) = self.mapper.forget_dead(&self.mapping_of(&v)) {
                        tracing::warn!("volume '{}': {e}", v.name);
                    }
                }
                let cleaned = found.map_err(EngineError::from).and_then(|m| self.tear_down(&v, still_mounted, m, Teardown::Strict));
                if let Err(e) = cleaned {
                    tracing::error!("cannot clean up volume '{}' (retried at the next start): {e}", v.name);
                }
                self.stale_locks.lock().unwrap().insert(v.name.clone());
            }
        }
        // Mappings nobody recorded: a crash between map and the state write.
        for m in self.mapper.list()? {
            if kept.values().any(|v| v.image == m.image.image && v.pool == m.image.pool && v.namespace == m.image.namespace) {
                continue;
            }
            tracing::warn!("unmapping {} ({}): mapped but not recorded", m.image, m.device.display());
            let cleaned = mounts
                .iter()
                .filter(|mnt| Path::new(&mnt.source) == m.device && mnt.target.starts_with(&self.cfg.mount_root))
                .try_for_each(|mnt| self.mount_table.unmount(&mnt.target))
                .and_then(|()| self.mapper.unmap(&m));
            if let Err(e) = cleaned {
                tracing::error!("cannot unmap {} (retried at the next start): {e}", m.image);
            }
        }
        // Locks noted but not kept: a crash between taking a lock and
        // recording the mount, or a release that never happened.
        for name in self.lock_notes.all()? {
            if !kept.contains_key(&name) {
                self.stale_locks.lock().unwrap().insert(name);
            }
        }
        *self.mounted.lock().unwrap() = kept;
        Ok(())
    }

    /// Whether the recorded device of `v` is still its mapping: krbd's (the
    /// kernel keeps it), or rbd-nbd's waiting to be reattached. Never the
    /// user-space mapper's (its server died with the plugin) nor anything
    /// after a reboot (another image may have that device now).
    fn device_still_serves(&self, v: &super::MountedVolume) -> bool {
        let mapping = self.mapping_of(v);
        if self.mapper.needs_reattach(&mapping) {
            return true;
        }
        matches!(self.mapper.find(&mapping.image), Ok(Some(m)) if m.device == v.device)
    }

    /// Releases this host's host lock and mounted-by record on a volume it
    /// does not have mounted (left by a crash or a forced stop). Idempotent;
    /// a lock of another host is left.
    pub(super) fn release_stale_lock(&self, name: &str) -> Result<(), EngineError> {
        if self.mounted.lock().unwrap().contains_key(name) {
            return Ok(());
        }
        let store = self.store()?;
        let Some(entry) = self.dir_get(&*store, name)? else { return Ok(self.lock_notes.clear(name)?) };
        let vol = match store.header(&entry.pool, &entry.namespace, entry.image(name), entry.id.as_deref()) {
            Ok(v) => v,
            Err(CephError::NotFound { .. }) => return Ok(self.lock_notes.clear(name)?),
            Err(e) => return Err(e.into()),
        };
        // A mapping left (a fenced release whose unmap failed: a container
        // still holds the detached filesystem) goes first; until it does,
        // this host has not let go.
        let image = super::directory::image_ref(name, &entry);
        if let Some(m) = self.mapper.find(&image)? {
            self.mapper.unmap(&m)?;
        }
        // Fenced off it by another host: say this host has let go.
        self.acknowledge_fence(&*store, &*vol)?;
        self.release_mounted(&*store, &*vol, name)?;
        self.cache.invalidate(name);
        tracing::info!("released this host's lock on volume '{name}', which it no longer has mounted");
        Ok(())
    }
}
