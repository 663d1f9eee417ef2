//! rbdvol's CSI plugin in a real Docker swarm: dockerd 28.5.2 (the first
//! Docker line after 25.0.12 whose swarm reaches CSI plugins, run beside the
//! system's 20.10 by scripts/docker26.sh), the plugin built by
//! `docker/build.sh --csi` and installed with `docker plugin create/set/
//! enable`, cluster volumes made with `docker volume create --type mount`,
//! used by swarm services, drained and removed; what the services wrote is
//! read back from the throwaway Ceph cluster by an independent path
//! (`rbd export` + debugfs). The same calls spoken directly over gRPC are in
//! tests/csi.rs.
//!
//! One dockerd and swarm serve every test of this binary; each test has its
//! own plugin. Fails, never skips, when dockerd 28 or Ceph cannot start.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{unique, TestCluster};
use common::swarm::{cluster_settings, image_size_mib, wait_image_released, CsiPlugin, Swarm, IMAGE};

/// The shared Ceph cluster and swarm, booted side by side.
fn bed() -> (&'static TestCluster, &'static Swarm) {
    std::thread::scope(|s| {
        let swarm = s.spawn(Swarm::shared);
        let cluster = TestCluster::shared();
        (cluster, swarm.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    })
}

fn settings(cluster: &TestCluster, with_key: bool) -> Vec<(String, String)> {
    let mut s = cluster_settings(cluster, with_key);
    // Debug logging: the key must stay out of it too.
    s.push(("LOG_LEVEL".into(), "3".into()));
    s
}

fn plugin<'a>(swarm: &'a Swarm, settings: &[(String, String)]) -> CsiPlugin<'a> {
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    swarm.plugin(&pairs)
}

/// Reads a file in a running task's container.
fn cat(swarm: &Swarm, container: &str, file: &str) -> String {
    let out = swarm.docker(&["exec", container, "cat", file]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `file` in the container has `n` lines; returns them.
fn wait_lines(swarm: &Swarm, container: &str, file: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let text = cat(swarm, container, file);
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{file} in {container} has {} lines, not {n}: {text:?}", lines.len());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last number a counting task wrote.
fn last_count(swarm: &Swarm, container: &str) -> u64 {
    let out = swarm.docker_ok(&["exec", container, "sh", "-c", "tail -n 1 /data/count"]);
    out.trim().parse().unwrap_or_else(|_| panic!("unexpected count file ending: {out:?}"))
}

fn wait_for_count_above(swarm: &Swarm, container: &str, n: u64) -> u64 {
    let start = Instant::now();
    loop {
        let c = last_count(swarm, container);
        if c > n {
            return c;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the task stopped counting at {c} (waited for more than {n})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `docker volume rm`, then swarm's DeleteVolume: the image leaves Ceph
/// (pool and trash) and swarm forgets the volume.
fn remove_volume_and_see_the_image_go(swarm: &Swarm, cluster: &TestCluster, v: &str) {
    swarm.docker_ok(&["volume", "rm", v]);
    let start = Instant::now();
    assert!(cluster.image_deleted(v), "docker volume rm left image {v} in ceph; dockerd about it:\n{}", swarm.log_lines(v).join("\n"));
    while swarm.volume(v).is_some() {
        assert!(start.elapsed() < Duration::from_secs(60), "swarm still lists volume {v} a minute after docker volume rm");
        std::thread::sleep(Duration::from_millis(250));
    }
    println!("volume {v} deleted in {:?}", start.elapsed());
}

#[test]
fn a_service_keeps_its_cluster_volume_across_a_killed_task_a_drain_stops_it_and_releases_the_image_and_rm_deletes_it() {
    let started = Instant::now();
    let (cluster, swarm) = bed();
    let host_id = unique("swarmhost");
    let mut with_host = settings(cluster, true);
    with_host.push(("RBDVOL_HOST_ID".into(), host_id.clone()));
    let p = plugin(swarm, &with_host);

    let v = unique("swv");
    let vol = p.writer_volume(&v, "128M", &[]);
    assert_eq!(vol["ClusterVolume"]["Info"]["VolumeID"], v.as_str(), "{vol}");
    assert_eq!(vol["ClusterVolume"]["Info"]["CapacityBytes"], 128u64 << 20, "{vol}");
    assert_eq!(image_size_mib(cluster, &v), 128);

    // Each task notes its start in the volume.
    let s = unique("swsvc");
    let mount = format!("type=cluster,src={v},dst=/data");
    p.create_service(
        &s,
        &[
            "--restart-delay", "1s", "--stop-grace-period", "1s", "--env", "TASK={{.Task.ID}}", "--mount", &mount, IMAGE, "sh", "-c",
            "echo $TASK >> /data/starts; sync; exec sleep 100000",
        ],
    );
    let first = swarm.wait_task(&s, &[], Duration::from_secs(120));
    let starts = wait_lines(swarm, &first, "/data/starts", 1);
    assert_eq!(starts.len(), 1, "{starts:?}");

    // The task dies; swarm starts another, on the same volume, which sees
    // what the first one wrote.
    swarm.docker_ok(&["kill", &first]);
    let second = swarm.wait_task(&s, &[first.as_str()], Duration::from_secs(120));
    let starts = wait_lines(swarm, &second, "/data/starts", 2);
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_ne!(starts[0], starts[1], "{starts:?}");

    // Drain: swarm stops the task and starts none while the volume is drained.
    swarm.docker_ok(&["volume", "update", "--availability", "drain", &v]);
    swarm.wait_no_task(&s, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    assert!(swarm.task_containers(&s).is_empty(), "a task started on a drained volume:\n{}", swarm.docker_ok(&["service", "ps", &s]));
    assert!(swarm.volume(&v).unwrap()["ClusterVolume"]["Spec"]["Availability"] == "drain");

    // Swarm unpublishes it once no task wants it: the service goes (its
    // replacement task was waiting for the volume), then the scheduler runs
    // (see nudge_scheduler). The last unpublish unstages: rbdvol unmaps and
    // releases its lock.
    p.remove_service(&s);
    swarm.nudge_scheduler();
    swarm.wait_unpublished(&v, Duration::from_secs(60));
    wait_image_released(cluster, &v, Duration::from_secs(30));

    // Both starts are in Ceph, read without rbdvol; the filesystem is clean.
    let files = cluster.read_files_from_image(&v, &["/starts"]);
    assert_eq!(files, [format!("{}\n{}\n", starts[0], starts[1])]);
    cluster.assert_filesystem_clean(&v, "ext4");

    // NodeGetInfo reached swarm (the node reports it at its next
    // description refresh): the plugin knows this node by rbdvol's host id.
    assert_eq!(swarm.wait_csi_node_id(&p.name, Duration::from_secs(60)), host_id);

    remove_volume_and_see_the_image_go(swarm, cluster, &v);
    println!("test took {:?}", started.elapsed());
}

#[test]
fn a_volume_whose_cephx_key_is_a_swarm_secret_is_made_written_and_deleted_and_the_key_is_shown_nowhere() {
    let started = Instant::now();
    let (cluster, swarm) = bed();
    // No key in the plugin's settings: only the secret has it.
    let p = plugin(swarm, &settings(cluster, false));
    let key = cluster.admin_settings().key.expose().to_string();
    let secret = unique("cephkey");
    let secret_id = p.create_secret(&secret, &key);

    let v = unique("swsec");
    let with_secret = format!("key={secret_id}");
    p.writer_volume(&v, "64M", &["--secret", &with_secret]);
    assert_eq!(image_size_mib(cluster, &v), 64);

    let s = unique("swsecsvc");
    let mount = format!("type=cluster,src={v},dst=/data");
    p.create_service(&s, &["--stop-grace-period", "1s", "--mount", &mount, IMAGE, "sh", "-c", "echo keyed-by-a-secret > /data/f; sync; exec sleep 100000"]);
    let task = swarm.wait_task(&s, &[], Duration::from_secs(120));
    assert_eq!(wait_lines(swarm, &task, "/data/f", 1), ["keyed-by-a-secret"]);

    // The key is in no inspect output and in nothing the plugin logged
    // (at debug level), nor anywhere else in dockerd's log.
    let plugin_inspect = swarm.docker_ok(&["plugin", "inspect", &p.name]);
    assert!(!plugin_inspect.contains(&key), "the key is in docker plugin inspect");
    assert!(!plugin_inspect.contains("RBD_CONF_KEYRING_KEY=A"), "the plugin has a key setting: {plugin_inspect}");
    let volume_inspect = swarm.docker_ok(&["volume", "inspect", &v]);
    assert!(!volume_inspect.contains(&key), "the key is in docker volume inspect");
    assert!(volume_inspect.contains(&secret_id), "the volume does not name its secret: {volume_inspect}");
    let logged = p.log_lines();
    assert!(!logged.is_empty(), "the plugin logged nothing through dockerd (plugin={})", p.id());
    let leaked: Vec<&String> = logged.iter().filter(|l| l.contains(&key)).collect();
    assert!(leaked.is_empty(), "the plugin logged the key: {} lines", leaked.len());
    assert!(!swarm.log_text().contains(&key), "the key is in dockerd's log");

    // Unpublish (no secret in NodeUnpublishVolume: the plugin kept what it
    // needs) releases the image; DeleteVolume (with the secret) deletes it.
    p.remove_service(&s);
    swarm.wait_unpublished(&v, Duration::from_secs(60));
    wait_image_released(cluster, &v, Duration::from_secs(30));
    assert_eq!(cluster.read_files_from_image(&v, &["/f"]), ["keyed-by-a-secret\n"]);
    remove_volume_and_see_the_image_go(swarm, cluster, &v);
    assert!(!swarm.log_text().contains(&key), "the key is in dockerd's log");
    println!("test took {:?}", started.elapsed());
}

#[test]
fn a_task_keeps_writing_through_a_killed_and_restarted_csi_process_and_everything_it_wrote_reaches_ceph() {
    let started = Instant::now();
    let (cluster, swarm) = bed();
    let p = plugin(swarm, &settings(cluster, true));
    let v = unique("swrst");
    p.writer_volume(&v, "64M", &[]);

    // A task counting into the volume, fsyncing each line.
    let s = unique("swrstsvc");
    let mount = format!("type=cluster,src={v},dst=/data");
    p.create_service(
        &s,
        &["--stop-grace-period", "1s", "--mount", &mount, IMAGE, "sh", "-c", "i=0; while true; do i=$((i+1)); echo $i >> /data/count; sync; sleep 0.05; done"],
    );
    let task = swarm.wait_task(&s, &[], Duration::from_secs(120));
    let before = wait_for_count_above(swarm, &task, 5);

    // The plugin's CSI server is killed; its supervisor starts another.
    let old = p.csi_pids();
    assert_eq!(old.len(), 1, "one rbdvol csi runs in plugin {}: {old:?}", p.name);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    let new = p.wait_for_new_csi(&old);
    println!("rbdvol csi {} killed, {new} runs", old[0]);

    // The task never noticed: the same container goes on counting, without
    // an error.
    let after = wait_for_count_above(swarm, &task, before + 40);
    assert_eq!(swarm.task_containers(&s), std::slice::from_ref(&task), "the task was replaced");
    let logs = swarm.docker_ok(&["logs", &task]);
    assert!(logs.is_empty(), "the counting task saw errors: {logs}");

    // The new server unpublishes and releases what the old one published.
    p.remove_service(&s);
    swarm.wait_unpublished(&v, Duration::from_secs(60));
    wait_image_released(cluster, &v, Duration::from_secs(30));
    let counted = cluster.read_files_from_image(&v, &["/count"]).remove(0);
    let numbers: Vec<u64> = counted.lines().map(|l| l.parse().unwrap_or_else(|_| panic!("a torn line in {counted:?}"))).collect();
    assert!(numbers.len() as u64 >= after, "{} lines in ceph, the task had written {after}", numbers.len());
    assert!(numbers.iter().enumerate().all(|(i, &n)| n == i as u64 + 1), "lines lost or torn");
    cluster.assert_filesystem_clean(&v, "ext4");

    remove_volume_and_see_the_image_go(swarm, cluster, &v);
    println!("test took {:?}", started.elapsed());
}

#[test]
fn block_volumes_and_multi_node_writers_are_refused_with_the_reason_and_no_image_is_made() {
    let started = Instant::now();
    let (cluster, swarm) = bed();
    let p = plugin(swarm, &settings(cluster, true));
    let cases: [(&str, &[&str], &str); 3] = [
        ("block", &["--type", "block", "--sharing", "onewriter", "--scope", "single"], "use --type mount"),
        ("multi-all", &["--type", "mount", "--sharing", "all", "--scope", "multi"], "--scope multi"),
        ("multi-onewriter", &["--type", "mount", "--sharing", "onewriter", "--scope", "multi"], "--scope multi"),
    ];
    let mut volumes = Vec::new();
    for (what, args, _) in &cases {
        let v = unique(&format!("swno-{what}"));
        let mut args = args.to_vec();
        args.extend(["--required-bytes", "64M"]);
        let out = p.create_volume(&v, &args);
        assert!(out.status.success(), "docker volume create {v} (stored, pending): {}", String::from_utf8_lossy(&out.stderr));
        volumes.push(v);
    }
    for ((what, _, reason), v) in cases.iter().zip(&volumes) {
        // Swarm asked the plugin, which said why not (swarm shows it only in
        // its log, and tries again later).
        let id = swarm.volume_swarm_id(v);
        let line = swarm.wait_log_line(&["volume create failed", &format!("volume.id={id}"), "code = InvalidArgument"], Duration::from_secs(60));
        assert!(line.contains(reason), "{what}: the refusal does not say why ({reason:?}): {line}");
        let vol = swarm.volume(v).unwrap();
        assert!(vol["ClusterVolume"]["Info"].is_null(), "{what}: swarm made {v}: {vol}");
        assert!(cluster.rbd_info(v).is_none(), "{what}: an image {v} was made");
    }
    // (docker volume ls --cluster ignores --format: its table.)
    let listed = swarm.docker_ok(&["volume", "ls", "--cluster"]);
    for v in &volumes {
        assert!(listed.lines().any(|l| l.starts_with(&format!("{v} ")) && l.ends_with(" pending creation")), "{v} is not pending creation:\n{listed}");
    }
    println!("test took {:?}", started.elapsed());
}
