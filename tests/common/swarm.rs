//! A real Docker swarm with rbdvol's CSI plugin: dockerd 28.5.2 (Debian
//! forky's, beside the system's 20.10, which cannot reach CSI plugins) run
//! by `scripts/docker26.sh` as its own instance (`DOCKER26_INSTANCE=1`: its
//! own socket, roots, bridges, containerd and swarm ports, so it never
//! touches the 20.10 daemon nor a 28.5.2 daemon started by hand), made a
//! one-node swarm, the busybox test image imported into it, and the CSI
//! plugin directory built once by `docker/build.sh --csi` from the rbdvol
//! binary under test. Every command goes through that package's own client
//! with `-H` (its API matches).
//!
//! `Swarm::shared()` lives as long as the test process: the script's reaper
//! (`start --owner-pid`) purges the daemon (services, volumes, plugins,
//! swarm state, its bridges) as soon as the process is gone, however it
//! ends. Each test makes its own plugin under a fresh name (`CsiPlugin`,
//! from a copy of the plugin directory with one file more: dockerd refuses a
//! second plugin of byte-identical content); dropping it removes the
//! services, volumes and secrets made through it, then the plugin.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::cluster::{unique, TestCluster};

/// The tests' dockerd: `DOCKER26_INSTANCE` of scripts/docker26.sh.
pub const INSTANCE: &str = "1";
pub const IMAGE: &str = "rbdvol-test-busybox:latest";
const MIB: u64 = 1 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs scripts/docker26.sh for the tests' instance.
fn docker26(args: &[&str]) -> Output {
    let script = repo().join("scripts/docker26.sh");
    Command::new(&script)
        .args(args)
        .env("DOCKER26_INSTANCE", INSTANCE)
        .env_remove("DOCKER26_SOCK")
        .env_remove("DOCKER26_DATA_ROOT")
        .env_remove("DOCKER26_EXEC_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).trim().to_string()
}

pub struct Swarm {
    /// The docker client of the 28.5.2 package.
    client: PathBuf,
    /// `unix:///run/rbdvol-docker26-1.sock`
    pub host: String,
    /// dockerd's log, plugins' output included; kept after the run.
    pub log: PathBuf,
    /// This node's swarm ID.
    pub node_id: String,
    pub data_root: PathBuf,
    /// The plugin directory `docker/build.sh --csi` made, plugin copies, an
    /// empty modules directory, the client's config directory: under the
    /// daemon's data root, which its purge deletes.
    work: PathBuf,
    plugin_dir: PathBuf,
    owned: bool,
}

impl Swarm {
    /// The swarm shared by the tests of this process.
    pub fn shared() -> &'static Swarm {
        static SHARED: OnceLock<Swarm> = OnceLock::new();
        SHARED.get_or_init(|| Swarm::boot(false))
    }

    /// A swarm of its own, purged when the value drops.
    pub fn start() -> Swarm {
        Swarm::boot(true)
    }

    fn boot(owned: bool) -> Swarm {
        let started = Instant::now();
        let out = docker26(&["path"]);
        assert!(out.status.success(), "scripts/docker26.sh path: no dockerd 28 ({}):\n{}", out.status, text(&out.stderr));
        let paths = text(&out.stdout);
        let client = PathBuf::from(paths.lines().nth(1).unwrap_or_else(|| panic!("docker26.sh path printed no client: {paths}")));
        // One tests' daemon at a time: one log, kept after the run.
        let log = std::env::temp_dir().join("rbdvol-swarm-dockerd.log");
        let out = docker26(&["start", log.to_str().unwrap(), "--owner-pid", &std::process::id().to_string()]);
        assert!(
            out.status.success(),
            "dockerd 28 did not start (scripts/docker26.sh start, instance {INSTANCE}): {}\n{}\nits log {}:\n{}",
            out.status,
            text(&out.stderr),
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let out = docker26(&["swarm-init"]);
        assert!(out.status.success(), "docker swarm init failed: {}\n{}", text(&out.stdout), text(&out.stderr));
        let env = text(&docker26(&["env"]).stdout);
        let host = env.strip_prefix("export DOCKER_HOST=").unwrap_or_else(|| panic!("docker26.sh env printed {env:?}")).to_string();
        let mut swarm = Swarm { client, host, log, node_id: String::new(), data_root: PathBuf::new(), work: PathBuf::new(), plugin_dir: PathBuf::new(), owned };
        let info = swarm.docker_ok(&["info", "--format", "{{.ServerVersion}} {{.Swarm.LocalNodeState}} {{.Swarm.NodeID}} {{.DockerRootDir}}"]);
        let fields: Vec<&str> = info.split_whitespace().collect();
        assert!(fields.len() == 4 && fields[1] == "active", "the tests' dockerd is not an active swarm node: {info}");
        swarm.node_id = fields[2].to_string();
        swarm.data_root = PathBuf::from(fields[3]);
        swarm.work = swarm.data_root.join("rbdvol-tests");
        swarm.plugin_dir = swarm.work.join("plugin");
        std::fs::create_dir_all(swarm.work.join("docker-config")).unwrap();
        let dead = detach_dead_loop_devices();
        if !dead.is_empty() {
            println!("swarm: detached loop devices an interrupted run left on dead user-space servers: {dead:?}");
        }
        swarm.import_test_image();
        swarm.build_plugin_dir();
        println!("swarm: dockerd {} at {} ready in {:?} (log {})", fields[0], swarm.host, started.elapsed(), swarm.log.display());
        swarm
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.client);
        cmd.arg("-H").arg(&self.host).args(args).env("DOCKER_HOST", &self.host).env_remove("DOCKER_CONTEXT");
        // Its own client config (not ~/.docker), once the data root is known.
        if !self.work.as_os_str().is_empty() {
            cmd.env("DOCKER_CONFIG", self.work.join("docker-config"));
        }
        cmd
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().expect("run the docker 28 client")
    }

    /// Runs docker and returns its stdout; panics with stderr on failure.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {args:?} failed: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// Runs docker with `input` on its stdin.
    pub fn docker_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run the docker 28 client");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    fn import_test_image(&self) {
        let out = self.docker_stdin(&["import", "-", IMAGE], &super::docker::test_image_tar());
        assert!(out.status.success(), "docker import of the test image into dockerd 28: {}", text(&out.stderr));
    }

    fn build_plugin_dir(&self) {
        let build = Command::new(repo().join("docker/build.sh"))
            .arg("--csi")
            .arg("--binary")
            .arg(super::plugin::bin())
            .arg("--out")
            .arg(&self.plugin_dir)
            .output()
            .expect("run docker/build.sh");
        assert!(build.status.success(), "docker/build.sh --csi: {}{}", text(&build.stdout), text(&build.stderr));
    }

    /// Makes, sets and enables a CSI plugin under a fresh name: the built
    /// directory, `settings` (`docker plugin set` pairs) and, on a host
    /// without /lib/modules, an empty modules directory.
    pub fn plugin(&self, settings: &[(&str, &str)]) -> CsiPlugin<'_> {
        let name = unique("rbdvolcsi");
        let dir = self.work.join(&name);
        let cp = Command::new("cp").arg("-a").arg(&self.plugin_dir).arg(&dir).status().expect("cp");
        assert!(cp.success(), "cp -a of the plugin directory failed");
        std::fs::write(dir.join("rootfs/rbdvol-test-plugin"), name.as_bytes()).unwrap();
        let start = Instant::now();
        self.docker_ok(&["plugin", "create", &name, dir.to_str().unwrap()]);
        let created = start.elapsed();
        let _ = std::fs::remove_dir_all(&dir);
        let p = CsiPlugin { swarm: self, name, made: Default::default() };
        if !Path::new("/lib/modules").exists() {
            let empty = self.work.join("no-modules");
            std::fs::create_dir_all(&empty).unwrap();
            p.set(&[("modules.source", empty.to_str().unwrap())]);
        }
        p.set(settings);
        let start = Instant::now();
        self.docker_ok(&["plugin", "enable", &p.name]);
        println!("plugin {}: created in {created:?}, enabled in {:?}", p.name, start.elapsed());
        p
    }

    /// `docker volume inspect` of a volume, `None` when there is none.
    pub fn volume(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.docker(&["volume", "inspect", name]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("docker volume inspect json");
        Some(v[0].clone())
    }

    /// Swarm's ID of a cluster volume (not the CSI volume ID).
    pub fn volume_swarm_id(&self, name: &str) -> String {
        let v = self.volume(name).unwrap_or_else(|| panic!("no volume {name}"));
        v["ClusterVolume"]["ID"].as_str().unwrap_or_else(|| panic!("{name} is not a cluster volume: {v}")).to_string()
    }

    /// Waits until swarm has made the volume with its plugin (status
    /// `created`); returns its `docker volume inspect`.
    pub fn wait_created(&self, name: &str, within: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let v = self.volume(name).unwrap_or_else(|| panic!("no volume {name}"));
            if v["ClusterVolume"]["Info"]["VolumeID"].as_str().is_some_and(|id| !id.is_empty()) {
                println!("volume {name} created in {:?}", start.elapsed());
                return v;
            }
            if start.elapsed() > within {
                let id = v["ClusterVolume"]["ID"].as_str().unwrap_or("?").to_string();
                panic!(
                    "volume {name} not created after {within:?}:\n{}\ndockerd about it:\n{}",
                    self.docker_ok(&["volume", "ls", "--cluster"]),
                    self.log_lines(&format!("volume.id={id}")).join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The volume's publish statuses (`[]` when published nowhere).
    pub fn publish_status(&self, name: &str) -> Vec<serde_json::Value> {
        let v = self.volume(name).unwrap_or_else(|| panic!("no volume {name}"));
        v["ClusterVolume"]["PublishStatus"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until swarm has unpublished the volume from every node.
    pub fn wait_unpublished(&self, name: &str, within: Duration) {
        let start = Instant::now();
        loop {
            let status = self.publish_status(name);
            if status.is_empty() {
                println!("volume {name} unpublished in {:?}", start.elapsed());
                return;
            }
            if start.elapsed() > within {
                let id = self.volume_swarm_id(name);
                panic!("volume {name} still published after {within:?}: {status:?}\ndockerd about it:\n{}", self.log_lines(&id).join("\n"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Makes swarm's scheduler run once (a label on this node). It frees
    /// volumes no task uses any more only when it runs: after a drained
    /// volume's service is removed (its task waiting for the volume was
    /// pending, and removing a pending task does not run the scheduler),
    /// the volume stays published until something else does (swarmkit as in
    /// Docker 28.5.2: `freeVolumes` runs only at the end of a scheduling
    /// pass).
    pub fn nudge_scheduler(&self) {
        let label = format!("rbdvol-test-nudge={}", unique("n"));
        self.docker_ok(&["node", "update", "--label-add", &label, &self.node_id]);
    }

    /// The CSI node ID this node reports for `plugin` (NodeGetInfo), once
    /// it does: the node sends it with its description, which it refreshes
    /// every few seconds (14 s after `plugin enable` here).
    pub fn wait_csi_node_id(&self, plugin: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            let info = self.docker_ok(&["node", "inspect", &self.node_id, "--format", "{{json .Description.CSIInfo}}"]);
            let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_else(|e| panic!("CSIInfo {info:?}: {e}"));
            let name = format!("{plugin}:latest");
            if let Some(id) = info.as_array().into_iter().flatten().find(|i| i["PluginName"] == name.as_str()).and_then(|i| i["NodeID"].as_str()) {
                return id.to_string();
            }
            assert!(start.elapsed() < within, "this node reports no CSI node ID for {plugin} after {within:?}: {info}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The containers running a task of `service`.
    pub fn task_containers(&self, service: &str) -> Vec<String> {
        let ids = self.docker_ok(&["ps", "-q", "--no-trunc", "--filter", &format!("label=com.docker.swarm.service.name={service}")]);
        ids.split_whitespace().map(str::to_string).collect()
    }

    /// Waits for a running task container of `service` other than `not`.
    pub fn wait_task(&self, service: &str, not: &[&str], within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(id) = self.task_containers(service).into_iter().find(|id| !not.contains(&id.as_str())) {
                println!("service {service}: task container {} running after {:?}", &id[..12], start.elapsed());
                return id;
            }
            if start.elapsed() > within {
                panic!(
                    "no running task of {service} after {within:?}:\n{}\ndockerd's last lines:\n{}",
                    self.docker_ok(&["service", "ps", "--no-trunc", service]),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until no task container of `service` runs.
    pub fn wait_no_task(&self, service: &str, within: Duration) {
        let start = Instant::now();
        while !self.task_containers(service).is_empty() {
            assert!(start.elapsed() < within, "a task of {service} still runs after {within:?}:\n{}", self.docker_ok(&["service", "ps", "--no-trunc", service]));
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// dockerd's log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// dockerd's log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log_text().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }

    fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until dockerd logs a line containing every one of `needles`;
    /// returns it.
    pub fn wait_log_line(&self, needles: &[&str], within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log_text().lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_string();
            }
            assert!(start.elapsed() < within, "dockerd logged no line with {needles:?} in {within:?}; its last lines:\n{}", self.log_tail(40));
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.owned {
            let _ = docker26(&["purge"]);
        }
    }
}

/// What a test made through its plugin, removed when the plugin drops.
#[derive(Default)]
struct Made {
    services: Vec<String>,
    volumes: Vec<String>,
    secrets: Vec<String>,
}

/// rbdvol's CSI plugin installed in the tests' swarm under a fresh name.
pub struct CsiPlugin<'a> {
    pub swarm: &'a Swarm,
    pub name: String,
    made: RefCell<Made>,
}

impl CsiPlugin<'_> {
    /// `docker plugin set` (the plugin must be disabled).
    pub fn set(&self, settings: &[(&str, &str)]) {
        if settings.is_empty() {
            return;
        }
        let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["plugin", "set", &self.name];
        args.extend(pairs.iter().map(String::as_str));
        self.swarm.docker_ok(&args);
    }

    pub fn id(&self) -> String {
        self.swarm.docker_ok(&["plugin", "inspect", "-f", "{{.Id}}", &self.name])
    }

    /// `docker volume create -d <plugin> ARGS... name`, remembered for
    /// cleanup.
    pub fn create_volume(&self, name: &str, args: &[&str]) -> Output {
        self.made.borrow_mut().volumes.push(name.to_string());
        let mut all = vec!["volume", "create", "-d", &self.name];
        all.extend_from_slice(args);
        all.push(name);
        self.swarm.docker(&all)
    }

    /// A mount volume for one writer at a time, of `size` (e.g. "128M"),
    /// waited for until swarm made it; `extra`: more `docker volume create`
    /// arguments.
    pub fn writer_volume(&self, name: &str, size: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["--type", "mount", "--sharing", "onewriter", "--scope", "single", "--required-bytes", size, "--availability", "active"];
        args.extend_from_slice(extra);
        let out = self.create_volume(name, &args);
        assert!(out.status.success(), "docker volume create {name}: {}", text(&out.stderr));
        self.swarm.wait_created(name, Duration::from_secs(90))
    }

    /// `docker service create --detach --no-resolve-image --name name
    /// ARGS...`, remembered for cleanup.
    pub fn create_service(&self, name: &str, args: &[&str]) {
        self.made.borrow_mut().services.push(name.to_string());
        let mut all = vec!["service", "create", "--detach", "--no-resolve-image", "--name", name];
        all.extend_from_slice(args);
        self.swarm.docker_ok(&all);
    }

    /// `docker service rm`.
    pub fn remove_service(&self, name: &str) {
        self.swarm.docker_ok(&["service", "rm", name]);
        self.made.borrow_mut().services.retain(|s| s != name);
    }

    /// `docker secret create name -` with `data`; returns the secret's ID
    /// (what `docker volume create --secret key=ID` takes).
    pub fn create_secret(&self, name: &str, data: &str) -> String {
        self.made.borrow_mut().secrets.push(name.to_string());
        let out = self.swarm.docker_stdin(&["secret", "create", name, "-"], data.as_bytes());
        assert!(out.status.success(), "docker secret create {name}: {}", text(&out.stderr));
        self.swarm.docker_ok(&["secret", "inspect", "-f", "{{.ID}}", name])
    }

    /// The pids of this plugin's `rbdvol csi` processes.
    pub fn csi_pids(&self) -> Vec<i32> {
        super::managed::rbdvol_pids_in_plugin(&self.id(), "csi")
    }

    /// Waits until an `rbdvol csi` other than `old` runs; panics after 30 s.
    pub fn wait_for_new_csi(&self, old: &[i32]) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(p) = self.csi_pids().into_iter().find(|p| !old.contains(p)) {
                return p;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no new rbdvol csi in plugin {} after 30 s", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The dockerd log lines the plugin wrote (its output, as dockerd logs
    /// it: `plugin=<id>`).
    pub fn log_lines(&self) -> Vec<String> {
        self.swarm.log_lines(&format!("plugin={}", self.id()))
    }
}

impl Drop for CsiPlugin<'_> {
    fn drop(&mut self) {
        let s = self.swarm;
        let made = self.made.borrow();
        for svc in &made.services {
            let _ = s.docker(&["service", "rm", svc]);
        }
        let start = Instant::now();
        while made.services.iter().any(|svc| s.docker(&["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={svc}")]).stdout.iter().any(|b| !b.is_ascii_whitespace())) {
            if start.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        // Volumes: unpublished first (swarm frees them at its scheduler's
        // next pass), then removed through the plugin. `volume rm -f` (no
        // DeleteVolume) only for what is left: dockerd 28.5.2 panics (nil
        // dereference in the dispatcher's processUpdates, "volume
        // unavailable") when a node reports an unpublish of a volume removed
        // with -f meanwhile.
        let known: Vec<&String> = made.volumes.iter().filter(|v| s.volume(v).is_some()).collect();
        if known.iter().any(|v| !s.publish_status(v).is_empty()) {
            let _ = s.docker(&["node", "update", "--label-add", &format!("rbdvol-test-nudge={}", unique("n")), &s.node_id]);
        }
        let start = Instant::now();
        while known.iter().any(|v| s.volume(v).is_some_and(|vol| vol["ClusterVolume"]["PublishStatus"].as_array().is_some_and(|p| !p.is_empty()))) {
            if start.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        for v in &known {
            let _ = s.docker(&["volume", "rm", v]);
        }
        let start = Instant::now();
        while known.iter().any(|v| s.volume(v).is_some_and(|vol| !vol["ClusterVolume"]["Info"].is_null())) {
            if start.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        for v in known {
            // Only a volume never created: `rm -f` of one whose unpublish is
            // in flight makes dockerd 28.5.2 panic (the shared daemon would
            // be gone for every later test). Others go with the daemon.
            match s.volume(v) {
                Some(vol) if vol["ClusterVolume"]["Info"].is_null() => {
                    let _ = s.docker(&["volume", "rm", "-f", v]);
                }
                Some(_) => eprintln!("volume {v} still published 30 s after its service went: left to the daemon's purge"),
                None => {}
            }
        }
        for secret in &made.secrets {
            let _ = s.docker(&["secret", "rm", secret]);
        }
        let id = s.docker(&["plugin", "inspect", "-f", "{{.Id}}", &self.name]);
        let _ = s.docker(&["plugin", "disable", "-f", &self.name]);
        let _ = s.docker(&["plugin", "rm", "-f", &self.name]);
        // A test that failed with a volume still mapped: its user-space
        // servers died with the plugin, their loop devices stay.
        detach_dead_loop_devices();
        // Mounts a killed plugin left in its propagated mount on the host
        // (the purge would refuse to delete through them).
        let id = text(&id.stdout);
        if !id.is_empty() {
            let under = s.data_root.join("plugins").join(&id);
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let mut left: Vec<&str> = mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| Path::new(m).starts_with(&under)).collect();
            left.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in left {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}

/// Detaches the loop devices whose user-space server is gone (nothing can
/// use them again); returns them.
pub fn detach_dead_loop_devices() -> Vec<PathBuf> {
    use rbdvol::host::sys::{loop_backing_dead, loop_detach, loop_devices};
    let dead: Vec<PathBuf> = loop_devices().into_iter().filter(|(d, _)| loop_backing_dead(d).is_some()).map(|(d, _)| d).collect();
    for d in &dead {
        let _ = loop_detach(d);
    }
    dead
}

/// The plugin settings for the test cluster as client.admin; the key only
/// when `with_key` (else it must come from a swarm secret).
pub fn cluster_settings(cluster: &TestCluster, with_key: bool) -> Vec<(String, String)> {
    let s = cluster.admin_settings();
    let mut v = vec![("RBD_CONF_GLOBAL_MON_HOST".to_string(), s.mon_host.clone()), ("RBD_CONF_KEYRING_USER".to_string(), "client.admin".to_string())];
    if with_key {
        v.push(("RBD_CONF_KEYRING_KEY".to_string(), s.key.expose().to_string()));
    }
    v
}

/// The image's watchers (`rbd status`) and rbdvol's host lock holders
/// (`rbd lock ls`): an independent client's view of whether anything
/// still has the image mapped.
pub fn image_users(cluster: &TestCluster, image: &str) -> (usize, usize) {
    let spec = format!("{}/{image}", super::cluster::POOL);
    let out = cluster.cli("rbd", &["status", "--format", "json", &spec]);
    assert!(out.status.success(), "rbd status {spec}: {}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rbd status json");
    let watchers = status["watchers"].as_array().map(Vec::len).unwrap_or(0);
    let out = cluster.cli("rbd", &["lock", "ls", "--format", "json", &spec]);
    assert!(out.status.success(), "rbd lock ls {spec}: {}", text(&out.stderr));
    let locks = match serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default() {
        serde_json::Value::Array(a) => a.len(),
        serde_json::Value::Object(o) => o.len(),
        _ => 0,
    };
    (watchers, locks)
}

/// Waits until nothing has the image mapped or locked.
pub fn wait_image_released(cluster: &TestCluster, image: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let (watchers, locks) = image_users(cluster, image);
        if watchers == 0 && locks == 0 {
            println!("image {image} released {:?} after its unpublish", start.elapsed());
            return;
        }
        assert!(start.elapsed() < within, "image {image} still has {watchers} watchers and {locks} locks {within:?} after its unpublish");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The size of an image in the test pool.
pub fn image_size_mib(cluster: &TestCluster, image: &str) -> u64 {
    let info = cluster.rbd_info(image).unwrap_or_else(|| panic!("no image {image} in ceph"));
    info["size"].as_u64().expect("rbd info size") / MIB
}
