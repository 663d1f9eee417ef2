//! Remove through the RBD trash, as ceph-csi does: when Remove answers, the
//! volume's image is out of `rbd ls` (one fast move, whatever its size) and
//! its name is free for a Create at once; the image itself is purged
//! `RBDVOL_TRASH_DELAY` later (at once by default), until when `rbdvol trash
//! restore` brings the volume back with its data and metadata.
//!
//! Each trashed image has a record in the default pool (`records::
//! TrashRecord`), written before the move and deleted after the purge or the
//! restore: a crash anywhere leaves a record the next start finishes from.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::records::{self, DirEntry, EntryState, TrashRecord};
use super::EngineError;
use crate::ceph::{CephError, Cluster, Pool, Target};
use crate::host::crash;

/// How long a move waits for watchers on their way out (a mapper closing
/// after the last Unmount, udev probing a device just unmapped).
const WATCHERS_SETTLE: Duration = Duration::from_secs(10);

/// Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Every trash record in the default pool `dir`, oldest removal first.
pub fn records(dir: &Pool) -> Result<Vec<TrashRecord>, CephError> {
    let mut all = records::parse_trash(dir.metadata_list(records::TRASH_PREFIX)?);
    all.sort_by_key(|r| (r.removed_ms, r.name.clone()));
    Ok(all)
}

fn not_found(pool: &Pool, name: &str) -> CephError {
    CephError::NotFound {
        op: "move to trash",
        target: Target::Image { pool: pool.name().into(), namespace: pool.namespace().into(), image: name.into() },
        errno: libc::ENOENT,
    }
}

/// The record of image `id`, if any.
pub(super) fn record(dir: &Pool, id: &str) -> Result<Option<TrashRecord>, CephError> {
    Ok(dir.metadata_get(&records::trash_key(id))?.and_then(|r| TrashRecord::parse(&r)))
}

/// Moves image `name` of `pool` — only while it is still the one with id
/// `id` — to the trash, recorded in `dir` first (a record already there for
/// it is kept: a retry, or another host, does not move its purge time).
/// `NotFound` when no image of that name and id is in the pool (moved
/// already: its record stands).
pub(super) fn move_to_trash(dir: &Pool, pool: &Pool, name: &str, id: &str, delay: Duration) -> Result<TrashRecord, CephError> {
    let removed = now_ms();
    let fresh = |id: &str| TrashRecord {
        name: name.to_string(),
        pool: pool.name().to_string(),
        namespace: pool.namespace().to_string(),
        id: id.to_string(),
        removed_ms: removed,
        purge_after_ms: removed.saturating_add(delay.as_millis().min(u64::MAX as u128) as u64),
    };
    let record = match record(dir, id)? {
        Some(r) if r.name == name => r,
        _ => {
            let r = fresh(id);
            dir.metadata_set(&records::trash_key(id), &r.to_json())?;
            r
        }
    };
    crash::point("remove.recorded", name);
    let start = Instant::now();
    loop {
        match pool.image_id(name) {
            Ok(current) if current == id => {}
            Ok(_) | Err(CephError::NotFound { .. }) => return Err(not_found(pool, name)),
            Err(e) => return Err(e),
        }
        match pool.trash_move(name, delay) {
            Err(CephError::InUse { .. }) if start.elapsed() < WATCHERS_SETTLE => std::thread::sleep(Duration::from_millis(50)),
            // Another host moved it in the same moment.
            Err(CephError::NotFound { .. }) => return Err(not_found(pool, name)),
            Err(e) if e.errno() == Some(libc::ESTALE) => return Err(not_found(pool, name)),
            Err(e) => return Err(e),
            Ok(moved) => {
                if moved != id {
                    // librbd moves by name: another host made the name anew
                    // between the check and the move. Its image is in the
                    // trash now: recorded, so it is listed, restorable and
                    // purged like any other.
                    tracing::error!("moving removed volume '{name}' to the trash moved image id {moved}, made anew by another host meanwhile (expected {id}): `rbdvol trash restore {name}` brings it back");
                    dir.metadata_set(&records::trash_key(&moved), &fresh(&moved).to_json())?;
                }
                crash::point("remove.trashed", name);
                return Ok(record);
            }
        }
    }
}

/// What purging a record found.
#[allow(clippy::enum_variant_names)] // `Purged::Purged` reads as what happened
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Purged {
    /// The image is gone from the trash (purged now, or before), and the
    /// record with it.
    Purged,
    /// The image is back in its pool under its name: a restore cut short
    /// before it wrote the volume's directory entry, or a removal still
    /// waiting to move it. The caller decides (with the directory).
    InPool(DirEntry),
    /// The record changed since it was read (the image was restored and
    /// removed again): purge by the one now there, when it is due.
    Rescheduled(TrashRecord),
}

/// Purges the image of `record` for good (whatever the RBD trash's own
/// deferment says: the record's is rbdvol's) and deletes the record. The
/// record is read again first: a timer set for an earlier removal of the
/// same image never purges a later one early.
pub(super) fn purge(cluster: &Cluster, dir: &Pool, record: &TrashRecord) -> Result<Purged, CephError> {
    match self::record(dir, &record.id)? {
        None => return Ok(Purged::Purged),
        Some(current) if current != *record => return Ok(Purged::Rescheduled(current)),
        Some(_) => {}
    }
    let pool = cluster.open_pool(&record.pool, &record.namespace)?;
    match pool.trash_remove(&record.id, true) {
        Ok(()) => crash::point("purge.deleted", &record.name),
        Err(CephError::NotFound { .. }) => {
            if pool.image_id(&record.name).is_ok_and(|id| id == record.id) {
                let entry = DirEntry { pool: record.pool.clone(), namespace: record.namespace.clone(), state: EntryState::Ready, id: Some(record.id.clone()), trash_delay_s: None, adopted: None };
                return Ok(Purged::InPool(entry));
            }
            // Not in the pool by its name: moved into the trash between
            // the two looks? Then it is to purge after all.
            if pool.trash_list()?.iter().any(|e| e.id == record.id) {
                pool.trash_remove(&record.id, true)?;
            }
        }
        Err(e) => return Err(e),
    }
    dir.metadata_remove(&records::trash_key(&record.id))?;
    Ok(Purged::Purged)
}

/// Deletes the record of image `id` (restored or purged).
pub(super) fn forget(dir: &Pool, id: &str) -> Result<(), CephError> {
    dir.metadata_remove(&records::trash_key(id))
}

/// Brings volume `name` back from the trash (its latest removal), with its
/// data and metadata, for Docker on every host. Refused while a volume of
/// that name exists.
pub fn restore(cluster: &Cluster, dir_pool: &str, name: &str) -> Result<TrashRecord, EngineError> {
    super::options::validate_name(name)?;
    let dir = cluster.open_pool(dir_pool, "")?;
    let refused = |reason: String| EngineError::TrashRestore { name: name.into(), reason };
    let latest = records(&dir)?.into_iter().rev().find(|r| r.name == name);
    let existing = dir.metadata_get(&records::directory_key(name))?.and_then(|r| DirEntry::parse(&r));
    let claim = |record: &TrashRecord| DirEntry { pool: record.pool.clone(), namespace: record.namespace.clone(), state: EntryState::Creating, id: Some(record.id.clone()), trash_delay_s: None, adopted: None };
    match (&existing, &latest) {
        // A restore cut short after it listed the volume: only the record
        // is left to drop.
        (Some(e), Some(r)) if e.state == EntryState::Ready && e.id.as_deref() == Some(r.id.as_str()) => {
            forget(&dir, &r.id)?;
            return Ok(r.clone());
        }
        // A restore cut short after it claimed the name: go on.
        (Some(e), Some(r)) if *e == claim(r) => {}
        (Some(e), _) => {
            let what = match e.state {
                EntryState::Removing => "is being removed: try again in a moment",
                _ => "exists: remove it first, or restore once it is gone",
            };
            return Err(refused(format!("a volume named '{name}' {what}")));
        }
        (None, _) => {}
    }
    let Some(record) = latest else {
        return Err(refused("no such volume in the trash (rbdvol trash ls lists it; purged ones are gone)".into()));
    };
    // The name is claimed first (`creating`: hidden from Docker, and a
    // Create of the name finds its own image there and completes it):
    // never two volumes of one name.
    dir.metadata_set(&records::directory_key(name), &claim(&record).to_json())?;
    let pool = cluster.open_pool(&record.pool, &record.namespace)?;
    let give_back = |reason: String| -> Result<TrashRecord, EngineError> {
        let ours = dir.metadata_get(&records::directory_key(name))?.and_then(|r| DirEntry::parse(&r)) == Some(claim(&record));
        if ours {
            dir.metadata_remove(&records::directory_key(name))?;
        }
        Err(refused(reason))
    };
    match pool.trash_restore(&record.id, name) {
        Ok(()) => {}
        Err(CephError::AlreadyExists { .. }) => return give_back(format!("an image named '{name}' is in pool '{}' already", record.pool)),
        // Restored already, by a restore cut short: finish it.
        Err(CephError::NotFound { .. }) if pool.image_id(name).is_ok_and(|id| id == record.id) => {}
        Err(CephError::NotFound { .. }) => return give_back("its image was purged meanwhile".into()),
        Err(e) => {
            give_back(String::new()).ok();
            return Err(e.into());
        }
    }
    crash::point("restore.restored", name);
    let entry = DirEntry { state: EntryState::Ready, ..claim(&record) };
    dir.metadata_set(&records::directory_key(name), &entry.to_json())?;
    crash::point("restore.listed", name);
    forget(&dir, &record.id)?;
    Ok(record)
}
