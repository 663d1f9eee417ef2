//! rbdvol as a managed Docker plugin: the plugin directory built by
//! `docker/build.sh` from the rbdvol binary under test, then `docker plugin
//! create`, `set` and `enable` against a real dockerd. Dropping the fixture
//! removes the test's containers and volumes, then the plugin.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::cluster::TestCluster;
use super::docker::{docker, docker_ok, ensure_test_image, require_dockerd};

/// One managed-plugin test at a time: they share dockerd's plugin table.
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct ManagedPlugin {
    pub name: String,
    dir: tempfile::TempDir,
    volumes: std::cell::RefCell<Vec<String>>,
    _exclusive: std::sync::MutexGuard<'static, ()>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl ManagedPlugin {
    /// Builds the plugin directory and creates the plugin (disabled).
    pub fn create(name: &str) -> ManagedPlugin {
        let exclusive = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        require_dockerd();
        ensure_test_image();
        // A plugin of that name left by an interrupted run.
        let _ = docker(&["plugin", "rm", "-f", name]);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plugin");
        let build = Command::new(repo().join("docker/build.sh"))
            .arg("--binary")
            .arg(super::plugin::bin())
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run docker/build.sh");
        assert!(build.status.success(), "docker/build.sh: {}{}", String::from_utf8_lossy(&build.stdout), String::from_utf8_lossy(&build.stderr));
        docker_ok(&["plugin", "create", name, out.to_str().unwrap()]);
        let p = ManagedPlugin { name: name.to_string(), dir, volumes: Default::default(), _exclusive: exclusive };
        p.set_host_mounts();
        p
    }

    /// On a host without a kernel modules directory (a VM kernel with
    /// everything built in), an empty one for the plugin's `/lib/modules`.
    /// Again after an upgrade, which resets mount sources.
    pub fn set_host_mounts(&self) {
        if !Path::new("/lib/modules").exists() {
            let empty = self.dir.path().join("no-modules");
            std::fs::create_dir_all(&empty).unwrap();
            self.set(&[("modules.source", empty.to_str().unwrap())]);
        }
    }

    /// `docker plugin set` (the plugin must be disabled).
    pub fn set(&self, settings: &[(&str, &str)]) {
        let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["plugin", "set", &self.name];
        args.extend(pairs.iter().map(String::as_str));
        docker_ok(&args);
    }

    /// Points the plugin at the test cluster as client.admin.
    pub fn set_cluster(&self, cluster: &TestCluster) {
        let s = cluster.admin_settings();
        self.set(&[
            ("RBD_CONF_GLOBAL_MON_HOST", &s.mon_host),
            ("RBD_CONF_KEYRING_USER", "client.admin"),
            ("RBD_CONF_KEYRING_KEY", s.key.expose()),
        ]);
    }

    pub fn enable(&self) -> Duration {
        let start = Instant::now();
        docker_ok(&["plugin", "enable", &self.name]);
        start.elapsed()
    }

    pub fn disable(&self, force: bool) -> Output {
        let mut args = vec!["plugin", "disable"];
        if force {
            args.push("-f");
        }
        args.push(&self.name);
        docker(&args)
    }

    pub fn id(&self) -> String {
        docker_ok(&["plugin", "inspect", "-f", "{{.Id}}", &self.name])
    }

    /// The pids of the plugin's `rbdvol serve` processes.
    pub fn serve_pids(&self) -> Vec<i32> {
        rbdvol_pids_in_plugin(&self.id(), "serve")
    }

    /// Waits until a serve other than `old` runs; panics after 15 s.
    pub fn wait_for_new_serve(&self, old: &[i32]) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(p) = self.serve_pids().into_iter().find(|p| !old.contains(p)) {
                return p;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "no new rbdvol serve in the plugin after 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `docker volume create -d <plugin> -o k=v ... name`, remembered for cleanup.
    pub fn create_volume(&self, name: &str, opts: &[&str]) -> Output {
        self.volumes.borrow_mut().push(name.to_string());
        super::docker::volume_create(&self.name, name, opts)
    }

    /// Pushes the plugin built for this test, as `<registry>/<repo>:latest`,
    /// to `registry` (a second plugin made from a copy of its directory,
    /// pushed, then removed locally); returns the reference.
    pub fn push_copy(&self, registry: &Registry, repo: &str) -> String {
        let reference = format!("{}/{repo}:latest", registry.address);
        let _ = docker(&["plugin", "rm", "-f", &reference]);
        // A copy with one file more: dockerd refuses a second plugin whose
        // rootfs is the same content as one it has.
        let next = self.dir.path().join("plugin-next");
        let cp = Command::new("cp").arg("-a").arg(self.dir.path().join("plugin")).arg(&next).status().expect("cp");
        assert!(cp.success(), "cp -a of the plugin directory failed");
        std::fs::write(next.join("rootfs/rbdvol-next"), reference.as_bytes()).unwrap();
        docker_ok(&["plugin", "create", &reference, next.to_str().unwrap()]);
        let pushed = docker(&["plugin", "push", &reference]);
        let _ = docker(&["plugin", "rm", "-f", &reference]);
        assert!(pushed.status.success(), "docker plugin push {reference}: {}", String::from_utf8_lossy(&pushed.stderr));
        reference
    }

    /// `docker plugin upgrade` to `remote` (the plugin must be disabled).
    pub fn upgrade(&self, remote: &str) -> Output {
        docker(&["plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", &self.name, remote])
    }

    /// The label the test's containers carry, for cleanup.
    pub fn label(&self) -> String {
        format!("rbdvol-test={}", self.name)
    }
}

/// A local registry (Debian's docker-registry, on a free loopback port,
/// storing in a temporary directory), which `docker plugin upgrade` pulls
/// from; dockerd speaks plain HTTP to a loopback registry. Killed by its pid
/// when dropped.
pub struct Registry {
    pub address: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let bin = "/usr/bin/docker-registry";
        assert!(Path::new(bin).exists(), "{bin} is missing: run scripts/deps.sh (package docker-registry)");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        std::fs::write(
            &config,
            format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n", storage.display()),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin).arg("serve").arg(&config).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start docker-registry");
        let registry = Registry { address, child, _dir: dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(&registry.address).is_err() {
            assert!(start.elapsed() < Duration::from_secs(15), "docker-registry does not listen on {} after 15 s", registry.address);
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagedPlugin {
    fn drop(&mut self) {
        let ids = docker(&["ps", "-aq", "--filter", &format!("label={}", self.label())]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        for v in self.volumes.borrow().iter() {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
        let _ = docker(&["plugin", "disable", "-f", &self.name]);
        let _ = docker(&["plugin", "rm", "-f", &self.name]);
    }
}

/// The pids of the `rbdvol COMMAND` processes of the managed plugin with
/// id `plugin_id` (found by that id in their cgroup; the supervisor,
/// `rbdvol plugin ...`, not counted).
pub fn rbdvol_pids_in_plugin(plugin_id: &str, command: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.len() < 2 || !args[0].ends_with(b"/rbdvol") || args[1] != command.as_bytes() {
            continue;
        }
        if std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default().contains(plugin_id) {
            pids.push(pid);
        }
    }
    pids
}
