//! Adopting an image rbdvol did not make (`-o image=IMAGE`, `rbdvol
//! adopt`): a migration from a peer plugin, a restored backup, an image
//! made with `rbd create`. Its filesystem is found by blkid on a copy of
//! the image's first and last MiB (no mapping); an image that holds no data
//! at all is formatted only when `-o format=true` asks. Forgetting one
//! (Remove, `rbdvol forget`) takes rbdvol's keys off the image and leaves
//! the image, with its data, where it was.
//!
//! The order of the writes makes every crash resumable by the next Create
//! with the same options: the directory entry `creating` (adopted) first,
//! then under the host lock either `formatted` then the marker (an image
//! with a filesystem), or the marker then mkfs then `formatted` (a blank
//! one: a marker without `formatted` means formatting was cut short, and
//! it is formatted again — it held no data when it began).

use std::path::Path;
use std::sync::Arc;

use super::records::{self, DirEntry, EntryState, VolumeMeta, FENCED_KEY, FORMATTED_KEY, MOUNTED_KEY, VOLUME_KEY};
use super::store::ImageKeys;
use super::{format, fs_options, Created, EngineError};
use super::options::VolumeOptions;
use crate::ceph::{CephError, Cluster, Header, Image, Pool};
use crate::host::fs::{self, Contents, Fstype};
use crate::host::tools::Tools;
use crate::host::{crash, ImageRef};

/// Replays a filesystem's journal on an image (see `Adopter::settle`).
pub type Settle<'a> = dyn Fn(&ImageRef, Fstype) -> Result<(), EngineError> + 'a;

/// What an adoption works with.
pub struct Adopter<'a> {
    pub cluster: &'a Cluster,
    /// The default pool: the directory.
    pub dir: &'a Pool,
    pub tools: &'a Tools,
    /// Where the probe's scratch file (and a blank image's mkfs) goes.
    pub scratch: &'a Path,
    /// The host lock's cookie, held while the image's keys are written.
    pub cookie: &'a str,
    /// Whether a lock left under `cookie` by another client is a crashed
    /// earlier run's (the plugin's cookie), see `lock`.
    pub breaks_own_stale_lock: bool,
    /// Replays a read-only volume's journal once before it is ready (the
    /// plugin maps and mounts it read-write); none from the CLI, which
    /// refuses read-only adoptions.
    pub settle: Option<&'a Settle<'a>>,
    /// Set when the host lock could not be released (the caller leaves it
    /// to the background release).
    pub unlock_failed: std::cell::Cell<bool>,
}

/// What blkid's `TYPE` means for rbdvol: ext2 and ext3 are mounted by the
/// ext4 driver.
fn mountable(found: &str) -> Option<Fstype> {
    match found {
        "ext2" | "ext3" => Some(Fstype::Ext4),
        t => Fstype::parse(t),
    }
}

/// The volume name another rbdvol marker names, for the refusal.
fn marker_name(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw).ok().and_then(|v| v.get("name")?.as_str().map(str::to_string)).unwrap_or_else(|| "?".into())
}

impl Adopter<'_> {
    fn entry(&self, name: &str) -> Result<Option<DirEntry>, CephError> {
        Ok(self.dir.metadata_get(&records::directory_key(name))?.and_then(|r| DirEntry::parse(&r)))
    }

    fn put_entry(&self, name: &str, entry: &DirEntry) -> Result<(), CephError> {
        self.dir.metadata_set(&records::directory_key(name), &entry.to_json())
    }

    /// Makes volume `name` of the image `opts.adopt` names. Idempotent: a
    /// crashed or failed adoption is finished by the next call. Everything
    /// is looked at first (a clear error before anything is locked or
    /// written), then again under the image's host lock, where no other
    /// adoption, mount or remove can come between the look and the writes.
    pub fn adopt(&self, name: &str, opts: &VolumeOptions) -> Result<Created, EngineError> {
        let image_name = opts.adopt.as_deref().expect("an adoption names its image");
        let target = ImageRef { pool: opts.pool.clone(), namespace: opts.namespace.clone(), image: image_name.into() };
        let refuse = |reason: String| EngineError::CannotAdopt { image: target.to_string(), reason };
        if opts.read_only && self.settle.is_none() {
            return Err(refuse("a read-only adoption replays the filesystem's journal once, which needs the plugin: docker volume create -d rbd -o image=IMAGE -o readonly=true".into()));
        }
        if let Look::Done = self.look_at_entry(name, opts, &refuse)? {
            return Ok(Created::AlreadyExisted);
        }
        let pool = self.cluster.open_pool(&opts.pool, &opts.namespace)?;
        // Read-only: no watch of its own among the image's watchers.
        let image = match pool.open_image_read_only(image_name) {
            Ok(i) => i,
            Err(CephError::NotFound { .. }) => return Err(refuse(format!("it does not exist in pool '{}' (rbd ls {})", opts.pool, opts.pool))),
            Err(e) => return Err(e.into()),
        };
        let header = image.header()?;
        self.plan(name, opts, &image, &header, &refuse)?;
        self.lock(&header, &refuse)?;
        let result = self.adopt_locked(name, opts, &target, &pool, &image, &header, &refuse);
        if let Err(e) = header.host_unlock(self.cookie) {
            tracing::warn!("cannot release the host lock on {target} after adopting it (released in the background): {e}");
            self.unlock_failed.set(true);
        }
        result
    }

    /// Whether volume `name` is made already, half-made by an adoption of
    /// this very image (resumed), or absent.
    fn look_at_entry(&self, name: &str, opts: &VolumeOptions, refuse: &dyn Fn(String) -> EngineError) -> Result<Look, EngineError> {
        let image_name = opts.adopt.as_deref().unwrap_or_default();
        match self.entry(name)? {
            None => Ok(Look::Absent),
            Some(e) if e.state == EntryState::Ready => Ok(Look::Done),
            Some(e) if e.state == EntryState::Removing => Err(refuse(format!("volume '{name}' is being removed: retry in a moment"))),
            Some(e) if e.adopted.as_deref() == Some(image_name) && e.pool == opts.pool && e.namespace == opts.namespace => Ok(Look::Resuming),
            Some(_) => Err(refuse(format!(
                "volume '{name}' is half-made from another image or as a new volume: repeat that create (rbdvol forget {name} drops a half-made adoption)"
            ))),
        }
    }

    /// What adopting the image means now: finishing an adoption of it as
    /// `name`, formatting it, or keeping its filesystem. Refuses an image
    /// that is another volume's, in use, or holding what rbdvol cannot
    /// mount.
    fn plan(&self, name: &str, opts: &VolumeOptions, image: &Image, header: &Header, refuse: &dyn Fn(String) -> EngineError) -> Result<Plan, EngineError> {
        let all = image.metadata_list()?;
        if let Some(raw) = all.get(VOLUME_KEY) {
            return match VolumeMeta::parse_any(raw) {
                // This volume's adoption of it, done (but for the directory)
                // or cut short while formatting (it held no data when it
                // began): formatted again, as it recorded.
                Some(m) if m.name == name && m.adopted => Ok(if all.contains_key(FORMATTED_KEY) { Plan::Finish(m) } else { Plan::Format(m, true) }),
                _ => Err(refuse(format!("it is already rbdvol volume '{}'", marker_name(raw)))),
            };
        }
        self.check_unused(image, header, refuse)?;
        let (fstype, format) = self.contents(image, name, opts, refuse)?;
        fs_options::check_mount(fstype, &opts.mount_options).map_err(|reason| EngineError::InvalidOption {
            option: "mount_options".into(),
            value: opts.mount_options.clone(),
            reason: format!("{reason} (image '{}/{}' has a {} filesystem)", opts.pool, image.name(), fstype.as_str()),
        })?;
        let meta = VolumeMeta {
            name: name.into(),
            fstype,
            mkfs_options: if format { opts.mkfs_options.clone() } else { Vec::new() },
            mount_options: opts.mount_options.clone(),
            uid: opts.uid.filter(|_| format),
            gid: opts.gid.filter(|_| format),
            mode: opts.mode.filter(|_| format),
            created_at: records::now_rfc3339(),
            cloned_from: None,
            adopted: true,
            read_only: opts.read_only,
            map_options: opts.mapper_options.map.clone(),
            unmap_options: opts.mapper_options.unmap.clone(),
        };
        Ok(if format { Plan::Format(meta, false) } else { Plan::Keep(meta) })
    }

    /// The adoption under the image's host lock: every look again, then
    /// the writes. Takes back what it wrote when it fails before the
    /// marker; from the marker on, the retry finishes it.
    #[allow(clippy::too_many_arguments)]
    fn adopt_locked(
        &self,
        name: &str,
        opts: &VolumeOptions,
        target: &ImageRef,
        pool: &Pool,
        image: &Image,
        header: &Header,
        refuse: &dyn Fn(String) -> EngineError,
    ) -> Result<Created, EngineError> {
        let resuming = match self.look_at_entry(name, opts, refuse)? {
            Look::Done => return Ok(Created::AlreadyExisted),
            look => look == Look::Resuming,
        };
        let plan = self.plan(name, opts, image, header, refuse)?;
        if !resuming {
            let intent = DirEntry {
                pool: opts.pool.clone(),
                namespace: opts.namespace.clone(),
                state: EntryState::Creating,
                id: None,
                trash_delay_s: None,
                adopted: Some(target.image.clone()),
            };
            self.put_entry(name, &intent)?;
        }
        crash::point("adopt.intent", name);
        let (mut marked, mut wrote_formatted) = (false, false);
        let result = (|| {
            let size = image.size()?;
            let meta = match plan {
                Plan::Finish(meta) => meta,
                Plan::Format(meta, already_marked) => {
                    super::qos::apply(header, &opts.qos)?;
                    if !already_marked {
                        // The marker first: a crash from here on formats again.
                        header.metadata_set(VOLUME_KEY, &meta.to_json())?;
                    }
                    marked = true;
                    crash::point("adopt.marked", name);
                    let owner = fs::RootOwner { uid: meta.uid, gid: meta.gid, mode: meta.mode };
                    let writable = Arc::new(pool.open_image(&target.image)?);
                    format::format_blank_image(self.tools, self.scratch, &writable, name, &meta, owner)?;
                    header.metadata_set(FORMATTED_KEY, &size.to_string())?;
                    meta
                }
                Plan::Keep(meta) => {
                    super::qos::apply(header, &opts.qos)?;
                    header.metadata_set(FORMATTED_KEY, &size.to_string())?;
                    wrote_formatted = true;
                    header.metadata_set(VOLUME_KEY, &meta.to_json())?;
                    marked = true;
                    crash::point("adopt.marked", name);
                    meta
                }
            };
            if let (true, Some(settle)) = (meta.read_only, self.settle) {
                settle(target, meta.fstype)?;
            }
            let ready = DirEntry {
                pool: opts.pool.clone(),
                namespace: opts.namespace.clone(),
                state: EntryState::Ready,
                id: Some(header.id().to_string()),
                trash_delay_s: None,
                adopted: Some(target.image.clone()),
            };
            self.put_entry(name, &ready)?;
            tracing::info!("adopted image {target} as volume '{name}' ({})", meta.fstype.as_str());
            Ok(Created::New)
        })();
        match result {
            // Marked: a retry finishes it (a cut-short mkfs is redone).
            Err(e) if !marked => {
                // Nothing of the image's data changed: take back what this
                // call wrote, and only that.
                if wrote_formatted {
                    let _ = header.metadata_remove(FORMATTED_KEY);
                }
                if !resuming {
                    if let Err(cleanup) = self.dir.metadata_remove(&records::directory_key(name)) {
                        tracing::error!("cannot remove the directory entry of failed adoption '{name}' (a retry finishes it): {cleanup}");
                    }
                }
                Err(e)
            }
            r => r,
        }
    }

    /// Refuses an image that a client has open or mapped, or that someone
    /// locked: adopting it would put a second writer on its filesystem.
    fn check_unused(&self, image: &Image, header: &Header, refuse: &dyn Fn(String) -> EngineError) -> Result<(), EngineError> {
        let watchers = image.watchers()?;
        if !watchers.is_empty() {
            let addrs = watchers.iter().map(|w| w.addr.as_str()).collect::<Vec<_>>().join(", ");
            return Err(refuse(format!("it is open or mapped by {addrs}: unmap it there first (rbd device unmap, or the plugin that maps it)")));
        }
        // librbd's own lock (exclusive-lock feature, cookie `auto ...`) of
        // a client that no longer watches is stale: librbd breaks it.
        let locked: Vec<String> = image.lockers()?.lockers.into_iter().filter(|l| !l.cookie.starts_with("auto ")).map(|l| format!("{} ({})", l.client, l.cookie)).collect();
        if !locked.is_empty() {
            return Err(refuse(format!("it is locked by {} (rbd lock ls): release that lock first", locked.join(", "))));
        }
        let held: Vec<String> = header.host_lockers()?.lockers.into_iter().filter(|l| l.cookie != self.cookie).map(|l| records::lock_host(&l.cookie).to_string()).collect();
        if !held.is_empty() {
            return Err(refuse(format!("rbdvol host '{}' holds it", held.join("', '"))));
        }
        Ok(())
    }

    /// The filesystem on the image, or whether it is to be formatted.
    fn contents(&self, image: &Image, name: &str, opts: &VolumeOptions, refuse: &dyn Fn(String) -> EngineError) -> Result<(Fstype, bool), EngineError> {
        let size = image.size()?;
        let span = fs::PROBE_SPAN.min(size) as usize;
        let (mut head, mut tail) = (vec![0u8; span], vec![0u8; span]);
        image.read_at(0, &mut head)?;
        image.read_at(size - span as u64, &mut tail)?;
        match fs::probe_image(self.tools, self.scratch, name, size, &head, &tail)? {
            Contents::Filesystem(t) => match mountable(&t) {
                Some(f) => Ok((f, false)),
                None => Err(refuse(format!("it holds {t}, which rbdvol does not mount: ext4 (and ext2, ext3), xfs or btrfs on the whole image"))),
            },
            Contents::PartitionTable(t) => Err(refuse(format!("it has a {t} partition table: rbdvol mounts a filesystem on the whole image, not partitions"))),
            Contents::Unknown if image.used_bytes()? == 0 => {
                if opts.format {
                    Ok((opts.fstype, true))
                } else {
                    Err(refuse(format!("it is blank (it holds no data): add -o format=true to format it as {}", opts.fstype.as_str())))
                }
            }
            Contents::Unknown => Err(refuse("it holds data but no filesystem blkid knows: rbdvol never formats an image that holds data".into())),
        }
    }

    /// Takes the host lock for the writes. A lock under this very cookie
    /// held by another client is a crashed earlier run's when the cookie
    /// is the plugin's own (its installation's; the plugin adopts an image
    /// one call at a time): broken. The CLI's (the host id alone) may be
    /// another `rbdvol adopt` running: refused.
    fn lock(&self, header: &Header, refuse: &dyn Fn(String) -> EngineError) -> Result<(), EngineError> {
        match header.host_lock(self.cookie, "rbdvol adopt") {
            Ok(_) => Ok(()),
            Err(CephError::LockBusy { .. }) => {
                let lockers = header.host_lockers()?.lockers;
                if !self.breaks_own_stale_lock || lockers.iter().any(|l| l.cookie != self.cookie) {
                    let who = lockers.iter().map(|l| records::lock_host(&l.cookie).to_string()).collect::<Vec<_>>().join("', '");
                    return Err(refuse(format!("host '{who}' holds it (mounting it, or adopting it): retry once it is done")));
                }
                for l in &lockers {
                    header.host_break_lock(&l.client, &l.cookie)?;
                }
                header.host_lock(self.cookie, "rbdvol adopt")?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What a first look at the directory found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    Absent,
    /// Half-made by an earlier adoption of the same image.
    Resuming,
    /// Made already (Docker repeats a Create).
    Done,
}

/// What adopting the image takes.
enum Plan {
    /// Keep its filesystem.
    Keep(VolumeMeta),
    /// Format it (it holds no data); `true`: the marker is there already.
    Format(VolumeMeta, bool),
    /// Adopted already as this volume but for the directory.
    Finish(VolumeMeta),
}

/// Takes rbdvol's keys off the adopted image of volume `name` (its data,
/// and any QoS limits, stay): the image is as it was before. The marker
/// goes last, so a crash leaves it to be forgotten again.
pub(super) fn strip<K: ImageKeys + ?Sized>(keys: &K, name: &str) -> Result<(), EngineError> {
    let Some(raw) = keys.get(VOLUME_KEY)? else { return Ok(()) };
    if VolumeMeta::parse_any(&raw).is_none_or(|m| m.name != name || !m.adopted) {
        // Adopted again since, by another name: not this volume's keys.
        return Ok(());
    }
    for key in [MOUNTED_KEY, FENCED_KEY, FORMATTED_KEY, VOLUME_KEY] {
        keys.remove(key)?;
    }
    Ok(())
}

/// `rbdvol forget NAME`: forgets an adopted volume that no host has
/// mounted; its image stays. Holds the host lock under `cookie` meanwhile.
pub fn forget(cluster: &Cluster, dir_pool: &str, name: &str, cookie: &str) -> Result<ImageRef, EngineError> {
    let dir = cluster.open_pool(dir_pool, "")?;
    let key = records::directory_key(name);
    let entry = dir.metadata_get(&key)?.and_then(|r| DirEntry::parse(&r)).ok_or_else(|| EngineError::NotFound(name.into()))?;
    let Some(image_name) = entry.adopted.clone() else { return Err(EngineError::NotAdopted { name: name.into() }) };
    let target = ImageRef { pool: entry.pool.clone(), namespace: entry.namespace.clone(), image: image_name.clone() };
    let header = match cluster.open_pool(&entry.pool, &entry.namespace)?.header_of(&image_name, entry.id.as_deref()) {
        Ok(h) => Some(h),
        Err(CephError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(header) = &header {
        match header.host_lock(cookie, "rbdvol forget") {
            Ok(_) => {}
            // A half-made adoption's lock, left by a killed `rbdvol adopt`
            // of this host (nothing watches a half-made volume's image).
            Err(CephError::LockBusy { .. })
                if entry.state == EntryState::Creating
                    && header.host_lockers()?.lockers.iter().all(|l| l.cookie == cookie)
                    && header.pool().open_image_read_only(&image_name)?.watchers()?.is_empty() =>
            {
                for l in header.host_lockers()?.lockers {
                    header.host_break_lock(&l.client, &l.cookie)?;
                }
                header.host_lock(cookie, "rbdvol forget")?;
            }
            Err(CephError::LockBusy { .. }) => {
                let host = header.host_lockers()?.lockers.first().map(|l| records::lock_host(&l.cookie).to_string()).unwrap_or_default();
                let since = records::mounted_since(header.metadata_get(MOUNTED_KEY)?.as_deref());
                return Err(EngineError::MountedElsewhere { name: name.into(), host, since });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let result = (|| {
        dir.metadata_set(&key, &DirEntry { state: EntryState::Removing, ..entry.clone() }.to_json())?;
        if let Some(header) = &header {
            strip(header, name)?;
        }
        dir.metadata_remove(&key)?;
        Ok(target.clone())
    })();
    if let Some(header) = &header {
        let _ = header.host_unlock(cookie);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext2_and_ext3_are_mounted_as_ext4_and_unknown_types_are_not() {
        assert_eq!(mountable("ext3"), Some(Fstype::Ext4));
        assert_eq!(mountable("xfs"), Some(Fstype::Xfs));
        assert_eq!(mountable("crypto_LUKS"), None);
        assert_eq!(mountable("swap"), None);
    }

    #[test]
    fn the_other_volume_is_named_from_its_marker() {
        assert_eq!(marker_name(r#"{"name":"db","fstype":"ext4"}"#), "db");
        assert_eq!(marker_name("{"), "?");
    }
}
