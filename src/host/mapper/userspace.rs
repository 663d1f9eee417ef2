//! The user-space mapper: a detached `rbdvol userspace-serve` process per
//! mapped image serves it as a FUSE file (see `host::fusefs`), and a loop
//! device with direct I/O turns that file into a block device. The server
//! outlives a restart of `rbdvol serve`; its directory under the run dir
//! records which image it serves, so a restarted plugin finds the mapping
//! again.
//!
//! Starting a server means loading librbd and authenticating to the cluster;
//! so one spare server, already connected, waits for the next map, and a
//! new spare is started in the background each time one is taken. A spare
//! that is never needed exits when the plugin does (its stdin closes).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Mapper, MapperKind, Mapping};
use crate::config::CephSettings;
use crate::host::fusefs::{Assignment, ServerSettings, DISK_FILE};
use crate::host::{sys, HostError, ImageRef};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The loop device's logical block size: 512 bytes, as krbd and rbd-nbd
/// present, so mkfs makes the same filesystem whichever mapper a volume
/// meets first (ext4 below 512 MiB picks 1 KiB blocks and xfs 512-byte
/// sectors, which a 4 KiB-sector device could not mount).
pub const BLOCK_SIZE: u32 = 512;

pub struct Userspace {
    root: PathBuf,
    exe: PathBuf,
    spare: Arc<Mutex<Option<Spare>>>,
}

/// A server that is connected and waits for its assignment.
struct Spare {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    log: PathBuf,
    fingerprint: u64,
}

impl Drop for Spare {
    fn drop(&mut self) {
        // An unused spare is not needed any more (an assigned one has
        // exited by now: its reaper drops it after waiting for it).
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Identifies the settings a spare connected with.
fn fingerprint(settings: &CephSettings) -> u64 {
    let mut h = DefaultHasher::new();
    (&settings.mon_host, &settings.user, settings.key.expose(), &settings.options).hash(&mut h);
    h.finish()
}

fn nonce() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{n:x}")
}

fn map_failed(reason: String) -> HostError {
    HostError::MapFailed { mapper: "userspace", image: "a user-space server".into(), reason }
}

/// Starts a server and waits until it is connected.
fn spawn_spare(exe: &Path, spares: &Path, settings: &CephSettings) -> Result<Spare, HostError> {
    std::fs::create_dir_all(spares).map_err(HostError::io("create", spares))?;
    let log_path = spares.join(format!("{}.log", nonce()));
    let log = std::fs::File::create(&log_path).map_err(HostError::io("create", &log_path))?;
    let mut cmd = Command::new(exe);
    // The key arrives on stdin; the environment carries only logging and
    // the allocator's bounds.
    crate::host::tools::Tools::clean_env(&mut cmd);
    for var in ["RUST_LOG", "LOG_LEVEL"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    crate::host::crash::pass_on(&mut cmd);
    // glibc's allocator, bounded: librados runs dozens of threads, and by
    // default each may get an arena of its own that never shrinks. Two
    // arenas; buffers up to 4 MiB (the data path's) come from them — an
    // mmap threshold of 128 KiB made every 1 MiB buffer an mmap, 256
    // zeroed page faults and a munmap, and halved sequential reads — and
    // the server trims them once I/O stops (host::fusefs).
    // The plugin's own environment may set them otherwise.
    for (name, default) in [("MALLOC_ARENA_MAX", "2"), ("MALLOC_MMAP_THRESHOLD_", "4194304"), ("MALLOC_TRIM_THRESHOLD_", "131072")] {
        cmd.env(name, std::env::var(name).unwrap_or_else(|_| default.to_string()));
    }
    cmd.arg("userspace-serve").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log);
    // SAFETY: setsid is async-signal-safe; it puts the server in its own
    // session so signals to the plugin's process group never reach it.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| map_failed(format!("cannot start {}: {e}", exe.display())))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let input = serde_json::to_string(&ServerSettings::new(settings)).expect("settings serialize");
    let mut spare = Spare { child, stdin, lines, log: log_path, fingerprint: fingerprint(settings) };
    spare.stdin.write_all(format!("{input}\n").as_bytes()).map_err(|e| map_failed(format!("cannot hand over settings: {e}")))?;
    match spare.wait_for("connected") {
        Ok(()) => Ok(spare),
        Err(reason) => {
            let _ = spare.child.kill();
            let _ = spare.child.wait();
            Err(map_failed(reason))
        }
    }
}

impl Spare {
    /// Waits for the server to say `want`; its `error: ...` becomes the reason.
    fn wait_for(&mut self, want: &str) -> Result<(), String> {
        match self.lines.recv_timeout(START_TIMEOUT) {
            Ok(line) if line == want => Ok(()),
            Ok(line) => Err(line.strip_prefix("error: ").unwrap_or(&line).to_string()),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(format!("the server exited before it said '{want}' (log: {})", self.log.display())),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!("the server did not say '{want}' within {}s (log: {})", START_TIMEOUT.as_secs(), self.log.display())),
        }
    }
}

/// A directory name for an image: every byte outside `[A-Za-z0-9_.-]` is
/// %-escaped, and the parts are joined with `@` (which is escaped in them).
pub fn dir_name(image: &ImageRef) -> String {
    fn esc(s: &str) -> String {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"_.-".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect()
    }
    format!("{}@{}@{}", esc(&image.pool), esc(&image.namespace), esc(&image.image))
}

/// One process: its pid and start time (a pid alone may be reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: u32,
    started: u64,
}

impl Process {
    fn of(pid: u32) -> Process {
        Process { pid, started: sys::process_start_time(pid).unwrap_or(0) }
    }

    /// "pid start-time", as the server writes it.
    fn parse(s: &str) -> Option<Process> {
        let mut parts = s.split_whitespace();
        Some(Process { pid: parts.next()?.parse().ok()?, started: parts.next()?.parse().ok()? })
    }

    fn alive(&self) -> bool {
        sys::process_alive(self.pid) && sys::process_start_time(self.pid) == Some(self.started)
    }
}

/// The state of one server directory.
struct Server {
    dir: PathBuf,
    image: ImageRef,
    process: Option<Process>,
}

/// Marks a server that was told to stop: never reused for a new mapping.
const STOPPING: &str = "stopping";
/// Read-ahead of the loop device, in KiB: one default RADOS object (the
/// kernel's 128 KiB keeps a buffered sequential read to a few small
/// requests in flight, a third of what librbd reads).
const READ_AHEAD_KIB: u32 = 4096;
/// The largest request the loop device passes on, in KiB: one FUSE request. The loop device's default, 1280 KiB, became a
/// 1 MiB and a 256 KiB request each, and the small ones a RADOS op each.
const MAX_REQUEST_KIB: u32 = crate::host::fusefs::MAX_WRITE / 1024;

/// The loop device attached to the server's file.
const LOOP_FILE: &str = "loop";

impl Server {
    fn stopping(&self) -> bool {
        self.dir.join(STOPPING).exists()
    }

    fn disk(&self) -> PathBuf {
        self.dir.join("fuse").join(DISK_FILE)
    }

    fn alive(&self) -> bool {
        self.process.is_some_and(|p| p.alive())
    }

    /// The loop device's name: unique per server instance (the directory's
    /// nonce), and short enough for `lo_file_name`.
    fn loop_tag(&self) -> String {
        format!("rbdvol:{}", self.nonce())
    }

    fn nonce(&self) -> String {
        let name = self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.rsplit('.').next().unwrap_or(&name).to_string()
    }

    fn loop_device(&self) -> Option<PathBuf> {
        let tag = self.loop_tag();
        // The device recorded at attach time, if it still has our name.
        let recorded = std::fs::read_to_string(self.dir.join(LOOP_FILE)).ok().map(|d| PathBuf::from(d.trim()));
        if let Some(dev) = recorded.filter(|d| sys::loop_tag(d).as_deref() == Some(tag.as_str())) {
            return Some(dev);
        }
        // Else a search; another server's file, by its full path, is never
        // asked (a hung server would hang the question).
        let mine = format!(".{}/", self.nonce());
        sys::loop_find(&tag, |backing| backing.contains("/fuse/") && !backing.contains(&mine))
    }
}

impl Userspace {
    pub fn new(root: PathBuf, exe: PathBuf) -> Userspace {
        // Spares of an earlier run exited with it; their logs are left.
        let _ = std::fs::remove_dir_all(root.with_file_name("userspace-spare"));
        Userspace { root, exe, spare: Arc::new(Mutex::new(None)) }
    }

    fn servers(&self) -> Vec<Server> {
        let Ok(rd) = std::fs::read_dir(&self.root) else { return Vec::new() };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let dir = e.path();
                let image: ImageRef = serde_json::from_slice(&std::fs::read(dir.join("image.json")).ok()?).ok()?;
                let process = std::fs::read_to_string(dir.join("pid")).ok().and_then(|p| Process::parse(&p));
                Some(Server { dir, image, process })
            })
            .collect()
    }

    /// The server for `image`: a live one first, else one that is stopping
    /// or dead (to wait for or clean up).
    fn server(&self, image: &ImageRef) -> Option<Server> {
        let mut candidates: Vec<Server> = self.servers().into_iter().filter(|s| &s.image == image).collect();
        candidates.sort_by_key(|s| (s.alive() && !s.stopping(), s.alive()));
        candidates.pop()
    }


    /// Starts a spare server in the background unless one is waiting.
    fn warm_up(&self, settings: &CephSettings) {
        let (slot, exe, dir, settings) = (Arc::clone(&self.spare), self.exe.clone(), self.spares_dir(), settings.clone());
        std::thread::spawn(move || {
            if slot.lock().unwrap().is_some() {
                return;
            }
            match spawn_spare(&exe, &dir, &settings) {
                Ok(spare) => {
                    let mut slot = slot.lock().unwrap();
                    if slot.is_none() {
                        *slot = Some(spare);
                    }
                }
                Err(e) => tracing::warn!("cannot start a spare user-space server: {e}"),
            }
        });
    }

    fn spares_dir(&self) -> PathBuf {
        self.root.with_file_name("userspace-spare")
    }

    /// The spare server if it fits these settings, else a new one; either
    /// way a new spare is started in the background for the next map.
    fn take_spare(&self, settings: &CephSettings) -> Result<Spare, HostError> {
        let taken = self.spare.lock().unwrap().take().filter(|s| s.fingerprint == fingerprint(settings));
        let spare = match taken {
            Some(s) if sys::process_alive(s.child.id()) => s,
            _ => spawn_spare(&self.exe, &self.spares_dir(), settings)?,
        };
        self.warm_up(settings);
        Ok(spare)
    }

    fn start_server(&self, image: &ImageRef, settings: &CephSettings, read_only: bool) -> Result<Server, HostError> {
        let mut spare = self.take_spare(settings)?;
        // One directory per server instance: cleaning up after a stopped
        // server must never touch the one that replaced it.
        let dir = self.root.join(format!("{}.{}", dir_name(image), nonce()));
        std::fs::create_dir_all(&dir).map_err(HostError::io("create", &dir))?;
        let image_json = serde_json::to_vec(image).expect("ImageRef serializes");
        crate::state::write_atomic(&dir.join("image.json"), &image_json)?;
        // The server keeps writing to its log wherever the file is.
        let _ = std::fs::rename(&spare.log, dir.join("server.log"));
        let assignment = serde_json::to_string(&Assignment { image: image.clone(), dir: dir.clone(), read_only }).expect("serializes");
        let sent = spare.stdin.write_all(format!("{assignment}\n").as_bytes());
        let ready = sent.map_err(|e| format!("cannot hand over the image: {e}")).and_then(|_| spare.wait_for("ready"));
        let process = Process::of(spare.child.id());
        if let Err(reason) = ready {
            let _ = sys::signal(process.pid, Signal::SIGKILL);
            let _ = spare.child.wait();
            let _ = clean_dead(&Server { dir, image: image.clone(), process: Some(process) });
            return Err(HostError::MapFailed { mapper: "userspace", image: image.to_string(), reason });
        }
        // Reap the server whenever it exits while we are alive.
        std::thread::spawn(move || {
            let _ = spare.child.wait();
        });
        Ok(Server { dir, image: image.clone(), process: Some(process) })
    }


    /// Tells a server to stop. Its data is already flushed (the filesystem
    /// on top was unmounted and the loop device detached, each flushing), so
    /// nobody needs to wait: a background thread reaps it.
    fn stop_server(&self, server: Server) -> Result<(), HostError> {
        std::fs::write(server.dir.join(STOPPING), b"").or_else(ignore_not_found).map_err(HostError::io("mark", &server.dir))?;
        if let Some(p) = server.process.filter(Process::alive) {
            sys::signal(p.pid, Signal::SIGTERM)?;
        }
        std::thread::spawn(move || {
            if let Err(e) = reap(&server) {
                tracing::error!("cleaning up the user-space server for {}: {e}", server.image);
            }
        });
        Ok(())
    }
}

/// Removes what a dead server left: its stale FUSE mount and directory.
fn clean_dead(server: &Server) -> Result<(), HostError> {
    if let Some(dev) = server.loop_device() {
        sys::loop_detach(&dev)?;
    }
    // A loop device on a dead server's file cannot be asked its name (the
    // kernel answers ENOTCONN): the device recorded at attach time is
    // detached when it is still on a dead file of that name.
    if let Some(dev) = std::fs::read_to_string(server.dir.join(LOOP_FILE)).ok().map(|d| PathBuf::from(d.trim())) {
        if sys::loop_backing_dead(&dev).is_some_and(|b| b.file_name() == Some(DISK_FILE.as_ref())) {
            tracing::warn!("detaching {} from the dead user-space server of {}", dev.display(), server.image);
            sys::loop_detach(&dev)?;
        }
    }
    let fuse = server.dir.join("fuse");
    let _ = nix::mount::umount2(&fuse, nix::mount::MntFlags::MNT_DETACH);
    std::fs::remove_dir_all(&server.dir).or_else(ignore_not_found).map_err(HostError::io("remove", &server.dir))
}

/// Waits for a server to exit (killing it after STOP_TIMEOUT) and
/// removes what it left.
fn reap(server: &Server) -> Result<(), HostError> {
    if let Some(p) = server.process {
        let start = Instant::now();
        while p.alive() && start.elapsed() < STOP_TIMEOUT {
            std::thread::sleep(Duration::from_millis(10));
        }
        if p.alive() {
            tracing::warn!("user-space server {} for {} did not stop in {}s: killing it", p.pid, server.image, STOP_TIMEOUT.as_secs());
            sys::signal(p.pid, Signal::SIGKILL)?;
            while p.alive() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    clean_dead(server)
}

fn ignore_not_found(e: std::io::Error) -> Result<(), std::io::Error> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Mapper for Userspace {
    fn kind(&self) -> MapperKind {
        MapperKind::Userspace
    }

    fn warm_up(&self, settings: &CephSettings) {
        Userspace::warm_up(self, settings)
    }

    fn check_features(&self, _image: &ImageRef, _features: u64) -> Result<(), HostError> {
        Ok(()) // librbd maps every feature
    }

    fn map(&self, image: &ImageRef, settings: &CephSettings, how: &super::MapOptions) -> Result<Mapping, HostError> {
        let server = match self.server(image) {
            Some(s) if s.stopping() => {
                // The last unmap's server is still shutting down: let it finish.
                reap(&s)?;
                self.start_server(image, settings, how.read_only)?
            }
            Some(s) if s.alive() => s,
            Some(dead) => {
                clean_dead(&dead)?;
                self.start_server(image, settings, how.read_only)?
            }
            None => self.start_server(image, settings, how.read_only)?,
        };
        let device = match server.loop_device() {
            Some(dev) => dev,
            None => match sys::loop_attach(&server.disk(), BLOCK_SIZE, sys::LoopIo::Direct, &server.loop_tag(), how.read_only) {
                Ok(dev) => {
                    let _ = std::fs::write(server.dir.join(LOOP_FILE), dev.as_os_str().as_encoded_bytes());
                    if let Err(e) = sys::set_read_ahead(&dev, READ_AHEAD_KIB) {
                        tracing::warn!("{e}: sequential reads of {image} stay at the kernel's default read-ahead");
                    }
                    if let Err(e) = sys::set_max_request(&dev, MAX_REQUEST_KIB) {
                        tracing::warn!("{e}: writes to {image} keep the loop device's default request size");
                    }
                    dev
                }
                Err(e) => {
                    let _ = self.stop_server(server);
                    return Err(e);
                }
            },
        };
        Ok(Mapping { image: image.clone(), device, mapper: MapperKind::Userspace, with: Default::default() })
    }

    fn unmap(&self, mapping: &Mapping) -> Result<(), HostError> {
        match self.server(&mapping.image) {
            Some(server) => {
                if let Some(dev) = server.loop_device() {
                    sys::loop_detach(&dev)?;
                }
                self.stop_server(server)
            }
            None => Ok(()),
        }
    }

    /// The server's librbd sees the new size at once (the header watch);
    /// the FUSE file shows it once its attributes are fetched again (they
    /// are cached for a second), and the loop device when told to look.
    fn refresh_size(&self, mapping: &Mapping, size: u64) -> Result<(), HostError> {
        let server = self.server(&mapping.image).ok_or_else(|| map_failed(format!("no server maps {}", mapping.image)))?;
        let disk = server.disk();
        let start = Instant::now();
        while std::fs::metadata(&disk).map_err(HostError::io("stat", &disk))?.len() < size {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(map_failed(format!("{} did not grow to {size} bytes", disk.display())));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        sys::loop_set_capacity(&mapping.device)?;
        super::wait_for_size(&mapping.device, size)
    }

    fn io_stats(&self, image: &ImageRef) -> Option<crate::host::io_stats::IoStats> {
        let server = self.server(image).filter(|s| s.alive() && !s.stopping())?;
        let mut stats = crate::host::io_stats::read(&server.dir.join(crate::host::io_stats::STATS_FILE))?;
        stats.resident_bytes = server.process.and_then(|p| sys::process_resident_bytes(p.pid));
        Some(stats)
    }

    /// Servers that died with their plugin (a forced `docker plugin
    /// disable` kills every process in it): their loop devices are
    /// detached (when still mounted somewhere, as soon as that goes), their
    /// FUSE mounts and directories removed.
    fn clean_up_dead(&self) -> Result<(), HostError> {
        for server in self.servers().into_iter().filter(|s| !s.alive()) {
            tracing::warn!("the user-space server for {} is gone: cleaning up after it", server.image);
            clean_dead(&server)?;
        }
        Ok(())
    }

    /// The loop device the state recorded, when it is still on a dead
    /// server's file (the kernel names a file of a FUSE mount that is gone
    /// by its path inside it, `/disk`; no live server maps the image).
    fn forget_dead(&self, recorded: &Mapping) -> Result<(), HostError> {
        if self.server(&recorded.image).is_some() {
            return Ok(());
        }
        if sys::loop_backing_dead(&recorded.device).is_some_and(|b| b.file_name() == Some(DISK_FILE.as_ref())) {
            tracing::warn!("detaching {} from the dead user-space server of {} (its directory is gone)", recorded.device.display(), recorded.image);
            sys::loop_detach(&recorded.device)?;
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<Mapping>, HostError> {
        Ok(self
            .servers()
            .into_iter()
            .filter(|s| s.alive() && !s.stopping())
            .filter_map(|s| {
                let device = s.loop_device()?;
                Some(Mapping { image: s.image, device, mapper: MapperKind::Userspace, with: Default::default() })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_are_safe_and_distinct() {
        let a = ImageRef { pool: "rbd".into(), namespace: "".into(), image: "my vol@1".into() };
        let b = ImageRef { pool: "rbd".into(), namespace: "my vol".into(), image: "1".into() };
        assert_eq!(dir_name(&a), "rbd@@my%20vol%401");
        assert_ne!(dir_name(&a), dir_name(&b));
        assert!(!dir_name(&a).contains('/'));
    }
}
