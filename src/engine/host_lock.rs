//! One host at a time: rbdvol's host lock on the image header (cookie =
//! host id and installation id, `records::LockCookie`), taken before a
//! volume is mapped and released after it is unmapped; and whether its
//! holder is dead (automatic takeover).

use std::time::{Duration, Instant};

use super::records::{self, LockCookie, MountedBy, MOUNTED_KEY};
use super::fence::Renew;
use super::store::{Store, Volume};
use super::{takeover, EngineError, Inner};
use crate::host::crash;
use crate::ceph::{CephError, Done};

/// How long a Mount waits for a dead holder's watches to time out before
/// it answers (dockerd gives a managed plugin's calls 30 s).
const MOUNT_WAITS_FOR_WATCHES: Duration = Duration::from_secs(15);

impl Inner {
    fn cookie(&self) -> &str {
        &self.cookie
    }

    /// Whether a lock with `cookie` is this host's own: this installation's,
    /// or one for this host id with no installation (an older version's, an
    /// admin's `rbdvol takeover`).
    pub(super) fn is_own_lock(&self, cookie: &str) -> bool {
        cookie == self.cookie || LockCookie::parse(cookie) == LockCookie { host: &self.cfg.host_id, install: None }
    }

    /// Whether a lock with `cookie` was taken by this installation, under
    /// whatever host id.
    pub(super) fn is_own_install(&self, cookie: &str) -> bool {
        let ours = LockCookie::parse(&self.cookie).install;
        ours.is_some() && LockCookie::parse(cookie).install == ours
    }

    /// Takes this host's lock on `vol`, or says which host has it. The
    /// volume is noted on disk first: a lock this host takes is always
    /// either noted or released.
    pub(super) fn take_host_lock(&self, vol: &dyn Volume, name: &str) -> Result<(), EngineError> {
        self.lock_notes.note(name)?;
        match self.try_take_host_lock(vol, name) {
            Err(e @ (EngineError::MountedElsewhere { .. } | EngineError::DuplicateHostId { .. })) => Err(e),
            // The cluster may have applied it all the same (a timeout):
            // released in the background if so.
            Err(e) => {
                self.stale_locks.lock().unwrap().insert(name.to_string());
                Err(e)
            }
            ok => ok,
        }
    }

    fn try_take_host_lock(&self, vol: &dyn Volume, name: &str) -> Result<(), EngineError> {
        let desc = format!("rbdvol on {}", self.cfg.host_id);
        match vol.host_lock(self.cookie(), &desc) {
            Ok(_) => Ok(()),
            Err(CephError::LockBusy { .. }) => {
                let lockers = vol.host_lockers()?;
                let readers: Vec<String> = lockers.lockers.iter().filter(|l| !self.is_own_lock(&l.cookie)).map(|l| records::lock_host(&l.cookie).to_string()).collect();
                if lockers.tag == records::READ_ONLY_TAG && !readers.is_empty() {
                    self.lock_notes.clear(name)?;
                    return Err(EngineError::ReadOnlyHolders { name: name.to_string(), hosts: readers.join("', '") });
                }
                if let Some(other) = lockers.lockers.iter().find(|l| !self.is_own_lock(&l.cookie)) {
                    // Another host's: this host holds none.
                    self.lock_notes.clear(name)?;
                    let host = records::lock_host(&other.cookie).to_string();
                    if host == self.cfg.host_id {
                        return Err(EngineError::DuplicateHostId { name: name.to_string(), host, cookie: other.cookie.clone() });
                    }
                    let since = records::mounted_since(vol.metadata_get(MOUNTED_KEY)?.as_deref());
                    return Err(EngineError::MountedElsewhere { name: name.to_string(), host, since });
                }
                // Held by an earlier run of this installation (a restart
                // gives us a new client id), or for this host id by an admin
                // or an older version: take it over.
                for l in &lockers.lockers {
                    vol.host_break_lock(&l.client, &l.cookie)?;
                }
                vol.host_lock(self.cookie(), &desc)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes this host's share of the host lock on read-only volume `vol`
    /// (any number of hosts share it; none while a host holds it
    /// read-write), or says which host has it read-write. Noted on disk
    /// first, as `take_host_lock`.
    pub(super) fn take_shared_host_lock(&self, vol: &dyn Volume, name: &str) -> Result<(), EngineError> {
        self.lock_notes.note(name)?;
        let desc = format!("rbdvol read-only on {}", self.cfg.host_id);
        let taken = (|| {
            // A first Mount: a lock of this host's is an earlier run's.
            for l in vol.host_lockers()?.lockers.iter().filter(|l| self.is_own_lock(&l.cookie)) {
                vol.host_break_lock(&l.client, &l.cookie)?;
            }
            match vol.host_lock_shared(self.cookie(), &desc) {
                Err(CephError::LockBusy { .. }) => {
                    let holder = vol.host_lockers()?.lockers.first().map(|l| records::lock_host(&l.cookie).to_string()).unwrap_or_default();
                    self.lock_notes.clear(name)?;
                    let since = records::mounted_since(vol.metadata_get(MOUNTED_KEY)?.as_deref());
                    Err(EngineError::MountedElsewhere { name: name.to_string(), host: holder, since })
                }
                r => r.map(drop).map_err(EngineError::from),
            }
        })();
        if let Err(e) = &taken {
            if !matches!(e, EngineError::MountedElsewhere { .. }) {
                // The cluster may have applied it all the same.
                self.stale_locks.lock().unwrap().insert(name.to_string());
            }
        }
        taken
    }

    /// Releases this host's lock on `vol`, whichever client of this host
    /// holds it, and clears its note. Idempotent.
    pub(super) fn release_host_lock(&self, vol: &dyn Volume) -> Result<(), EngineError> {
        if vol.host_unlock(self.cookie())? == Done::AlreadyDone {
            for l in vol.host_lockers()?.lockers.iter().filter(|l| self.is_own_lock(&l.cookie)) {
                vol.host_break_lock(&l.client, &l.cookie)?;
            }
        }
        self.lock_notes.clear(vol.name())?;
        Ok(())
    }

    /// Lets go of `vol` in Ceph at the end of its last Unmount (or later,
    /// in the background): hosts fenced off it stay fenced while nobody
    /// holds it, its mounted-by record goes, then the lock. Taken over
    /// meanwhile, the record and the lock are the new holder's.
    pub(super) fn release_mounted(&self, store: &dyn Store, vol: &dyn Volume, name: &str) -> Result<(), EngineError> {
        // Usually no other host is fenced off it and this very client holds
        // the lock: then the record and the lock go in one operation that
        // asserts so (two round trips to the header instead of four).
        if self.fenced_others(vol)?.is_empty() && vol.remove_and_unlock(MOUNTED_KEY, self.cookie())? == Done::Changed {
            self.fence_renewed.lock().unwrap().remove(name);
            crash::point("unmount.released", name);
            return Ok(self.lock_notes.clear(name)?);
        }
        let lockers = vol.host_lockers()?;
        if !lockers.lockers.iter().any(|l| self.is_own_lock(&l.cookie)) {
            return Ok(self.lock_notes.clear(name)?);
        }
        if lockers.tag == records::READ_ONLY_TAG {
            // A read-only mount: no record, nobody fenced; only this host's share.
            self.release_host_lock(vol)?;
            crash::point("unmount.released", name);
            return Ok(());
        }
        self.keep_fenced(store, vol, name, Renew::Unmounting)?;
        vol.metadata_remove(MOUNTED_KEY)?;
        self.release_host_lock(vol)?;
        crash::point("unmount.released", name);
        Ok(())
    }

    /// Releases the lock on `vol`, or, when that fails, leaves it to the
    /// background (`release_stale_locks`), which retries until it is.
    pub(super) fn release_host_lock_or_retry(&self, vol: &dyn Volume) {
        if let Err(e) = self.release_host_lock(vol) {
            tracing::warn!("cannot release this host's lock on volume '{}' now (retried in the background): {e}", vol.name());
            self.stale_locks.lock().unwrap().insert(vol.name().to_string());
        }
    }

    /// Whether `host`, holding the volume, is dead: automatic takeover is on,
    /// its Consul session lapsed, and Ceph agrees — none of the clients it
    /// mounted with still watches the image (a dead client's watch times
    /// out within ~30 s; this waits up to 15 s, then `HolderDying` asks for
    /// a retry). A host cut off from Consul but still working with Ceph
    /// keeps its volumes.
    pub(super) fn holder_is_dead(&self, vol: &dyn Volume, host: &str) -> Result<bool, EngineError> {
        let Some(liveness) = self.liveness.get().filter(|_| self.cfg.auto_takeover) else { return Ok(false) };
        match liveness.liveness(host) {
            Ok(takeover::Liveness::Dead) => {}
            Ok(_) => return Ok(false),
            Err(e) => {
                tracing::warn!("cannot tell whether host '{host}' is alive: {e}");
                return Ok(false);
            }
        }
        let Some(by) = vol.metadata_get(MOUNTED_KEY)?.and_then(|m| MountedBy::parse(&m)) else { return Ok(true) };
        let theirs = by.all_clients();
        tracing::info!("volume '{}': host '{host}' lost its consul session; waiting for its clients' watches to time out", vol.name());
        let start = Instant::now();
        loop {
            let watching = takeover::watching_among(vol.watchers()?, &theirs);
            if watching.is_empty() {
                // Its plugin may have come back meanwhile (and reattached its
                // mapper under a new client): dead only if still so.
                return Ok(matches!(liveness.liveness(host), Ok(takeover::Liveness::Dead)));
            }
            // Well inside dockerd's 30 s: the caller retries.
            if start.elapsed() > MOUNT_WAITS_FOR_WATCHES {
                return Err(EngineError::HolderDying { name: vol.name().to_string(), host: host.to_string(), watchers: watching.join(", ") });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Fences the dead holder of `vol` and takes its lock (automatic
    /// takeover): on the real cluster only.
    pub(super) fn take_over_from_dead(&self, vol: &dyn Volume, name: &str) -> Result<(), EngineError> {
        let (image, header) = vol.ceph().ok_or_else(|| EngineError::NotFound(name.into()))?;
        let own = header.pool().cluster().own_address()?;
        if let Some(t) = takeover::fence_holder(header, image, &self.cfg.host_id, &own, self.cfg.blocklist_expiry)? {
            tracing::warn!("volume '{name}': took it over from host '{}', whose consul session lapsed", t.from);
        }
        self.take_host_lock(vol, name)
    }
}
