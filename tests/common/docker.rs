//! The real dockerd that scripts/test.sh starts (or the one already running),
//! a tiny test image made with `docker import` (no registry here), and
//! rbdvol registered with it as a legacy plugin under a unique driver name.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::cluster::TestCluster;
use super::plugin::Plugin;

pub const IMAGE: &str = "rbdvol-test-busybox:latest";

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("run the docker client")
}

/// Runs docker and returns its stdout; panics with stderr on failure.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker volume create -d <driver> -o k=v ... name`.
pub fn volume_create(driver: &str, name: &str, opts: &[&str]) -> Output {
    let mut args = vec!["volume", "create", "-d", driver];
    for o in opts {
        args.push("-o");
        args.push(o);
    }
    args.push(name);
    docker(&args)
}

/// Fails loudly when no dockerd answers: CI must have one.
pub fn require_dockerd() {
    let out = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        out.status.success(),
        "no dockerd answers (scripts/test.sh starts one): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the busybox test image from the host's static busybox once.
pub fn ensure_test_image() {
    if docker(&["image", "inspect", IMAGE]).status.success() {
        return;
    }
    let tar = test_image_tar();
    let mut import = Command::new("docker")
        .args(["import", "-", IMAGE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    import.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(import.wait().unwrap().success(), "docker import of the test image failed");
}

/// The test image's root filesystem as a tar stream for `docker import`:
/// the host's static busybox and links for the applets the tests use.
pub fn test_image_tar() -> Vec<u8> {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    for applet in ["sh", "cat", "echo", "ls", "dd", "sync", "stat", "sleep", "mkdir", "rm", "id", "touch", "wc", "md5sum", "head"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let tar = Command::new("tar").arg("-C").arg(root.path()).args(["-c", "."]).output().expect("tar");
    assert!(tar.status.success());
    tar.stdout
}

/// The driver name the tests register rbdvol under. It is fixed: dockerd
/// keeps its records of a driver's volumes across runs and retries a driver
/// whose socket is gone for 15 s per call, so a new name per run would make
/// every later `docker volume` command slow.
pub const DRIVER: &str = "rbdvoltest";

/// One test at a time owns the driver's socket.
static DRIVER_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// rbdvol as a legacy plugin: its socket in /run/docker/plugins.
pub struct DockerPlugin {
    pub driver: String,
    pub plugin: Plugin,
    volumes: std::cell::RefCell<Vec<String>>,
    _exclusive: std::sync::MutexGuard<'static, ()>,
}

impl DockerPlugin {
    pub fn start(cluster: &TestCluster) -> DockerPlugin {
        let exclusive = DRIVER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        require_dockerd();
        ensure_test_image();
        std::fs::create_dir_all("/run/docker/plugins").unwrap();
        let socket = PathBuf::from(format!("/run/docker/plugins/{DRIVER}.sock"));
        let plugin = Plugin::start_with(cluster, &super::cluster::unique("dockerhost"), Some(socket), &[]);
        DockerPlugin { driver: DRIVER.to_string(), plugin, volumes: Default::default(), _exclusive: exclusive }
    }

    /// `docker volume create -d <driver> -o k=v ... name`, remembered for cleanup.
    pub fn create_volume(&self, name: &str, opts: &[&str]) -> Output {
        self.volumes.borrow_mut().push(name.to_string());
        volume_create(&self.driver, name, opts)
    }
}

impl Drop for DockerPlugin {
    fn drop(&mut self) {
        // Containers first (they hold mounts), then dockerd's records.
        let ids = docker(&["ps", "-aq", "--filter", &format!("label=rbdvol-test={}", self.driver)]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        for v in self.volumes.borrow().iter() {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
        let _ = std::fs::remove_file(&self.plugin.socket);
    }
}
