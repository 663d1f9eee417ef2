//! The user-space mapper's server: one FUSE file (`disk`) whose bytes are an
//! RBD image, served by librbd with asynchronous I/O. It runs as its own
//! detached process (`rbdvol userspace-serve`) so that a restart of `rbdvol
//! serve` does not interrupt the containers writing through it.
//!
//! fsync/flush of the file → rbd flush (an fsync in the container is
//! durable in Ceph); fallocate punch-hole → rbd discard.

use std::ffi::OsStr;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    consts::FOPEN_DIRECT_IO, FileAttr, FileType, Filesystem, KernelConfig, MountOption, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request,
};
use nix::sys::signal::{SigSet, Signal};

use super::io_stats::{IoCounters, STATS_FILE};
use super::{crash, HostError, ImageRef};
use crate::ceph::{aio, Cluster, Image};
use crate::config::CephSettings;

pub const DISK_FILE: &str = "disk";
const ROOT: u64 = 1;
const DISK: u64 = 2;
const TTL: Duration = Duration::from_secs(1);

/// What `rbdvol serve` hands a server first, on its stdin (never argv or
/// env: it holds the key). The server connects, says `connected`, and waits
/// for an [`Assignment`]: a spare server is ready before a map needs it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ServerSettings {
    pub mon_host: String,
    pub user: String,
    pub key: String,
    pub options: std::collections::BTreeMap<String, String>,
    /// `CephSettings::lenient`.
    #[serde(default)]
    pub lenient: std::collections::BTreeSet<String>,
    pub timeouts_secs: [u64; 3],
}

/// The image a server is to serve, and the directory it serves it in.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    pub image: ImageRef,
    pub dir: std::path::PathBuf,
    /// Serve it read-only: the image opened read-only, the file mounted
    /// read-only (writes fail with EROFS).
    #[serde(default)]
    pub read_only: bool,
}

impl Drop for ServerSettings {
    fn drop(&mut self) {
        // The key leaves no copy in freed memory.
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl ServerSettings {
    pub fn new(settings: &CephSettings) -> ServerSettings {
        ServerSettings {
            mon_host: settings.mon_host.clone(),
            user: settings.user.clone(),
            key: settings.key.expose().to_string(),
            options: settings.options.clone(),
            lenient: settings.lenient.clone(),
            timeouts_secs: [
                settings.timeouts.connect.as_secs(),
                settings.timeouts.mon_op.as_secs(),
                // Its I/O ends within the mappers' bound, whatever the
                // plugin's own calls may wait (see `mapper::IO_TIMEOUT`).
                settings.timeouts.osd_op.min(super::mapper::IO_TIMEOUT).as_secs(),
            ],
        }
    }

    fn settings(&self) -> CephSettings {
        let mut options = self.options.clone();
        // A punched hole must read back as zeros, also within an object.
        options.insert("rbd_skip_partial_discard".into(), "false".into());
        // librbd's writeback cache, per mounted volume: 8 MiB unless the
        // operator sets it (`RBD_CONF_CLIENT_RBD_CACHE_SIZE`, ...). The
        // kernel's page cache sits above it; 32 MiB (Ceph's default) per
        // volume was most of a server's memory once it had seen traffic.
        if !options.contains_key("rbd_cache_size") {
            for (key, value) in CACHE_DEFAULTS {
                options.entry(key.to_string()).or_insert_with(|| value.to_string());
            }
        }
        CephSettings {
            mon_host: self.mon_host.clone(),
            user: self.user.clone(),
            key: crate::config::Secret::new(self.key.clone()),
            options,
            lenient: self.lenient.clone(),
            timeouts: crate::config::Timeouts {
                connect: Duration::from_secs(self.timeouts_secs[0]),
                mon_op: Duration::from_secs(self.timeouts_secs[1]),
                osd_op: Duration::from_secs(self.timeouts_secs[2]),
            },
        }
    }
}

struct DiskFs {
    image: Arc<Image>,
    /// Set once the cluster refused this server's client (another host
    /// took the volume over): from then on every I/O fails here, without
    /// reaching librbd — even after the blocklist entry expires.
    fenced: Arc<Fence>,
    uid: u32,
    gid: u32,
    buffers: Arc<BufferPool>,
    /// The counters the plugin reads for its metrics (`host::io_stats`),
    /// kept for the life of the process; none if their file could not be
    /// made (the volume is served all the same).
    stats: Option<&'static IoCounters>,
}

/// I/O buffers, reused: a fresh 1 MiB buffer per request costs page faults
/// with the kernel zeroing each page (the allocator gives a freed buffer at
/// the top of its heap back at once). Up to one per request the kernel
/// keeps in flight (FUSE's max_background). Once I/O stops for a moment the pool
/// is emptied and the allocator gives back its free pages (`malloc_trim`),
/// so that an idle server does not hold its high-water mark.
#[derive(Default)]
struct BufferPool(std::sync::Mutex<Pooled>);

#[derive(Default)]
struct Pooled {
    free: Vec<Vec<u8>>,
    /// The last read or write; None once trimmed since.
    last_io: Option<Instant>,
}

/// librbd's write-around cache (Ceph 16's default policy) for a mounted
/// volume unless the operator sizes it: writes are acknowledged at once up
/// to rbd_cache_max_dirty unwritten bytes (6 MiB here, 24 MiB by Ceph's
/// default); it caches no reads. Sequential writes measured the same with
/// 6 and 24 MiB; the size applies to the write-back policy, if chosen.
const CACHE_DEFAULTS: [(&str, &str); 3] = [("rbd_cache_size", "8388608"), ("rbd_cache_max_dirty", "6291456"), ("rbd_cache_target_dirty", "4194304")];

/// The largest write the kernel sends in one request (the most FUSE
/// allows: 256 pages).
pub const MAX_WRITE: u32 = 1 << 20;

/// Reads the kernel may have in flight at once: as many buffers are kept.
const MAX_BACKGROUND: u16 = 64;

/// Pooled buffers are freed after reads have stopped this long.
const POOL_IDLE: Duration = Duration::from_secs(2);

impl BufferPool {
    /// A pooled (or new) buffer, its contents whatever they were; notes I/O.
    fn pop(&self) -> Vec<u8> {
        let mut pool = self.0.lock().unwrap();
        pool.last_io = Some(Instant::now());
        pool.free.pop().unwrap_or_default()
    }

    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self.pop();
        buf.truncate(len);
        buf.reserve_exact(len - buf.len());
        buf.resize(len, 0);
        buf
    }

    /// A buffer holding a copy of `data` (a write's: the kernel's request
    /// buffer is reused once the write call returns).
    fn take_copy(&self, data: &[u8]) -> Vec<u8> {
        let mut buf = self.pop();
        buf.clear();
        // Exactly: grown by doubling, a pooled buffer could hold twice the
        // largest request.
        buf.reserve_exact(data.len());
        buf.extend_from_slice(data);
        buf
    }

    /// Keeps `buf` for the next request while I/O goes on; a request that
    /// completes after the pool was trimmed (I/O had stopped: a write that
    /// waited out a stalled cluster) frees its buffer instead.
    fn give(&self, buf: Vec<u8>) {
        let mut pool = self.0.lock().unwrap();
        if pool.last_io.is_some() && pool.free.len() < MAX_BACKGROUND as usize {
            pool.free.push(buf);
        }
    }

    /// Once no I/O came for `idle`: frees every pooled buffer and says so
    /// (once per quiet spell), for the caller to trim the allocator.
    fn trim_if_idle(&self, idle: Duration) -> bool {
        let mut pool = self.0.lock().unwrap();
        match pool.last_io {
            Some(t) if t.elapsed() >= idle => {
                pool.free = Vec::new();
                pool.last_io = None;
                true
            }
            _ => false,
        }
    }

    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.0.lock().unwrap().free.len()
    }
}

#[derive(Default)]
struct Fence(std::sync::atomic::AtomicBool);

impl Fence {
    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The errno to answer for `e`; a blocklisted client sets the fence.
    fn errno_of(&self, e: &crate::ceph::CephError) -> i32 {
        if matches!(e, crate::ceph::CephError::Blocklisted { .. }) && !self.0.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tracing::error!("this server's client was blocklisted (another host took the volume over): every I/O fails from now on");
        }
        e.errno().unwrap_or(libc::EIO)
    }
}

impl DiskFs {
    fn attr(&self, ino: u64) -> FileAttr {
        let now = SystemTime::now();
        let (kind, perm, size, nlink) = match ino {
            ROOT => (FileType::Directory, 0o700, 0, 2),
            _ => (FileType::RegularFile, 0o600, self.image.size().unwrap_or(0), 1),
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for DiskFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(MAX_BACKGROUND);
        // Let the kernel keep many direct-I/O requests of the loop device in
        // flight at once instead of one at a time.
        let _ = config.add_capabilities(fuser::consts::FUSE_ASYNC_DIO);
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == DISK_FILE {
            reply.entry(&TTL, &self.attr(DISK), 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match ino {
            ROOT | DISK => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        if ino == DISK {
            // No page cache in the FUSE layer: the loop device on top does
            // direct I/O, and everything else must see the same bytes.
            reply.opened(0, FOPEN_DIRECT_IO);
        } else {
            reply.error(libc::EISDIR);
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        if ino != DISK {
            return reply.error(libc::EISDIR);
        }
        if self.fenced.is_set() {
            return reply.error(libc::EIO);
        }
        let end = self.image.size().unwrap_or(0);
        let offset = offset.max(0) as u64;
        if offset >= end {
            return reply.data(&[]);
        }
        let len = (size as u64).min(end - offset) as usize;
        let buffers = Arc::clone(&self.buffers);
        let fence = Arc::clone(&self.fenced);
        let (stats, start) = (self.stats, Instant::now());
        let r = aio::read_into(&self.image, offset, self.buffers.take(len), move |result| {
            let took = start.elapsed();
            let n = match result {
                Ok((n, buf)) => {
                    let n = n.min(buf.len());
                    reply.data(&buf[..n]);
                    buffers.give(buf);
                    n
                }
                Err(e) => {
                    reply.error(fence.errno_of(&e));
                    0
                }
            };
            if let Some(s) = stats {
                s.read(n as u64, took);
            }
        });
        if let Err(e) = r {
            tracing::error!("{e}");
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        if ino != DISK {
            return reply.error(libc::EISDIR);
        }
        let end = self.image.size().unwrap_or(0);
        let offset = offset.max(0) as u64;
        if self.fenced.is_set() {
            return reply.error(libc::EIO);
        }
        if offset + data.len() as u64 > end {
            return reply.error(libc::ENOSPC);
        }
        let fence = Arc::clone(&self.fenced);
        let buffers = Arc::clone(&self.buffers);
        let (stats, start) = (self.stats, Instant::now());
        let r = aio::write(&self.image, offset, self.buffers.take_copy(data), move |result| {
            let took = start.elapsed();
            let n = match result {
                Ok((n, buf)) => {
                    reply.written(n as u32);
                    buffers.give(buf);
                    n
                }
                Err(e) => {
                    reply.error(fence.errno_of(&e));
                    0
                }
            };
            if let Some(s) = stats {
                s.written(n as u64, took);
            }
        });
        if let Err(e) = r {
            tracing::error!("{e}");
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        flush_then(&self.image, &self.fenced, self.stats, reply);
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        flush_then(&self.image, &self.fenced, self.stats, reply);
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _flags: i32,
        _lock: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        flush_then(&self.image, &self.fenced, self.stats, reply);
    }

    fn fallocate(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, length: i64, mode: i32, reply: ReplyEmpty) {
        if ino != DISK {
            return reply.error(libc::EISDIR);
        }
        if self.fenced.is_set() {
            return reply.error(libc::EIO);
        }
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            let fence = Arc::clone(&self.fenced);
            let r = aio::discard(&self.image, offset.max(0) as u64, length.max(0) as u64, move |result| match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fence.errno_of(&e)),
            });
            if let Err(e) = r {
                tracing::error!("{e}");
            }
        } else {
            // Plain preallocation: the image is thin, nothing to do.
            reply.ok();
        }
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let entries = [(ROOT, FileType::Directory, "."), (ROOT, FileType::Directory, ".."), (DISK, FileType::RegularFile, DISK_FILE)];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as i64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn flush_then(image: &Arc<Image>, fence: &Arc<Fence>, stats: Option<&'static IoCounters>, reply: ReplyEmpty) {
    if fence.is_set() {
        return reply.error(libc::EIO);
    }
    let fence = Arc::clone(fence);
    let start = Instant::now();
    // For the crash point: flushed in Ceph, the kernel not yet told.
    let name = if cfg!(debug_assertions) { image.name().to_string() } else { String::new() };
    let r = aio::flush(image, move |result| {
        let took = start.elapsed();
        match result {
            Ok(()) => {
                crash::point("server.flushed", &name);
                reply.ok()
            }
            Err(e) => reply.error(fence.errno_of(&e)),
        }
        if let Some(s) = stats {
            s.flushed(took);
        }
    });
    if let Err(e) = r {
        tracing::error!("{e}");
    }
}

/// Runs a server: connects with the settings on its first stdin line,
/// says `connected`, waits for its assignment on the second line (EOF: a
/// spare nobody needed, exit quietly), mounts the FUSE file at `dir/fuse`,
/// says `ready`, and serves until SIGTERM or SIGINT; then unmounts, flushes
/// and removes its directory. Errors go to stdout as `error: ...` for the
/// parent to report.
pub fn serve() -> Result<(), HostError> {
    let result = serve_inner();
    if let Err(e) = &result {
        let _ = writeln!(std::io::stdout(), "error: {e}");
    }
    result
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn serve_inner() -> Result<(), HostError> {
    if let Err(e) = super::sys::release_unused_stack() {
        tracing::warn!("{e}");
    }
    // Block the stop signals before librados starts its threads, so that
    // none of them can take a SIGTERM and end the process uncleanly.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().map_err(HostError::sys("block signals in", "userspace-serve"))?;

    let stdin = std::io::stdin();
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(HostError::io("read settings from", "stdin"))?;
    let input: ServerSettings = serde_json::from_str(&line)
        .map_err(|e| HostError::Invalid { what: "server settings", value: "stdin".into(), reason: e.to_string() })?;
    line.clear();
    let cluster = Cluster::connect(&input.settings())?;
    drop(input);
    say("connected");

    if stdin.lock().read_line(&mut line).map_err(HostError::io("read assignment from", "stdin"))? == 0 {
        return Ok(()); // a spare that was not needed
    }
    let Assignment { image: image_ref, dir, read_only } = serde_json::from_str(&line)
        .map_err(|e| HostError::Invalid { what: "server assignment", value: "stdin".into(), reason: e.to_string() })?;
    let pool = cluster.open_pool(&image_ref.pool, &image_ref.namespace)?;
    let image = Arc::new(if read_only { pool.open_image_read_only(&image_ref.image)? } else { pool.open_image(&image_ref.image)? });
    crash::point("server.opened", &image_ref.image);

    let mountpoint = dir.join("fuse");
    std::fs::create_dir_all(&mountpoint).map_err(HostError::io("create", &mountpoint))?;
    let buffers: Arc<BufferPool> = Default::default();
    let trimmed = Arc::downgrade(&buffers);
    std::thread::spawn(move || {
        while let Some(pool) = trimmed.upgrade() {
            if pool.trim_if_idle(POOL_IDLE) {
                super::sys::trim_allocator();
            }
            drop(pool);
            std::thread::sleep(POOL_IDLE);
        }
    });
    let fs = DiskFs {
        image: Arc::clone(&image),
        fenced: Default::default(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        buffers,
        stats: match IoCounters::create(&dir.join(STATS_FILE)) {
            Ok(c) => Some(Box::leak(Box::new(c))),
            Err(e) => {
                tracing::warn!("{e}: this volume's I/O is not counted for the metrics");
                None
            }
        },
    };
    let options = [
        MountOption::FSName(format!("rbdvol:{image_ref}")),
        MountOption::Subtype("rbdvol".into()),
        MountOption::DefaultPermissions,
        if read_only { MountOption::RO } else { MountOption::RW },
        MountOption::Dev,
    ];
    let session = fuser::spawn_mount2(fs, &mountpoint, &options).map_err(HostError::io("mount fuse at", &mountpoint))?;
    let me = std::process::id();
    let pid = format!("{me} {}", super::sys::process_start_time(me).unwrap_or(0));
    std::fs::write(dir.join("pid"), pid).map_err(HostError::io("write", dir.join("pid")))?;
    say("ready");
    crash::point("server.ready", &image_ref.image);
    // Nothing else for the parent: detach from its pipes.
    // SAFETY: closing our own stdin and stdout descriptors; nothing uses
    // them after this point.
    unsafe {
        libc::close(0);
        libc::close(1);
    }

    let signal = signals.wait().map_err(HostError::sys("wait for signals in", &dir))?;
    tracing::info!("{signal:?}: stopping the server for {image_ref}");
    drop(session); // unmounts; the FUSE thread ends on its own
    image.flush()?;
    // Close the image (its watch goes with it) before exiting: the FUSE
    // thread and late completions hold clones for a moment. A process that
    // exits with the image open leaves its watch for ~30 s, and the volume
    // looks in use.
    let start = Instant::now();
    let mut image = image;
    loop {
        match Arc::try_unwrap(image) {
            Ok(only) => break drop(only),
            Err(shared) if start.elapsed() < Duration::from_secs(5) => {
                image = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => {
                tracing::warn!("{image_ref} is still in use 5 s after the stop: exiting without closing it");
                break;
            }
        }
    }
    // A clean stop leaves nothing behind: the mapper does not wait for it.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_pool_keeps_a_buffer_per_read_in_flight_and_frees_them_once_io_stops() {
        let pool = BufferPool::default();
        let taken: Vec<Vec<u8>> = (0..MAX_BACKGROUND as usize + 5).map(|_| pool.take(1 << 20)).collect();
        for buf in taken {
            pool.give(buf);
        }
        assert_eq!(pool.pooled(), MAX_BACKGROUND as usize, "kept beyond the reads the kernel keeps in flight");
        // A reused buffer has the length asked for.
        let buf = pool.take(4096);
        assert_eq!(buf.len(), 4096);
        pool.give(buf);
        assert!(!pool.trim_if_idle(Duration::from_secs(60)));
        assert_eq!(pool.pooled(), MAX_BACKGROUND as usize, "freed while reads go on");
        assert!(pool.trim_if_idle(Duration::ZERO), "not trimmed after reads stopped");
        assert_eq!(pool.pooled(), 0, "kept after reads stopped");
        assert!(!pool.trim_if_idle(Duration::ZERO), "trimmed again without I/O in between");
        let copy = pool.take_copy(b"written");
        assert_eq!(copy, b"written");
        pool.give(copy);
        assert_eq!(pool.pooled(), 1, "a write's buffer is not reused");
        assert!(pool.trim_if_idle(Duration::ZERO), "a write does not count as I/O");
        // A request still in flight when the pool was trimmed (a write
        // that waited out a stalled cluster) does not refill it.
        let late = pool.take_copy(&[7u8; 4096]);
        assert!(pool.trim_if_idle(Duration::ZERO));
        pool.give(late);
        assert_eq!(pool.pooled(), 0, "a buffer given back after the trim stays pooled while idle");
        // Buffers are never larger than the largest request they served.
        let small = pool.take(4096);
        pool.give(small);
        let big = pool.take_copy(&vec![1u8; 1 << 20]);
        assert_eq!(big.capacity(), 1 << 20);
    }
}
