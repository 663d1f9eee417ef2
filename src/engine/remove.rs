//! Remove hides a volume at once (directory state `removing`: gone for
//! Docker on every host); its image is deleted in the background (`purge`),
//! retried while its watchers go, and at the next start.

use std::time::{Duration, Instant};

use super::records::{DirEntry, EntryState};
use super::store::Store;
use super::{timing, Engine, EngineError, Inner, Removed};
use crate::ceph::{self, CephError, Pool};
use crate::host::crash;

/// How many times the background deletion of a removed volume's image
/// tries while its watchers go (10 s each, then 5, 10, 20, 40 s apart).
const PURGE_ATTEMPTS: u32 = 5;
/// How long Remove waits for watchers that are closing.
const WATCHERS_SETTLE: Duration = Duration::from_secs(10);

impl Engine {
    /// Deletes, in the background, the image of a volume just removed. It
    /// holds the volume's lock, so a Create of the same name waits for it.
    pub(super) fn schedule_purge(&self, name: &str) {
        let engine = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            // A mapper still closing the image keeps its watch a while (one
            // killed after its stop timeout, ~30 s more): try again then,
            // without holding the volume's lock meanwhile.
            let mut delay = Duration::from_secs(5);
            for attempt in 1..=PURGE_ATTEMPTS {
                let n = name.clone();
                match engine.locked("purge", &name, move |inner| inner.purge(&n)).await {
                    Ok(()) => return,
                    Err(e @ EngineError::Ceph(CephError::InUse { .. })) if attempt < PURGE_ATTEMPTS => {
                        tracing::debug!("deleting the image of removed volume '{name}': {e}; trying again in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => {
                        tracing::error!("deleting the image of removed volume '{name}' failed (retried at the next start): {e}");
                        return;
                    }
                }
            }
        });
    }

    /// Deletions any host left unfinished (a crash, a restart).
    pub(super) async fn resume_purges(&self) {
        let inner = std::sync::Arc::clone(&self.inner);
        match ceph::offload(move || inner.pending_purges()).await {
            Ok(names) => names.iter().for_each(|n| self.schedule_purge(n)),
            Err(e) => tracing::warn!("cannot look for removed volumes left to delete: {e}"),
        }
    }
}

impl Inner {
    /// Hides the volume (directory state `removing`): from here on it is
    /// gone for Docker on every host. The image itself is deleted by
    /// `purge`, which the caller schedules right after.
    pub(super) fn remove(&self, name: &str) -> Result<Removed, EngineError> {
        if let Some(v) = self.mounted.lock().unwrap().get(name) {
            return Err(EngineError::InUseHere { name: name.into(), containers: v.ref_count() });
        }
        let store = self.ceph_store()?;
        let Some(entry) = self.dir_get(&store, name)? else { return Ok(Removed::AlreadyGone) };
        if entry.state == EntryState::Removing {
            return Ok(Removed::Removed);
        }
        let pool = store.cluster().open_pool(&entry.pool, &entry.namespace)?;
        let vol = match store.header(&entry.pool, &entry.namespace, name, entry.id.as_deref()) {
            Ok(v) => v,
            Err(CephError::NotFound { .. }) => {
                self.dir_remove(&store, name)?;
                return Ok(Removed::AlreadyGone);
            }
            Err(e) => return Err(e.into()),
        };
        let id = Some(vol.id().to_string());
        timing::step("directory");
        // Remove holds the host lock, as Mount does: the two exclude each
        // other on every host (a Mount re-reads the entry once it holds it).
        self.take_host_lock(&*vol, name)?;
        crash::point("remove.locked", name);
        timing::step("host lock");
        let hidden = (|| {
            // Checked now: the deletion in the background could only log it.
            let image = pool.open_image_read_only(name)?;
            let clones = image.children()?;
            if !clones.is_empty() {
                return Err(EngineError::HasClones { name: name.into(), clones: clones.join(", ") });
            }
            let snapshots = image.snapshots()?;
            if !snapshots.is_empty() {
                let snapshots = snapshots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
                return Err(EngineError::HasSnapshots { name: name.into(), snapshots });
            }
            timing::step("snapshots");
            self.dir_put(&store, name, &DirEntry { state: EntryState::Removing, id, ..entry })?;
            crash::point("remove.hidden", name);
            timing::step("directory: removing");
            Ok(Removed::Removed)
        })();
        self.release_host_lock_or_retry(&*vol);
        hidden
    }

    /// Deletes the image of a removed (`removing`) volume, then its
    /// directory entry. Idempotent; what fails stays `removing` and is
    /// retried at the next start or by a Create of the same name.
    pub(super) fn purge(&self, name: &str) -> Result<(), EngineError> {
        let store = self.ceph_store()?;
        let Some(entry) = self.dir_get(&store, name)?.filter(|e| e.state == EntryState::Removing) else { return Ok(()) };
        let pool = store.cluster().open_pool(&entry.pool, &entry.namespace)?;
        match self.remove_image_settling(&pool, name, entry.id.as_deref()) {
            Ok(()) | Err(CephError::NotFound { .. }) => {
                crash::point("purge.deleted", name);
                timing::step("remove image");
                // Only the entry of the image deleted: a Create (any host)
                // may have made the name anew meanwhile.
                if self.dir_get(&store, name)? == Some(entry) {
                    self.dir_remove(&store, name)?;
                }
                timing::step("directory: remove");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Volumes whose image is still to be deleted.
    fn pending_purges(&self) -> Result<Vec<String>, EngineError> {
        Ok(self.read_directory()?.into_iter().filter(|(_, e)| e.state == EntryState::Removing).map(|(n, _)| n).collect())
    }

    /// Removes image `name` — only while it is still the one with id `id`,
    /// when known: another host may have made the name anew — waiting a
    /// little for watchers that are on their way out: a mapper process
    /// closing after the last Unmount, or udev probing a device just
    /// unmapped. A watcher that stays is `InUse`; an image of that name
    /// with another id is `NotFound` (this one is gone).
    pub(super) fn remove_image_settling(&self, pool: &Pool, name: &str, id: Option<&str>) -> Result<(), CephError> {
        let start = Instant::now();
        loop {
            if let Some(id) = id {
                if pool.image_id(name)? != id {
                    return Err(CephError::NotFound { op: "remove", target: crate::ceph::Target::Image { pool: pool.name().into(), namespace: pool.namespace().into(), image: name.into() }, errno: libc::ENOENT });
                }
            }
            match pool.remove_image(name) {
                Err(CephError::InUse { .. }) if start.elapsed() < WATCHERS_SETTLE => std::thread::sleep(Duration::from_millis(50)),
                // Another host removed it in the same moment: gone.
                Err(e) if e.errno() == Some(libc::ESTALE) => {
                    return Err(CephError::NotFound { op: "remove", target: crate::ceph::Target::Image { pool: pool.name().into(), namespace: pool.namespace().into(), image: name.into() }, errno: libc::ENOENT })
                }
                other => return other,
            }
        }
    }
}
