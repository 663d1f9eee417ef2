//! The user-space mapper: a detached `rbdvol userspace-serve` process serves
//! the image as a FUSE file (see `host::fusefs`), and a loop device with
//! direct I/O turns that file into a block device. The server outlives a
//! restart of `rbdvol serve`; its directory under the run dir records which
//! image it serves, so a restarted plugin finds the mapping again.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Mapper, MapperKind, Mapping};
use crate::config::CephSettings;
use crate::host::fusefs::{ServerInput, DISK_FILE};
use crate::host::{sys, HostError, ImageRef};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The loop device's logical block size: what ext4 and xfs use anyway.
const BLOCK_SIZE: u32 = 4096;

pub struct Userspace {
    root: PathBuf,
    exe: PathBuf,
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

/// The state of one server directory.
struct Server {
    dir: PathBuf,
    image: ImageRef,
    pid: Option<u32>,
}

/// Marks a server that was told to stop: never reused for a new mapping.
const STOPPING: &str = "stopping";

impl Server {
    fn stopping(&self) -> bool {
        self.dir.join(STOPPING).exists()
    }

    fn disk(&self) -> PathBuf {
        self.dir.join("fuse").join(DISK_FILE)
    }

    fn alive(&self) -> bool {
        self.pid.is_some_and(sys::process_alive)
    }

    fn loop_device(&self) -> Option<PathBuf> {
        let disk = self.disk();
        sys::loop_devices().into_iter().find(|(_, backing)| *backing == disk).map(|(dev, _)| dev)
    }
}

impl Userspace {
    pub fn new(root: PathBuf, exe: PathBuf) -> Userspace {
        Userspace { root, exe }
    }

    fn servers(&self) -> Vec<Server> {
        let Ok(rd) = std::fs::read_dir(&self.root) else { return Vec::new() };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let dir = e.path();
                let image: ImageRef = serde_json::from_slice(&std::fs::read(dir.join("image.json")).ok()?).ok()?;
                let pid = std::fs::read_to_string(dir.join("pid")).ok().and_then(|p| p.trim().parse().ok());
                Some(Server { dir, image, pid })
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

    /// Removes what a dead server left: its stale FUSE mount and directory.
    fn clean_dead(&self, server: &Server) -> Result<(), HostError> {
        if let Some(dev) = server.loop_device() {
            sys::loop_detach(&dev)?;
        }
        let fuse = server.dir.join("fuse");
        let _ = nix::mount::umount2(&fuse, nix::mount::MntFlags::MNT_DETACH);
        std::fs::remove_dir_all(&server.dir).or_else(ignore_not_found).map_err(HostError::io("remove", &server.dir))
    }

    fn start_server(&self, image: &ImageRef, settings: &CephSettings) -> Result<Server, HostError> {
        // One directory per server instance: cleaning up after a stopped
        // server must never touch the one that replaced it.
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = self.root.join(format!("{}.{nonce:x}", dir_name(image)));
        std::fs::create_dir_all(&dir).map_err(HostError::io("create", &dir))?;
        let image_json = serde_json::to_vec(image).expect("ImageRef serializes");
        crate::state::write_atomic(&dir.join("image.json"), &image_json)?;
        let log = std::fs::File::create(dir.join("server.log")).map_err(HostError::io("create", dir.join("server.log")))?;
        let mut cmd = Command::new(&self.exe);
        // The key arrives on stdin; the environment carries only logging.
        crate::host::tools::Tools::clean_env(&mut cmd);
        for var in ["RUST_LOG", "LOG_LEVEL"] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        cmd.arg("userspace-serve").arg("--dir").arg(&dir);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log);
        // SAFETY: setsid is async-signal-safe; it puts the server in its own
        // session so signals to the plugin's process group never reach it.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let fail = |reason: String| HostError::MapFailed { mapper: "userspace", image: image.to_string(), reason };
        let mut child = cmd.spawn().map_err(|e| fail(format!("cannot start {}: {e}", self.exe.display())))?;
        let input = serde_json::to_string(&ServerInput::new(image, settings)).expect("input serializes");
        {
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(input.as_bytes()).and_then(|_| stdin.write_all(b"\n")).map_err(|e| fail(format!("cannot hand over settings: {e}")))?;
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let status = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let pid = child.id();
        // Reap the server whenever it exits while we are alive.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let status = status.trim();
        if status != "ready" {
            let _ = sys::signal(pid, Signal::SIGKILL);
            let server = Server { dir: dir.clone(), image: image.clone(), pid: Some(pid) };
            let _ = self.clean_dead(&server);
            let reason = status.strip_prefix("error: ").map(str::to_string).unwrap_or_else(|| {
                format!("the server did not start within {}s (log: {})", START_TIMEOUT.as_secs(), dir.join("server.log").display())
            });
            return Err(fail(reason));
        }
        Ok(Server { dir, image: image.clone(), pid: Some(pid) })
    }

    /// Waits for a server to exit (killing it after STOP_TIMEOUT) and
    /// removes what it left.
    fn reap(&self, server: &Server) -> Result<(), HostError> {
        if let Some(pid) = server.pid {
            let start = Instant::now();
            while sys::process_alive(pid) && start.elapsed() < STOP_TIMEOUT {
                std::thread::sleep(Duration::from_millis(10));
            }
            if sys::process_alive(pid) {
                tracing::warn!("user-space server {pid} for {} did not stop in {}s: killing it", server.image, STOP_TIMEOUT.as_secs());
                sys::signal(pid, Signal::SIGKILL)?;
                while sys::process_alive(pid) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        self.clean_dead(server)
    }

    /// Tells a server to stop. Its data is already flushed (the filesystem
    /// on top was unmounted and the loop device detached, each flushing), so
    /// nobody needs to wait: a background thread reaps it.
    fn stop_server(&self, server: Server) -> Result<(), HostError> {
        std::fs::write(server.dir.join(STOPPING), b"").or_else(ignore_not_found).map_err(HostError::io("mark", &server.dir))?;
        if let Some(pid) = server.pid.filter(|p| sys::process_alive(*p)) {
            sys::signal(pid, Signal::SIGTERM)?;
        }
        let reaper = Userspace { root: self.root.clone(), exe: self.exe.clone() };
        std::thread::spawn(move || {
            if let Err(e) = reaper.reap(&server) {
                tracing::error!("cleaning up the user-space server for {}: {e}", server.image);
            }
        });
        Ok(())
    }
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

    fn check_features(&self, _image: &ImageRef, _features: u64) -> Result<(), HostError> {
        Ok(()) // librbd maps every feature
    }

    fn map(&self, image: &ImageRef, settings: &CephSettings) -> Result<Mapping, HostError> {
        let server = match self.server(image) {
            Some(s) if s.stopping() => {
                // The last unmap's server is still shutting down: let it finish.
                self.reap(&s)?;
                self.start_server(image, settings)?
            }
            Some(s) if s.alive() => s,
            Some(dead) => {
                self.clean_dead(&dead)?;
                self.start_server(image, settings)?
            }
            None => self.start_server(image, settings)?,
        };
        let device = match server.loop_device() {
            Some(dev) => dev,
            None => match sys::loop_attach(&server.disk(), BLOCK_SIZE) {
                Ok(dev) => dev,
                Err(e) => {
                    let _ = self.stop_server(server);
                    return Err(e);
                }
            },
        };
        Ok(Mapping { image: image.clone(), device, mapper: MapperKind::Userspace })
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

    fn list(&self) -> Result<Vec<Mapping>, HostError> {
        Ok(self
            .servers()
            .into_iter()
            .filter(|s| s.alive() && !s.stopping())
            .filter_map(|s| {
                let device = s.loop_device()?;
                Some(Mapping { image: s.image, device, mapper: MapperKind::Userspace })
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
