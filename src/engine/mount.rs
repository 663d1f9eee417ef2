//! Mount and Unmount. A first Mount is a transaction: each step that has an
//! inverse is recorded as it is taken, and a failure undoes them in reverse
//! (like ceph-csi's stage transaction). Unmount, the release of a fenced
//! volume and reconcile take a volume off this host through the same
//! steps (`tear_down`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::directory::image_ref;
use super::format::Blank;
use super::records::{self, DirEntry, EntryState, MountedBy, VolumeMeta, FORMATTED_KEY, MOUNTED_KEY};
use super::store::{Store, Volume};
use super::{fs_options, timing, EngineError, Inner, Mounted, Unmounted};
use crate::host::fs::{self, Fstype};
use crate::host::mapper::{MapOptions, MapperKind, Mapping};
use crate::host::{crash, HostError, ImageRef};
use crate::state::MountedVolume;

/// A step of a Mount that has an inverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    HostLocked,
    Mapped(Mapping),
    MountpointMade(PathBuf),
    Mounted(PathBuf),
    MountedByRecorded,
}

/// How a volume leaves this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Teardown {
    /// Unmount and reconcile: the first failure stops it, the volume stays
    /// recorded and a retry finds it.
    Strict,
    /// A failed Mount's rollback: each failure is logged and passed over.
    Lenient,
    /// Another host took it over: detached lazily (its containers may hold
    /// it open), failures logged and passed over; nothing written to Ceph.
    /// Its device is removed by force (its I/O can only fail now).
    Fenced,
    /// Its lock was broken, but this host was never fenced (`rbdvol unlock
    /// --force`): as `Fenced`, but the device is removed only once nothing
    /// holds it (its I/O still works for containers that have it open).
    Lost,
}

/// The steps a first Mount took so far.
struct MountTransaction<'a> {
    inner: &'a Inner,
    vol: &'a dyn Volume,
    name: &'a str,
    steps: Vec<Step>,
}

impl<'a> MountTransaction<'a> {
    fn did(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// A step undone on the way (the unmount of an offline grow).
    fn undid(&mut self, step: &Step) {
        self.steps.retain(|s| s != step);
    }

    /// Undoes every step taken, in reverse.
    fn undo(self) {
        for step in self.steps.iter().rev() {
            if let Err(e) = self.inner.undo_step(step, Some(self.vol), Teardown::Lenient) {
                tracing::error!("rolling back mount of '{}': {e}", self.name);
            }
        }
    }
}

impl Inner {
    pub(super) fn mountpoint(&self, name: &str) -> PathBuf {
        self.cfg.mount_root.join(name)
    }

    /// Undoes one step of a Mount.
    pub(super) fn undo_step(&self, step: &Step, vol: Option<&dyn Volume>, how: Teardown) -> Result<(), EngineError> {
        match step {
            Step::Mounted(mp) if matches!(how, Teardown::Fenced | Teardown::Lost) => self.mount_table.unmount_detached(mp)?,
            Step::Mounted(mp) => self.mount_table.unmount(mp)?,
            Step::MountpointMade(mp) => {
                let _ = std::fs::remove_dir(mp);
            }
            Step::Mapped(m) if how == Teardown::Fenced => self.mapper.unmap_fenced(m)?,
            // Its containers may still use the lazily detached filesystem,
            // and may go on: never a forced unmap, whatever the volume asks.
            Step::Mapped(m) if how == Teardown::Lost => {
                let plain = Mapping { with: crate::host::mapper::MappedWith { unmap_options: Vec::new(), ..m.with.clone() }, ..m.clone() };
                self.mapper.unmap(&plain)?
            }
            Step::Mapped(m) => self.mapper.unmap(m)?,
            Step::MountedByRecorded => {
                if let Some(vol) = vol {
                    vol.metadata_remove(MOUNTED_KEY)?;
                }
            }
            Step::HostLocked => {
                if let Some(vol) = vol {
                    // An earlier run's record may be there (a lock this host
                    // left and took back): no record outlives the lock.
                    let _ = vol.metadata_remove(MOUNTED_KEY);
                    self.release_host_lock_or_retry(vol);
                }
            }
        }
        Ok(())
    }

    /// Takes volume `v` off this host — unmounted (when `mounted`), its
    /// mountpoint removed, `mapping` unmapped, forgotten — without touching
    /// Ceph.
    pub(super) fn tear_down(&self, v: &MountedVolume, mounted: bool, mapping: Option<Mapping>, how: Teardown) -> Result<(), EngineError> {
        let mut steps: Vec<Step> = mapping.map(Step::Mapped).into_iter().chain([Step::MountpointMade(v.mountpoint.clone())]).collect();
        if mounted {
            steps.push(Step::Mounted(v.mountpoint.clone()));
        }
        let lenient = |r: Result<(), EngineError>| match r {
            Err(e) if how != Teardown::Strict => {
                let what = if how == Teardown::Strict || how == Teardown::Lenient { "releasing volume" } else { "releasing a volume taken over" };
                tracing::warn!("{what} '{}': {e}", v.name);
                Ok(())
            }
            r => r,
        };
        // CSI's binds of the mountpoint first (a volume taken over while
        // staged): detached, as its containers may still hold them.
        for bind in super::publish::bind_targets(&v.refs) {
            lenient(self.mount_table.unbind(&v.device, &v.mountpoint, &bind, true).map(drop).map_err(EngineError::from))?;
        }
        for step in steps.iter().rev() {
            lenient(self.undo_step(step, None, how))?;
            if how == Teardown::Strict {
                match step {
                    Step::Mounted(_) => crash::point("unmount.unmounted", &v.name),
                    Step::Mapped(_) => crash::point("unmount.unmapped", &v.name),
                    _ => {}
                }
            }
            timing::step(match step {
                Step::Mounted(_) => "umount",
                Step::Mapped(_) => "unmap",
                _ => "rmdir",
            });
        }
        // Unmapped: the volume is free on this host whatever happens next.
        self.mounted.lock().unwrap().remove(&v.name);
        self.remount.lock().unwrap().remove(&v.name);
        lenient(self.state.remove(&v.name).map_err(EngineError::from))?;
        self.cache.invalidate(&v.name);
        timing::step("record");
        Ok(())
    }

    /// The mapping of a volume mounted here, as its state records it.
    pub(super) fn mapping_of(&self, v: &MountedVolume) -> Mapping {
        Mapping {
            image: ImageRef { pool: v.pool.clone(), namespace: v.namespace.clone(), image: v.image.clone() },
            device: v.device.clone(),
            mapper: MapperKind::parse(&v.mapper).unwrap_or(self.mapper.kind()),
            with: v.mapped_with.clone(),
        }
    }

    /// The image header of a volume mounted here (no lookup when its id is
    /// recorded).
    pub(super) fn header_of_mounted(&self, store: &dyn Store, v: &MountedVolume) -> Result<Box<dyn Volume>, EngineError> {
        Ok(store.header(&v.pool, &v.namespace, &v.image, v.image_id.as_deref())?)
    }

    /// Mount `attempt` (a number no other Mount call of this run has) of
    /// `name` for `id`.
    pub(super) fn mount(&self, name: &str, id: &str, attempt: u64) -> Result<Mounted, EngineError> {
        if self.remount.lock().unwrap().contains(name) {
            return Err(EngineError::TakingBack { name: name.to_string() });
        }
        if let Some(v) = self.mounted.lock().unwrap().get_mut(name) {
            if v.add_unanswered_ref(id, attempt, unix_now()) {
                self.state.save(v)?;
            }
            return Ok(Mounted::Again(v.mountpoint.clone()));
        }
        // Checked again under the lock: the volume may have left this host
        // (a last Unmount answered early during an outage) since the call
        // found it mounted here.
        let dir_pool = self.defaults.read().unwrap().pool.clone();
        let pool = self.known_pool(name);
        self.require_reachable(&[Some(dir_pool), pool].into_iter().flatten().collect::<Vec<_>>())?;
        let r = self.mount_first(name, id, attempt);
        if let Err(e) = &r {
            self.connection.forget_if_fenced(e);
        }
        r.map(Mounted::First)
    }

    fn mount_first(&self, name: &str, id: &str, attempt: u64) -> Result<PathBuf, EngineError> {
        let store = self.store()?;
        let entry = match self.dir_get(&*store, name)? {
            Some(e) if e.state != EntryState::Removing => e,
            _ => return Err(EngineError::NotFound(name.into())),
        };
        let image_ref = image_ref(name, &entry);
        timing::step("directory");
        let vol = store.open(name, &entry)?;
        timing::step("open image");
        if entry.state == EntryState::Creating {
            // Half-made by a crashed Create: complete it, then expose it.
            // An adoption only when it got as far as its marker and
            // `formatted` (it never formats here: the next Create does).
            let all = vol.metadata()?;
            let Some(meta) = VolumeMeta::of(&all, name) else { return Err(EngineError::NotFound(name.into())) };
            if meta.adopted != entry.adopted.is_some() || (meta.adopted && !all.contains_key(FORMATTED_KEY)) {
                return Err(EngineError::NotFound(name.into()));
            }
            self.ensure_formatted(&*vol, &image_ref, Blank::Unfinished)?;
            self.dir_put(&*store, name, &DirEntry { state: EntryState::Ready, ..entry.clone() })?;
        }
        let all = vol.metadata()?;
        let meta = VolumeMeta::of(&all, name).ok_or_else(|| EngineError::NotFound(name.into()))?;
        // What the image's metadata says goes to mount(2) only if allowed
        // (written by an older version, or by hand).
        fs_options::check_mount(meta.fstype, &meta.mount_options)
            .map_err(|reason| EngineError::RefusedRecord { name: name.into(), what: "mount options", key: records::VOLUME_KEY, reason })?;
        // Its map and unmap options likewise, before any lock or mapping.
        let how = super::map_options::for_volume(name, &meta, &self.defaults.read().unwrap().mapper_options, self.mapper.kind())?;
        let how = MapOptions { read_only: meta.read_only, ..how };
        if meta.read_only {
            self.take_shared_host_lock(&*vol, name)?;
        } else {
            match self.take_host_lock(&*vol, name) {
                Err(EngineError::MountedElsewhere { host, .. }) if self.holder_is_dead(&*vol, &host)? => self.take_over_from_dead(&*vol, name)?,
                r => r?,
            }
        }
        timing::step("host lock");
        crash::point("mount.locked", name);

        // From here on, a failure undoes every step taken.
        let mut tx = MountTransaction { inner: self, vol: &*vol, name, steps: vec![Step::HostLocked] };
        let result = self.map_and_mount(&mut tx, &*store, &entry, &image_ref, (&meta, &how), &all, (id, attempt));
        if result.is_err() {
            tx.undo();
        }
        self.cache.invalidate(name);
        result
    }

    /// The steps of a first Mount after the host lock: map, mount, grow the
    /// filesystem if the image grew, record who has it, save the state.
    #[allow(clippy::too_many_arguments)]
    fn map_and_mount(
        &self,
        tx: &mut MountTransaction<'_>,
        store: &dyn Store,
        entry: &DirEntry,
        image_ref: &ImageRef,
        (meta, how): (&VolumeMeta, &MapOptions),
        all: &BTreeMap<String, String>,
        (id, attempt): (&str, u64),
    ) -> Result<PathBuf, EngineError> {
        let (vol, name, fstype) = (tx.vol, tx.name, meta.fstype);
        // A Remove (any host) holds the lock while it hides the volume: the
        // entry read before the lock may be stale now.
        if !self.dir_get(store, name)?.is_some_and(|e| e.state != EntryState::Removing) {
            return Err(EngineError::NotFound(name.into()));
        }
        self.mapper.check_features(image_ref, vol.features()?)?;
        if self.mapper.kind() == MapperKind::Krbd {
            let limits = super::qos::limits_of(all);
            if !limits.is_empty() {
                tracing::warn!("volume '{name}' has QoS limits ({}) that krbd does not enforce: map it with nbd or userspace to enforce them", super::qos::describe(&limits));
            }
        }
        // Who watches before the mapping: not ours to record (this plugin's
        // own client is recorded as `addr`; others — a mgr, a backup job —
        // must never be fenced for this host).
        let before: BTreeSet<String> = if meta.read_only { BTreeSet::new() } else { vol.watchers()?.into_iter().collect() };
        let m = self.mapper.map(image_ref, &self.connection.settings()?, how)?;
        timing::step("map");
        let device = m.device.clone();
        let mapped_with = m.with.clone();
        tx.did(Step::Mapped(m));
        crash::point("mount.mapped", name);
        let mp = self.mountpoint(name);
        std::fs::create_dir_all(&mp).map_err(HostError::io("create", &mp))?;
        tx.did(Step::MountpointMade(mp.clone()));
        let options = mount_options(&meta.mount_options, fstype, meta.read_only);
        if let Err(e) = self.mount_table.mount(&device, &mp, fstype.as_str(), &options) {
            // Say what is on the device when it is not what we expect.
            if let Err(source) = fs::check_readable(&device) {
                return Err(EngineError::DeviceUnreadable { name: name.to_string(), device, source });
            }
            return Err(match fs::probe(&self.tools, &device)? {
                Some(found) if found == fstype.as_str() => e.into(),
                found => {
                    let found = found.map_or_else(|| "no filesystem".to_string(), |t| format!("a {t} filesystem"));
                    HostError::WrongFilesystem { device, found, wanted: fstype.as_str().into() }.into()
                }
            });
        }
        tx.did(Step::Mounted(mp.clone()));
        crash::point("mount.mounted", name);
        timing::step("mount");
        // Grow the filesystem when the image grew since it was made (never
        // a read-only one: mounted read-only everywhere, it cannot).
        let size = vol.size()?;
        let fs_size = records::parse_formatted(all.get(FORMATTED_KEY).map(String::as_str)).unwrap_or(size);
        if size > fs_size && !meta.read_only {
            if let Err(online) = fs::grow(&self.tools, fstype, &device, &mp) {
                if fstype != Fstype::Ext4 {
                    return Err(online.into());
                }
                tracing::warn!("growing '{name}' online failed ({online}): growing it offline");
                self.mount_table.unmount(&mp)?;
                tx.undid(&Step::Mounted(mp.clone()));
                fs::grow_ext4_offline(&self.tools, &device)?;
                self.mount_table.mount(&device, &mp, fstype.as_str(), &options)?;
                tx.did(Step::Mounted(mp.clone()));
            }
            vol.metadata_set(FORMATTED_KEY, &size.to_string())?;
        }
        // The mapping's clients: what watches now and did not before. A
        // read-only volume has no one holder to record (and none to fence:
        // its clients never write).
        if !meta.read_only {
            let clients = vol.watchers()?.into_iter().filter(|w| !before.contains(w)).collect();
            let by = MountedBy { host: self.cfg.host_id.clone(), addr: store.own_address()?, since: records::now_rfc3339(), clients };
            tx.did(Step::MountedByRecorded);
            vol.metadata_set(MOUNTED_KEY, &by.to_json())?;
        }
        crash::point("mount.recorded", name);
        let mut v = MountedVolume {
            name: name.into(),
            pool: entry.pool.clone(),
            namespace: entry.namespace.clone(),
            image: entry.image(name).into(),
            image_id: Some(vol.id().to_string()),
            mapper: self.mapper.kind().as_str().into(),
            device,
            mountpoint: mp.clone(),
            fstype: fstype.as_str().into(),
            refs: BTreeMap::new(),
            unanswered: Default::default(),
            read_only: meta.read_only,
            mapped_with,
        };
        v.add_unanswered_ref(id, attempt, unix_now());
        self.state.save(&v)?;
        self.mounted.lock().unwrap().insert(name.into(), v);
        crash::point("mount.saved", name);
        timing::step("record");
        Ok(mp)
    }

    /// The Mount of `name` for `id` was answered: a later Mount of `id` is
    /// another (docker cp), not a retry. Noted in memory at once, without
    /// the volume's lock — the next Mount of `id` may already wait for that
    /// lock — and saved by `save_mounted` under it.
    pub(super) fn note_answered(&self, name: &str, id: &str, attempt: u64) -> bool {
        self.mounted.lock().unwrap().get_mut(name).is_some_and(|v| v.answered(id, attempt))
    }

    /// Notes the answer again under the volume's lock (an Unmount that
    /// copied the entry before `note_answered` may have put the mark back)
    /// and saves the state.
    pub(super) fn mount_answered(&self, name: &str, id: &str, attempt: u64) -> Result<(), EngineError> {
        if let Some(v) = self.mounted.lock().unwrap().get_mut(name) {
            v.answered(id, attempt);
            self.state.save(v)?;
        }
        Ok(())
    }

    /// Drops the reference of Mount `attempt` for `id`, whose caller went
    /// away before its answer — unless a retry took it over since.
    pub(super) fn drop_unanswered(&self, name: &str, id: &str, attempt: u64) -> Result<Option<Unmounted>, EngineError> {
        let Some(mut v) = self.mounted.lock().unwrap().get(name).cloned() else { return Ok(None) };
        if !v.is_unanswered(id, attempt) {
            return Ok(None);
        }
        // Its reference and its mark go together; the last reference
        // unmounts as Unmount does.
        v.unanswered.remove(id);
        self.mounted.lock().unwrap().insert(name.to_string(), v);
        self.unmount(name, id).map(Some)
    }

    /// Drops `id`'s reference and saves the state, nothing else: the last
    /// Unmount answered early (the cluster down) is recorded before its
    /// answer, so a restart finishes its teardown instead of keeping a
    /// reference Docker will never drop.
    pub(super) fn drop_ref(&self, name: &str, id: &str) -> Result<(), EngineError> {
        if let Some(v) = self.mounted.lock().unwrap().get_mut(name) {
            v.drop_ref(id);
            self.state.save(v)?;
        }
        Ok(())
    }

    pub(super) fn unmount(&self, name: &str, id: &str) -> Result<Unmounted, EngineError> {
        let Some(mut v) = self.mounted.lock().unwrap().get(name).cloned() else {
            // Not mounted here: a lock this host left behind (a crash, a
            // forced plugin stop) is released now — or, with the cluster
            // down, once it answers.
            if self.health.down_anywhere().is_some() {
                self.stale_locks.lock().unwrap().insert(name.to_string());
                return Ok(Unmounted::NotMounted);
            }
            if let Err(e) = self.release_stale_lock(name) {
                tracing::warn!("cannot release this host's lock on volume '{name}': {e}");
            }
            return Ok(Unmounted::NotMounted);
        };
        v.drop_ref(id);
        if v.ref_count() > 0 {
            self.state.save(&v)?;
            let n = v.ref_count();
            self.mounted.lock().unwrap().insert(name.into(), v);
            return Ok(Unmounted::StillUsed(n));
        }
        // A mapping whose process died with a restart, not yet reattached:
        // reattached first, so the filesystem's last writes (queued in the
        // kernel) reach the image instead of failing with the unmap.
        if self.mapper.needs_reattach(&self.mapping_of(&v)) {
            let reattached = self.store().and_then(|store| {
                let vol = self.header_of_mounted(&*store, &v)?;
                self.reattach_if_dead(&*store, &*vol, &v)
            });
            if let Err(e) = reattached {
                tracing::warn!("volume '{name}': its mapping's process died and cannot be reattached before the unmount ({e}): writes still queued fail");
            }
        }
        self.tear_down(&v, true, Some(self.mapping_of(&v)), Teardown::Strict)?;
        crash::point("unmount.forgotten", name);
        // Unmounted and unmapped: done for Docker. The lock (and its record)
        // goes now, or in the background if the cluster does not answer
        // (known down: not even tried, so the Unmount answers at once).
        let dir_pool = self.defaults.read().unwrap().pool.clone();
        let released = (|| {
            if let Some(down) = self.health.down_for([dir_pool.as_str(), v.pool.as_str()]) {
                return Err(EngineError::ClusterUnreachable { detail: down.describe() });
            }
            let store = self.store()?;
            let vol = self.header_of_mounted(&*store, &v)?;
            self.release_mounted(&*store, &*vol, name)
        })();
        if let Err(e) = released {
            tracing::warn!("volume '{name}' is unmounted; its host lock is released in the background: {e}");
            self.stale_locks.lock().unwrap().insert(name.to_string());
        }
        timing::step("metadata, unlock");
        Ok(Unmounted::Released)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The volume's mount options with what its filesystem implies (xfs
/// clones: `nouuid`), and for a read-only volume `ro` with the journal left
/// alone (`noload`, `norecovery`, `rescue=nologreplay`): replaying it
/// would write, and every host mounts the same image.
pub(super) fn mount_options(options: &str, fstype: Fstype, read_only: bool) -> String {
    let mut all: Vec<&str> = options.split(',').filter(|o| !(o.is_empty() || read_only && *o == "rw")).collect();
    let mut implied = vec![fstype.implied_mount_options()];
    if read_only {
        implied.push("ro");
        implied.push(fstype.no_journal_replay());
    }
    for o in implied.into_iter().filter(|o| !o.is_empty()) {
        if !all.contains(&o) {
            all.push(o);
        }
    }
    all.join(",")
}

#[cfg(test)]
mod mount_options_tests {
    use super::*;

    #[test]
    fn read_only_volumes_are_mounted_ro_without_replaying_their_journal() {
        assert_eq!(mount_options("noatime", Fstype::Ext4, false), "noatime");
        assert_eq!(mount_options("", Fstype::Xfs, false), "nouuid");
        assert_eq!(mount_options("noatime,rw", Fstype::Ext4, true), "noatime,ro,noload");
        assert_eq!(mount_options("", Fstype::Xfs, true), "nouuid,ro,norecovery");
        assert_eq!(mount_options("ro", Fstype::Btrfs, true), "ro,rescue=nologreplay");
    }
}
