//! Filesystems on mapped devices: probe, format (only a blank device), grow.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    /// The mount option that leaves the journal alone (a read-only mount
    /// that must not write).
    pub fn no_journal_replay(self) -> &'static str {
        match self {
            Fstype::Ext4 => "noload",
            Fstype::Xfs => "norecovery",
            Fstype::Btrfs => "rescue=nologreplay",
        }
    }

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

/// What blkid finds at the start and end of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// A filesystem (or other content blkid names by `TYPE`: swap, LUKS...).
    Filesystem(String),
    /// A partition table (`PTTYPE`).
    PartitionTable(String),
    /// Nothing blkid knows.
    Unknown,
}

/// How much of an image's start and end `probe_image` looks at: every
/// superblock rbdvol mounts (ext4, xfs, btrfs) and the signatures blkid
/// finds at a disk's end (GPT backup, RAID and ZFS labels).
pub const PROBE_SPAN: u64 = 1 << 20;

/// What is on an image of `size` bytes whose first and last bytes are
/// `head` and `tail` (read through librbd): blkid on a sparse scratch file
/// of the image's size holding them, in `dir` (no mapping needed). The
/// file is removed again.
pub fn probe_image(tools: &Tools, dir: &Path, name: &str, size: u64, head: &[u8], tail: &[u8]) -> Result<Contents, HostError> {
    use std::os::unix::fs::FileExt;
    let (scratch, file) = ScratchFs::sparse(dir, &format!("{name}.probe"), size)?;
    file.write_all_at(head, 0).map_err(HostError::io("write", &scratch.path))?;
    file.write_all_at(tail, size - tail.len() as u64).map_err(HostError::io("write", &scratch.path))?;
    drop(file);
    let path = scratch.path.to_string_lossy().into_owned();
    let out = tools.output(Tool::Blkid, &["-p", "-o", "export", &path])?;
    match out.status.code() {
        Some(0) => Ok(parse_blkid_export(&String::from_utf8_lossy(&out.stdout))),
        Some(2) => Ok(Contents::Unknown),
        _ => Err(HostError::ToolFailed {
            tool: "blkid",
            target: name.into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// `TYPE=` or `PTTYPE=` of `blkid -o export` output.
fn parse_blkid_export(out: &str) -> Contents {
    let value = |key: &str| out.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if let Some(t) = value("TYPE=") {
        return Contents::Filesystem(t);
    }
    value("PTTYPE=").map_or(Contents::Unknown, Contents::PartitionTable)
}

/// Whether `device` can be read at all (its first 64 KiB, where every
/// filesystem's superblock is): a probe that finds nothing on a device
/// that cannot be read means a broken mapping, not a blank disk.
pub fn check_readable(device: &Path) -> Result<(), std::io::Error> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(device)?;
    let mut buf = vec![0u8; 64 << 10];
    f.read_at(&mut buf, 0).map(drop)
}

/// Formats `device` as `fstype` unless it already holds that filesystem.
/// A device holding anything else is refused: rbdvol never reformats.
/// Returns whether it formatted.
pub fn format_if_blank(tools: &Tools, device: &Path, fstype: Fstype, extra: &[String]) -> Result<bool, HostError> {
    match probe(tools, device)? {
        Some(found) if found == fstype.as_str() => Ok(false),
        Some(found) => Err(HostError::WrongFilesystem { device: device.into(), found: format!("a {found} filesystem"), wanted: fstype.as_str().into() }),
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

/// Owner and mode for a new filesystem's root directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootOwner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl RootOwner {
    pub fn is_default(&self) -> bool {
        self.uid.is_none() && self.gid.is_none() && self.mode.is_none()
    }
}

/// Sets the root's owner and mode of the filesystem on `device`, through a
/// private mount at `tmp`.
pub fn set_root_owner(device: &Path, fstype: Fstype, tmp: &Path, owner: RootOwner) -> Result<(), HostError> {
    std::fs::create_dir_all(tmp).map_err(HostError::io("create", tmp))?;
    super::sys::mount(device, tmp, fstype.as_str(), fstype.implied_mount_options())?;
    let owned = super::sys::chown_chmod(tmp, owner.uid, owner.gid, owner.mode);
    let unmounted = super::sys::unmount(tmp);
    let _ = std::fs::remove_dir(tmp);
    owned.and(unmounted)
}

/// A filesystem made in a sparse scratch file instead of on the mapped
/// image. A brand-new image reads as zeros, so writing only the scratch
/// file's non-zero blocks into it gives exactly the image mkfs would have
/// made through a mapper — without mapping (a FUSE server and loop device,
/// or a kernel mapping) just to format, and in a few hundred KiB of writes:
/// ext4 writes ~300 KiB on a fresh 512 MiB device, xfs mostly zeros.
///
/// The file presents 512-byte sectors, as every mapper does, so mkfs picks
/// the same block and sector sizes. It is removed on drop.
#[derive(Debug)]
pub struct ScratchFs {
    path: PathBuf,
}

/// Zero blocks are skipped at this granularity.
const SCRATCH_BLOCK: usize = 64 << 10;

impl ScratchFs {
    /// Makes `fstype` in `dir/<name>.mkfs` of `size` bytes; `loop_tmp` is
    /// where the root is mounted when `owner` asks for a chown or chmod.
    /// An empty sparse file of `size` bytes, `<dir>/<name>.mkfs` (0600;
    /// a leftover of a crash is removed at the next start), removed when
    /// the returned value drops.
    fn sparse(dir: &Path, name: &str, size: u64) -> Result<(ScratchFs, std::fs::File), HostError> {
        std::fs::create_dir_all(dir).map_err(HostError::io("create", dir))?;
        let scratch = ScratchFs { path: dir.join(format!("{name}.mkfs")) };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&scratch.path)
            .map_err(HostError::io("create", &scratch.path))?;
        file.set_len(size).map_err(HostError::io("size", &scratch.path))?;
        Ok((scratch, file))
    }

    pub fn make(
        tools: &Tools,
        dir: &Path,
        name: &str,
        size: u64,
        fstype: Fstype,
        extra: &[String],
        owner: RootOwner,
    ) -> Result<ScratchFs, HostError> {
        let (scratch, file) = ScratchFs::sparse(dir, name, size)?;
        drop(file);
        format(tools, &scratch.path, fstype, extra)?;
        if !owner.is_default() {
            let device = super::sys::loop_attach(&scratch.path, 512, super::sys::LoopIo::Buffered, "rbdvol:mkfs", false)?;
            let owned = set_root_owner(&device, fstype, &dir.join(format!("{name}.root")), owner);
            let detached = super::sys::loop_detach(&device);
            owned.and(detached)?;
        }
        Ok(scratch)
    }

    /// Calls `write` for each run of non-zero data (at most `max` bytes,
    /// a multiple of 64 KiB), in order of offset.
    pub fn for_each_data<E: From<HostError>>(
        &self,
        max: usize,
        mut write: impl FnMut(u64, Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&self.path).map_err(HostError::io("open", &self.path))?;
        let size = file.metadata().map_err(HostError::io("stat", &self.path))?.len();
        let max = max.max(SCRATCH_BLOCK) / SCRATCH_BLOCK * SCRATCH_BLOCK;
        let mut block = vec![0u8; SCRATCH_BLOCK];
        let mut run: Option<(u64, Vec<u8>)> = None;
        let mut offset = 0u64;
        while offset < size {
            let Some((data, hole)) = super::sys::next_data(&file, &self.path, offset)? else { break };
            // Whole blocks, so writes stay aligned.
            let mut at = data / SCRATCH_BLOCK as u64 * SCRATCH_BLOCK as u64;
            while at < hole.min(size) {
                let len = (SCRATCH_BLOCK as u64).min(size - at) as usize;
                file.read_exact_at(&mut block[..len], at).map_err(HostError::io("read", &self.path))?;
                let zero = block[..len].iter().all(|&b| b == 0);
                match (&mut run, zero) {
                    (Some((start, buf)), false) if *start + buf.len() as u64 == at && buf.len() + len <= max => {
                        buf.extend_from_slice(&block[..len])
                    }
                    (_, false) => {
                        if let Some((start, buf)) = run.replace((at, block[..len].to_vec())) {
                            write(start, buf)?;
                        }
                    }
                    (_, true) => {
                        if let Some((start, buf)) = run.take() {
                            write(start, buf)?;
                        }
                    }
                }
                at += len as u64;
            }
            offset = hole.max(at);
        }
        if let Some((start, buf)) = run {
            write(start, buf)?;
        }
        Ok(())
    }
}

/// Removes the scratch files a crash left in `dir` (a Create killed while
/// formatting or copying): at start-up, when no Create runs.
pub fn remove_leftover_scratch(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "mkfs") {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!("removed {}, left by a create that did not finish", path.display()),
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn blkid_export_output_names_a_filesystem_before_a_partition_table() {
        assert_eq!(parse_blkid_export("DEVNAME=/x\nUUID=1\nBLOCK_SIZE=4096\nTYPE=ext4\n"), Contents::Filesystem("ext4".into()));
        assert_eq!(parse_blkid_export("DEVNAME=/x\nPTUUID=ab\nPTTYPE=gpt\n"), Contents::PartitionTable("gpt".into()));
        assert_eq!(parse_blkid_export("DEVNAME=/x\n"), Contents::Unknown);
        assert_eq!(parse_blkid_export("PTTYPE=\n"), Contents::Unknown);
    }
}
