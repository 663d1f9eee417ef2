//! `rbdvol csi` against a real throwaway Ceph cluster, spoken to over gRPC
//! on its unix socket exactly as Swarm's manager and node agent speak:
//! volumes made, staged, published, written, unpublished and deleted, with
//! what a user would check read back from Ceph by an independent path
//! (`rbd`, `rbd export` + debugfs). The same calls through a real dockerd
//! and swarm are in tests/swarm.rs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{unique, TestCluster, POOL};
use common::csi::{block_cap, mount_cap, Code, CsiClient};
use common::plugin::Plugin;
use rbdvol::csi::proto::volume_capability::access_mode::Mode;
use rbdvol::csi::proto::{CapacityRange, CreateVolumeRequest};

const MIB: i64 = 1 << 20;

fn cluster() -> &'static TestCluster {
    TestCluster::shared()
}

fn csi_plugin(host: &str) -> (Plugin, CsiClient) {
    let p = Plugin::start_csi(host, cluster().env());
    let c = CsiClient::connect(&p.socket);
    (p, c)
}

fn is_mountpoint(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

/// The image's advisory lockers (rbdvol's host lock), from `rbd lock ls`.
fn lockers(image: &str) -> Vec<serde_json::Value> {
    let out = cluster().cli("rbd", &["lock", "ls", "--format", "json", &format!("{POOL}/{image}")]);
    assert!(out.status.success(), "rbd lock ls {image}: {}", String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout).unwrap() {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => o.into_values().collect(),
        _ => vec![],
    }
}

fn watchers(image: &str) -> usize {
    let out = cluster().cli("rbd", &["status", "--format", "json", &format!("{POOL}/{image}")]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["watchers"].as_array().map(|w| w.len()).unwrap_or(0)
}

/// Watchers go when the user-space mapper's server exits (reaped in the
/// background): waits up to 30 s for none.
fn wait_no_watchers(image: &str) {
    let start = Instant::now();
    while watchers(image) > 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "image {image} still watched 30 s after its last unpublish");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_file(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
}

#[test]
fn a_volume_created_staged_and_published_over_csi_holds_data_ceph_reads_back_and_the_last_unpublish_releases_it() {
    let (p, csi) = csi_plugin("csi-a");
    assert_eq!(csi.probe(), Some(true));
    assert_eq!(csi.node_info().node_id, "csi-a");
    assert!(format!("{:?}", csi.plugin_capabilities()).contains("Service"));
    assert!(format!("{:?}", csi.node_capabilities()).contains("Rpc"));
    let name = unique("csiv");

    let v = csi.create_writer(&name, 128 * MIB, &[], &[]).unwrap();
    assert_eq!((v.volume_id.as_str(), v.capacity_bytes), (name.as_str(), 128 * MIB));
    assert_eq!(v.volume_context.get("pool").map(String::as_str), Some(POOL));
    // Swarm retries a CreateVolume that timed out: the same answer.
    assert_eq!(csi.create_writer(&name, 128 * MIB, &[], &[]).unwrap(), v);
    assert_eq!(cluster().rbd_info(&name).expect("the image exists")["size"].as_i64(), Some(128 * MIB));
    // The same name with a size outside the range: not this volume.
    let e = csi.create_writer(&name, 256 * MIB, &[], &[]).unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains(&name) && e.message().contains("outside the range"), "{}", e.message());
    let listed = csi.list(0, "").unwrap();
    assert!(listed.entries.iter().any(|e| e.volume.as_ref().unwrap().volume_id == name), "{listed:?}");

    let (staging, target) = (p.stage_root().join("s1"), p.publish_root().join("s1"));
    let cap = mount_cap(Mode::SingleNodeWriter);
    csi.stage(&name, &staging, cap.clone(), &[]).unwrap();
    // Swarm stages before every publish attempt.
    csi.stage(&name, &staging, cap.clone(), &[]).unwrap();
    csi.publish(&name, &staging, &target, cap.clone(), &[]).unwrap();
    csi.publish(&name, &staging, &target, cap.clone(), &[]).unwrap();
    assert!(is_mountpoint(&staging) && is_mountpoint(&target));
    write_file(&target, "f", "written through the publish target\n");
    assert!(!lockers(&name).is_empty(), "no lock on the image while published");

    // Swarm sends no NodeUnstage: the unpublish releases everything.
    csi.unpublish(&name, &target).unwrap();
    assert!(!is_mountpoint(&target) && !is_mountpoint(&staging));
    assert!(lockers(&name).is_empty(), "the host lock stays after the last unpublish: {:?}", lockers(&name));
    wait_no_watchers(&name);
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    // Repeated, and a late NodeUnstage: nothing to do, no error.
    csi.unpublish(&name, &target).unwrap();
    csi.unstage(&name, &staging).unwrap();

    assert_eq!(cluster().read_files_from_image(&name, &["/f"]), vec!["written through the publish target\n"]);
    csi.delete(&name, &[]).unwrap();
    assert!(cluster().rbd_info(&name).is_none(), "out of the pool when DeleteVolume answers");
    assert!(cluster().image_deleted(&name));
    csi.delete(&name, &[]).unwrap();
}

#[test]
fn requests_rbdvol_cannot_serve_are_refused_naming_what_to_change_and_make_nothing() {
    let (p, csi) = csi_plugin("csi-r");
    let name = unique("csibad");
    let create = |caps, params: &[(&str, &str)], range: Option<CapacityRange>| {
        csi.create(CreateVolumeRequest {
            name: name.clone(),
            capacity_range: range,
            volume_capabilities: caps,
            parameters: common::csi::map(params),
            ..Default::default()
        })
        .unwrap_err()
    };
    let refusals = [
        (create(vec![block_cap(Mode::SingleNodeWriter)], &[], None), Code::InvalidArgument, "--type mount"),
        (create(vec![mount_cap(Mode::MultiNodeMultiWriter)], &[], None), Code::InvalidArgument, "corrupted"),
        (create(vec![mount_cap(Mode::MultiNodeSingleWriter)], &[], None), Code::InvalidArgument, "--scope single"),
        (create(vec![], &[], None), Code::InvalidArgument, "no volume capability"),
        (create(vec![mount_cap(Mode::MultiNodeReaderOnly)], &[], None), Code::InvalidArgument, "readonly"),
        (create(vec![mount_cap(Mode::SingleNodeWriter)], &[("colour", "blue")], None), Code::InvalidArgument, "unknown option 'colour'"),
        (create(vec![mount_cap(Mode::SingleNodeWriter)], &[("size", "1G")], Some(CapacityRange { required_bytes: MIB, limit_bytes: 0 })), Code::InvalidArgument, "not both"),
        (create(vec![mount_cap(Mode::SingleNodeWriter)], &[], Some(CapacityRange { required_bytes: 10, limit_bytes: 100 })), Code::OutOfRange, "MiB"),
        (create(vec![mount_cap(Mode::SingleNodeWriter)], &[], Some(CapacityRange { required_bytes: 2 * MIB, limit_bytes: MIB })), Code::InvalidArgument, "below"),
    ];
    for (e, code, says) in refusals {
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(says), "expected '{says}' in: {}", e.message());
    }
    let e = csi.create_writer("../etc", MIB, &[], &[]).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = csi.create_writer(&name, MIB, &[], &[("password", "x")]).unwrap_err();
    assert!(e.message().contains("'password'"), "{}", e.message());
    let e = csi.create_writer(&name, MIB, &[], &[("key", "[client.admin] key = AQB")]).unwrap_err();
    assert!(e.message().contains("not a cephx key") && !e.message().contains("AQB"), "{}", e.message());
    assert!(cluster().rbd_info(&name).is_none(), "a refused CreateVolume made an image");

    // Paths outside the plugin's roots, and a volume that does not exist.
    csi.create_writer(&name, 64 * MIB, &[], &[]).unwrap();
    let cap = mount_cap(Mode::SingleNodeWriter);
    for bad in [Path::new("/etc"), Path::new("/tmp/x"), &p.stage_root().join("a/b"), &p.stage_root().join("..")] {
        let e = csi.stage(&name, bad, cap.clone(), &[]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}: {e:?}", bad.display());
        assert!(e.message().contains(p.stage_root().to_str().unwrap()), "{}", e.message());
    }
    let e = csi.publish(&name, &p.stage_root().join("s"), Path::new("/var/lib/docker/x"), cap.clone(), &[]).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = csi.stage(&unique("nosuch"), &p.stage_root().join("s"), cap.clone(), &[]).unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    assert!(lockers(&name).is_empty(), "a refused stage took the host lock");
    let e = csi.list(0, "not-a-token").unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    csi.delete(&name, &[]).unwrap();
}

#[test]
fn a_volume_staged_on_one_host_is_refused_on_another_until_the_first_unpublishes() {
    let (pa, a) = csi_plugin("csi-h1");
    let (pb, b) = csi_plugin("csi-h2");
    let name = unique("csiex");
    a.create_writer(&name, 64 * MIB, &[], &[]).unwrap();
    let cap = mount_cap(Mode::SingleNodeWriter);
    a.stage(&name, &pa.stage_root().join("x"), cap.clone(), &[]).unwrap();
    a.publish(&name, &pa.stage_root().join("x"), &pa.publish_root().join("x"), cap.clone(), &[]).unwrap();
    let e = b.stage(&name, &pb.stage_root().join("x"), cap.clone(), &[]).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("csi-h1"), "names the holder: {}", e.message());
    assert!(pb.leftovers().is_empty(), "{:?}", pb.leftovers());
    a.unpublish(&name, &pa.publish_root().join("x")).unwrap();
    wait_no_watchers(&name);
    b.stage(&name, &pb.stage_root().join("x"), cap.clone(), &[]).unwrap();
    b.publish(&name, &pb.stage_root().join("x"), &pb.publish_root().join("x"), cap, &[]).unwrap();
    b.unpublish(&name, &pb.publish_root().join("x")).unwrap();
    wait_no_watchers(&name);
    a.delete(&name, &[]).unwrap();
}

#[test]
fn a_key_from_a_swarm_secret_is_all_the_plugin_needs_and_it_outlives_a_restart() {
    let key = cluster().admin_settings().key.expose().to_string();
    let env: Vec<(String, String)> = cluster().env().into_iter().filter(|(k, _)| k != "RBD_CONF_KEYRING_KEY").collect();
    let mut p = Plugin::start_csi("csi-k", env);
    let csi = CsiClient::connect(&p.socket);
    // Ready without a key: Swarm sends the secret only to a ready plugin.
    assert_eq!(csi.probe(), Some(true));
    let name = unique("csikey");
    let secret = [("key", format!("{key}\n"))];
    let secrets: Vec<(&str, &str)> = secret.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let v = csi.create_writer(&name, 64 * MIB, &[], &secrets).unwrap();
    assert_eq!(v.capacity_bytes, 64 * MIB);
    let (staging, target) = (p.stage_root().join("k"), p.publish_root().join("k"));
    let cap = mount_cap(Mode::SingleNodeWriter);
    csi.stage(&name, &staging, cap.clone(), &secrets).unwrap();
    csi.publish(&name, &staging, &target, cap, &secrets).unwrap();
    write_file(&target, "f", "key from a secret\n");

    // Kept for the calls that carry no secrets, readable by root alone.
    let kept = p.state_dir().join("swarm-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
    p.restart();
    let csi = CsiClient::connect(&p.socket);
    csi.unpublish(&name, &target).unwrap();
    assert!(lockers(&name).is_empty(), "released after the restart without a secret");
    wait_no_watchers(&name);
    assert_eq!(cluster().read_files_from_image(&name, &["/f"]), vec!["key from a secret\n"]);
    csi.delete(&name, &[]).unwrap();
    assert!(cluster().image_deleted(&name));
    assert!(!p.log().contains(&key), "the key reached the plugin's log");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains(&key), "the key is on a command line");
}

#[test]
fn a_read_only_volume_is_published_read_only_on_two_hosts_at_once() {
    let (pa, a) = csi_plugin("csi-ro1");
    let (pb, b) = csi_plugin("csi-ro2");
    let (src, ro) = (unique("csisrc"), unique("csiro"));
    let w = mount_cap(Mode::SingleNodeWriter);
    a.create_writer(&src, 64 * MIB, &[], &[]).unwrap();
    a.stage(&src, &pa.stage_root().join("w"), w.clone(), &[]).unwrap();
    a.publish(&src, &pa.stage_root().join("w"), &pa.publish_root().join("w"), w, &[]).unwrap();
    write_file(&pa.publish_root().join("w"), "f", "before the snapshot\n");
    a.unpublish(&src, &pa.publish_root().join("w")).unwrap();
    let out = cluster().rbdvol(&["snapshot", "create", &format!("{src}@s1")], &[]);
    assert!(out.status.success(), "snapshot: {}", String::from_utf8_lossy(&out.stderr));

    let r = mount_cap(Mode::MultiNodeReaderOnly);
    let v = a
        .create(CreateVolumeRequest {
            name: ro.clone(),
            volume_capabilities: vec![r.clone()],
            parameters: common::csi::map(&[("from", &format!("{src}@s1"))]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(v.capacity_bytes, 64 * MIB);
    assert!(a.validate(&ro, mount_cap(Mode::SingleNodeWriter)).unwrap().confirmed.is_none());
    assert!(a.validate(&ro, r.clone()).unwrap().confirmed.is_some());
    for (p, c) in [(&pa, &a), (&pb, &b)] {
        c.stage(&ro, &p.stage_root().join("r"), r.clone(), &[]).unwrap();
        c.publish(&ro, &p.stage_root().join("r"), &p.publish_root().join("r"), r.clone(), &[]).unwrap();
        assert_eq!(std::fs::read_to_string(p.publish_root().join("r/f")).unwrap(), "before the snapshot\n");
        let e = std::fs::write(p.publish_root().join("r/g"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    }
    for (p, c) in [(&pa, &a), (&pb, &b)] {
        c.unpublish(&ro, &p.publish_root().join("r")).unwrap();
        assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    }
    wait_no_watchers(&ro);
    a.delete(&ro, &[]).unwrap();
}

/// Every CSI crash point, killed there once: Swarm's retries (stage again,
/// publish again, unpublish again) finish the job, the data written stays,
/// and the last unpublish leaves nothing behind.
#[test]
fn a_plugin_killed_at_each_step_of_stage_publish_and_unpublish_is_finished_by_swarms_retries() {
    let mut p = Plugin::start_csi("csi-crash", cluster().env());
    let cap = mount_cap(Mode::SingleNodeWriter);
    let points: Vec<&str> = rbdvol::host::crash::POINTS.iter().copied().filter(|p| ["stage.", "publish.", "unpublish."].iter().any(|x| p.starts_with(x))).collect();
    assert_eq!(points.len(), 4);
    for point in points {
        let name = unique("csicr");
        let (staging, target) = (p.stage_root().join("c"), p.publish_root().join("c"));
        let csi = CsiClient::connect(&p.socket);
        csi.create_writer(&name, 64 * MIB, &[], &[]).unwrap();
        let arm = |p: &mut Plugin| {
            p.set_env("RBDVOL_CRASH_AT", Some(&format!("{point}@{name}")));
            p.restart();
            CsiClient::connect(&p.socket)
        };
        let disarm = |p: &mut Plugin| {
            assert!(p.wait_exit(Duration::from_secs(30)), "{point}: the plugin did not die there");
            p.set_env("RBDVOL_CRASH_AT", None);
            p.restart();
            CsiClient::connect(&p.socket)
        };
        let csi = if point.starts_with("stage.") {
            let armed = arm(&mut p);
            assert!(armed.stage(&name, &staging, cap.clone(), &[]).is_err(), "{point}");
            disarm(&mut p)
        } else {
            csi
        };
        csi.stage(&name, &staging, cap.clone(), &[]).unwrap_or_else(|e| panic!("{point}: stage: {e:?}"));
        let csi = if point.starts_with("publish.") {
            drop(csi);
            let armed = arm(&mut p);
            assert!(armed.publish(&name, &staging, &target, cap.clone(), &[]).is_err(), "{point}");
            let csi = disarm(&mut p);
            csi.stage(&name, &staging, cap.clone(), &[]).unwrap_or_else(|e| panic!("{point}: stage again: {e:?}"));
            csi
        } else {
            csi
        };
        csi.publish(&name, &staging, &target, cap.clone(), &[]).unwrap_or_else(|e| panic!("{point}: publish: {e:?}"));
        write_file(&target, "f", "before the unpublish\n");
        let csi = if point.starts_with("unpublish.") {
            drop(csi);
            let armed = arm(&mut p);
            assert!(armed.unpublish(&name, &target).is_err(), "{point}");
            disarm(&mut p)
        } else {
            csi
        };
        csi.unpublish(&name, &target).unwrap_or_else(|e| panic!("{point}: unpublish: {e:?}"));
        let ours: Vec<_> = lockers(&name).into_iter().filter(|l| !l["id"].as_str().unwrap_or("").starts_with("auto ")).collect();
        assert!(ours.is_empty(), "{point}: the host lock is left: {ours:?}");
        wait_no_watchers(&name);
        assert!(p.leftovers().is_empty(), "{point}: {:?}", p.leftovers());
        assert_eq!(cluster().read_files_from_image(&name, &["/f"]), vec!["before the unpublish\n"], "{point}");
        csi.delete(&name, &[]).unwrap();
    }
}

/// A well-formed cephx key the cluster does not know.
const WRONG_KEY: &str = "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==";

fn host_lockers(image: &str) -> Vec<serde_json::Value> {
    lockers(image).into_iter().filter(|l| !l["id"].as_str().unwrap_or("").starts_with("auto ")).collect()
}

#[test]
fn a_wrong_key_in_one_volumes_secret_is_refused_and_the_good_key_stays_for_the_others() {
    let key = cluster().admin_settings().key.expose().to_string();
    let env: Vec<(String, String)> = cluster().env().into_iter().filter(|(k, _)| k != "RBD_CONF_KEYRING_KEY").collect();
    let p = Plugin::start_csi("csi-wrongkey", env);
    let csi = CsiClient::connect(&p.socket);
    let (good, bad) = ([("key", key.as_str())], [("key", WRONG_KEY)]);
    let a = unique("csigood");
    csi.create_writer(&a, 64 * MIB, &[], &good).unwrap();
    let (st, tg) = (p.stage_root().join("a"), p.publish_root().join("a"));
    let cap = mount_cap(Mode::SingleNodeWriter);
    csi.stage(&a, &st, cap.clone(), &good).unwrap();
    csi.publish(&a, &st, &tg, cap, &good).unwrap();

    let b = unique("csibadkey");
    let e = csi.create_writer(&b, 64 * MIB, &[], &bad).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("refuses the cephx key") && !e.message().contains(WRONG_KEY), "{}", e.message());
    assert!(cluster().rbd_info(&b).is_none());
    assert_eq!(std::fs::read_to_string(p.state_dir().join("swarm-key")).unwrap().trim(), key, "the good key is the one kept");
    // NodeUnpublish carries no secret: the good key still releases volume a.
    csi.unpublish(&a, &tg).unwrap();
    assert!(host_lockers(&a).is_empty(), "{:?}", host_lockers(&a));
    wait_no_watchers(&a);
    csi.delete(&a, &good).unwrap();
    assert!(!p.log().contains(WRONG_KEY) && !p.log().contains(&key), "a key reached the log");
}

#[test]
fn a_create_again_asking_another_filesystem_is_refused_as_a_different_volume() {
    let (_p, csi) = csi_plugin("csi-fs");
    let name = unique("csifs");
    csi.create_writer(&name, 320 * MIB, &[("fstype", "ext4")], &[]).unwrap();
    let e = csi.create_writer(&name, 320 * MIB, &[("fstype", "xfs")], &[]).unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("fstype 'ext4'"), "{}", e.message());
    csi.create_writer(&name, 320 * MIB, &[("fstype", "ext4")], &[]).unwrap();
    csi.delete(&name, &[]).unwrap();
}

#[test]
fn a_stage_root_reached_through_a_symlink_gets_one_bind_however_often_swarm_stages() {
    let (p, csi) = csi_plugin("csi-ln");
    let real = p.stage_root().with_file_name("real-staged");
    std::fs::create_dir_all(&real).unwrap();
    let _ = std::fs::remove_dir(p.stage_root());
    std::os::unix::fs::symlink(&real, p.stage_root()).unwrap();
    let name = unique("csiln");
    csi.create_writer(&name, 64 * MIB, &[], &[]).unwrap();
    let (st, tg) = (p.stage_root().join("s"), p.publish_root().join("s"));
    let cap = mount_cap(Mode::SingleNodeWriter);
    for _ in 0..3 {
        csi.stage(&name, &st, cap.clone(), &[]).unwrap();
    }
    csi.publish(&name, &st, &tg, cap, &[]).unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let binds = mountinfo.lines().filter(|l| l.split(' ').nth(4) == Some(real.join("s").to_str().unwrap())).count();
    assert_eq!(binds, 1, "binds stacked at the staging path");
    csi.unpublish(&name, &tg).unwrap();
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    csi.delete(&name, &[]).unwrap();
}

#[test]
fn probe_says_not_ready_while_the_cluster_does_not_answer_and_calls_fail_as_unavailable() {
    let key = cluster().admin_settings().key.expose().to_string();
    // A monitor address where nothing listens.
    let env = vec![
        ("RBD_CONF_GLOBAL_MON_HOST".to_string(), "127.0.0.1:1".to_string()),
        ("RBD_CONF_KEYRING_USER".to_string(), "client.admin".to_string()),
        ("RBD_CONF_KEYRING_KEY".to_string(), key),
        ("RBDVOL_CONNECT_TIMEOUT".to_string(), "2".to_string()),
    ];
    let p = Plugin::start_csi("csi-down", env);
    let csi = CsiClient::connect(&p.socket);
    let start = Instant::now();
    while csi.probe() != Some(false) {
        assert!(start.elapsed() < Duration::from_secs(60), "Probe still ready with no monitor answering");
        std::thread::sleep(Duration::from_millis(500));
    }
    let e = csi.create_writer(&unique("csidown"), 64 * MIB, &[], &[]).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "Swarm retries it: {e:?}");
    assert!(e.message().contains("unreachable") && e.message().contains("nothing was changed"), "{}", e.message());
}
