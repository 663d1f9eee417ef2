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
use super::{format, fs_options, Created, EngineError};
use super::options::VolumeOptions;
use crate::ceph::{CephError, Cluster, Header, Image, Pool};
use crate::host::fs::{self, Contents, Fstype};
use crate::host::tools::Tools;
use crate::host::{crash, ImageRef};

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
    /// crashed or failed adoption is finished by the next call.
    pub fn adopt(&self, name: &str, opts: &VolumeOptions) -> Result<Created, EngineError> {
        let image_name = opts.adopt.as_deref().expect("an adoption names its image");
        let target = ImageRef { pool: opts.pool.clone(), namespace: opts.namespace.clone(), image: image_name.into() };
        let refuse = |reason: String| EngineError::CannotAdopt { image: target.to_string(), reason };
        let resuming = match self.entry(name)? {
            None => false,
            Some(e) if e.state == EntryState::Ready => return Ok(Created::AlreadyExisted),
            Some(e) if e.state == EntryState::Removing => return Err(refuse(format!("volume '{name}' is being removed: retry in a moment"))),
            Some(e) if e.adopted.as_deref() == Some(image_name) && e.pool == opts.pool && e.namespace == opts.namespace => true,
            Some(_) => {
                return Err(refuse(format!(
                    "volume '{name}' is half-made from another image or as a new volume: repeat that create (rbdvol forget {name} drops a half-made adoption)"
                )))
            }
        };
        let pool = self.cluster.open_pool(&opts.pool, &opts.namespace)?;
        // Read-only: no watch of its own among the image's watchers.
        let image = match pool.open_image_read_only(image_name) {
            Ok(i) => i,
            Err(CephError::NotFound { .. }) => return Err(refuse(format!("it does not exist in pool '{}' (rbd ls {})", opts.pool, opts.pool))),
            Err(e) => return Err(e.into()),
        };
        let header = image.header()?;
        let all = image.metadata_list()?;
        let ours = VolumeMeta::of(&all, name).filter(|m| m.adopted && resuming);
        if let (Some(raw), None) = (all.get(VOLUME_KEY), &ours) {
            return Err(refuse(format!("it is already rbdvol volume '{}'", marker_name(raw))));
        }
        self.check_unused(&image, &header, &refuse)?;
        // A marker without `formatted`: this adoption's mkfs was cut short.
        let formatting_left = ours.as_ref().is_some_and(|_| !all.contains_key(FORMATTED_KEY));
        let (fstype, format) = match &ours {
            Some(m) if formatting_left => (m.fstype, true),
            _ => self.contents(&image, name, opts, &refuse)?,
        };
        fs_options::check_mount(fstype, &opts.mount_options).map_err(|reason| EngineError::InvalidOption {
            option: "mount_options".into(),
            value: opts.mount_options.clone(),
            reason: format!("{reason} (image '{target}' has a {} filesystem)", fstype.as_str()),
        })?;

        if !resuming {
            let intent = DirEntry {
                pool: opts.pool.clone(),
                namespace: opts.namespace.clone(),
                state: EntryState::Creating,
                id: None,
                trash_delay_s: None,
                adopted: Some(image_name.into()),
            };
            self.put_entry(name, &intent)?;
        }
        crash::point("adopt.intent", name);
        self.lock(&header, &refuse)?;
        let mut marked = false;
        let result = (|| {
            // Another host may have adopted it since the look above.
            if let Some(raw) = header.metadata_get(VOLUME_KEY)? {
                if VolumeMeta::parse_any(&raw).is_none_or(|m| m.name != name || !m.adopted) {
                    return Err(refuse(format!("it is already rbdvol volume '{}'", marker_name(&raw))));
                }
            }
            let meta = VolumeMeta {
                name: name.into(),
                fstype,
                mkfs_options: if format { opts.mkfs_options.clone() } else { Vec::new() },
                mount_options: opts.mount_options.clone(),
                uid: opts.uid.filter(|_| format),
                gid: opts.gid.filter(|_| format),
                mode: opts.mode.filter(|_| format),
                created_at: ours.as_ref().map_or_else(records::now_rfc3339, |m| m.created_at.clone()),
                cloned_from: None,
                adopted: true,
                read_only: opts.read_only,
            };
            for (key, value) in super::qos::metadata_changes(&opts.qos) {
                match value {
                    Some(v) => header.metadata_set(&key, &v)?,
                    None => header.metadata_remove(&key)?,
                }
            }
            let size = image.size()?;
            if format {
                // The marker first: a crash from here on formats again.
                header.metadata_set(VOLUME_KEY, &meta.to_json())?;
                marked = true;
                crash::point("adopt.marked", name);
                let owner = fs::RootOwner { uid: meta.uid, gid: meta.gid, mode: meta.mode };
                let writable = Arc::new(pool.open_image(image_name)?);
                format::format_blank_image(self.tools, self.scratch, &writable, name, &meta, owner)?;
                header.metadata_set(FORMATTED_KEY, &size.to_string())?;
            } else {
                header.metadata_set(FORMATTED_KEY, &size.to_string())?;
                header.metadata_set(VOLUME_KEY, &meta.to_json())?;
                marked = true;
                crash::point("adopt.marked", name);
            }
            let ready = DirEntry {
                pool: opts.pool.clone(),
                namespace: opts.namespace.clone(),
                state: EntryState::Ready,
                id: Some(header.id().to_string()),
                trash_delay_s: None,
                adopted: Some(image_name.into()),
            };
            self.put_entry(name, &ready)?;
            Ok(Created::New)
        })();
        if let Err(e) = header.host_unlock(self.cookie) {
            tracing::warn!("cannot release the host lock on {target} after adopting it (the next mount takes it over): {e}");
        }
        match result {
            Ok(created) => {
                tracing::info!("adopted image {target} as volume '{name}' ({}{})", fstype.as_str(), if format { ", formatted: it held no data" } else { "" });
                Ok(created)
            }
            // Marked: a retry finishes it (a cut-short mkfs is redone).
            Err(e) if marked => Err(e),
            Err(e) => {
                // Nothing of the image's data changed: take back the rest.
                if !resuming {
                    let _ = header.metadata_remove(FORMATTED_KEY);
                    if let Err(cleanup) = self.dir.metadata_remove(&records::directory_key(name)) {
                        tracing::error!("cannot remove the directory entry of failed adoption '{name}' (a retry finishes it): {cleanup}");
                    }
                }
                Err(e)
            }
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

    /// Takes the host lock for the writes; a lock of this very cookie left
    /// by a crashed adoption (no watchers: checked) is broken first.
    fn lock(&self, header: &Header, refuse: &dyn Fn(String) -> EngineError) -> Result<(), EngineError> {
        match header.host_lock(self.cookie, "rbdvol adopt") {
            Ok(_) => Ok(()),
            Err(CephError::LockBusy { .. }) => {
                let lockers = header.host_lockers()?.lockers;
                if lockers.iter().any(|l| l.cookie != self.cookie) {
                    return Err(refuse("another host is adopting or mounting it: retry".into()));
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

/// Takes rbdvol's keys off the adopted image of volume `name` (its data,
/// and any QoS limits, stay): the image is as it was before. The marker
/// goes last, so a crash leaves it to be forgotten again.
pub(super) fn strip(header: &Header, name: &str) -> Result<(), EngineError> {
    let Some(raw) = header.metadata_get(VOLUME_KEY)? else { return Ok(()) };
    if VolumeMeta::parse_any(&raw).is_none_or(|m| m.name != name || !m.adopted) {
        // Adopted again since, by another name: not this volume's keys.
        return Ok(());
    }
    for key in [MOUNTED_KEY, FENCED_KEY, FORMATTED_KEY, VOLUME_KEY] {
        header.metadata_remove(key)?;
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
