//! The narrow interface over the few RADOS calls the engine's host path
//! makes — Mount, Unmount, the periodic check, reconcile — like ceph-csi's
//! over RADOS for its reference tracker: the volume directory, and on one
//! volume its header's host lock, rbdvol's keys, size, features and
//! watchers. [`CephStore`] is the real one; [`memory::MemoryStore`] (unit
//! tests) keeps it all in memory and fails on request.
//!
//! Create, clone, format, purge, Get and fencing use the Ceph layer
//! directly: they need images themselves (mkfs, clones, snapshots), and are
//! tested against a real cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::records::{self, DirEntry};
use crate::ceph::{CephError, Cluster, Done, Header, Image, Lockers, Pool};

/// The volume directory and its volumes.
pub(crate) trait Store: Send + Sync {
    fn entry(&self, name: &str) -> Result<Option<DirEntry>, CephError>;
    fn put_entry(&self, name: &str, entry: &DirEntry) -> Result<(), CephError>;
    fn remove_entry(&self, name: &str) -> Result<(), CephError>;
    fn entries(&self) -> Result<BTreeMap<String, DirEntry>, CephError>;
    /// Opens volume `name` read-write (a Mount: the image and its header).
    fn open(&self, name: &str, entry: &DirEntry) -> Result<Box<dyn Volume>, CephError>;
    /// Reaches the header of volume `image` without opening the image (its
    /// id, when known, saves a lookup).
    fn header(&self, pool: &str, namespace: &str, image: &str, id: Option<&str>) -> Result<Box<dyn Volume>, CephError>;
    /// This client's address, recorded as the holder's.
    fn own_address(&self) -> Result<String, CephError>;
    /// Blocklists client `addr` for `expiry` (again: an entry is renewed).
    fn blocklist(&self, addr: &str, expiry: std::time::Duration) -> Result<(), CephError>;
    /// Lifts the blocklisting of `addr`.
    fn unblocklist(&self, addr: &str) -> Result<(), CephError>;
}

/// One volume's image, as the host path uses it.
pub(crate) trait Volume: Send + Sync {
    fn name(&self) -> &str;
    fn id(&self) -> &str;
    fn size(&self) -> Result<u64, CephError>;
    fn features(&self) -> Result<u64, CephError>;
    /// Addresses of the clients watching the image.
    fn watchers(&self) -> Result<Vec<String>, CephError>;
    fn metadata(&self) -> Result<BTreeMap<String, String>, CephError>;
    fn metadata_get(&self, key: &str) -> Result<Option<String>, CephError>;
    fn metadata_set(&self, key: &str, value: &str) -> Result<(), CephError>;
    fn metadata_remove(&self, key: &str) -> Result<(), CephError>;
    fn host_lock(&self, cookie: &str, description: &str) -> Result<Done, CephError>;
    /// Takes the host lock shared (`records::READ_ONLY_TAG`), see
    /// `Header::host_lock_shared`.
    fn host_lock_shared(&self, cookie: &str, description: &str) -> Result<Done, CephError>;
    fn host_unlock(&self, cookie: &str) -> Result<Done, CephError>;
    /// Removes metadata `key` and releases this client's host lock held
    /// under `cookie`, atomically, only if this client holds it: else `AlreadyDone`,
    /// nothing changed (see `Header::remove_and_unlock`).
    fn remove_and_unlock(&self, key: &str, cookie: &str) -> Result<Done, CephError>;
    fn host_lockers(&self) -> Result<Lockers, CephError>;
    fn host_break_lock(&self, client: &str, cookie: &str) -> Result<Done, CephError>;
    /// The real image and header, for fencing and formatting new images;
    /// none in memory.
    fn ceph(&self) -> Option<(&Arc<Image>, &Header)> {
        None
    }
}

/// The store on a real cluster: the directory in the default pool.
pub(crate) struct CephStore {
    cluster: Cluster,
    dir_pool: String,
    /// Opened on first use: Unmount and the check never need it.
    dir: std::sync::OnceLock<Pool>,
}

impl CephStore {
    pub fn new(cluster: Cluster, dir_pool: &str) -> CephStore {
        CephStore { cluster, dir_pool: dir_pool.to_string(), dir: std::sync::OnceLock::new() }
    }

    /// The default pool, which holds the directory and the trash records.
    pub fn dir(&self) -> Result<&Pool, CephError> {
        if let Some(p) = self.dir.get() {
            return Ok(p);
        }
        let pool = self.cluster.open_pool(&self.dir_pool, "")?;
        Ok(self.dir.get_or_init(|| pool))
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Opens volume `name` read-write (its image: `entry` names an adopted
    /// one), as its concrete type.
    pub fn open_volume(&self, name: &str, entry: &DirEntry) -> Result<CephVolume, CephError> {
        let image_name = entry.image(name);
        let image = Arc::new(self.cluster.open_pool(&entry.pool, &entry.namespace)?.open_image(image_name)?);
        let header = image.header()?;
        Ok(CephVolume { name: image_name.to_string(), header, image: std::sync::OnceLock::from(image) })
    }
}

impl Store for CephStore {
    fn entry(&self, name: &str) -> Result<Option<DirEntry>, CephError> {
        Ok(self.dir()?.metadata_get(&records::directory_key(name))?.and_then(|r| DirEntry::parse(&r)))
    }

    fn put_entry(&self, name: &str, entry: &DirEntry) -> Result<(), CephError> {
        self.dir()?.metadata_set(&records::directory_key(name), &entry.to_json())
    }

    fn remove_entry(&self, name: &str) -> Result<(), CephError> {
        self.dir()?.metadata_remove(&records::directory_key(name))
    }

    fn entries(&self) -> Result<BTreeMap<String, DirEntry>, CephError> {
        super::directory::read_directory(self.dir()?)
    }

    fn open(&self, name: &str, entry: &DirEntry) -> Result<Box<dyn Volume>, CephError> {
        Ok(Box::new(self.open_volume(name, entry)?))
    }

    fn header(&self, pool: &str, namespace: &str, image: &str, id: Option<&str>) -> Result<Box<dyn Volume>, CephError> {
        let header = self.cluster.open_pool(pool, namespace)?.header_of(image, id)?;
        Ok(Box::new(CephVolume { name: image.to_string(), header, image: std::sync::OnceLock::new() }))
    }

    fn own_address(&self) -> Result<String, CephError> {
        self.cluster.own_address()
    }

    fn blocklist(&self, addr: &str, expiry: std::time::Duration) -> Result<(), CephError> {
        self.cluster.blocklist_add(addr, expiry)
    }

    fn unblocklist(&self, addr: &str) -> Result<(), CephError> {
        self.cluster.blocklist_remove(addr)
    }
}

/// A volume on the real cluster: its header, and its image once a call
/// needs it (opened read-only then: Unmount and the check never do).
pub(crate) struct CephVolume {
    name: String,
    header: Header,
    image: std::sync::OnceLock<Arc<Image>>,
}

impl CephVolume {
    pub fn image(&self) -> Result<&Arc<Image>, CephError> {
        if let Some(i) = self.image.get() {
            return Ok(i);
        }
        let image = Arc::new(self.header.pool().open_image_read_only(&self.name)?);
        Ok(self.image.get_or_init(|| image))
    }
}

impl Volume for CephVolume {
    fn name(&self) -> &str {
        &self.name
    }
    fn id(&self) -> &str {
        self.header.id()
    }
    fn size(&self) -> Result<u64, CephError> {
        // An open image knows its size; a header alone asks the OSD.
        match self.image.get() {
            Some(image) => image.size(),
            None => self.header.size(),
        }
    }
    fn features(&self) -> Result<u64, CephError> {
        self.image()?.features()
    }
    fn watchers(&self) -> Result<Vec<String>, CephError> {
        Ok(self.image()?.watchers()?.into_iter().map(|w| w.addr).collect())
    }
    fn metadata(&self) -> Result<BTreeMap<String, String>, CephError> {
        self.image()?.metadata_list()
    }
    fn metadata_get(&self, key: &str) -> Result<Option<String>, CephError> {
        self.header.metadata_get(key)
    }
    fn metadata_set(&self, key: &str, value: &str) -> Result<(), CephError> {
        self.header.metadata_set(key, value)
    }
    fn metadata_remove(&self, key: &str) -> Result<(), CephError> {
        self.header.metadata_remove(key)
    }
    fn host_lock(&self, cookie: &str, description: &str) -> Result<Done, CephError> {
        self.header.host_lock(cookie, description)
    }
    fn host_lock_shared(&self, cookie: &str, description: &str) -> Result<Done, CephError> {
        self.header.host_lock_shared(cookie, records::READ_ONLY_TAG, description)
    }
    fn host_unlock(&self, cookie: &str) -> Result<Done, CephError> {
        self.header.host_unlock(cookie)
    }
    fn remove_and_unlock(&self, key: &str, cookie: &str) -> Result<Done, CephError> {
        self.header.remove_and_unlock(key, cookie)
    }
    fn host_lockers(&self) -> Result<Lockers, CephError> {
        self.header.host_lockers()
    }
    fn host_break_lock(&self, client: &str, cookie: &str) -> Result<Done, CephError> {
        self.header.host_break_lock(client, cookie)
    }
    fn ceph(&self) -> Option<(&Arc<Image>, &Header)> {
        Some((self.image().ok()?, &self.header))
    }
}

#[cfg(test)]
pub(crate) mod memory;

/// An image's metadata keys, through its header (the CLI, adoption) or a
/// store's volume (the plugin): what QoS limits and rbdvol's own keys are
/// written and removed with.
pub(crate) trait ImageKeys {
    fn get(&self, key: &str) -> Result<Option<String>, CephError>;
    fn set(&self, key: &str, value: &str) -> Result<(), CephError>;
    fn remove(&self, key: &str) -> Result<(), CephError>;
}

impl ImageKeys for Header {
    fn get(&self, key: &str) -> Result<Option<String>, CephError> {
        self.metadata_get(key)
    }
    fn set(&self, key: &str, value: &str) -> Result<(), CephError> {
        self.metadata_set(key, value)
    }
    fn remove(&self, key: &str) -> Result<(), CephError> {
        self.metadata_remove(key)
    }
}

impl ImageKeys for dyn Volume + '_ {
    fn get(&self, key: &str) -> Result<Option<String>, CephError> {
        self.metadata_get(key)
    }
    fn set(&self, key: &str, value: &str) -> Result<(), CephError> {
        self.metadata_set(key, value)
    }
    fn remove(&self, key: &str) -> Result<(), CephError> {
        self.metadata_remove(key)
    }
}
