//! rbdvol as a managed Docker plugin, end to end against a real dockerd and
//! the test cluster: built with docker/build.sh (no registry), installed with
//! `docker plugin create/set/enable`, used by containers and by a one-node
//! swarm, restarted under running containers, stopped by SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{unique, TestCluster};
use common::docker::{docker, docker_ok, IMAGE};
use common::managed::ManagedPlugin;

const MIB: u64 = 1 << 20;

/// The last number a counting container wrote.
fn last_count(container: &str) -> u64 {
    let out = docker_ok(&["exec", container, "sh", "-c", "tail -n 1 /data/count"]);
    out.trim().parse().unwrap_or_else(|_| panic!("unexpected count file ending: {out:?}"))
}

fn wait_for_count_above(container: &str, n: u64) -> u64 {
    let start = Instant::now();
    loop {
        let c = last_count(container);
        if c > n {
            return c;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{container} stopped counting at {c}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The names in the host's /dev.
fn dev_entries() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn managed_plugin_end_to_end() {
    let cluster = TestCluster::shared();
    let dev_before = dev_entries();
    let p = ManagedPlugin::create("rbdvol-e2e");
    p.set_cluster(cluster);
    let took = p.enable();
    println!("docker plugin enable took {took:?}");
    let label = p.label();

    // -o pool=rbd -o size=206: a 206 MiB image (a plain size is MiB).
    let v = unique("mp");
    let out = p.create_volume(&v, &["pool=rbd", "size=206"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster.rbd_info(&v).expect("the image exists")["size"], 206 * MIB);

    let mount = format!("{v}:/data");
    docker_ok(&["run", "--rm", "--label", &label, "-v", &mount, IMAGE, "sh", "-c", "echo from-the-managed-plugin > /data/f && sync"]);
    let read = docker_ok(&["run", "--rm", "--label", &label, "-v", &mount, IMAGE, "cat", "/data/f"]);
    assert_eq!(read, "from-the-managed-plugin");
    assert_eq!(cluster.read_files_from_image(&v, &["/f"]), ["from-the-managed-plugin\n"]);

    let listed = docker_ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert!(listed.lines().any(|l| l == format!("{}:latest {v}", p.name)), "{listed}");
    let inspect = docker_ok(&["volume", "inspect", &v]);
    let json: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(json[0]["Status"]["size"], "206 MiB", "{json}");
    let key = cluster.admin_settings().key.expose().to_string();
    assert!(!inspect.contains(&key), "the key is in docker volume inspect");
    // docker plugin inspect shows the settings the user made, and only there.
    let plugin_inspect = docker_ok(&["plugin", "inspect", &p.name]);
    assert_eq!(plugin_inspect.matches(&key).count(), 1, "the key appears beyond the setting the user made");

    // A container counting into the volume, fsyncing each line.
    let counter = docker_ok(&[
        "run", "-d", "--label", &label, "-v", &mount, IMAGE, "sh", "-c",
        "i=0; while true; do i=$((i+1)); echo $i >> /data/count; sync; sleep 0.05; done",
    ]);
    let before = wait_for_count_above(&counter, 5);

    // Docker refuses to disable a plugin whose volume is in use.
    let out = p.disable(false);
    assert!(!out.status.success(), "disable of a plugin in use succeeded");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", String::from_utf8_lossy(&out.stderr));

    // Kill the plugin's serve: it is restarted, the container keeps
    // writing without an error, and the references are rebuilt.
    let old = p.serve_pids();
    assert_eq!(old.len(), 1, "one serve runs in the plugin: {old:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    p.wait_for_new_serve(&old);
    let after = wait_for_count_above(&counter, before + 20);
    let status: serde_json::Value = serde_json::from_str(&docker_ok(&["volume", "inspect", &v])).unwrap();
    assert_eq!(status[0]["Status"]["containers"], 1, "references after the restart: {status}");
    let logs = docker_ok(&["logs", &counter]);
    assert!(logs.is_empty(), "the counting container saw errors: {logs}");
    docker_ok(&["rm", "-f", &counter]);

    // Every number it wrote before it was stopped is in Ceph, in order.
    let counted = cluster.read_files_from_image(&v, &["/count"]).remove(0);
    let numbers: Vec<u64> = counted.lines().map(|l| l.parse().unwrap()).collect();
    assert!(numbers.len() as u64 >= after, "{} lines, the container had written {after}", numbers.len());
    assert!(numbers.iter().enumerate().all(|(i, &n)| n == i as u64 + 1), "lines lost or torn");
    let status: serde_json::Value = serde_json::from_str(&docker_ok(&["volume", "inspect", &v])).unwrap();
    assert!(status[0]["Status"].get("mapper").is_none(), "still mapped after the last container: {status}");

    // A forced disable kills every process of the plugin, the user-space
    // mapper's servers with them: the container's filesystem stops (with
    // krbd the kernel keeps the mapping). After enable, rbdvol cleans up
    // after the dead servers and releases the volume; everything the
    // container had fsynced is in Ceph, and the next container mounts it.
    let counter = docker_ok(&[
        "run", "-d", "--label", &label, "-v", &mount, IMAGE, "sh", "-c",
        "i=$(wc -l < /data/count); while true; do i=$((i+1)); echo $i >> /data/count; sync; sleep 0.05; done",
    ]);
    let before = wait_for_count_above(&counter, after + 5);
    assert!(p.disable(true).status.success());
    p.enable();
    docker_ok(&["rm", "-f", &counter]);
    let counted = cluster.read_files_from_image(&v, &["/count"]).remove(0);
    let numbers: Vec<u64> = counted.lines().map(|l| l.parse().unwrap()).collect();
    assert!(numbers.len() as u64 >= before, "{} lines, the container had fsynced {before}", numbers.len());
    assert!(numbers.iter().enumerate().all(|(i, &n)| n == i as u64 + 1), "lines lost or torn");
    let lines = docker_ok(&["run", "--rm", "--label", &label, "-v", &mount, IMAGE, "sh", "-c", "wc -l < /data/count"]);
    assert_eq!(lines.trim(), numbers.len().to_string());
    let dead: Vec<_> = rbdvol::host::sys::loop_devices().into_iter().filter(|(d, _)| rbdvol::host::sys::loop_backing_dead(d).is_some()).collect();
    assert!(dead.is_empty(), "loop devices left on dead servers: {dead:?}");
    let status: serde_json::Value = serde_json::from_str(&docker_ok(&["volume", "inspect", &v])).unwrap();
    assert_eq!(status[0]["Status"]["mounted_by"], "", "the host lock is left: {status}");

    docker_ok(&["volume", "rm", &v]);
    assert!(cluster.image_deleted(&v), "docker volume rm left the image in ceph");

    // With no volume left, a plain disable is allowed; it is a SIGTERM,
    // and the plugin exits cleanly well inside the 10 s after which
    // dockerd would kill it.
    let start = Instant::now();
    let out = p.disable(false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stop = start.elapsed();
    println!("docker plugin disable took {stop:?}");
    assert!(stop < Duration::from_secs(9), "the plugin took {stop:?} to stop");

    // Removing the plugin leaves the host's /dev alone (a peer's plugin
    // once emptied it on removal).
    drop(p);
    let lost: Vec<_> = dev_before.difference(&dev_entries()).cloned().collect();
    assert!(lost.is_empty(), "docker plugin rm took these from /dev: {lost:?}");
}

/// `docker plugin upgrade` under containers writing through the user-space
/// mapper: `disable -f` stops their servers (their filesystems stop), the
/// upgrade replaces the plugin's rootfs, and after `enable` everything they
/// fsynced is in Ceph and each volume mounts again in a new container. The
/// plugin's state (mounted volumes, its installation id, which its host
/// locks carry) lives under the propagated mount, which an upgrade keeps.
#[test]
fn an_upgrade_under_mounted_user_space_volumes_loses_nothing_fsynced_and_they_mount_again() {
    use common::managed::Registry;
    let cluster = TestCluster::shared();
    let registry = Registry::start();
    let p = ManagedPlugin::create("rbdvol-upgrade");
    let remote = p.push_copy(&registry, "rbdvol-next");
    p.set_cluster(cluster);
    p.enable();
    let label = p.label();
    let volumes = [unique("up"), unique("up")];
    let mut counters = Vec::new();
    for v in &volumes {
        let out = p.create_volume(v, &["size=64"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        counters.push(docker_ok(&[
            "run", "-d", "--label", &label, "-v", &format!("{v}:/data"), IMAGE, "sh", "-c",
            "i=0; while true; do i=$((i+1)); echo $i >> /data/count; sync; sleep 0.05; done",
        ]));
    }
    let fsynced: Vec<u64> = counters.iter().map(|c| wait_for_count_above(c, 5)).collect();

    assert!(p.disable(true).status.success());
    let start = Instant::now();
    let out = p.upgrade(&remote);
    assert!(out.status.success(), "docker plugin upgrade: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("docker plugin upgrade took {:?}", start.elapsed());
    assert_eq!(docker_ok(&["plugin", "inspect", "-f", "{{.PluginReference}}", &p.name]), remote, "not upgraded");
    // The settings survive an upgrade; mount sources are reset (Docker 20.10).
    let env = docker_ok(&["plugin", "inspect", "-f", "{{json .Settings.Env}}", &p.name]);
    assert!(env.contains("RBD_CONF_GLOBAL_MON_HOST=") && !env.contains("RBD_CONF_GLOBAL_MON_HOST=\""), "settings lost in the upgrade: {env}");
    p.set_host_mounts();
    p.enable();
    for c in &counters {
        docker_ok(&["rm", "-f", c]);
    }

    for (v, before) in volumes.iter().zip(fsynced) {
        // Everything fsynced before the upgrade, read from Ceph directly.
        let counted = cluster.read_files_from_image(v, &["/count"]).remove(0);
        let numbers: Vec<u64> = counted.lines().map(|l| l.parse().unwrap()).collect();
        assert!(numbers.len() as u64 >= before, "{v}: {} lines, the container had fsynced {before}", numbers.len());
        assert!(numbers.iter().enumerate().all(|(i, &n)| n == i as u64 + 1), "{v}: lines lost or torn");
        // The upgraded plugin released it; a new container mounts it and
        // reads the same.
        let lines = docker_ok(&["run", "--rm", "--label", &label, "-v", &format!("{v}:/data"), IMAGE, "sh", "-c", "wc -l < /data/count"]);
        assert_eq!(lines.trim(), numbers.len().to_string(), "{v}");
        let status: serde_json::Value = serde_json::from_str(&docker_ok(&["volume", "inspect", v])).unwrap();
        assert_eq!(status[0]["Status"]["mounted_by"], "", "{v}: the host lock is left: {status}");
        cluster.assert_filesystem_clean(v, "ext4");
    }
    let dead: Vec<_> = rbdvol::host::sys::loop_devices().into_iter().filter(|(d, _)| rbdvol::host::sys::loop_backing_dead(d).is_some()).collect();
    assert!(dead.is_empty(), "loop devices left on dead servers: {dead:?}");
}

#[test]
fn bad_settings_never_stop_the_plugin_and_every_call_names_them() {
    let cluster = TestCluster::shared();
    let p = ManagedPlugin::create("rbdvol-e2e-bad");
    let v = unique("mpbad");

    // No settings at all.
    p.enable();
    let out = p.create_volume(&v, &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("RBD_CONF_GLOBAL_MON_HOST") || err.contains("RBD_CONF_KEYRING_KEY"), "{err}");

    // A wrong key.
    assert!(p.disable(false).status.success());
    let s = cluster.admin_settings();
    p.set(&[
        ("RBD_CONF_GLOBAL_MON_HOST", &s.mon_host),
        ("RBD_CONF_KEYRING_USER", "client.admin"),
        ("RBD_CONF_KEYRING_KEY", "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg=="),
        ("RBDVOL_CONNECT_TIMEOUT", "5"),
    ]);
    p.enable();
    let out = p.create_volume(&v, &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("RBD_CONF_KEYRING_KEY"), "{err}");
    assert!(!err.contains("AQBXhS1k"), "the key is in the error: {err}");

    // Monitors nobody listens on.
    assert!(p.disable(false).status.success());
    p.set(&[("RBD_CONF_GLOBAL_MON_HOST", "127.0.0.1:9"), ("RBD_CONF_KEYRING_KEY", s.key.expose())]);
    p.enable();
    let out = p.create_volume(&v, &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("RBD_CONF_GLOBAL_MON_HOST"), "{err}");

    assert!(cluster.rbd_info(&v).is_none(), "a failed create left an image");
    assert!(!docker(&["volume", "inspect", &v]).status.success());
}

#[test]
fn the_managed_plugin_takes_its_settings_from_the_hosts_ceph_directory() {
    let cluster = TestCluster::shared();
    let p = ManagedPlugin::create("rbdvol-e2e-etc");
    // Enabled with its defaults, the mount shows no ceph.conf and the
    // plugin says which setting is missing and where it looked.
    p.enable();
    let v = unique("mpetc");
    let out = p.create_volume(&v, &["size=32"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("RBD_CONF_GLOBAL_MON_HOST") && err.contains("/etc/ceph/ceph.conf (not there)"), "{err}");
    assert!(p.disable(false).status.success());

    // A host's /etc/ceph: a ceph.conf and the admin keyring, and no
    // setting in the plugin's environment at all.
    let etc = tempfile::tempdir().unwrap();
    let key = cluster.admin_settings().key.expose().to_string();
    std::fs::write(etc.path().join("ceph.conf"), format!("[global]\nmon host = {}\n", cluster.mon_host)).unwrap();
    std::fs::write(etc.path().join("ceph.client.admin.keyring"), format!("[client.admin]\n\tkey = {key}\n")).unwrap();
    // And its metrics on the host's loopback (the plugin shares the
    // host's network).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    p.set(&[("ceph.source", etc.path().to_str().unwrap()), ("RBDVOL_METRICS_ADDR", &addr)]);
    p.enable();
    let out = p.create_volume(&v, &["size=32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scraped = std::process::Command::new("curl").args(["-sf", &format!("http://{addr}/metrics")]).output().unwrap();
    let metrics = String::from_utf8_lossy(&scraped.stdout);
    assert!(scraped.status.success(), "the managed plugin's metrics at {addr}: {}", String::from_utf8_lossy(&scraped.stderr));
    assert!(metrics.contains("rbdvol_docker_requests_total{endpoint=\"/VolumeDriver.Create\",outcome=\"ok\"}"), "{metrics}");
    let mount = format!("{v}:/data");
    docker_ok(&["run", "--rm", "--label", &p.label(), "-v", &mount, IMAGE, "sh", "-c", "echo from-etc-ceph > /data/f && sync"]);
    assert_eq!(cluster.read_files_from_image(&v, &["/f"]), ["from-etc-ceph\n"]);
    let plugin_inspect = docker_ok(&["plugin", "inspect", &p.name]);
    assert!(!plugin_inspect.contains(&key), "the key is in docker plugin inspect");
    // Read-only: the plugin cannot change the host's files.
    assert!(plugin_inspect.contains("\"ro\""), "{plugin_inspect}");
    let out = docker(&["volume", "rm", &v]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Leaves the swarm this test made, whatever happens.
struct Swarm;

impl Swarm {
    fn init() -> Swarm {
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        assert_eq!(state, "inactive", "this dockerd is already in a swarm: the test makes its own one-node swarm");
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        Swarm
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = docker(&["swarm", "leave", "--force"]);
    }
}

#[test]
fn a_swarm_service_keeps_its_data_when_its_task_is_rescheduled() {
    let cluster = TestCluster::shared();
    let p = ManagedPlugin::create("rbdvol-e2e-swarm");
    p.set_cluster(cluster);
    p.enable();
    let _swarm = Swarm::init();
    let v = unique("swarm");
    let service = unique("svc");
    let mount = format!("type=volume,source={v},destination=/data,volume-driver={},volume-opt=size=128M", p.name);
    docker_ok(&[
        "service", "create", "--detach", "--no-resolve-image", "--name", &service, "--container-label", &p.label(),
        "--mount", &mount, IMAGE, "sh", "-c", "date >> /data/starts; sync; sleep 3600",
    ]);
    let _service = ServiceGuard(service.clone(), v.clone());

    let first = wait_for_task(&service, &[]);
    let out = docker_ok(&["exec", &first, "cat", "/data/starts"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(cluster.rbd_info(&v).expect("the service's volume is an image")["size"], 128 * MIB);

    // The task dies; swarm starts a new one, which sees the first one's data.
    docker_ok(&["kill", &first]);
    let second = wait_for_task(&service, &[first.as_str()]);
    let start = Instant::now();
    loop {
        let out = docker_ok(&["exec", &second, "cat", "/data/starts"]);
        if out.lines().count() == 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the new task does not see the old one's data: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes the service, then its volume.
struct ServiceGuard(String, String);

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let _ = docker(&["service", "rm", &self.0]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if docker(&["volume", "rm", &self.1]).status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The running container of the service's task, other than `not`.
fn wait_for_task(service: &str, not: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let ids = docker_ok(&["ps", "-q", "--no-trunc", "--filter", &format!("label=com.docker.swarm.service.name={service}")]);
        if let Some(id) = ids.split_whitespace().find(|id| !not.contains(id)) {
            return id.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(90), "no running task of {service} after 90 s: {}", docker_ok(&["service", "ps", "--no-trunc", service]));
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_compose_example_works() {
    let cluster = TestCluster::shared();
    let p = ManagedPlugin::create("rbdvol-e2e-compose");
    p.set_cluster(cluster);
    p.enable();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker/compose.example.yml")).unwrap();
    assert!(example.contains("image: busybox") && example.contains("driver: rbd"), "the example changed: update this test");
    let compose = example.replace("image: busybox", &format!("image: {IMAGE}")).replace("driver: rbd", &format!("driver: {}", p.name));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yml");
    std::fs::write(&file, compose).unwrap();
    let project = unique("compose").replace('-', "");
    let volume = format!("{project}_data");
    let compose = |args: &[&str]| {
        let out = std::process::Command::new("docker-compose")
            .arg("-p")
            .arg(&project)
            .arg("-f")
            .arg(&file)
            .args(args)
            .output()
            .expect("docker-compose is installed (scripts/deps.sh installs it)");
        assert!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    struct Down<'a>(&'a dyn Fn(&[&str]));
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            (self.0)(&["down", "-v"]);
        }
    }
    compose(&["up", "-d"]);
    let _down = Down(&compose);
    let info = cluster.rbd_info(&volume).expect("compose made the volume's image");
    assert_eq!(info["size"], 1024 * MIB);
    let app = docker_ok(&["ps", "-q", "--filter", &format!("label=com.docker.compose.project={project}")]);
    let start = Instant::now();
    while docker(&["exec", &app, "cat", "/data/starts"]).stdout.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "the service did not write its volume");
        std::thread::sleep(Duration::from_millis(200));
    }
    let inspect: serde_json::Value = serde_json::from_str(&docker_ok(&["volume", "inspect", &volume])).unwrap();
    assert_eq!(inspect[0]["Status"]["mount_options"], "noatime", "{inspect}");
}
