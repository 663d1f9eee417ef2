//! The store in memory, for unit tests of the engine's host path: a
//! directory, volumes with metadata, a host lock and watchers; any call
//! fails on request, and every change is recorded in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::{Store, Volume};
use crate::ceph::{CephError, Done, Locker, Lockers, Target};
use crate::engine::records::{lock_host, DirEntry};
use crate::host::mapper::fake::Journal;

#[derive(Debug, Clone, Default)]
pub struct MemoryVolume {
    pub id: String,
    pub size: u64,
    pub features: u64,
    pub metadata: BTreeMap<String, String>,
    /// Host lock holders: (client, cookie).
    pub lockers: Vec<(String, String)>,
    /// Whether the holders hold it shared (read-only mounts).
    pub shared: bool,
    pub watchers: Vec<String>,
}

#[derive(Default)]
struct State {
    directory: BTreeMap<String, DirEntry>,
    volumes: BTreeMap<String, MemoryVolume>,
    /// Calls that fail (by name, e.g. "metadata_set rbdvol.mounted").
    failing: BTreeSet<String>,
    /// A directory entry another host writes right after this one's next
    /// host lock is taken (a race, made deterministic).
    after_lock: Option<(String, Option<DirEntry>)>,
    /// A call that starts failing right after the next host lock is taken.
    fail_after_lock: Option<String>,
}

/// A store in memory. Cheap to clone; clones share their contents.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// The client id this store's "connection" has.
    client: String,
    /// Every change made, in order (shared with the fake mapper and mounts).
    pub journal: Journal,
}

fn target(name: &str) -> Target {
    Target::Image { pool: "rbd".into(), namespace: String::new(), image: name.into() }
}

impl MemoryStore {
    pub fn new(journal: Journal) -> MemoryStore {
        MemoryStore { state: Arc::default(), client: "client.4100".into(), journal }
    }

    /// Adds a ready volume called `name`.
    pub fn add_volume(&self, name: &str, volume: MemoryVolume) {
        let mut s = self.state.lock().unwrap();
        let entry = DirEntry { pool: "rbd".into(), namespace: String::new(), state: crate::engine::records::EntryState::Ready, id: Some(volume.id.clone()), trash_delay_s: None, adopted: None };
        s.directory.insert(name.to_string(), entry);
        s.volumes.insert(name.to_string(), volume);
    }

    pub fn volume(&self, name: &str) -> Option<MemoryVolume> {
        self.state.lock().unwrap().volumes.get(name).cloned()
    }

    /// Writes a directory entry as another host would.
    pub fn put_entry_raw(&self, name: &str, entry: DirEntry) {
        self.state.lock().unwrap().directory.insert(name.to_string(), entry);
    }

    /// Sets the host lock's holders as another host (or an admin) would.
    pub fn set_lockers(&self, name: &str, lockers: Vec<(String, String)>) {
        self.state.lock().unwrap().volumes.get_mut(name).unwrap().lockers = lockers;
    }

    /// Right after the next host lock is taken, sets volume `name`'s entry
    /// to `entry` (None: removed), as another host racing would.
    pub fn after_next_lock(&self, name: &str, entry: Option<DirEntry>) {
        self.state.lock().unwrap().after_lock = Some((name.to_string(), entry));
    }

    /// Makes `call` fail from right after the next host lock is taken.
    pub fn fail_after_next_lock(&self, call: &str) {
        self.state.lock().unwrap().fail_after_lock = Some(call.to_string());
    }

    /// Sets (or with None removes) a metadata key as another host would.
    pub fn set_metadata(&self, name: &str, key: &str, value: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        let v = s.volumes.get_mut(name).unwrap();
        match value {
            Some(val) => v.metadata.insert(key.into(), val.into()),
            None => v.metadata.remove(key),
        };
    }

    /// Makes every call work again.
    pub fn heal(&self) {
        self.state.lock().unwrap().failing.clear();
    }

    /// Makes every later call named `call` fail.
    pub fn fail(&self, call: &str) {
        self.state.lock().unwrap().failing.insert(call.to_string());
    }


    fn check(&self, call: &str, name: &str) -> Result<(), CephError> {
        if self.state.lock().unwrap().failing.contains(call) {
            return Err(CephError::TimedOut { op: "fail point", target: target(name), errno: libc::ETIMEDOUT });
        }
        Ok(())
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut MemoryVolume, &mut Vec<String>) -> Result<T, CephError>) -> Result<T, CephError> {
        let mut s = self.state.lock().unwrap();
        let mut log = self.journal.lock().unwrap();
        let v = s.volumes.get_mut(name).ok_or(CephError::NotFound { op: "open", target: target(name), errno: libc::ENOENT })?;
        f(v, &mut log)
    }
}

impl Store for MemoryStore {
    fn entry(&self, name: &str) -> Result<Option<DirEntry>, CephError> {
        self.check("entry", name)?;
        Ok(self.state.lock().unwrap().directory.get(name).cloned())
    }
    fn put_entry(&self, name: &str, entry: &DirEntry) -> Result<(), CephError> {
        self.check("put_entry", name)?;
        self.journal.lock().unwrap().push(format!("put_entry {name}"));
        let mut s = self.state.lock().unwrap();
        s.directory.insert(name.to_string(), entry.clone());
        Ok(())
    }
    fn remove_entry(&self, name: &str) -> Result<(), CephError> {
        self.check("remove_entry", name)?;
        self.journal.lock().unwrap().push(format!("remove_entry {name}"));
        let mut s = self.state.lock().unwrap();
        s.directory.remove(name);
        Ok(())
    }
    fn entries(&self) -> Result<BTreeMap<String, DirEntry>, CephError> {
        self.check("entries", "")?;
        Ok(self.state.lock().unwrap().directory.clone())
    }
    fn open(&self, name: &str, _entry: &DirEntry) -> Result<Box<dyn Volume>, CephError> {
        self.check("open", name)?;
        self.with(name, |_, _| Ok(()))?;
        Ok(Box::new(Handle { store: self.clone(), name: name.to_string(), id: self.volume(name).unwrap().id }))
    }
    fn header(&self, _pool: &str, _namespace: &str, image: &str, _id: Option<&str>) -> Result<Box<dyn Volume>, CephError> {
        self.check("header", image)?;
        self.open(image, &DirEntry { pool: String::new(), namespace: String::new(), state: crate::engine::records::EntryState::Ready, id: None, trash_delay_s: None, adopted: None })
    }
    fn own_address(&self) -> Result<String, CephError> {
        self.check("own_address", "")?;
        Ok("127.0.0.1:0/1000".into())
    }
    fn unblocklist(&self, addr: &str) -> Result<(), CephError> {
        self.check("unblocklist", addr)?;
        self.journal.lock().unwrap().push(format!("unblocklist {addr}"));
        Ok(())
    }
    fn blocklist(&self, addr: &str, expiry: std::time::Duration) -> Result<(), CephError> {
        self.check("blocklist", addr)?;
        self.journal.lock().unwrap().push(format!("blocklist {addr} {}", expiry.as_secs()));
        Ok(())
    }
}

struct Handle {
    store: MemoryStore,
    name: String,
    id: String,
}

impl Volume for Handle {
    fn name(&self) -> &str {
        &self.name
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn size(&self) -> Result<u64, CephError> {
        self.store.check("size", &self.name)?;
        self.store.with(&self.name, |v, _| Ok(v.size))
    }
    fn features(&self) -> Result<u64, CephError> {
        self.store.check("features", &self.name)?;
        self.store.with(&self.name, |v, _| Ok(v.features))
    }
    fn watchers(&self) -> Result<Vec<String>, CephError> {
        self.store.check("watchers", &self.name)?;
        self.store.with(&self.name, |v, _| Ok(v.watchers.clone()))
    }
    fn metadata(&self) -> Result<BTreeMap<String, String>, CephError> {
        self.store.check("metadata", &self.name)?;
        self.store.with(&self.name, |v, _| Ok(v.metadata.clone()))
    }
    fn metadata_get(&self, key: &str) -> Result<Option<String>, CephError> {
        self.store.check(&format!("metadata_get {key}"), &self.name)?;
        self.store.with(&self.name, |v, _| Ok(v.metadata.get(key).cloned()))
    }
    fn metadata_set(&self, key: &str, value: &str) -> Result<(), CephError> {
        self.store.check(&format!("metadata_set {key}"), &self.name)?;
        self.store.with(&self.name, |v, log| {
            log.push(format!("metadata_set {key}"));
            v.metadata.insert(key.into(), value.into());
            Ok(())
        })
    }
    fn metadata_remove(&self, key: &str) -> Result<(), CephError> {
        self.store.check(&format!("metadata_remove {key}"), &self.name)?;
        self.store.with(&self.name, |v, log| {
            // Like librbd: removing what is not there changes nothing.
            if v.metadata.remove(key).is_some() {
                log.push(format!("metadata_remove {key}"));
            }
            Ok(())
        })
    }
    fn host_lock(&self, cookie: &str, _description: &str) -> Result<Done, CephError> {
        self.store.check("host_lock", &self.name)?;
        let client = self.store.client.clone();
        let done = self.store.with(&self.name, |v, log| {
            if v.lockers.iter().any(|(c, k)| *c == client && k == cookie) {
                return Ok(Done::AlreadyDone);
            }
            if !v.lockers.is_empty() {
                return Err(CephError::LockBusy { op: "lock", target: target(&self.name), errno: libc::EBUSY });
            }
            log.push(format!("host_lock {}", lock_host(cookie)));
            v.lockers.push((client, cookie.to_string()));
            v.shared = false;
            Ok(Done::Changed)
        })?;
        let mut s = self.store.state.lock().unwrap();
        if let Some(call) = s.fail_after_lock.take() {
            s.failing.insert(call);
        }
        if let Some((name, entry)) = s.after_lock.take() {
            match entry {
                Some(e) => s.directory.insert(name, e),
                None => s.directory.remove(&name),
            };
        }
        Ok(done)
    }
    fn host_lock_shared(&self, cookie: &str, _description: &str) -> Result<Done, CephError> {
        self.store.check("host_lock_shared", &self.name)?;
        let client = self.store.client.clone();
        self.store.with(&self.name, |v, log| {
            if v.lockers.iter().any(|(c, k)| *c == client && k == cookie) {
                return Ok(Done::AlreadyDone);
            }
            if !v.lockers.is_empty() && !v.shared {
                return Err(CephError::LockBusy { op: "lock shared", target: target(&self.name), errno: libc::EBUSY });
            }
            log.push(format!("host_lock_shared {}", lock_host(cookie)));
            v.lockers.push((client, cookie.to_string()));
            v.shared = true;
            Ok(Done::Changed)
        })
    }
    fn host_unlock(&self, cookie: &str) -> Result<Done, CephError> {
        self.store.check("host_unlock", &self.name)?;
        let client = self.store.client.clone();
        self.store.with(&self.name, |v, log| {
            let before = v.lockers.len();
            v.lockers.retain(|(c, k)| !(*c == client && k == cookie));
            if v.lockers.len() == before {
                return Ok(Done::AlreadyDone);
            }
            log.push(format!("host_unlock {}", lock_host(cookie)));
            Ok(Done::Changed)
        })
    }
    fn remove_and_unlock(&self, key: &str, cookie: &str) -> Result<Done, CephError> {
        // The two steps it does, in one: a failure of either fails both.
        self.store.check(&format!("metadata_remove {key}"), &self.name)?;
        self.store.check("host_unlock", &self.name)?;
        let client = self.store.client.clone();
        self.store.with(&self.name, |v, log| {
            if v.shared || !v.lockers.iter().any(|(c, k)| *c == client && k == cookie) {
                return Ok(Done::AlreadyDone);
            }
            if v.metadata.remove(key).is_some() {
                log.push(format!("metadata_remove {key}"));
            }
            v.lockers.retain(|(c, k)| !(*c == client && k == cookie));
            log.push(format!("host_unlock {}", lock_host(cookie)));
            Ok(Done::Changed)
        })
    }
    fn host_lockers(&self) -> Result<Lockers, CephError> {
        self.store.check("host_lockers", &self.name)?;
        self.store.with(&self.name, |v, _| {
            let lockers = v.lockers.iter().map(|(c, k)| Locker { client: c.clone(), cookie: k.clone(), addr: "127.0.0.1:0/1".into() }).collect();
            let tag = if v.shared { crate::engine::records::READ_ONLY_TAG.to_string() } else { String::new() };
            Ok(Lockers { exclusive: !v.shared, tag, lockers })
        })
    }
    fn host_break_lock(&self, client: &str, cookie: &str) -> Result<Done, CephError> {
        self.store.check("host_break_lock", &self.name)?;
        self.store.with(&self.name, |v, log| {
            log.push(format!("host_break_lock {}", lock_host(cookie)));
            v.lockers.retain(|(c, k)| !(c == client && k == cookie));
            Ok(Done::Changed)
        })
    }
}
