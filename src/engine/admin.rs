//! What the admin CLI reads and changes, straight from Ceph: no running
//! plugin needed, and the same directory, metadata and host lock the
//! plugin uses.

use std::collections::BTreeMap;

use super::records::{self, DirEntry, EntryState, MountedBy, VolumeMeta, MOUNTED_KEY};
use super::directory::read_directory;
use super::EngineError;
use super::takeover::{fence_holder, TakenOver};
use crate::ceph::{self, CephError, Cluster, Image};

/// One volume as `rbdvol ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeRow {
    pub name: String,
    pub pool: String,
    pub namespace: String,
    pub size: u64,
    pub used: u64,
    pub fstype: String,
    /// The host holding the volume's host lock ("" when none).
    pub host: String,
}

/// The volumes Docker sees (state `ready`).
fn directory(cluster: &Cluster, dir_pool: &str) -> Result<BTreeMap<String, DirEntry>, EngineError> {
    let mut dir = read_directory(&cluster.open_pool(dir_pool, "")?)?;
    dir.retain(|_, e| e.state == EntryState::Ready);
    Ok(dir)
}

fn open_read_only(cluster: &Cluster, name: &str, entry: &DirEntry) -> Result<Image, EngineError> {
    Ok(cluster.open_pool(&entry.pool, &entry.namespace)?.open_image_read_only(entry.image(name))?)
}

fn row(image: &Image, name: &str, entry: &DirEntry) -> Result<VolumeRow, EngineError> {
    let meta = image.metadata_list()?;
    // Read-only volumes: every host that holds a share.
    let host = image.header()?.host_lockers()?.lockers.iter().map(|l| records::lock_host(&l.cookie).to_string()).collect::<Vec<_>>().join(",");
    Ok(VolumeRow {
        name: name.to_string(),
        pool: entry.pool.clone(),
        namespace: entry.namespace.clone(),
        size: image.size()?,
        used: image.used_bytes()?,
        fstype: VolumeMeta::of(&meta, name).map(|m| m.fstype.as_str().to_string()).unwrap_or_default(),
        host,
    })
}

/// Every volume, with size, usage and the host that has it.
pub fn list(cluster: &Cluster, dir_pool: &str) -> Result<Vec<VolumeRow>, EngineError> {
    directory(cluster, dir_pool)?.iter().map(|(name, e)| row(&open_read_only(cluster, name, e)?, name, e)).collect()
}

/// One volume in detail: what `ls` shows, rbdvol's metadata, the image's
/// features, its watchers and the host lock.
pub fn inspect(cluster: &Cluster, dir_pool: &str, name: &str) -> Result<serde_json::Value, EngineError> {
    let dir = directory(cluster, dir_pool)?;
    let entry = dir.get(name).ok_or_else(|| EngineError::NotFound(name.to_string()))?;
    let image = open_read_only(cluster, name, entry)?;
    let r = row(&image, name, entry)?;
    let meta = image.metadata_list()?;
    let vm = VolumeMeta::of(&meta, name);
    let by = MountedBy::of(&meta);
    let lockers = image.header()?.host_lockers()?;
    Ok(serde_json::json!({
        "name": r.name,
        "pool": r.pool,
        "namespace": r.namespace,
        "id": image.id()?,
        "size": r.size,
        "used": r.used,
        "fstype": r.fstype,
        "features": ceph::features_to_string(image.features()?),
        "created_at": vm.as_ref().map(|v| v.created_at.clone()),
        "mkfs_options": vm.as_ref().map(|v| v.mkfs_options.clone()),
        "mount_options": vm.as_ref().map(|v| v.mount_options.clone()),
        "cloned_from": vm.as_ref().and_then(|v| v.cloned_from.clone()),
        "image": entry.image(name),
        "adopted": entry.adopted.is_some(),
        "readonly": vm.as_ref().is_some_and(|v| v.read_only),
        "clones": image.children()?,
        "mounted_by": by.as_ref().map(|b| &b.host),
        "mounted_since": by.as_ref().map(|b| &b.since),
        "client_address": by.as_ref().map(|b| &b.addr),
        "host_lock": lockers.lockers.iter().map(|l| serde_json::json!({"host": records::lock_host(&l.cookie), "cookie": l.cookie, "client": l.client, "address": l.addr})).collect::<Vec<_>>(),
        "watchers": image.watchers()?.iter().map(|w| w.addr.clone()).collect::<Vec<_>>(),
    }))
}

/// What `unlock` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlocked {
    /// The lock of this host was broken.
    Broken { host: String },
    /// Nobody held it.
    NotLocked,
}

/// Breaks a stale host lock (a host that died with the volume mounted)
/// without mapping anything. Refused while the image has watchers — a
/// holder that is alive, or whose watch has not yet timed out (~30 s) —
/// unless `force`: breaking a live holder's lock lets a second host mount
/// the volume under it; `takeover` fences it first.
pub fn unlock(cluster: &Cluster, dir_pool: &str, name: &str, force: bool) -> Result<Unlocked, EngineError> {
    let dir = directory(cluster, dir_pool)?;
    let entry = dir.get(name).ok_or_else(|| EngineError::NotFound(name.to_string()))?;
    let image = open_read_only(cluster, name, entry)?;
    let header = image.header()?;
    let lockers = header.host_lockers()?;
    let holders = lockers.lockers;
    let Some(holder) = holders.first().cloned() else { return Ok(Unlocked::NotLocked) };
    if lockers.tag == records::READ_ONLY_TAG && !force {
        let hosts = holders.iter().map(|h| records::lock_host(&h.cookie)).collect::<Vec<_>>().join("', '");
        return Err(EngineError::ReadersUnknown { name: name.to_string(), hosts });
    }
    let watchers = image.watchers()?;
    if !watchers.is_empty() && !force {
        return Err(EngineError::StillWatched {
            name: name.to_string(),
            host: records::lock_host(&holder.cookie).to_string(),
            since: records::mounted_since(header.metadata_get(MOUNTED_KEY)?.as_deref()),
            watchers: watchers.iter().map(|w| w.addr.clone()).collect::<Vec<_>>().join(", "),
        });
    }
    // Every holder: a read-only volume's readers share the lock.
    for h in &holders {
        match header.host_break_lock(&h.client, &h.cookie) {
            Ok(_) | Err(CephError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    header.metadata_remove(MOUNTED_KEY)?;
    let hosts: Vec<&str> = holders.iter().map(|h| records::lock_host(&h.cookie)).collect();
    Ok(Unlocked::Broken { host: hosts.join("', '") })
}

fn open(cluster: &Cluster, dir_pool: &str, name: &str) -> Result<crate::ceph::Image, EngineError> {
    let dir = directory(cluster, dir_pool)?;
    let entry = dir.get(name).ok_or_else(|| EngineError::NotFound(name.to_string()))?;
    Ok(cluster.open_pool(&entry.pool, &entry.namespace)?.open_image(entry.image(name))?)
}

/// Grows a volume's image (shrinking is refused). Its filesystem grows at
/// the volume's next mount; while mounted, it keeps its size until then.
pub fn resize(cluster: &Cluster, dir_pool: &str, name: &str, size: u64, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<ceph::Grow, EngineError> {
    let image = open(cluster, dir_pool, name)?;
    refuse_read_only(&image, name, "its filesystem never grows (every host mounts it read-only); make a clone of a larger one instead")?;
    let grown = image.grow(size, progress)?;
    // Killed here, the image is grown and nothing else is to do: the
    // holder grows the filesystem online, or the next Mount does.
    crate::host::crash::point("resize.grown", name);
    Ok(grown)
}

/// Sets a volume's QoS limits (`-o` names, e.g. `qos_iops` → 500; 0
/// removes a limit) and returns the limits it has then. librbd clients
/// that have the image open (the user-space mapper, rbd-nbd) take them up
/// at their next header refresh; krbd never enforces them.
pub fn qos(cluster: &Cluster, dir_pool: &str, name: &str, changes: &BTreeMap<String, u64>) -> Result<BTreeMap<String, u64>, EngineError> {
    let image = open(cluster, dir_pool, name)?;
    for (key, value) in super::qos::metadata_changes(changes) {
        match value {
            Some(v) => image.metadata_set(&key, &v)?,
            None => drop(image.metadata_remove(&key)?),
        }
    }
    Ok(super::qos::limits_of(&image.metadata_list()?))
}

/// Takes a snapshot of a volume. Of a mounted volume it is crash
/// consistent: what an fsync reached is in it.
pub fn snapshot_create(cluster: &Cluster, dir_pool: &str, name: &str, snap: &str) -> Result<crate::ceph::Done, EngineError> {
    super::options::validate_name(snap)?;
    Ok(open(cluster, dir_pool, name)?.snapshot_create(snap)?)
}

pub fn snapshot_list(cluster: &Cluster, dir_pool: &str, name: &str) -> Result<Vec<crate::ceph::Snapshot>, EngineError> {
    Ok(open(cluster, dir_pool, name)?.snapshots()?)
}

pub fn snapshot_remove(cluster: &Cluster, dir_pool: &str, name: &str, snap: &str) -> Result<crate::ceph::Done, EngineError> {
    Ok(open(cluster, dir_pool, name)?.snapshot_remove(snap)?)
}

/// Fences the host holding a volume and holds the volume for host `me`,
/// whose plugin then mounts it (it takes over a lock held under its own
/// host id). See `takeover::fence_holder`. Idempotent.
pub fn takeover(cluster: &Cluster, dir_pool: &str, name: &str, me: &str, expiry: std::time::Duration) -> Result<Option<TakenOver>, EngineError> {
    let dir = directory(cluster, dir_pool)?;
    let entry = dir.get(name).ok_or_else(|| EngineError::NotFound(name.to_string()))?;
    let image = open_read_only(cluster, name, entry)?;
    refuse_read_only(&image, name, "nothing to take over: its readers share it and never write (rbdvol unlock --force breaks a dead reader's share)")?;
    let header = image.header()?;
    let taken = fence_holder(&header, &image, me, &cluster.own_address()?, expiry)?;
    match header.host_lock(me, &format!("rbdvol takeover for {me}")) {
        Ok(_) => {}
        // Held for this host already (an earlier takeover).
        Err(CephError::LockBusy { .. }) if header.host_lockers()?.lockers.iter().all(|l| records::lock_host(&l.cookie) == me) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(taken)
}

/// Refuses what a read-only volume cannot do.
fn refuse_read_only(image: &Image, name: &str, why: &'static str) -> Result<(), EngineError> {
    if VolumeMeta::of(&image.metadata_list()?, name).is_some_and(|m| m.read_only) {
        return Err(EngineError::NotForReadOnly { name: name.to_string(), why });
    }
    Ok(())
}
