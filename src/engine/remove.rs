//! Remove hides a volume (directory state `removing`: gone for Docker on
//! every host), then moves its image to the RBD trash (`trash`), which
//! frees the name; the image is purged when due, in the background. What
//! fails to move (watchers that stay) is retried in the background while
//! its watchers go, and at the next start.

use std::time::Duration;

use super::records::{DirEntry, EntryState, TrashRecord, VolumeMeta, VOLUME_KEY};
use super::store::Store;
use super::{timing, trash, Engine, EngineError, Inner, Removed};
use crate::ceph::{self, CephError};
use crate::host::crash;

/// How many times the background move of a removed volume's image tries
/// while its watchers go (10 s each, then 5, 10, 20, 40 s apart).
const PURGE_ATTEMPTS: u32 = 5;

impl Engine {
    /// Finishes, in the background, the removal of volume `name`: moves its
    /// image to the trash if Remove could not, then purges its trashed
    /// images when due. Holds the volume's lock while it works, so a Create
    /// of the same name waits for the move.
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
                match engine.locked("purge", &name, move |inner| inner.trash_removed(&n)).await {
                    Ok(()) => break,
                    Err(e @ EngineError::Ceph(CephError::InUse { .. })) if attempt < PURGE_ATTEMPTS => {
                        tracing::debug!("moving the image of removed volume '{name}' to the trash: {e}; trying again in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => {
                        tracing::error!("moving the image of removed volume '{name}' to the trash failed (retried at the next start): {e}");
                        return;
                    }
                }
            }
            let inner = std::sync::Arc::clone(&engine.inner);
            match ceph::offload(move || inner.trash_records()).await {
                Ok(records) => records.into_iter().filter(|r| r.name == name).for_each(|r| engine.purge_when_due(r)),
                Err(e) => tracing::warn!("cannot read the trash records to purge '{name}' (purged at the next start): {e}"),
            }
        });
    }

    /// Purges a trashed image once its record says it is due. The purge
    /// deletes by id and takes no lock on the name (a thick image's purge
    /// takes long, and the name may be a new volume's by then); only a
    /// directory write it may need does.
    pub(super) fn purge_when_due(&self, record: TrashRecord) {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut record = record;
            loop {
                tokio::time::sleep(Duration::from_millis(record.purge_after_ms.saturating_sub(trash::now_ms()))).await;
                let (inner, r) = (std::sync::Arc::clone(&engine.inner), record.clone());
                let purged = ceph::offload(move || -> Result<_, EngineError> {
                    let store = inner.ceph_store()?;
                    Ok(trash::purge(store.cluster(), store.dir()?, &r)?)
                })
                .await;
                let (name, id) = (record.name.clone(), record.id.clone());
                match purged {
                    Ok(trash::Purged::Purged) => return,
                    // Restored and removed again since: by the new record.
                    Ok(trash::Purged::Rescheduled(next)) => record = next,
                    Ok(trash::Purged::InPool(entry)) => {
                        let r = record.clone();
                        if let Err(e) = engine.locked("purge", &name, move |inner| inner.settle_in_pool(&r, &entry)).await {
                            tracing::error!("finishing the restore of volume '{name}' (image id {id}) failed (retried by the next sweep): {e}");
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::error!("purging the image of removed volume '{name}' (id {id}) from the trash failed (retried by the next sweep): {e}");
                        return;
                    }
                }
            }
        });
    }

    /// Every few minutes (and at start): removals any host left unfinished
    /// — images still to move, trashed images due — so a host that died or
    /// a cluster that did not answer delays them, never leaks them.
    pub async fn sweep_removals(&self) {
        let inner = std::sync::Arc::clone(&self.inner);
        match ceph::offload(move || Ok::<_, EngineError>((inner.pending_purges()?, inner.trash_records()?))).await {
            Ok((names, records)) => {
                names.iter().for_each(|n| self.schedule_purge(n));
                let now = trash::now_ms();
                records.into_iter().filter(|r| r.purge_after_ms <= now && !names.contains(&r.name)).for_each(|r| self.purge_when_due(r));
            }
            Err(e) => tracing::warn!("cannot look for removed volumes left to delete (looked again in a few minutes): {e}"),
        }
    }

    /// Removals any host left unfinished (a crash, a restart): images still
    /// to move to the trash, trashed images to purge when due.
    pub(super) async fn resume_purges(&self) {
        let inner = std::sync::Arc::clone(&self.inner);
        match ceph::offload(move || Ok::<_, EngineError>((inner.pending_purges()?, inner.trash_records()?))).await {
            Ok((names, records)) => {
                names.iter().for_each(|n| self.schedule_purge(n));
                records.into_iter().filter(|r| !names.contains(&r.name)).for_each(|r| self.purge_when_due(r));
            }
            Err(e) => tracing::warn!("cannot look for removed volumes left to delete: {e}"),
        }
    }
}

impl Inner {
    /// Hides the volume (directory state `removing`): from here on it is
    /// gone for Docker on every host; then moves its image to the trash.
    /// The caller schedules the rest (`schedule_purge`) right after.
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
        let vol = match store.header(&entry.pool, &entry.namespace, entry.image(name), entry.id.as_deref()) {
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
            if entry.adopted.is_none() && !image_is_this_volumes(&vol.metadata_get(VOLUME_KEY)?, name) {
                // A stale entry (a Create that crashed before its marker)
                // whose image is now another volume's, or adopted: never
                // deleted through this one.
                tracing::warn!("volume '{name}': its image is marked as another volume's; dropping the entry, keeping the image");
                self.dir_remove(&store, name)?;
                return Ok(Removed::AlreadyGone);
            }
            // Checked now: the deletion in the background could only log
            // it. An adopted image is not deleted: its snapshots and
            // clones stay with it.
            let image = pool.open_image_read_only(entry.image(name))?;
            let clones = if entry.adopted.is_some() { Vec::new() } else { image.children()? };
            if !clones.is_empty() {
                return Err(EngineError::HasClones { name: name.into(), clones: clones.join(", ") });
            }
            let snapshots = if entry.adopted.is_some() { Vec::new() } else { image.snapshots()? };
            if !snapshots.is_empty() {
                let snapshots = snapshots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
                return Err(EngineError::HasSnapshots { name: name.into(), snapshots });
            }
            timing::step("snapshots");
            let removing = DirEntry { state: EntryState::Removing, id, trash_delay_s: Some(self.cfg.trash_delay.as_secs()), ..entry.clone() };
            self.dir_put(&store, name, &removing)?;
            crash::point("remove.hidden", name);
            timing::step("directory: removing");
            Ok(Removed::Removed)
        })();
        self.release_host_lock_or_retry(&*vol);
        if matches!(hidden, Ok(Removed::Removed)) {
            // Out of `rbd ls` before Remove answers, if its watchers go in
            // time; else the background work moves it.
            if let Err(e) = self.trash_removed(name) {
                tracing::info!("the image of removed volume '{name}' goes to the trash in the background: {e}");
            }
            timing::step("trash");
        }
        hidden
    }

    /// Moves the image of a removed (`removing`) volume to the trash, then
    /// drops its directory entry: the name is free. Idempotent; what fails
    /// stays `removing` and is retried (in the background, at the next
    /// start, or by a Create of the same name).
    pub(super) fn trash_removed(&self, name: &str) -> Result<(), EngineError> {
        let store = self.ceph_store()?;
        let Some(entry) = self.dir_get(&store, name)?.filter(|e| e.state == EntryState::Removing) else { return Ok(()) };
        if let Some(image) = &entry.adopted {
            return self.forget_adopted(&store, name, image, &entry);
        }
        let pool = store.cluster().open_pool(&entry.pool, &entry.namespace)?;
        let id = match &entry.id {
            Some(id) => id.clone(),
            // An entry of an earlier version: the image's id by its name.
            None => match pool.image_id(name) {
                Ok(id) => id,
                Err(CephError::NotFound { .. }) => String::new(),
                Err(e) => return Err(e.into()),
            },
        };
        let marker = match (id.is_empty(), || pool.header(name, &id).and_then(|h| h.metadata_get(VOLUME_KEY))) {
            (true, _) => None,
            (false, read) => match read() {
                Ok(m) => m,
                Err(CephError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
        };
        if !id.is_empty() && !image_is_this_volumes(&marker, name) {
            tracing::warn!("removed volume '{name}': its image is marked as another volume's (adopted since?): dropping the entry, keeping the image");
        } else if !id.is_empty() {
            // The remover's delay, whichever host finishes the removal.
            let delay = entry.trash_delay_s.map(Duration::from_secs).unwrap_or(self.cfg.trash_delay);
            match trash::move_to_trash(store.dir()?, &pool, name, &id, delay) {
                Ok(_) | Err(CephError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Only the entry of the image moved: a Create (any host) may have
        // made the name anew meanwhile.
        if self.dir_get(&store, name)? == Some(entry) {
            self.dir_remove(&store, name)?;
        }
        timing::step("directory: remove");
        Ok(())
    }

    /// Forgets a removed adopted volume: rbdvol's keys off its image (which
    /// stays, with its data), then its directory entry.
    fn forget_adopted(&self, store: &super::store::CephStore, name: &str, image: &str, entry: &DirEntry) -> Result<(), EngineError> {
        match store.header(&entry.pool, &entry.namespace, image, entry.id.as_deref()) {
            Ok(vol) => {
                // Under the host lock, and only while the entry is still
                // this removal's: a host that forgot it and adopted it
                // anew meanwhile keeps its keys.
                self.take_host_lock(&*vol, name)?;
                let stripped = (|| -> Result<bool, EngineError> {
                    if self.dir_get(store, name)?.as_ref() != Some(entry) {
                        return Ok(false);
                    }
                    super::adopt::strip(&*vol, name)?;
                    crash::point("forget.stripped", name);
                    self.dir_remove(store, name)?;
                    Ok(true)
                })();
                self.release_host_lock_or_retry(&*vol);
                if !stripped? {
                    return Ok(());
                }
            }
            Err(CephError::NotFound { .. }) => {
                if self.dir_get(store, name)?.as_ref() == Some(entry) {
                    self.dir_remove(store, name)?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        let image = super::directory::image_ref(name, entry);
        tracing::info!("volume '{name}' forgotten: it was adopted, so its image {image} stays in the pool with its data (rbd rm deletes it)");
        Ok(())
    }

    /// A trashed image found back in its pool under its name: a restore
    /// cut short (finished here), or a removal still moving it (left be).
    pub(super) fn settle_in_pool(&self, record: &TrashRecord, entry: &DirEntry) -> Result<(), EngineError> {
        let store = self.ceph_store()?;
        match self.dir_get(&store, &record.name)? {
            None => {
                self.dir_put(&store, &record.name, entry)?;
                trash::forget(store.dir()?, &record.id)?;
            }
            Some(e) if e.state != EntryState::Removing && e.id == entry.id => {
                if e.state != EntryState::Ready {
                    self.dir_put(&store, &record.name, entry)?;
                }
                trash::forget(store.dir()?, &record.id)?;
            }
            // A removal still moving it (waiting for its watchers): the
            // record stays for the purge that follows the move.
            Some(_) => {}
        }
        Ok(())
    }

    /// The trash records in the default pool.
    pub(super) fn trash_records(&self) -> Result<Vec<TrashRecord>, EngineError> {
        let store = self.ceph_store()?;
        Ok(trash::records(store.dir()?)?)
    }

    /// Volumes whose image is still to be deleted.
    fn pending_purges(&self) -> Result<Vec<String>, EngineError> {
        Ok(self.read_directory()?.into_iter().filter(|(_, e)| e.state == EntryState::Removing).map(|(n, _)| n).collect())
    }
}

/// Whether an image whose marker is `marker` may be deleted as volume
/// `name`'s: unmarked (a Create cut short before its marker), or marked as
/// `name`'s own and not adopted.
fn image_is_this_volumes(marker: &Option<String>, name: &str) -> bool {
    match marker {
        None => true,
        Some(raw) => VolumeMeta::parse_any(raw).is_some_and(|m| m.name == name && !m.adopted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unmarked_image_or_the_volumes_own_is_ever_deleted_as_it() {
        let meta = |name: &str, adopted: bool| Some(format!(r#"{{"name":"{name}","fstype":"ext4","uid":null,"gid":null,"mode":null,"created_at":"t","adopted":{adopted}}}"#));
        assert!(image_is_this_volumes(&None, "web"));
        assert!(image_is_this_volumes(&meta("web", false), "web"));
        assert!(!image_is_this_volumes(&meta("x", false), "web"));
        assert!(!image_is_this_volumes(&meta("web", true), "web"));
        assert!(!image_is_this_volumes(&Some("{".into()), "web"));
    }
}
