//! The user-space server's I/O counters, shared with the plugin: a small
//! file in the server's directory, memory-mapped by both. The server adds
//! to its u64 slots atomically on each completed I/O (a few relaxed adds,
//! no lock, no syscall); the plugin maps it read-only when scraped. Mode
//! 0600; it holds counts only.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::HostError;
use crate::metrics::histogram::{bucket_index, IO_BOUNDS};
use crate::metrics::HistogramSnapshot;

/// Its name in the server's directory.
pub const STATS_FILE: &str = "stats";

/// The first slot: says the layout below (changed with it).
const MAGIC: u64 = u64::from_le_bytes(*b"rbdvolS1");
const READ_BYTES: usize = 1;
const WRITTEN_BYTES: usize = 2;
const READS: usize = 3;
const WRITES: usize = 4;
const FLUSHES: usize = 5;
const IO_SUM_NANOS: usize = 6;
/// One slot per bound of `IO_BOUNDS`, and one beyond the last.
const BUCKETS: usize = 7;
const SLOTS: usize = BUCKETS + IO_BOUNDS.len() + 1;
const LEN: usize = SLOTS * 8;

/// What a server's counters said when read.
#[derive(Debug, Clone, PartialEq)]
pub struct IoStats {
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    /// Each read, write and flush, from its submission to its completion.
    pub io: HistogramSnapshot,
    /// The server's resident memory (VmRSS), if it could be read.
    pub resident_bytes: Option<u64>,
}

/// A shared mapping of the counters file.
struct Mapped {
    ptr: *mut libc::c_void,
}

// SAFETY: the mapping is only ever accessed through atomics.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    fn map(file: &std::fs::File, writable: bool) -> std::io::Result<Mapped> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a fresh shared mapping of LEN bytes of an open file at
        // least that long; unmapped only in Drop.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), LEN, prot, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr })
    }

    fn slots(&self) -> &[AtomicU64] {
        // SAFETY: page-aligned, LEN bytes, alive as long as self; shared
        // with the other process only through atomic operations.
        unsafe { std::slice::from_raw_parts(self.ptr as *const AtomicU64, SLOTS) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer referenced.
        unsafe { libc::munmap(self.ptr, LEN) };
    }
}

/// The server's side: counts its I/O.
pub struct IoCounters {
    map: Mapped,
}

impl IoCounters {
    /// Creates a fresh counters file at `path`, mode 0600. It is made
    /// whole beside it and renamed into place: a file the plugin may have
    /// mapped is never truncated under it (reading a mapping past the end
    /// of its file is SIGBUS, which would end the plugin).
    pub fn create(path: &Path) -> Result<IoCounters, HostError> {
        let fresh = path.with_extension("new");
        let _ = std::fs::remove_file(&fresh);
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&fresh).map_err(HostError::io("create", &fresh))?;
        file.set_len(LEN as u64).map_err(HostError::io("size", &fresh))?;
        let map = Mapped::map(&file, true).map_err(HostError::io("map", &fresh))?;
        map.slots()[0].store(MAGIC, Ordering::Release);
        std::fs::rename(&fresh, path).map_err(HostError::io("rename into place", path))?;
        Ok(IoCounters { map })
    }

    fn add(&self, slot: usize, n: u64) {
        self.map.slots()[slot].fetch_add(n, Ordering::Relaxed);
    }

    fn took(&self, d: Duration) {
        self.add(BUCKETS + bucket_index(IO_BOUNDS, d), 1);
        self.add(IO_SUM_NANOS, d.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// A read of `bytes` completed after `took` (failed reads count 0 bytes).
    pub fn read(&self, bytes: u64, took: Duration) {
        self.add(READS, 1);
        self.add(READ_BYTES, bytes);
        self.took(took);
    }

    pub fn written(&self, bytes: u64, took: Duration) {
        self.add(WRITES, 1);
        self.add(WRITTEN_BYTES, bytes);
        self.took(took);
    }

    pub fn flushed(&self, took: Duration) {
        self.add(FLUSHES, 1);
        self.took(took);
    }
}

/// The plugin's side: what the counters file at `path` says now; `None`
/// when there is none (yet) or it is not one.
pub fn read(path: &Path) -> Option<IoStats> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() < LEN as u64 {
        return None;
    }
    let map = Mapped::map(&file, false).ok()?;
    let slots: Vec<u64> = map.slots().iter().map(|s| s.load(Ordering::Relaxed)).collect();
    if slots[0] != MAGIC {
        return None;
    }
    Some(IoStats {
        read_bytes: slots[READ_BYTES],
        written_bytes: slots[WRITTEN_BYTES],
        reads: slots[READS],
        writes: slots[WRITES],
        flushes: slots[FLUSHES],
        io: HistogramSnapshot::from_slots(IO_BOUNDS, &slots[BUCKETS..], slots[IO_SUM_NANOS]),
        resident_bytes: None,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn what_the_server_counts_the_plugin_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATS_FILE);
        assert_eq!(read(&path), None, "no file yet");
        let c = IoCounters::create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        c.read(4096, Duration::from_micros(50));
        c.written(1 << 20, Duration::from_millis(3));
        c.written(512, Duration::from_secs(60));
        c.flushed(Duration::from_millis(3));
        let s = read(&path).unwrap();
        assert_eq!((s.read_bytes, s.written_bytes, s.reads, s.writes, s.flushes), (4096, (1 << 20) + 512, 1, 2, 1));
        assert_eq!(s.io.count, 4);
        assert_eq!(s.io.counts.iter().sum::<u64>(), 3, "the 60 s write is beyond the last bound");
        assert_eq!(s.io.counts[0], 1, "50 µs is within the first bound");
        assert!((s.io.sum_seconds - 60.00605).abs() < 1e-9, "{}", s.io.sum_seconds);
    }

    #[test]
    fn a_server_started_again_never_shrinks_the_file_a_reader_has_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATS_FILE);
        let first = IoCounters::create(&path).unwrap();
        first.written(4096, Duration::from_millis(1));
        let file = std::fs::File::open(&path).unwrap();
        let mapped = Mapped::map(&file, false).unwrap();
        let second = IoCounters::create(&path).unwrap();
        assert_eq!(file.metadata().unwrap().len(), LEN as u64, "the mapped file kept its length");
        assert_eq!(mapped.slots()[WRITTEN_BYTES].load(Ordering::Relaxed), 4096, "the old mapping still reads");
        assert_eq!(read(&path).unwrap().written_bytes, 0, "the path is the new server's");
        second.read(1, Duration::from_millis(1));
        assert!(!dir.path().join("stats.new").exists());
    }

    #[test]
    fn a_file_of_another_kind_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATS_FILE);
        std::fs::write(&path, vec![7u8; LEN]).unwrap();
        assert_eq!(read(&path), None);
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(read(&path), None);
    }
}
