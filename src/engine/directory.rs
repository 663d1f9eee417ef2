//! The volume directory (see `records`) as the engine reads and writes it,
//! and the short-lived caches in front of it: the listing (List) and Get's
//! answers. Every write goes through here, so the caches stay in step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::records::{self, DirEntry};
use crate::ceph::{CephError, Pool};
use super::store::Store;
use super::{EngineError, Inner, VolumeInfo};
use crate::host::ImageRef;

const DIRECTORY_TTL: Duration = Duration::from_secs(1);
const STATUS_TTL: Duration = Duration::from_secs(1);

/// The listing and Get's answers, each with when Ceph last confirmed it:
/// fresh ones (under a second) answer calls; older ones answer only while
/// the cluster cannot (see `health`), saying how old they are.
/// A cached answer: when it was read (for freshness) and when that was in
/// wall-clock time (for the caller).
type Cached<T> = (Instant, SystemTime, T);

#[derive(Default)]
pub(super) struct DirectoryCache {
    listing: Mutex<Option<Cached<BTreeMap<String, DirEntry>>>>,
    status: Mutex<HashMap<String, Cached<VolumeInfo>>>,
}

impl DirectoryCache {
    /// Forgets what Get said of `name`: it changed.
    pub fn invalidate(&self, name: &str) {
        self.status.lock().unwrap().remove(name);
    }

    /// Forgets the listing (the directory's pool changed).
    pub fn forget_listing(&self) {
        *self.listing.lock().unwrap() = None;
    }

    fn note(&self, name: &str, entry: Option<&DirEntry>) {
        if let Some((_, _, map)) = self.listing.lock().unwrap().as_mut() {
            match entry {
                Some(e) => map.insert(name.to_string(), e.clone()),
                None => map.remove(name),
            };
        }
        self.invalidate(name);
    }

    pub fn status(&self, name: &str) -> Option<VolumeInfo> {
        self.status.lock().unwrap().get(name).filter(|(at, _, _)| at.elapsed() < STATUS_TTL).map(|(_, _, info)| info.clone())
    }

    /// Get's last answer for `name`, however old, with when it was read.
    pub fn last_status(&self, name: &str) -> Option<(SystemTime, VolumeInfo)> {
        self.status.lock().unwrap().get(name).map(|(_, when, info)| (*when, info.clone()))
    }

    pub fn put_status(&self, info: &VolumeInfo) {
        self.status.lock().unwrap().insert(info.name.clone(), (Instant::now(), SystemTime::now(), info.clone()));
    }

    /// The directory as just read.
    pub fn put_listing(&self, map: BTreeMap<String, DirEntry>) {
        *self.listing.lock().unwrap() = Some((Instant::now(), SystemTime::now(), map));
    }

    /// The directory as the health prober read it: kept for answers from
    /// memory, but never fresh for List — a List reads the directory itself
    /// while the cluster answers, so a volume another host created a moment
    /// ago is listed at once, as before the prober.
    pub fn put_listing_for_memory(&self, map: BTreeMap<String, DirEntry>) {
        let now = Instant::now();
        *self.listing.lock().unwrap() = Some((now.checked_sub(DIRECTORY_TTL).unwrap_or(now), SystemTime::now(), map));
    }

    /// How many volumes the last listing read had, however old.
    pub fn known_count(&self) -> Option<usize> {
        self.listing.lock().unwrap().as_ref().map(|(_, _, map)| map.len())
    }

    /// The last listing read, however old, with when it was read.
    pub fn known_listing(&self) -> Option<(SystemTime, BTreeMap<String, DirEntry>)> {
        self.listing.lock().unwrap().as_ref().map(|(_, when, map)| (*when, map.clone()))
    }
}

/// Every entry of the directory kept in `pool` (unreadable ones left out).
pub(super) fn read_directory(pool: &Pool) -> Result<BTreeMap<String, DirEntry>, CephError> {
    Ok(records::parse_directory(pool.metadata_list(records::DIRECTORY_PREFIX)?))
}

/// The image of volume `name` in the directory.
pub(super) fn image_ref(name: &str, entry: &DirEntry) -> ImageRef {
    ImageRef { pool: entry.pool.clone(), namespace: entry.namespace.clone(), image: entry.image(name).to_string() }
}

impl Inner {
    pub(super) fn dir_get(&self, store: &dyn Store, name: &str) -> Result<Option<DirEntry>, EngineError> {
        Ok(store.entry(name)?)
    }

    pub(super) fn dir_put(&self, store: &dyn Store, name: &str, entry: &DirEntry) -> Result<(), EngineError> {
        store.put_entry(name, entry)?;
        self.cache.note(name, Some(entry));
        Ok(())
    }

    pub(super) fn dir_remove(&self, store: &dyn Store, name: &str) -> Result<(), EngineError> {
        store.remove_entry(name)?;
        self.cache.note(name, None);
        Ok(())
    }

    /// The directory, at most DIRECTORY_TTL old.
    pub(super) fn directory(&self) -> Result<BTreeMap<String, DirEntry>, EngineError> {
        if let Some((at, _, map)) = self.cache.listing.lock().unwrap().as_ref() {
            if at.elapsed() < DIRECTORY_TTL {
                return Ok(map.clone());
            }
        }
        let map = self.read_directory()?;
        self.cache.put_listing(map.clone());
        Ok(map)
    }

    /// The directory as it is now, bypassing (and not filling) the cache.
    pub(super) fn read_directory(&self) -> Result<BTreeMap<String, DirEntry>, EngineError> {
        Ok(self.store()?.entries()?)
    }
}
