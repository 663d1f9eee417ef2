//! Filesystems on mapped devices: probe, format (only a blank device), grow.

use std::path::Path;

use super::tools::{Tool, Tools};
use super::HostError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fstype {
    Ext4,
    Xfs,
    Btrfs,
}

impl Fstype {
    pub fn as_str(self) -> &'static str {
        match self {
            Fstype::Ext4 => "ext4",
            Fstype::Xfs => "xfs",
            Fstype::Btrfs => "btrfs",
        }
    }

    pub fn parse(s: &str) -> Option<Fstype> {
        match s {
            "ext4" => Some(Fstype::Ext4),
            "xfs" => Some(Fstype::Xfs),
            "btrfs" => Some(Fstype::Btrfs),
            _ => None,
        }
    }

    fn mkfs(self) -> Tool {
        match self {
            Fstype::Ext4 => Tool::MkfsExt4,
            Fstype::Xfs => Tool::MkfsXfs,
            Fstype::Btrfs => Tool::MkfsBtrfs,
        }
    }

    /// ceph-csi's choices for a fresh thin image: no discard pass (minutes
    /// per 100 GB), lazy init, no reserved blocks.
    pub fn default_mkfs_options(self) -> &'static [&'static str] {
        match self {
            Fstype::Ext4 => &["-m0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"],
            Fstype::Xfs => &["-K"],
            Fstype::Btrfs => &["--nodiscard"],
        }
    }

    /// Mount options every mount of this type gets (xfs clones share UUIDs).
    pub fn implied_mount_options(self) -> &'static str {
        match self {
            Fstype::Xfs => "nouuid",
            _ => "",
        }
    }

    pub fn available(self, tools: &Tools) -> bool {
        tools.has(self.mkfs())
    }
}

/// What filesystem (if any) is on a device. `None`: blank.
pub fn probe(tools: &Tools, device: &Path) -> Result<Option<String>, HostError> {
    let dev = device.to_string_lossy();
    // -p: low-level probe, bypassing the cache, so a fresh mkfs is seen.
    let out = tools.output(Tool::Blkid, &["-p", "-s", "TYPE", "-o", "value", &dev])?;
    match out.status.code() {
        Some(0) => {
            let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok((!t.is_empty()).then_some(t))
        }
        Some(2) => Ok(None), // nothing found
        _ => Err(HostError::ToolFailed {
            tool: "blkid",
            target: dev.into_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// Formats `device` as `fstype` unless it already holds that filesystem.
/// A device holding anything else is refused: rbdvol never reformats.
/// Returns whether it formatted.
pub fn format_if_blank(tools: &Tools, device: &Path, fstype: Fstype, extra: &[String]) -> Result<bool, HostError> {
    match probe(tools, device)? {
        Some(found) if found == fstype.as_str() => Ok(false),
        Some(found) => Err(HostError::WrongFilesystem { device: device.into(), found, wanted: fstype.as_str().into() }),
        None => format(tools, device, fstype, extra).map(|()| true),
    }
}

/// Formats `device`, which the caller knows to be blank (a brand-new image).
pub fn format(tools: &Tools, device: &Path, fstype: Fstype, extra: &[String]) -> Result<(), HostError> {
    let dev = device.to_string_lossy().into_owned();
    let mut args: Vec<&str> =
        if extra.is_empty() { fstype.default_mkfs_options().to_vec() } else { extra.iter().map(String::as_str).collect() };
    if fstype == Fstype::Ext4 {
        args.push("-F"); // a loop or rbd device is not "a partition"
    }
    if fstype == Fstype::Xfs {
        args.push("-f");
    }
    args.push(&dev);
    tools.run(fstype.mkfs(), &dev, &args).map(drop)
}

/// Grows the mounted filesystem to fill its device.
pub fn grow(tools: &Tools, fstype: Fstype, device: &Path, mountpoint: &Path) -> Result<(), HostError> {
    let dev = device.to_string_lossy().into_owned();
    let mnt = mountpoint.to_string_lossy().into_owned();
    match fstype {
        Fstype::Ext4 => tools.run(Tool::Resize2fs, &dev, &[&dev]).map(drop),
        Fstype::Xfs => tools.run(Tool::XfsGrowfs, &mnt, &[&mnt]).map(drop),
        Fstype::Btrfs => tools.run(Tool::Btrfs, &mnt, &["filesystem", "resize", "max", &mnt]).map(drop),
    }
}

/// Grows an unmounted ext4 filesystem: a forced check first (resize2fs
/// insists), then the resize. For hosts where online growth is refused (it
/// needs CAP_SYS_RESOURCE).
pub fn grow_ext4_offline(tools: &Tools, device: &Path) -> Result<(), HostError> {
    let dev = device.to_string_lossy().into_owned();
    let out = tools.output(Tool::E2fsck, &["-f", "-p", &dev])?;
    // 0: clean, 1: errors fixed; anything else needs a human.
    if !matches!(out.status.code(), Some(0) | Some(1)) {
        return Err(HostError::ToolFailed {
            tool: "e2fsck",
            target: dev,
            status: out.status.to_string(),
            stderr: format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    tools.run(Tool::Resize2fs, &dev, &[&dev]).map(drop)
}
