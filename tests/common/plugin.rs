//! A real `rbdvol serve` process against a test cluster, spoken to exactly
//! as dockerd speaks: HTTP/1.1 POST on its Unix socket, no Content-Type.
//! Dropping the fixture stops the plugin and removes everything it left on
//! the host (mounts, loop devices, user-space servers, files).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rbdvol::host::sys::loop_devices;

use super::cluster::TestCluster;

pub struct Plugin {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub host_id: String,
    env: Vec<(String, String)>,
    extra_args: Vec<String>,
    /// A network namespace to run in (`/run/netns/NAME`).
    netns: Option<String>,
    /// Runs `rbdvol csi` (CSI on `socket`) instead of `rbdvol serve`.
    csi: bool,
}

/// One HTTP answer from the plugin.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub json: serde_json::Value,
}

impl Answer {
    pub fn err(&self) -> &str {
        self.json["Err"].as_str().unwrap_or("")
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rbdvol")
}

impl Plugin {
    /// Starts a plugin with its own state, mount and run directories.
    pub fn start(cluster: &TestCluster, host_id: &str) -> Plugin {
        Self::start_with(cluster, host_id, None, &[])
    }

    /// `socket`: where to listen (default: inside the plugin's directory).
    pub fn start_with(cluster: &TestCluster, host_id: &str, socket: Option<PathBuf>, extra_args: &[&str]) -> Plugin {
        let settings = cluster.admin_settings();
        let env = vec![
            ("RBD_CONF_GLOBAL_MON_HOST".to_string(), settings.mon_host.clone()),
            ("RBD_CONF_KEYRING_USER".to_string(), "client.admin".to_string()),
            ("RBD_CONF_KEYRING_KEY".to_string(), settings.key.expose().to_string()),
        ];
        Self::start_env(host_id, env, socket, extra_args)
    }

    /// A plugin with exactly this environment (besides PATH and RUST_LOG).
    pub fn start_env(host_id: &str, env: Vec<(String, String)>, socket: Option<PathBuf>, extra_args: &[&str]) -> Plugin {
        Self::start_in(None, host_id, env, socket, extra_args)
    }

    /// A plugin in network namespace `netns` (a path such as
    /// `/run/netns/NAME`), entered with `nsenter --net` only: its mounts
    /// stay visible to the test.
    pub fn start_in(netns: Option<String>, host_id: &str, env: Vec<(String, String)>, socket: Option<PathBuf>, extra_args: &[&str]) -> Plugin {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!("/tmp/rbdvol-plugin-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Plugin {
            child: None,
            socket: socket.unwrap_or_else(|| dir.join("rbd.sock")),
            dir,
            host_id: host_id.to_string(),
            env,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            netns,
            csi: false,
        };
        p.spawn();
        p
    }

    /// `rbdvol csi` with exactly this environment, serving CSI on
    /// `<dir>/csi.sock`, staging under `<dir>/staged`, publishing under
    /// `<dir>/published`.
    pub fn start_csi(host_id: &str, env: Vec<(String, String)>) -> Plugin {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!("/tmp/rbdvol-csi-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Plugin { child: None, socket: dir.join("csi.sock"), dir, host_id: host_id.to_string(), env, extra_args: vec![], netns: None, csi: true };
        p.spawn();
        p
    }

    pub fn stage_root(&self) -> PathBuf {
        self.dir.join("staged")
    }

    pub fn publish_root(&self) -> PathBuf {
        self.dir.join("published")
    }

    pub fn mount_root(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("serve.log")).unwrap();
        let mut cmd = match &self.netns {
            // nsenter execs rbdvol: the child's pid is the plugin's.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={ns}")).arg("--").arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        if self.csi {
            cmd.arg("csi").arg("--endpoint").arg(format!("unix://{}", self.socket.display()));
            cmd.arg("--stage-root").arg(self.stage_root()).arg("--publish-root").arg(self.publish_root());
        } else {
            cmd.arg("serve").arg("--socket").arg(&self.socket);
        }
        cmd.arg("--host-id")
            .arg(&self.host_id)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--mount-root")
            .arg(self.mount_root())
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(&self.extra_args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", std::env::var("RBDVOL_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start rbdvol serve");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rbdvol serve exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("rbdvol serve did not listen within 10 s:\n{}", self.log());
    }

    /// The pids of this plugin's user-space mapper servers.
    pub fn server_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for e in std::fs::read_dir(self.run_dir().join("userspace")).into_iter().flatten().flatten() {
            pids.extend(live_server_pid(&e.path()));
        }
        pids
    }

    /// Waits until the log contains `text`; panics with the log after `limit`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(start.elapsed() < limit, "'{text}' not in the log of {} after {limit:?}:\n{}", self.host_id, self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("plugin running").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sets (or with None removes) a variable of the plugin's environment
    /// from its next start on.
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.env.push((name.to_string(), v.to_string()));
        }
    }

    /// Waits up to `limit` for the plugin process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Like `call`, but None when the plugin closed the connection without
    /// answering (it died).
    pub fn try_call(&self, endpoint: &str, body: &str) -> Option<Answer> {
        let (socket, endpoint, body) = (self.socket.clone(), endpoint.to_string(), body.to_string());
        std::thread::spawn(move || raw_call(&socket, &endpoint, &body)).join().ok()
    }

    /// Sends `body` to `endpoint` and hangs up after `after`, as dockerd
    /// does when it gives up on a call.
    pub fn call_and_hang_up(&self, endpoint: &str, body: &str, after: Duration) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        let req = format!(
            "POST /{endpoint} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        std::thread::sleep(after);
        drop(s);
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM and wait; returns how long the plugin took to exit.
    pub fn stop(&mut self) -> Duration {
        let start = Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
        start.elapsed()
    }

    /// POSTs `body` to `/<endpoint>` the way dockerd does.
    pub fn call(&self, endpoint: &str, body: &str) -> Answer {
        raw_call(&self.socket, endpoint, body)
    }

    pub fn create(&self, name: &str, opts: &[(&str, &str)]) -> Answer {
        let opts: serde_json::Map<String, serde_json::Value> = opts.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        self.call("VolumeDriver.Create", &serde_json::json!({ "Name": name, "Opts": opts }).to_string())
    }

    pub fn mount(&self, name: &str, id: &str) -> Answer {
        self.call("VolumeDriver.Mount", &serde_json::json!({ "Name": name, "ID": id }).to_string())
    }

    pub fn unmount(&self, name: &str, id: &str) -> Answer {
        self.call("VolumeDriver.Unmount", &serde_json::json!({ "Name": name, "ID": id }).to_string())
    }

    pub fn get(&self, name: &str) -> Answer {
        self.call("VolumeDriver.Get", &serde_json::json!({ "Name": name }).to_string())
    }

    pub fn remove(&self, name: &str) -> Answer {
        self.call("VolumeDriver.Remove", &serde_json::json!({ "Name": name }).to_string())
    }

    /// What this plugin still has on the host once the user-space servers it
    /// stopped have exited (they are reaped in the background; 10 s at most).
    pub fn leftovers(&self) -> Vec<String> {
        let start = Instant::now();
        loop {
            let found = self.leftovers_now();
            if found.is_empty() || start.elapsed() > Duration::from_secs(10) {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What this plugin has on the host right now: mounts and loop devices
    /// under its directories, user-space servers, state files.
    pub fn leftovers_now(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mountinfo.lines() {
            let target = line.split(' ').nth(4).unwrap_or("");
            if target.starts_with(self.dir.to_str().unwrap()) {
                found.push(format!("mount {target}"));
            }
        }
        for (dev, backing) in loop_devices() {
            if backing.starts_with(&self.dir) {
                found.push(format!("loop {} -> {}", dev.display(), backing.display()));
            }
        }
        for dir in read_dir(&self.run_dir().join("userspace")) {
            found.push(format!("user-space server dir {}", dir.display()));
        }
        for f in read_dir(&self.state_dir().join("volumes")) {
            if !f.file_name().unwrap().to_string_lossy().starts_with('.') {
                found.push(format!("state {}", f.display()));
            }
        }
        found
    }
}

pub fn raw_call(socket: &Path, endpoint: &str, body: &str) -> Answer {
    let mut s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let req = format!(
        "POST /{endpoint} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nAccept-Encoding: gzip\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head, rest) = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "plugin closed the connection without answering {endpoint}");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&buf[..pos]).into_owned(), buf[pos + 4..].to_vec());
        }
    };
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("content-length");
    let mut body = rest;
    while body.len() < len {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        body.extend_from_slice(&chunk[..n]);
    }
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{endpoint} answered non-JSON ({e}): {}", String::from_utf8_lossy(&body)));
    Answer { status, headers: head, json }
}

/// The pid of the user-space server of directory `server`, if that server
/// still runs: its pid file says "pid start-time", and a pid alone may
/// name another process by now (pid_max is 32768 here: a CI run reuses
/// pids, and killing by a stale one once took down another test's plugin).
fn live_server_pid(server: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(server.join("pid")).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let started: u64 = parts.next()?.parse().ok()?;
    (rbdvol::host::sys::process_start_time(pid) == Some(started)).then_some(pid)
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default()
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of the plugin in {} (the test failed) ----\n{}", self.dir.display(), self.log());
        }
        self.kill9();
        // Undo whatever the plugin left: container mounts first, then loop
        // devices, then the user-space servers and their FUSE mounts.
        let dir = self.dir.to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut targets: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|t| t.starts_with(&dir))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in targets.iter().filter(|t| !t.ends_with("/fuse")) {
            let _ = nix::mount::umount2(t.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for (dev, backing) in loop_devices() {
            if backing.starts_with(&self.dir) {
                let _ = Command::new("losetup").arg("-d").arg(&dev).status();
            }
        }
        for server in read_dir(&self.run_dir().join("userspace")) {
            if let Some(pid) = live_server_pid(&server) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = nix::mount::umount2(&server.join("fuse"), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
