//! Mappers turn an RBD image into a block device on this host.
//!
//! - `krbd`: the kernel's rbd driver through sysfs;
//! - `nbd`: Ceph's `rbd-nbd` (librbd in a process, the kernel's nbd driver);
//! - `userspace`: a FUSE file backed by librbd in a detached rbdvol process,
//!   attached to a loop device, for kernels with neither module.

#[cfg(test)]
pub mod fake;
pub mod krbd;
pub mod nbd;
pub mod userspace;

use std::path::{Path, PathBuf};

use super::tools::{Tool, Tools};
use super::{HostError, ImageRef};
use crate::config::CephSettings;
pub use crate::state::MappedWith;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapperKind {
    Krbd,
    Nbd,
    Userspace,
}

impl MapperKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MapperKind::Krbd => "krbd",
            MapperKind::Nbd => "nbd",
            MapperKind::Userspace => "userspace",
        }
    }

    pub fn parse(s: &str) -> Option<MapperKind> {
        match s {
            "krbd" => Some(MapperKind::Krbd),
            "nbd" => Some(MapperKind::Nbd),
            "userspace" => Some(MapperKind::Userspace),
            _ => None,
        }
    }
}

/// An image mapped on this host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mapping {
    pub image: ImageRef,
    pub device: PathBuf,
    pub mapper: MapperKind,
    /// What it was mapped with (kept in this host's state: a restarted
    /// plugin unmaps and reattaches it the same way).
    #[serde(default)]
    pub with: MappedWith,
}

/// How to map an image: what the volume and the settings ask of the mapper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapOptions {
    /// Map read-only: krbd `ro`, rbd-nbd `--read-only`, the user-space
    /// server refusing writes.
    pub read_only: bool,
    /// Options for this mapper, already checked against its allowlist
    /// (`engine::map_options`): `name` or `name=value`.
    pub options: Vec<String>,
    /// Options for its unmap, likewise.
    pub unmap_options: Vec<String>,
}

/// What `Mapper::reattach` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reattached {
    /// The mapping's process is alive: nothing to do.
    Alive,
    /// A new process serves the device.
    Reattached,
}

/// Maps and unmaps images. Every operation is idempotent: mapping a mapped
/// image returns the existing mapping, unmapping an unmapped one is Ok.
pub trait Mapper: Send + Sync {
    fn kind(&self) -> MapperKind;

    /// Checks that this mapper can map an image with these feature bits.
    fn check_features(&self, image: &ImageRef, features: u64) -> Result<(), HostError>;

    fn map(&self, image: &ImageRef, settings: &CephSettings, how: &MapOptions) -> Result<Mapping, HostError>;

    fn unmap(&self, mapping: &Mapping) -> Result<(), HostError>;
    /// Unmaps a device whose client has been fenced (blocklisted): none of
    /// its I/O can reach Ceph any more, so pending I/O is failed and the
    /// device removed even while something still holds it open (a
    /// container's file in a lazily detached filesystem).
    fn unmap_fenced(&self, mapping: &Mapping) -> Result<(), HostError> {
        self.unmap(mapping)
    }

    /// Prepares for the first map (the user-space mapper starts a spare
    /// server); by default nothing.
    fn warm_up(&self, _settings: &CephSettings) {}

    /// The existing mapping of `image`, if any (found after a restart).
    fn find(&self, image: &ImageRef) -> Result<Option<Mapping>, HostError> {
        Ok(self.list()?.into_iter().find(|m| &m.image == image))
    }

    /// Every mapping this mapper has on the host.
    fn list(&self) -> Result<Vec<Mapping>, HostError>;

    /// Makes the mapped device show the image's new size `size` (after a
    /// grow); returns once it does. krbd and rbd-nbd follow the image's
    /// header on their own; by default this only waits for them.
    fn refresh_size(&self, mapping: &Mapping, size: u64) -> Result<(), HostError> {
        wait_for_size(&mapping.device, size)
    }

    /// The I/O counters and memory of the process serving `image`, for the
    /// metrics: only the user-space mapper has such a process of its own.
    /// Reads files only; never the cluster.
    fn io_stats(&self, _image: &ImageRef) -> Option<super::io_stats::IoStats> {
        None
    }

    /// Gives a mapping whose process died (rbd-nbd killed with the plugin)
    /// a new one, attached to the same device, while the kernel still
    /// waits for it; by default (krbd: the kernel's; user-space: never
    /// reattached) nothing.
    fn reattach(&self, _mapping: &Mapping, _settings: &CephSettings) -> Result<Reattached, HostError> {
        Ok(Reattached::Alive)
    }

    /// Whether `reattach` has work to do: the mapping's process died and
    /// the kernel waits for a new one. Cheap (reads /proc and sysfs); by
    /// default never.
    fn needs_reattach(&self, _mapping: &Mapping) -> bool {
        false
    }

    /// Removes what the mapping this host recorded for a volume left when
    /// its process died and nothing else names it any more (the user-space
    /// server's directory gone with the plugin's rootfs in an upgrade);
    /// by default nothing.
    fn forget_dead(&self, _recorded: &Mapping) -> Result<(), HostError> {
        Ok(())
    }

    /// Removes what mappings whose process died left behind (at start-up);
    /// by default nothing.
    fn clean_up_dead(&self) -> Result<(), HostError> {
        Ok(())
    }
}

/// The longest a mapped device's request may wait on the cluster before it
/// fails: krbd's `osd_request_timeout`, rbd-nbd's `--io-timeout` and its
/// librbd's `rados_osd_op_timeout`, the user-space server's
/// `rados_osd_op_timeout`. A fenced host's requests therefore end within
/// it, well inside the shortest blocklist expiry (60 s).
pub const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits (up to 10 s) until `device` is at least `size` bytes.
pub(crate) fn wait_for_size(device: &Path, size: u64) -> Result<(), HostError> {
    let start = std::time::Instant::now();
    loop {
        let now = super::sys::block_device_size(device)?;
        if now >= size {
            return Ok(());
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            return Err(HostError::Invalid {
                what: "device size",
                value: device.display().to_string(),
                reason: format!("still {now} bytes, 10 s after the image grew to {size}"),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Where mappers keep their runtime files, and where to look for sysfs.
#[derive(Debug, Clone)]
pub struct MapperConfig {
    /// Runtime directory (the user-space mapper's FUSE mounts and pid files).
    pub run_dir: PathBuf,
    /// `/sys` (a fixture tree in unit tests).
    pub sysfs: PathBuf,
    /// The rbdvol binary the user-space mapper re-executes.
    pub exe: PathBuf,
}

/// Picks a mapper: krbd when the rbd module is (or can be) loaded, else nbd
/// when the nbd module and rbd-nbd are there, else the user-space mapper.
pub fn detect(config: &MapperConfig, tools: &Tools) -> MapperKind {
    let bus = config.sysfs.join("bus/rbd");
    if bus.exists() || (tools.has(Tool::Modprobe) && tools.run(Tool::Modprobe, "rbd", &["rbd"]).is_ok() && bus.exists()) {
        return MapperKind::Krbd;
    }
    let nbd = Path::new("/sys/module/nbd").exists()
        || (tools.has(Tool::Modprobe) && tools.run(Tool::Modprobe, "nbd", &["nbd"]).is_ok());
    if nbd && tools.has(Tool::RbdNbd) {
        return MapperKind::Nbd;
    }
    MapperKind::Userspace
}

pub fn build(kind: MapperKind, config: &MapperConfig, tools: &Tools) -> Box<dyn Mapper> {
    match kind {
        MapperKind::Krbd => Box::new(krbd::Krbd::new(config.sysfs.clone(), tools.clone())),
        MapperKind::Nbd => Box::new(nbd::Nbd::new(tools.clone(), config.run_dir.join("nbd"))),
        MapperKind::Userspace => Box::new(userspace::Userspace::new(config.run_dir.join("userspace"), config.exe.clone())),
    }
}
