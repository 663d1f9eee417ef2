//! Crash points: `rbdvol serve` killed (SIGKILL) at each named step of
//! Create, Mount, Unmount and Remove (`host::crash::POINTS`, armed with
//! `RBDVOL_CRASH_AT` in debug builds), restarted, and the same call made
//! again, as dockerd retries it. After each: the volume is fully there or
//! absent for Docker, fsynced data is intact, the filesystem checks clean,
//! and nothing leaks — no mount, loop device, FUSE server or state file of
//! the plugin, no host lock on a volume nobody has mounted.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::cluster::{unique, TestCluster, POOL};
use common::plugin::{Answer, Plugin};
use rbdvol::host::crash::POINTS;

fn cluster() -> &'static TestCluster {
    TestCluster::shared()
}

fn id(n: u32) -> String {
    format!("{n:064x}")
}

fn ok(a: &Answer) {
    assert_eq!(a.err(), "", "unexpected Err: {:?}", a.json);
}

fn body(name: &str, extra: &str) -> String {
    format!(r#"{{"Name":"{name}"{extra}}}"#)
}

/// The holders of rbdvol's host lock on `name`, as `rbd lock ls` (an
/// independent client) sees them (librbd's own exclusive lock, `auto ...`,
/// is not rbdvol's).
fn lock_holders(name: &str) -> usize {
    let out = cluster().cli("rbd", &["lock", "ls", "--format", "json", &format!("{POOL}/{name}")]);
    let locks = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok().and_then(|j| j.as_array().cloned()).unwrap_or_default();
    let ours: Vec<_> = locks.iter().filter(|l| !l["id"].as_str().unwrap_or("").starts_with("auto ")).collect();
    if !ours.is_empty() {
        eprintln!("rbd lock ls {name}: {locks:?}");
    }
    ours.len()
}

fn points(prefix: &str) -> Vec<&'static str> {
    POINTS.iter().copied().filter(|p| p.starts_with(prefix)).collect()
}

/// Makes `call` on a plugin armed to die at `point`, checks it died there
/// (no answer), and restarts it unarmed.
fn crash_at(p: &mut Plugin, point: &str, name: &str, endpoint: &str, call_body: &str) {
    p.set_env("RBDVOL_CRASH_AT", Some(&format!("{point}@{name}")));
    p.restart();
    let answer = p.try_call(endpoint, call_body);
    if point.starts_with("purge.") {
        // The deletion runs after Remove answered.
        assert!(answer.as_ref().is_some_and(|a| a.err().is_empty()), "{point}: {:?}", answer.map(|a| a.json));
    } else {
        assert!(answer.is_none(), "{point}: {endpoint} answered instead of crashing: {:?}", answer.map(|a| a.json));
    }
    // Background work (the purge) may first wait for the volume's lock
    // and retry a move while watchers go: a loaded machine takes longer.
    let limit = Duration::from_secs(if point.starts_with("purge.") { 60 } else { 10 });
    assert!(p.wait_exit(limit), "{point}: the plugin did not die within {limit:?}:\n{}", p.log());
    assert!(p.log().contains(&format!("crash point {point}")), "{point}: died elsewhere:\n{}", p.log());
    p.set_env("RBDVOL_CRASH_AT", None);
    p.restart();
}

fn write_synced(mp: &str, file: &str, text: &str) {
    use std::io::Write;
    let mut f = std::fs::File::create(PathBuf::from(mp).join(file)).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// Nothing of `name` is mounted or locked, nothing of the plugin is left.
fn assert_released(p: &Plugin, name: &str, point: &str) {
    assert!(p.leftovers().is_empty(), "{point}: leftovers {:?}", p.leftovers());
    assert_eq!(lock_holders(name), 0, "{point}: a host lock is left on {name}");
    let notes = std::fs::read_dir(p.state_dir().join("locks")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(notes, 0, "{point}: a lock note is left");
    let scratch = std::fs::read_dir(p.state_dir().join("format")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(scratch, 0, "{point}: a scratch file is left in the state directory");
}

#[test]
fn a_create_killed_at_each_step_is_completed_or_absent_never_half_made() {
    let mut p = Plugin::start(cluster(), &unique("crashc"));
    for point in points("create.") {
        let name = unique("cc");
        // With a QoS limit: its metadata is written before the marker.
        crash_at(&mut p, point, &name, "VolumeDriver.Create", &body(&name, r#","Opts":{"size":"64","qos_iops":"1000"}"#));
        // Docker sees it fully made or not at all.
        let got = p.get(&name);
        assert!(got.err().is_empty() || got.err().contains("does not exist"), "{point}: {:?}", got.json);
        // dockerd's retry completes it.
        ok(&p.create(&name, &[("size", "64"), ("qos_iops", "1000")]));
        assert_eq!(p.get(&name).json["Volume"]["Status"]["qos"], "qos_iops=1000", "{point}");
        ok(&p.get(&name));
        let m = p.mount(&name, &id(1));
        ok(&m);
        write_synced(m.json["Mountpoint"].as_str().unwrap(), "x", "after the crash\n");
        ok(&p.unmount(&name, &id(1)));
        cluster().assert_filesystem_clean(&name, "ext4");
        assert_eq!(cluster().read_files_from_image(&name, &["/x"])[0], "after the crash\n", "{point}");
        assert_released(&p, &name, point);
        ok(&p.remove(&name));
    }
}

#[test]
fn an_adoption_killed_at_each_step_is_finished_by_its_retry_and_a_forget_by_the_restart() {
    let mut p = Plugin::start(cluster(), &unique("crasha"));
    for point in points("adopt.") {
        for blank in [false, true] {
            let (image, name) = (unique("elsewhere"), unique("ca"));
            let opts = if blank {
                let out = cluster().cli("rbd", &["create", "--size", "32", &format!("{POOL}/{image}")]);
                assert!(out.status.success(), "{out:?}");
                format!(r#","Opts":{{"image":"{image}","format":"true"}}"#)
            } else {
                cluster().ext4_image_made_elsewhere(&image, 32, &[("kept.txt", "made elsewhere\n")]);
                format!(r#","Opts":{{"image":"{image}"}}"#)
            };
            crash_at(&mut p, point, &name, "VolumeDriver.Create", &body(&name, &opts));
            let got = p.get(&name);
            assert!(got.err().contains("does not exist"), "{point}: a half-adopted volume is visible: {:?}", got.json);
            // dockerd's retry finishes it (a blank image's cut-short mkfs
            // is redone).
            let mut again = vec![("image", image.as_str())];
            if blank {
                again.push(("format", "true"));
            }
            ok(&p.create(&name, &again));
            let m = p.mount(&name, &id(1));
            ok(&m);
            let mp = m.json["Mountpoint"].as_str().unwrap().to_string();
            if !blank {
                assert_eq!(std::fs::read_to_string(PathBuf::from(&mp).join("kept.txt")).unwrap(), "made elsewhere\n", "{point}");
            }
            write_synced(&mp, "x", "after the crash\n");
            ok(&p.unmount(&name, &id(1)));
            cluster().assert_filesystem_clean(&image, "ext4");
            assert_released(&p, &name, point);
            // Killed while Remove forgets it: the restart finishes that.
            crash_at(&mut p, "forget.stripped", &name, "VolumeDriver.Remove", &body(&name, ""));
            let start = std::time::Instant::now();
            while !p.get(&name).err().contains("does not exist") {
                assert!(start.elapsed() < Duration::from_secs(30), "{point}: the restart did not finish forgetting {name}");
                std::thread::sleep(Duration::from_millis(200));
            }
            assert_eq!(cluster().image_meta_keys(&image), Vec::<String>::new(), "{point}");
            assert_eq!(cluster().read_files_from_image(&image, &["/x"])[0], "after the crash\n", "{point}");
            let out = cluster().cli("rbd", &["rm", "--no-progress", &format!("{POOL}/{image}")]);
            assert!(out.status.success(), "{point}: {out:?}");
        }
    }
}

#[test]
fn a_mount_killed_at_each_step_is_undone_or_kept_and_its_retry_works() {
    let mut p = Plugin::start(cluster(), &unique("crashm"));
    for point in points("mount.") {
        let name = unique("cm");
        ok(&p.create(&name, &[("size", "64")]));
        let m = p.mount(&name, &id(1));
        write_synced(m.json["Mountpoint"].as_str().unwrap(), "before", "fsynced before\n");
        ok(&p.unmount(&name, &id(1)));
        crash_at(&mut p, point, &name, "VolumeDriver.Mount", &body(&name, &format!(r#","ID":"{}""#, id(2))));
        // dockerd's retry (same ID) mounts it, whatever the crash left.
        let m = p.mount(&name, &id(2));
        ok(&m);
        let mp = m.json["Mountpoint"].as_str().unwrap().to_string();
        assert_eq!(std::fs::read_to_string(format!("{mp}/before")).unwrap(), "fsynced before\n", "{point}");
        write_synced(&mp, "after", "after the crash\n");
        // One reference: one Unmount releases it.
        ok(&p.unmount(&name, &id(2)));
        assert_released(&p, &name, point);
        cluster().assert_filesystem_clean(&name, "ext4");
        ok(&p.remove(&name));
    }
}

#[test]
fn an_unmount_killed_at_each_step_is_finished_by_its_retry() {
    let mut p = Plugin::start(cluster(), &unique("crashu"));
    for point in points("unmount.") {
        let name = unique("cu");
        ok(&p.create(&name, &[("size", "64")]));
        let m = p.mount(&name, &id(1));
        write_synced(m.json["Mountpoint"].as_str().unwrap(), "data", "fsynced\n");
        crash_at(&mut p, point, &name, "VolumeDriver.Unmount", &body(&name, &format!(r#","ID":"{}""#, id(1))));
        ok(&p.unmount(&name, &id(1)));
        assert_released(&p, &name, point);
        cluster().assert_filesystem_clean(&name, "ext4");
        assert_eq!(cluster().read_files_from_image(&name, &["/data"])[0], "fsynced\n", "{point}");
        ok(&p.remove(&name));
    }
}

#[test]
fn a_remove_killed_at_each_step_is_finished_and_the_name_is_free() {
    let mut p = Plugin::start(cluster(), &unique("crashr"));
    for point in points("remove.").into_iter().chain(points("purge.")) {
        let name = unique("cr");
        ok(&p.create(&name, &[("size", "64")]));
        crash_at(&mut p, point, &name, "VolumeDriver.Remove", &body(&name, ""));
        ok(&p.remove(&name));
        assert!(p.get(&name).err().contains("does not exist"), "{point}");
        assert_released(&p, &name, point);
        // The image goes (in the background, also after the restart).
        let start = std::time::Instant::now();
        while !cluster().image_deleted(&name) {
            assert!(start.elapsed() < Duration::from_secs(60), "{point}: the image of a removed volume stays");
            std::thread::sleep(Duration::from_millis(200));
        }
        let pool = cluster().connect().open_pool(POOL, "").unwrap();
        while rbdvol::engine::records::parse_trash(pool.metadata_list(rbdvol::engine::records::TRASH_PREFIX).unwrap()).iter().any(|r| r.name == name) {
            assert!(start.elapsed() < Duration::from_secs(60), "{point}: the trash record of {name} stays");
            std::thread::sleep(Duration::from_millis(200));
        }
        // The name is free for a fresh volume.
        ok(&p.create(&name, &[("size", "64")]));
        ok(&p.remove(&name));
    }
}

/// The user-space mapper's server (`rbdvol userspace-serve`, one per
/// mapped volume) killed at each step: before it serves, right after it
/// said ready, and after a flush reached Ceph but before the kernel heard
/// of it. The Mount (or the first fsync) fails with an error, Docker's
/// Unmount releases everything, and the retry mounts the volume with every
/// fsynced byte.
#[test]
fn a_user_space_server_killed_at_each_step_fails_its_mount_or_fsync_and_the_retry_works() {
    let mut p = Plugin::start(cluster(), &unique("crashs"));
    let marks = p.dir.join("crash-points.log");
    for point in points("server.") {
        let name = unique("cs");
        ok(&p.create(&name, &[("size", "64")]));
        let m = p.mount(&name, &id(1));
        ok(&m);
        write_synced(m.json["Mountpoint"].as_str().unwrap(), "before", "fsynced before\n");
        ok(&p.unmount(&name, &id(1)));
        // The servers are spawned by the plugin: restarted armed, its
        // spare server is too.
        p.set_env("RBDVOL_CRASH_AT", Some(&format!("{point}@{name}")));
        p.set_env("RBDVOL_CRASH_LOG", Some(marks.to_str().unwrap()));
        p.restart();
        let m = p.mount(&name, &id(2));
        if m.err().is_empty() {
            // Mounted before the server reached its point: the next fsync
            // reaches it, and fails.
            let mp = m.json["Mountpoint"].as_str().unwrap().to_string();
            let synced = std::fs::write(format!("{mp}/lost"), "x").and_then(|_| std::fs::File::open(format!("{mp}/lost"))?.sync_all());
            assert!(synced.is_err(), "{point}: an fsync through a dead server succeeded");
            ok(&p.unmount(&name, &id(2)));
        } else {
            assert!(m.err().contains(&name), "{point}: the error does not name the volume: {}", m.err());
        }
        let died = std::fs::read_to_string(&marks).unwrap_or_default();
        assert!(died.contains(&format!("{point}@{name} ")), "{point}: the server never died there ({died:?}):\n{}", p.log());
        assert_released(&p, &name, point);
        p.set_env("RBDVOL_CRASH_AT", None);
        p.restart();
        let m = p.mount(&name, &id(3));
        ok(&m);
        let mp = m.json["Mountpoint"].as_str().unwrap().to_string();
        assert_eq!(std::fs::read_to_string(format!("{mp}/before")).unwrap(), "fsynced before\n", "{point}");
        write_synced(&mp, "after", "after the crash\n");
        ok(&p.unmount(&name, &id(3)));
        assert_released(&p, &name, point);
        cluster().assert_filesystem_clean(&name, "ext4");
        assert_eq!(cluster().read_files_from_image(&name, &["/after"])[0], "after the crash\n", "{point}");
        ok(&p.remove(&name));
    }
}

/// The user-space server killed (`kill -9`) under an application that
/// appends and fsyncs: its next write or fsync fails (never hangs, never
/// succeeds), Docker's Unmount releases everything, and the next Mount has
/// every line that was fsynced.
#[test]
fn a_user_space_server_killed_under_a_writer_fails_its_fsync_and_keeps_what_was_fsynced() {
    use std::io::Write;
    let p = Plugin::start(cluster(), &unique("crashw"));
    let name = unique("cw");
    ok(&p.create(&name, &[("size", "64")]));
    let m = p.mount(&name, &id(1));
    ok(&m);
    let mp = m.json["Mountpoint"].as_str().unwrap().to_string();
    let servers = p.server_pids();
    assert_eq!(servers.len(), 1, "{servers:?}");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(format!("{mp}/log")).unwrap();
    let mut synced = 0u32;
    let mut failed = None;
    for n in 0..100_000u32 {
        if n == 20 {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(servers[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        }
        match f.write_all(format!("line {n}\n").as_bytes()).and_then(|_| f.sync_data()) {
            Ok(()) => synced = n + 1,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let failed = failed.expect("fsyncs kept succeeding with the server dead");
    println!("after {synced} fsynced lines: {failed}");
    drop(f);
    ok(&p.unmount(&name, &id(1)));
    assert_released(&p, &name, "server killed");
    let m = p.mount(&name, &id(2));
    ok(&m);
    let text = std::fs::read_to_string(format!("{}/log", m.json["Mountpoint"].as_str().unwrap())).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() as u32 >= synced, "{} lines, {synced} fsynced", lines.len());
    assert!((0..synced).all(|i| lines[i as usize] == format!("line {i}")), "fsynced lines lost");
    ok(&p.unmount(&name, &id(2)));
    assert_released(&p, &name, "server killed");
    cluster().assert_filesystem_clean(&name, "ext4");
    ok(&p.remove(&name));
}

/// `rbdvol resize` killed once the image grew: run again, it finds the
/// work done; the next Mount grows the filesystem.
#[test]
fn a_resize_killed_after_growing_the_image_is_finished_by_running_it_again() {
    let p = Plugin::start(cluster(), &unique("crashz"));
    for point in points("resize.") {
        let name = unique("cz");
        ok(&p.create(&name, &[("size", "64")]));
        let m = p.mount(&name, &id(1));
        write_synced(m.json["Mountpoint"].as_str().unwrap(), "data", "before the resize\n");
        ok(&p.unmount(&name, &id(1)));
        let out = rbdvol(&["resize", &name, "160"], &[("RBDVOL_CRASH_AT", &format!("{point}@{name}"))]);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(&format!("crash point {point}")), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        let out = rbdvol(&["resize", &name, "160"], &[]);
        assert!(out.status.success(), "{point}: the second resize failed: {}", String::from_utf8_lossy(&out.stderr));
        let m = p.mount(&name, &id(2));
        ok(&m);
        let mp = m.json["Mountpoint"].as_str().unwrap().to_string();
        let stat = nix::sys::statvfs::statvfs(mp.as_str()).unwrap();
        let fs_bytes = stat.blocks() as u64 * stat.fragment_size() as u64;
        assert!(fs_bytes > 120 << 20, "{point}: the filesystem did not grow at the mount ({fs_bytes} bytes)");
        assert_eq!(std::fs::read_to_string(format!("{mp}/data")).unwrap(), "before the resize\n", "{point}");
        ok(&p.unmount(&name, &id(2)));
        assert_released(&p, &name, point);
        cluster().assert_filesystem_clean(&name, "ext4");
        ok(&p.remove(&name));
    }
}

/// `rbdvol trash restore` killed at each step: its retry finishes it, and
/// the volume comes back with its data.
#[test]
fn a_restore_killed_at_each_step_is_finished_by_its_retry() {
    let p = Plugin::start_with(cluster(), &unique("crashrs"), None, &["--trash-delay", "3600"]);
    for point in points("restore.") {
        let name = unique("crs");
        ok(&p.create(&name, &[("size", "64")]));
        let m = p.mount(&name, &id(1));
        write_synced(m.json["Mountpoint"].as_str().unwrap(), "kept", "kept in the trash\n");
        ok(&p.unmount(&name, &id(1)));
        ok(&p.remove(&name));
        let state = p.state_dir();
        let args = ["trash", "restore", name.as_str(), "--state-dir", state.to_str().unwrap()];
        let out = rbdvol(&args, &[("RBDVOL_CRASH_AT", &format!("{point}@{name}"))]);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(&format!("crash point {point}")), "{point}: {out:?}");
        let out = rbdvol(&args, &[]);
        assert!(out.status.success(), "{point}: the retry: {}", String::from_utf8_lossy(&out.stderr));
        ok(&p.get(&name));
        let m = p.mount(&name, &id(2));
        assert_eq!(std::fs::read_to_string(format!("{}/kept", m.json["Mountpoint"].as_str().unwrap())).unwrap(), "kept in the trash\n", "{point}");
        ok(&p.unmount(&name, &id(2)));
        assert_released(&p, &name, point);
        ok(&p.remove(&name));
    }
}

#[test]
fn every_crash_point_is_covered() {
    let covered: Vec<&str> = ["create.", "adopt.", "forget.", "mount.", "unmount.", "remove.", "purge.", "clone.", "grow.", "takeover.", "server.", "resize.", "restore.",
        // tests/csi.rs: stage, publish and unpublish killed at each step.
        "stage.", "publish.", "unpublish."].iter().flat_map(|p| points(p)).collect();
    let uncovered: Vec<&&str> = POINTS.iter().filter(|p| !covered.contains(p)).collect();
    assert!(uncovered.is_empty(), "crash points no test reaches: {uncovered:?}");
}

fn rbdvol(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    cluster().rbdvol(args, env)
}

#[test]
fn a_clone_killed_after_cloning_is_completed_by_its_retry() {
    let mut p = Plugin::start(cluster(), &unique("crashk"));
    let parent = unique("kp");
    ok(&p.create(&parent, &[("size", "64")]));
    let m = p.mount(&parent, &id(1));
    write_synced(m.json["Mountpoint"].as_str().unwrap(), "from-parent", "snapshot data\n");
    ok(&p.unmount(&parent, &id(1)));
    let out = rbdvol(&["snapshot", "create", &format!("{parent}@s1")], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for point in points("clone.") {
        let name = unique("kc");
        crash_at(&mut p, point, &name, "VolumeDriver.Create", &body(&name, &format!(r#","Opts":{{"from":"{parent}@s1"}}"#)));
        ok(&p.call("VolumeDriver.Create", &body(&name, &format!(r#","Opts":{{"from":"{parent}@s1"}}"#))));
        let m = p.mount(&name, &id(2));
        ok(&m);
        assert_eq!(std::fs::read_to_string(format!("{}/from-parent", m.json["Mountpoint"].as_str().unwrap())).unwrap(), "snapshot data\n", "{point}");
        ok(&p.unmount(&name, &id(2)));
        assert_released(&p, &name, point);
        ok(&p.remove(&name));
        let start = std::time::Instant::now();
        while !cluster().image_deleted(&name) {
            assert!(start.elapsed() < Duration::from_secs(60), "{point}: the clone stays");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let out = rbdvol(&["snapshot", "rm", &format!("{parent}@s1")], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ok(&p.remove(&parent));
}

#[test]
fn an_online_grow_killed_half_way_is_finished_after_the_restart() {
    let mut p = Plugin::start_with(cluster(), &unique("crashg"), None, &["--check-interval", "1"]);
    for (i, point) in points("grow.").into_iter().enumerate() {
        let name = unique("cg");
        ok(&p.create(&name, &[("size", "320"), ("fstype", "xfs")]));
        let m = p.mount(&name, &id(1));
        let mp = m.json["Mountpoint"].as_str().unwrap().to_string();
        write_synced(&mp, "data", "before the grow\n");
        let fs_bytes = || {
            let stat = nix::sys::statvfs::statvfs(mp.as_str()).unwrap();
            stat.blocks() as u64 * stat.fragment_size() as u64
        };
        let before = fs_bytes();
        p.set_env("RBDVOL_CRASH_AT", Some(&format!("{point}@{name}")));
        p.restart();
        // Grown from any host: the plugin that has it mounted grows its
        // filesystem at its next check, and dies there.
        let out = rbdvol(&["resize", &name, &format!("{}", 400 + i * 16)], &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(p.wait_exit(Duration::from_secs(30)), "{point}: the plugin did not die");
        p.set_env("RBDVOL_CRASH_AT", None);
        p.restart();
        // The image grew by 80 MiB or more: so does the filesystem.
        let start = std::time::Instant::now();
        loop {
            if fs_bytes() >= before + (72 << 20) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{point}: the filesystem never grew after the restart ({} bytes, {before} before):\n{}", fs_bytes(), p.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(std::fs::read_to_string(format!("{mp}/data")).unwrap(), "before the grow\n", "{point}");
        ok(&p.unmount(&name, &id(1)));
        assert_released(&p, &name, point);
        cluster().assert_filesystem_clean(&name, "xfs");
        ok(&p.remove(&name));
    }
}

#[test]
fn a_takeover_killed_half_way_is_finished_by_running_it_again() {
    let mut a = Plugin::start(cluster(), &unique("crashta"));
    let b = Plugin::start(cluster(), &unique("crashtb"));
    for point in points("takeover.") {
        let name = unique("ct");
        ok(&a.create(&name, &[("size", "64")]));
        let m = a.mount(&name, &id(1));
        write_synced(m.json["Mountpoint"].as_str().unwrap(), "data", "fsynced by a\n");
        // A dies with the volume mounted (its mapper too).
        let servers = a.server_pids();
        a.kill9();
        for pid in servers {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        let b_state = b.state_dir();
        let args = ["takeover", name.as_str(), "--host-id", b.host_id.as_str(), "--state-dir", b_state.to_str().unwrap()];
        let out = rbdvol(&args, &[("RBDVOL_CRASH_AT", &format!("{point}@{name}"))]);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(&format!("crash point {point}")), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        let out = rbdvol(&args, &[]);
        assert!(out.status.success(), "{point}: the second takeover failed: {}", String::from_utf8_lossy(&out.stderr));
        let record = cluster().connect().open_pool(POOL, "").unwrap().open_image_read_only(&name).unwrap().metadata_get(rbdvol::engine::records::FENCED_KEY).unwrap();
        assert!(record.is_some_and(|r| r.contains(&a.host_id)), "{point}: the fencing of A is not recorded");
        let m = b.mount(&name, &id(2));
        ok(&m);
        assert_eq!(std::fs::read_to_string(format!("{}/data", m.json["Mountpoint"].as_str().unwrap())).unwrap(), "fsynced by a\n", "{point}");
        ok(&b.unmount(&name, &id(2)));
        cluster().assert_filesystem_clean(&name, "ext4");
        // A comes back and lets go of what it had.
        a.restart();
        let start = std::time::Instant::now();
        while !a.leftovers_now().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(30), "{point}: A left {:?}", a.leftovers_now());
            std::thread::sleep(Duration::from_millis(200));
        }
        ok(&b.remove(&name));
    }
    let c = cluster().connect();
    for addr in c.blocklist().unwrap() {
        let _ = c.blocklist_remove(&addr);
    }
}

/// Waits until nothing of `name` is mounted or locked (abandoned calls may
/// still be finishing).
fn eventually_released(p: &Plugin, name: &str, what: &str) {
    let start = std::time::Instant::now();
    while !(p.leftovers_now().is_empty() && lock_holders(name) == 0) {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: never released: {:?}, {} lock holder(s)", p.leftovers_now(), lock_holders(name));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_caller_that_hangs_up_mid_call_and_calls_again_gets_one_volume_one_reference_and_no_leak() {
    let p = Plugin::start(cluster(), &unique("cancel"));
    for delay_ms in [0u64, 5, 20, 60, 150] {
        let delay = Duration::from_millis(delay_ms);
        let name = unique("cx");
        let what = format!("hang-up after {delay_ms} ms");
        // Create: given up on, then retried.
        p.call_and_hang_up("VolumeDriver.Create", &body(&name, r#","Opts":{"size":"64"}"#), delay);
        ok(&p.create(&name, &[("size", "64")]));
        // Mount: given up on, then retried with the same ID (a transport
        // error): one reference.
        p.call_and_hang_up("VolumeDriver.Mount", &body(&name, &format!(r#","ID":"{}""#, id(1))), delay);
        let m = p.mount(&name, &id(1));
        ok(&m);
        write_synced(m.json["Mountpoint"].as_str().unwrap(), "data", "written\n");
        // Unmount: given up on, then retried: released once.
        p.call_and_hang_up("VolumeDriver.Unmount", &body(&name, &format!(r#","ID":"{}""#, id(1))), delay);
        ok(&p.unmount(&name, &id(1)));
        eventually_released(&p, &name, &what);
        assert_eq!(cluster().read_files_from_image(&name, &["/data"])[0], "written\n", "{what}");
        // Mount given up on and never retried: dockerd never unmounts it,
        // so rbdvol lets go by itself — unless the answer got out first.
        p.call_and_hang_up("VolumeDriver.Mount", &body(&name, &format!(r#","ID":"{}""#, id(2))), delay);
        std::thread::sleep(Duration::from_secs(1));
        let u = p.unmount(&name, &id(2));
        ok(&u);
        eventually_released(&p, &name, &what);
        // Remove: given up on, then retried.
        p.call_and_hang_up("VolumeDriver.Remove", &body(&name, ""), delay);
        ok(&p.remove(&name));
        assert!(p.get(&name).err().contains("does not exist"), "{what}");
        cluster().assert_filesystem_clean_or_gone(&name);
    }
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    // The hang-ups did reach rbdvol as a caller gone (not just late).
    let abandoned = p.log().matches("after its caller went away").count();
    println!("{abandoned} mount(s) ended after their caller went away");
    assert!(abandoned >= 1, "no hang-up was seen as one:\n{}", p.log());
}
