//! Thin wrappers over the syscalls rbdvol makes: mount, loop devices, the
//! kernel keyring, ownership, process checks. Each names the path it acted on.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};

use super::HostError;

// ---- mounts --------------------------------------------------------------

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    /// major:minor of the mounted device.
    pub dev: String,
}

/// Parses mountinfo text (see proc(5)); octal escapes (`\040`) are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                dev: fields.get(2)?.to_string(),
                target: PathBuf::from(unescape(fields.get(4)?)),
                fstype: fields.get(sep + 1)?.to_string(),
                source: unescape(fields.get(sep + 2)?),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn mounts() -> Result<Vec<MountEntry>, HostError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(HostError::io("read", "/proc/self/mountinfo"))?;
    Ok(parse_mountinfo(&text))
}

/// Flags `mount(8)` understands as flags rather than filesystem data.
fn split_mount_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match opt {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            "lazytime" => flags |= MsFlags::MS_LAZYTIME,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

pub fn mount(device: &Path, target: &Path, fstype: &str, options: &str) -> Result<(), HostError> {
    let (flags, data) = split_mount_options(options);
    nix::mount::mount(Some(device), target, Some(fstype), flags, (!data.is_empty()).then_some(data.as_str()))
        .map_err(HostError::sys("mount", target))
}

/// Binds directory `source` at `target`, making `target` (a directory) if
/// missing; read-only by a remount of the bind (the only way the kernel
/// takes it), undone if that fails.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), HostError> {
    std::fs::create_dir_all(target).map_err(HostError::io("create", target))?;
    nix::mount::mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(HostError::sys("bind mount", target))?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = nix::mount::umount2(target, MntFlags::empty());
            return Err(HostError::Sys { op: "read-only bind mount", path: target.into(), errno: e });
        }
    }
    Ok(())
}

/// `dir` made if missing, with every symlink on its way resolved.
pub fn resolved(dir: &Path) -> Result<PathBuf, HostError> {
    std::fs::create_dir_all(dir).map_err(HostError::io("create", dir))?;
    std::fs::canonicalize(dir).map_err(HostError::io("resolve", dir))
}

/// `path` with every symlink on its way resolved; it must exist.
pub fn resolved_existing(path: &Path) -> Result<PathBuf, HostError> {
    std::fs::canonicalize(path).map_err(HostError::io("resolve", path))
}

/// Removes the empty directory `dir`; gone already is fine.
pub fn remove_empty_dir(dir: &Path) -> Result<(), HostError> {
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HostError::io("remove", dir)(e)),
        _ => Ok(()),
    }
}

/// Makes this process undumpable: no core dump (which would hold the
/// cephx key), no ptrace or /proc/<pid>/mem for anyone but root. Children
/// inherit it until they exec.
pub fn forbid_core_dumps() -> Result<(), HostError> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and touches no
    // memory of ours; the unused arguments are zero.
    let ret = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if ret != 0 {
        return Err(HostError::Sys { op: "prctl(PR_SET_DUMPABLE)", path: "/proc/self".into(), errno: nix::errno::Errno::last() });
    }
    Ok(())
}

/// Gives back the main thread's stack pages below the current frame, less
/// a margin. Ceph's libraries build their option tables on the stack in
/// static constructors, before `main`: ~1 MiB that would otherwise stay
/// resident in every user-space server for its life. Pages touched again
/// later come back zeroed, as fresh stack pages do. Off the main thread
/// (whose stack is not `[stack]`) it does nothing.
#[inline(never)]
pub fn release_unused_stack() -> Result<(), HostError> {
    const MARGIN: usize = 64 << 10;
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(HostError::io("read", "/proc/self/maps"))?;
    let Some((start, end)) = maps.lines().find(|l| l.ends_with("[stack]")).and_then(|l| {
        let (a, b) = l.split_whitespace().next()?.split_once('-')?;
        Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?))
    }) else {
        return Ok(());
    };
    if !(start..end).contains(&here) {
        return Ok(());
    }
    let until = here.saturating_sub(MARGIN) & !4095;
    if until <= start {
        return Ok(());
    }
    // SAFETY: the stack grows down, and this function keeps a frame of its
    // own (inline(never)) below every live frame of this thread; `marker`
    // lies in it, so [start, until) — at least MARGIN below it — holds no
    // live data: only what deeper calls that have returned (the static
    // constructors) left there. madvise is one system call: no signal
    // handler of this thread runs while it drops the pages, and one that
    // runs before or after uses the range as fresh stack. The range is
    // inside the mapping; MADV_DONTNEED drops its pages and keeps the
    // mapping: a later touch faults in a zeroed page.
    let ret = unsafe { libc::madvise(start as *mut libc::c_void, until - start, libc::MADV_DONTNEED) };
    if ret != 0 {
        return Err(HostError::Sys { op: "madvise(MADV_DONTNEED)", path: "[stack]".into(), errno: nix::errno::Errno::last() });
    }
    Ok(())
}

/// Unmounts `target`; not mounted is fine. Retries EBUSY briefly (udev or a
/// just-exited container may still hold it).
pub fn unmount(target: &Path) -> Result<(), HostError> {
    for attempt in 0..50 {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) if attempt < 49 => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(HostError::Sys { op: "unmount", path: target.into(), errno: e }),
        }
    }
    unreachable!()
}

/// Detaches `target` from the mount tree now (MNT_DETACH): for a volume
/// taken over by another host, whose containers may still hold it open.
pub fn unmount_detached(target: &Path) -> Result<(), HostError> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(HostError::Sys { op: "unmount", path: target.into(), errno: e }),
    }
}

/// The size in bytes of block device `device`.
pub fn block_device_size(device: &Path) -> Result<u64, HostError> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let file = File::open(device).map_err(HostError::io("open", device))?;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is
    // valid for the call.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if ret < 0 {
        return Err(HostError::Sys { op: "get the size of", path: device.into(), errno: nix::errno::Errno::last() });
    }
    Ok(size)
}

// ---- loop devices --------------------------------------------------------

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_FLAGS_READ_ONLY: u32 = 1;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Whether a loop device reads and writes its backing file past the page
/// cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopIo {
    /// No second page cache between the filesystem and the image.
    Direct,
    /// Through the page cache (files on tmpfs, which refuses O_DIRECT).
    Buffered,
}

/// Attaches `backing` to a free loop device and returns `/dev/loopN`. The
/// device is named `tag` (its `lo_file_name`, at most 63 bytes), which
/// finds it again even after its backing file's FUSE server died and the
/// file's path reads as `/disk`.
pub fn loop_attach(backing: &Path, block_size: u32, io: LoopIo, tag: &str, read_only: bool) -> Result<PathBuf, HostError> {
    let ctl = File::open("/dev/loop-control").map_err(HostError::io("open", "/dev/loop-control"))?;
    let backing_file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(if io == LoopIo::Direct { libc::O_DIRECT } else { 0 })
        .open(backing)
        .map_err(HostError::io("open", backing))?;
    for _ in 0..20 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(HostError::Io { op: "find a free loop device via", path: "/dev/loop-control".into(), source: std::io::Error::last_os_error() });
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let dev_file = OpenOptions::new().read(true).write(true).open(&dev).map_err(HostError::io("open", &dev))?;
        // SAFETY: LoopConfig is plain data; all-zero is its empty value.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing_file.as_raw_fd() as u32;
        config.block_size = block_size;
        config.info.lo_flags = if io == LoopIo::Direct { LO_FLAGS_DIRECT_IO } else { 0 } | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        let len = tag.len().min(63);
        config.info.lo_file_name[..len].copy_from_slice(&tag.as_bytes()[..len]);
        // SAFETY: dev_file is an open loop device; config is a valid
        // loop_config that outlives the call; the kernel takes its own
        // reference to the backing file.
        let ret = unsafe { libc::ioctl(dev_file.as_raw_fd(), LOOP_CONFIGURE as _, &config as *const LoopConfig) };
        if ret == 0 {
            return Ok(dev);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EBUSY) {
            continue; // another process took this one first
        }
        return Err(HostError::Io { op: "attach loop device", path: dev, source: err });
    }
    Err(HostError::Io { op: "attach loop device for", path: backing.into(), source: std::io::Error::from_raw_os_error(libc::EBUSY) })
}

/// Gives the allocator's free pages back to the kernel, in every arena
/// (glibc's `malloc_trim(0)` also releases whole free pages inside a heap,
/// not only at its top).
pub fn trim_allocator() {
    // SAFETY: malloc_trim takes a size and touches only the allocator's
    // own state, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets block device `dev`'s read-ahead to `kib` KiB.
pub fn set_read_ahead(dev: &Path, kib: u32) -> Result<(), HostError> {
    set_queue_knob(dev, "read_ahead_kb", kib, "set read-ahead in")
}

/// Caps the size of the requests the block layer sends `dev`, in KiB.
pub fn set_max_request(dev: &Path, kib: u32) -> Result<(), HostError> {
    set_queue_knob(dev, "max_sectors_kb", kib, "set the request size in")
}

fn set_queue_knob(dev: &Path, knob: &str, kib: u32, what: &'static str) -> Result<(), HostError> {
    let name = dev.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let knob = PathBuf::from(format!("/sys/block/{name}/queue/{knob}"));
    std::fs::write(&knob, format!("{kib}\n")).map_err(HostError::io(what, &knob))
}

/// The attached loop device named `tag` (see [`loop_attach`]), if any.
/// Devices whose backing file's path (as sysfs shows it) `skip` rules out
/// are not asked for their name: that ioctl stats the backing file, which
/// blocks while its FUSE server hangs. (A file whose mount this process
/// cannot see shows as a bare name, so the path alone cannot find a tag.)
pub fn loop_find(tag: &str, skip: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let rd = std::fs::read_dir("/sys/block").ok()?;
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Only attached devices have a backing file.
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
        if !name.starts_with("loop") || skip(backing.trim_end()) {
            continue;
        }
        let dev = PathBuf::from(format!("/dev/{name}"));
        if loop_tag(&dev).as_deref() == Some(tag) {
            return Some(dev);
        }
    }
    None
}

/// The name (`lo_file_name`) loop device `device` was attached with; `None`
/// when it is not attached or its backing file cannot answer.
pub fn loop_tag(device: &Path) -> Option<String> {
    let file = File::open(device).ok()?;
    // SAFETY: LoopInfo64 is plain data; all-zero is its empty value.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: file is an open loop device; info is a writable loop_info64
    // that outlives the call.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info as *mut LoopInfo64) };
    if ret != 0 {
        return None;
    }
    let len = info.lo_file_name.iter().position(|&b| b == 0).unwrap_or(info.lo_file_name.len());
    Some(String::from_utf8_lossy(&info.lo_file_name[..len]).into_owned())
}

/// Whether `device` is a loop device whose backing file's filesystem is
/// gone (a FUSE file whose server died: the kernel answers ENOTCONN), and
/// the backing file's name as the kernel last knew it.
pub fn loop_backing_dead(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_string_lossy().into_owned();
    let backing = std::fs::read_to_string(Path::new("/sys/block").join(&name).join("loop/backing_file")).ok()?;
    let file = File::open(device).ok()?;
    // SAFETY: LoopInfo64 is plain data; all-zero is its empty value.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: file is an open block device; info is a writable loop_info64
    // that outlives the call.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info as *mut LoopInfo64) };
    (ret != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)).then(|| PathBuf::from(backing.trim_end()))
}

/// Makes loop device `device` take its backing file's current size.
pub fn loop_set_capacity(device: &Path) -> Result<(), HostError> {
    let dev = File::open(device).map_err(HostError::io("open", device))?;
    // SAFETY: dev is an open loop device; LOOP_SET_CAPACITY takes no argument.
    let ret = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_CAPACITY as _, 0) };
    if ret < 0 {
        return Err(HostError::Sys { op: "set the capacity of", path: device.into(), errno: nix::errno::Errno::last() });
    }
    Ok(())
}

/// Detaches a loop device; already detached is fine. Retries EBUSY briefly.
pub fn loop_detach(device: &Path) -> Result<(), HostError> {
    let dev = match OpenOptions::new().read(true).open(device) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(HostError::Io { op: "open", path: device.into(), source: e }),
    };
    for attempt in 0..50 {
        // SAFETY: dev is an open loop device; LOOP_CLR_FD takes no argument.
        let ret = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
        if ret == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENXIO) => return Ok(()), // not attached
            Some(libc::EBUSY) if attempt < 49 => std::thread::sleep(Duration::from_millis(100)),
            _ => return Err(HostError::Io { op: "detach loop device", path: device.into(), source: err }),
        }
    }
    unreachable!()
}

/// Loop devices and their backing files, from sysfs.
pub fn loop_devices() -> Vec<(PathBuf, PathBuf)> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.starts_with("loop") {
                return None;
            }
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            Some((PathBuf::from(format!("/dev/{name}")), PathBuf::from(backing.trim_end_matches('\n'))))
        })
        .collect()
}

// ---- the kernel keyring (krbd's key=) ------------------------------------

/// Adds a ceph key to this process's keyring, as `rbd map` does, so the
/// kernel finds it by name (`key=client.<id>`) and the secret never appears
/// in sysfs or on a command line. `secret` is the decoded key blob.
pub fn add_ceph_key(description: &str, secret: &[u8]) -> Result<(), HostError> {
    let c_desc = std::ffi::CString::new(description).map_err(|_| HostError::Invalid {
        what: "key description",
        value: description.replace('\0', "\\0"),
        reason: "contains a NUL byte".into(),
    })?;
    // SAFETY: add_key(2) with a valid type string, a valid description, a
    // payload buffer of the given length, and a special keyring id.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"ceph".as_ptr(),
            c_desc.as_ptr(),
            secret.as_ptr(),
            secret.len(),
            libc::KEY_SPEC_PROCESS_KEYRING,
        )
    };
    if ret < 0 {
        return Err(HostError::Io { op: "add ceph key to the kernel keyring:", path: description.into(), source: std::io::Error::last_os_error() });
    }
    Ok(())
}

// ---- files and processes -------------------------------------------------

/// Sets the owner and mode of a volume's root directory.
pub fn chown_chmod(path: &Path, uid: Option<u32>, gid: Option<u32>, mode: Option<u32>) -> Result<(), HostError> {
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid).map_err(HostError::io("chown", path))?;
    }
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(HostError::io("chmod", path))?;
    }
    Ok(())
}

/// Whether a process exists (and is not a zombie).
/// When process `pid` started (clock ticks after boot): with the pid, it
/// names one process, where a pid alone may be reused (every container
/// start begins a new pid namespace at 1).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the fields after the command name, which may contain
    // spaces and parentheses, start at field 3.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// A process's resident memory (VmRSS), in bytes.
pub fn process_resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kib * 1024)
}

pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().map(|s| !s.trim_start().starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) -> Result<(), HostError> {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(HostError::Sys { op: "signal process", path: format!("/proc/{pid}").into(), errno: e }),
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// The next run of data in a sparse `file` at or after `offset`, as
/// (start, end of data); `None` when only a hole remains.
pub fn next_data(file: &File, path: &Path, offset: u64) -> Result<Option<(u64, u64)>, HostError> {
    use nix::unistd::{lseek, Whence};
    let fd = file.as_raw_fd();
    let data = match lseek(fd, offset as i64, Whence::SeekData) {
        Ok(d) => d as u64,
        Err(nix::errno::Errno::ENXIO) => return Ok(None),
        Err(e) => return Err(HostError::Sys { op: "seek data in", path: path.into(), errno: e }),
    };
    let hole = lseek(fd, data as i64, Whence::SeekHole).map_err(HostError::sys("seek hole in", path))? as u64;
    Ok(Some((data, hole)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_can_forbid_its_core_dumps() {
        // (This test process stays undumpable: harmless for the others.)
        forbid_core_dumps().unwrap();
        // SAFETY: PR_GET_DUMPABLE reads a flag of this process.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE) }, 0);
    }

    #[test]
    fn mountinfo_is_parsed_with_escapes() {
        let text = "36 35 98:0 / /mnt/my\\040vol rw,noatime master:1 - ext4 /dev/loop3 rw,errors=continue\n\
                    37 35 0:50 / /run/x rw shared:2 extra:3 - fuse.rbdvol rbdvol rw,user_id=0\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, PathBuf::from("/mnt/my vol"));
        assert_eq!(m[0].source, "/dev/loop3");
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[0].dev, "98:0");
        assert_eq!(m[1].fstype, "fuse.rbdvol");
    }

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let (flags, data) = split_mount_options("noatime,nodev,discard,commit=30,ro");
        assert!(flags.contains(MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_RDONLY));
        assert_eq!(data, "discard,commit=30");
    }

    #[test]
    fn loop_structs_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
