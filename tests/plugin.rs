//! `rbdvol serve` end to end against a real throwaway cluster, spoken to as
//! dockerd speaks. Block I/O goes through the user-space mapper (this
//! machine's kernel has no rbd or nbd module).

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{unique, TestCluster, POOL};
use common::plugin::Plugin;
use rbdvol::engine::records;

fn cluster() -> &'static TestCluster {
    TestCluster::shared()
}

fn plugin() -> Plugin {
    Plugin::start(cluster(), &unique("host"))
}

fn id(n: u32) -> String {
    format!("{n:064x}")
}

/// Images in the test pool, as an independent client sees them.
fn rbd_ls() -> Vec<String> {
    let out = cluster().cli("rbd", &["ls", POOL]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn rbd_info(name: &str) -> Option<serde_json::Value> {
    cluster().rbd_info(name)
}

fn read_from_ceph(name: &str, file: &str) -> String {
    cluster().read_files_from_image(name, &[file]).remove(0)
}

fn ok(a: &common::plugin::Answer) {
    assert_eq!(a.err(), "", "unexpected Err: {:?}", a.json);
}

#[test]
fn speaks_the_protocol_as_dockerd_does() {
    let p = plugin();
    // Activate comes with an empty body and no Content-Type.
    let a = p.call("Plugin.Activate", "");
    assert_eq!(a.status, 200);
    assert_eq!(a.json, serde_json::json!({ "Implements": ["VolumeDriver"] }));
    assert!(a.headers.to_ascii_lowercase().contains("content-type: application/json"));
    assert_eq!(p.call("VolumeDriver.Capabilities", "{}").json, serde_json::json!({ "Capabilities": { "Scope": "global" } }));
    assert_eq!(p.call("VolumeDriver.Capabilities", "").json["Capabilities"]["Scope"], "global");
    let list = p.call("VolumeDriver.List", "{}");
    ok(&list);
    assert!(list.json["Volumes"].is_array());
    // Opts may be null; unknown fields are ignored.
    let name = unique("proto");
    ok(&p.call("VolumeDriver.Create", &format!(r#"{{"Name":"{name}","Opts":null,"Extra":1}}"#)));
    let got = p.get(&name);
    ok(&got);
    assert_eq!(got.json["Volume"]["Name"], name.as_str());
    assert!(got.json["Volume"]["CreatedAt"].as_str().unwrap().ends_with('Z'));
    let path = p.call("VolumeDriver.Path", &format!(r#"{{"Name":"{name}"}}"#));
    assert_eq!(path.json, serde_json::json!({ "Mountpoint": "", "Err": "" }));
    // Errors are JSON objects with Err, never an empty 200.
    let a = p.call("VolumeDriver.Get", "{not json");
    assert!(a.err().contains("invalid request body"), "{:?}", a.json);
    let a = p.get("no-such-volume");
    assert_eq!(a.err(), "volume 'no-such-volume' does not exist");
    let a = p.call("VolumeDriver.Path", r#"{"Name":"no-such-volume"}"#);
    assert_eq!(a.err(), "volume 'no-such-volume' does not exist");
    assert!(p.mount("no-such-volume", &id(9)).err().contains("does not exist"));
    ok(&p.unmount("no-such-volume", &id(9)));
    ok(&p.remove("no-such-volume"));
    let a = p.call("VolumeDriver.Nope", "{}");
    assert_eq!(a.status, 404);
    assert!(!a.err().is_empty());
    ok(&p.remove(&name));
}

#[test]
fn bad_input_gets_an_err_and_creates_nothing() {
    let p = plugin();
    let before = rbd_ls();
    let long = "x".repeat(101);
    for bad in ["", ".", "..", "a/b", "a@b", "a b", "tab\there", "nl\nx", long.as_str()] {
        let a = p.create(bad, &[]);
        assert!(a.err().starts_with("invalid volume name"), "{bad:?}: {:?}", a.json);
    }
    let name = unique("bad");
    let cases: &[(&str, &str, &str)] = &[
        ("size", "lots", "size"),
        ("size", "10X", "unknown unit"),
        ("fstype", "ntfs", "ext4, xfs or btrfs"),
        ("order", "99", "order"),
        ("features", "layering,warp", "features"),
        ("uid", "root", "uid"),
        ("mode", "rwx", "mode"),
        ("pool", "no-such-pool", "pool 'no-such-pool' does not exist"),
        ("data_pool", "no-such-data-pool", "no-such-data-pool"),
        ("namespace", "no-such-ns", "no-such-ns"),
        ("fstype", "xfs", "300 MiB"),
        // The review's reproduction: a populate option copies host files
        // (the state dir, the Consul cache with the key) into the volume.
        ("mkfs_options", "-d /var/lib/rbdvol", "'-d' is not allowed"),
        ("mkfsOptions", "-E root_owner=0:0 /dev/sda", "root_owner"),
        ("mkfs_options", "/etc/passwd", "is not an option"),
        ("mount_options", "loop,offset=0", "'loop' is not allowed"),
        ("mountOptions", "journal_path=/dev/sda", "'journal_path' is not allowed"),
    ];
    for (k, v, want) in cases {
        let opts: Vec<(&str, &str)> = if *k == "fstype" && *v == "xfs" { vec![(k, v), ("size", "64")] } else { vec![(k, v)] };
        let a = p.create(&name, &opts);
        assert!(a.err().contains(want), "{k}={v}: {:?}", a.json);
    }
    let a = p.create(&name, &[("sise", "1G")]);
    assert!(a.err().contains("unknown option 'sise'") && a.err().contains("size, fstype"), "{:?}", a.json);
    let a = p.call("VolumeDriver.Create", &format!(r#"{{"Name":"{name}","Opts":{{"size":[1]}}}}"#));
    assert!(a.err().contains("size"), "{:?}", a.json);
    // Nothing was created, in Ceph or in the directory. (Other tests make
    // and delete images in the same pool meanwhile: only ours count.)
    let made: Vec<String> = rbd_ls().into_iter().filter(|i| !before.contains(i)).collect();
    assert!(!made.contains(&name), "bad input created an image: {made:?}");
    assert!(!made.iter().any(|i| i.starts_with("x") || i.contains(' ') || i.contains('@')), "bad input created an image: {made:?}");
    assert!(p.get(&name).err().contains("does not exist"));
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
}

#[test]
fn create_mount_write_and_read_back_from_ceph() {
    let p = plugin();
    let name = unique("data");
    ok(&p.create(&name, &[("size", "206"), ("mountOptions", "noatime"), ("uid", "1000"), ("gid", "1001"), ("mode", "0750")]));
    let info = rbd_info(&name).expect("image exists");
    assert_eq!(info["size"], 206u64 << 20);
    // Idempotent: a second Create of the same volume is fine.
    ok(&p.create(&name, &[("size", "206")]));

    let m = p.mount(&name, &id(1));
    ok(&m);
    let mp = PathBuf::from(m.json["Mountpoint"].as_str().unwrap());
    assert_eq!(mp, p.mount_root().join(&name));
    let root = std::fs::metadata(&mp).unwrap();
    assert_eq!((root.uid(), root.gid(), root.mode() & 0o7777), (1000, 1001, 0o750));
    {
        let mut f = std::fs::File::create(mp.join("hello.txt")).unwrap();
        f.write_all(b"written through rbdvol\n").unwrap();
        f.sync_all().unwrap();
    }
    let status = p.get(&name).json["Volume"]["Status"].clone();
    assert_eq!(status["mapper"], "userspace");
    assert_eq!(status["mounted_by"], p.host_id.as_str());
    assert_eq!(status["containers"], 1);
    assert!(status["device"].as_str().unwrap().starts_with("/dev/loop"));
    let key = cluster().admin_settings().key.expose().to_string();
    assert!(!status.to_string().contains(&key), "key in status");
    assert_no_key_on_the_host(&p, &key);
    assert_eq!(p.call("VolumeDriver.Path", &format!(r#"{{"Name":"{name}"}}"#)).json["Mountpoint"], mp.to_str().unwrap());
    // Remove while mounted is refused.
    assert!(p.remove(&name).err().contains("mounted on this host"), "remove while mounted");

    ok(&p.unmount(&name, &id(1)));
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    assert_eq!(read_from_ceph(&name, "/hello.txt"), "written through rbdvol\n");

    ok(&p.remove(&name));
    assert!(cluster().image_deleted(&name), "image still in ceph");
    assert!(p.get(&name).err().contains("does not exist"));
    ok(&p.remove(&name));
}

#[test]
fn references_are_per_mount_id() {
    let p = plugin();
    let name = unique("refs");
    ok(&p.create(&name, &[("size", "64")]));
    let mp = PathBuf::from(p.mount(&name, &id(1)).json["Mountpoint"].as_str().unwrap().to_string());
    ok(&p.mount(&name, &id(2)));
    ok(&p.mount(&name, &id(2))); // docker cp: the same ID again
    assert_eq!(p.get(&name).json["Volume"]["Status"]["containers"], 3);
    ok(&p.unmount(&name, &id(1)));
    ok(&p.unmount(&name, &id(2)));
    assert!(is_mounted(&mp), "unmounted while an ID still holds it");
    ok(&p.unmount(&name, &id(7))); // an unknown ID changes nothing
    assert!(is_mounted(&mp));
    ok(&p.unmount(&name, &id(2)));
    assert!(!is_mounted(&mp));
    ok(&p.unmount(&name, &id(2))); // repeated Unmount is fine
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    ok(&p.remove(&name));
}

/// The key is in no log, state file, child command line or environment.
fn assert_no_key_on_the_host(p: &Plugin, key: &str) {
    let mut servers = 0;
    for entry in walk(&p.dir) {
        if entry.is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()).into_owned();
            assert!(!text.contains(key), "the key is in {}", entry.display());
        }
        if entry.file_name().is_some_and(|n| n == "pid") {
            // "pid start-time"
            let record = std::fs::read_to_string(&entry).unwrap();
            let pid = record.split_whitespace().next().unwrap().to_string();
            for f in ["cmdline", "environ"] {
                let text = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/{f}")).unwrap()).into_owned();
                assert!(!text.contains(key), "the key is in the user-space server's {f}");
            }
            servers += 1;
        }
    }
    assert_eq!(servers, 1, "one user-space server expected");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        // Not into FUSE mounts or volume mounts: just the plugin's own files.
        if path.ends_with("fuse") || path.ends_with("mnt") {
            continue;
        }
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

#[test]
fn a_failed_mount_rolls_back_completely() {
    let p = plugin();
    let name = unique("rollback");
    ok(&p.create(&name, &[("size", "64")]));
    // Make the mount fail after mapping: the image now claims to be xfs.
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    let image = pool.open_image(&name).unwrap();
    let meta = image.metadata_get(records::VOLUME_KEY).unwrap().unwrap();
    image.metadata_set(records::VOLUME_KEY, &meta.replace(r#""fstype":"ext4""#, r#""fstype":"xfs""#)).unwrap();
    drop(image);
    let a = p.mount(&name, &id(1));
    assert!(a.err().contains("ext4") && a.err().contains("xfs"), "{:?}", a.json);
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    let image = pool.open_image_read_only(&name).unwrap();
    assert!(image.header().unwrap().host_lockers().unwrap().lockers.is_empty(), "host lock left behind");
    assert!(image.watchers().unwrap().is_empty(), "still mapped somewhere");
    assert_eq!(image.metadata_get(records::MOUNTED_KEY).unwrap(), None);
    // Put it right: the volume mounts.
    pool.open_image(&name).unwrap().metadata_set(records::VOLUME_KEY, &meta).unwrap();
    ok(&p.mount(&name, &id(1)));
    ok(&p.unmount(&name, &id(1)));
    ok(&p.remove(&name));
}

#[test]
fn a_plugin_crash_loses_nothing_and_leaks_nothing() {
    let mut p = plugin();
    let name = unique("restart");
    ok(&p.create(&name, &[("size", "128")]));
    let mp = PathBuf::from(p.mount(&name, &id(1)).json["Mountpoint"].as_str().unwrap().to_string());
    ok(&p.mount(&name, &id(2)));

    // A writer keeps writing and fsyncing while the plugin dies.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU32::new(0));
    let writer = {
        let (stop, written, file) = (stop.clone(), written.clone(), mp.join("log"));
        std::thread::spawn(move || -> Result<(), String> {
            let mut f = std::fs::File::create(&file).map_err(|e| e.to_string())?;
            while !stop.load(Ordering::SeqCst) {
                let n = written.load(Ordering::SeqCst);
                f.write_all(format!("{n:08}\n").as_bytes()).map_err(|e| format!("write {n}: {e}"))?;
                f.sync_data().map_err(|e| format!("fsync {n}: {e}"))?;
                written.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    p.kill9();
    let during = written.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    p.restart();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap().expect("the writer saw an error");
    let total = written.load(Ordering::SeqCst);
    assert!(total > during, "no writes went through while the plugin was down ({during} → {total})");

    // The restarted plugin knows both references.
    let status = p.get(&name).json["Volume"]["Status"].clone();
    assert_eq!(status["containers"], 2, "{status}");
    ok(&p.unmount(&name, &id(1)));
    assert!(is_mounted(&mp));
    ok(&p.unmount(&name, &id(2)));
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    let image = cluster().connect().open_pool(POOL, "").unwrap().open_image_read_only(&name).unwrap();
    assert!(image.header().unwrap().host_lockers().unwrap().lockers.is_empty(), "host lock left behind");
    let log = read_from_ceph(&name, "/log");
    assert_eq!(log.lines().count() as u32, total, "every fsynced line is in ceph");
    ok(&p.remove(&name));
}

#[test]
fn two_machines_given_the_same_host_id_never_both_mount_a_volume() {
    let host = unique("dup");
    let a = Plugin::start(cluster(), &host);
    let b = Plugin::start(cluster(), &host);
    let name = unique("dupvol");
    ok(&a.create(&name, &[("size", "64")]));
    ok(&a.mount(&name, &id(1)));
    let refused = b.mount(&name, &id(2));
    let msg = refused.err();
    assert!(msg.contains(&format!("another machine that also calls itself host '{host}'")) && msg.contains("RBDVOL_HOST_ID"), "{msg}");
    assert!(b.leftovers().is_empty(), "{:?}", b.leftovers());
    // A keeps it through its periodic checks, and lets go normally.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(a.call("VolumeDriver.Path", &format!(r#"{{"Name":"{name}"}}"#)).json["Mountpoint"], a.mount_root().join(&name).to_str().unwrap());
    ok(&a.unmount(&name, &id(1)));
    ok(&b.mount(&name, &id(2)));
    ok(&b.unmount(&name, &id(2)));
    ok(&a.remove(&name));
}

#[test]
fn a_read_only_clone_is_read_by_two_hosts_at_once_and_written_by_neither() {
    let (a, b) = (plugin(), plugin());
    let base = unique("dataset");
    ok(&a.create(&base, &[("size", "64")]));
    ok(&a.mount(&base, &id(1)));
    // Snapshotted while mounted: what was fsynced may be only in the
    // journal, which read-only mounts never replay.
    let mut f = std::fs::File::create(a.mount_root().join(&base).join("data.csv")).unwrap();
    f.write_all(b"1,2,3\n").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let out = admin_cli(&a, &["snapshot", "create", &format!("{base}@v1")]);
    assert!(out.status.success(), "{out:?}");
    ok(&a.unmount(&base, &id(1)));
    let shared = unique("shared");
    let refused = a.create(&shared, &[("from", &format!("{base}@v1")), ("readonly", "true"), ("size", "128")]);
    assert!(refused.err().contains("cannot grow"), "{:?}", refused.json);
    ok(&a.create(&shared, &[("from", &format!("{base}@v1")), ("readonly", "true")]));
    assert!(a.get(&shared).json["Volume"]["Status"]["readonly"].is_string());

    ok(&a.mount(&shared, &id(2)));
    ok(&b.mount(&shared, &id(3)));
    for p in [&a, &b] {
        let mp = p.mount_root().join(&shared);
        assert_eq!(std::fs::read_to_string(mp.join("data.csv")).unwrap(), "1,2,3\n");
        let write = std::fs::write(mp.join("new.txt"), "x");
        assert_eq!(write.as_ref().map_err(|e| e.raw_os_error()), Err(Some(libc::EROFS)), "a read-only volume took a write: {write:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mounts.lines().find(|l| l.contains(mp.to_str().unwrap())).unwrap_or_else(|| panic!("{} not in mountinfo", mp.display()));
        assert!(line.split_whitespace().nth(5).is_some_and(|o| o.split(',').any(|o| o == "ro")), "not mounted ro: {line}");
    }
    // Both hosts hold a share of the lock, as an independent client sees it.
    let header = format!("rbd_header.{}", rbd_info(&shared).unwrap()["id"].as_str().unwrap());
    let out = cluster().cli("rados", &["-p", POOL, "lock", "info", &header, "rbdvol", "--format", "json"]);
    let lock: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!((lock["type"].as_str(), lock["tag"].as_str()), (Some("shared"), Some(records::READ_ONLY_TAG)), "rados lock info: {lock}");
    assert_eq!(lock["lockers"].as_array().map(Vec::len), Some(2), "rados lock info: {lock}");
    let mounted_by = a.get(&shared).json["Volume"]["Status"]["mounted_by"].as_str().unwrap().to_string();
    assert!(mounted_by.contains(&a.host_id) && mounted_by.contains(&b.host_id), "{mounted_by}");

    // Nothing to take over, nothing to grow; a reader's liveness is unknown.
    let said = |out: std::process::Output| format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said(admin_cli(&a, &["takeover", &shared])).contains("is read-only: nothing to take over"));
    assert!(said(admin_cli(&a, &["resize", &shared, "256"])).contains("never grows"));
    assert!(said(admin_cli(&a, &["unlock", &shared])).contains("unlock --force"));
    assert_eq!(rbd_info(&shared).unwrap()["size"].as_u64(), Some(64 << 20), "resized");

    // Nobody removes it (or takes it read-write) under a reader.
    ok(&a.unmount(&shared, &id(2)));
    let r = a.remove(&shared);
    assert!(r.err().contains("mounted read-only on host(s)") && r.err().contains(&b.host_id), "{:?}", r.json);
    ok(&a.get(&shared));
    ok(&b.unmount(&shared, &id(3)));
    ok(&a.remove(&shared));
    let out = admin_cli(&a, &["snapshot", "rm", &format!("{base}@v1")]);
    assert!(out.status.success(), "{out:?}");
    ok(&a.remove(&base));
}

#[test]
fn remove_on_one_host_and_mount_on_another_never_both_succeed() {
    let a = plugin();
    let b = plugin();
    for round in 0..6 {
        let name = unique("race");
        ok(&a.create(&name, &[("size", "16")]));
        ok(&b.get(&name));
        // Both at once; who wins varies with the round.
        let (removed, mounted) = std::thread::scope(|s| {
            let r = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(round * 7));
                a.remove(&name)
            });
            let m = s.spawn(|| b.mount(&name, &id(1)));
            (r.join().unwrap(), m.join().unwrap())
        });
        match (removed.err().is_empty(), mounted.err().is_empty()) {
            (true, false) => {
                assert!(mounted.err().contains("does not exist") || mounted.err().contains("mounted on host"), "{:?}", mounted.json);
                assert!(b.leftovers().is_empty(), "{:?}", b.leftovers());
            }
            (false, true) => {
                assert!(removed.err().contains(&format!("mounted on host '{}'", b.host_id)), "{:?}", removed.json);
                ok(&b.unmount(&name, &id(1)));
                ok(&a.remove(&name));
            }
            (true, true) => panic!("round {round}: removed while mounted on the other host"),
            (false, false) => panic!("round {round}: both refused: {:?} {:?}", removed.json, mounted.json),
        }
        // (B's Get may answer from its 1 s cache: ask the host that removed it.)
        assert!(a.get(&name).err().contains("does not exist"));
    }
}

#[test]
fn the_deletion_of_a_removed_volume_never_deletes_the_one_another_host_made_of_its_name() {
    let a = plugin();
    let b = plugin();
    for round in 0..2 {
        let name = unique("purgerace");
        ok(&a.create(&name, &[("size", "16")]));
        // Something still watches the removed volume's image a moment (a
        // mapper closing): A's deletion waits and retries.
        let pool = cluster().connect().open_pool(POOL, "").unwrap();
        let watcher = pool.open_image(&name).unwrap();
        ok(&a.remove(&name));
        // Meanwhile B makes a volume of the same name.
        let created = std::thread::scope(|s| {
            let c = s.spawn(|| b.create(&name, &[("size", "16")]));
            std::thread::sleep(Duration::from_millis(1000));
            drop(watcher);
            c.join().unwrap()
        });
        // Past A's 10 s of retries: a Create that succeeded still has its
        // volume; one that failed said so and exposes nothing.
        std::thread::sleep(Duration::from_secs(12));
        if created.err().is_empty() {
            assert!(rbd_info(&name).is_some(), "round {round}: A's deletion deleted the image B made");
            ok(&b.get(&name));
            ok(&b.remove(&name));
        } else {
            assert!(b.get(&name).err().contains("does not exist"), "round {round}: a failed Create ({:?}) left a volume", created.json);
        }
    }
}

#[test]
fn one_host_at_a_time() {
    let a = plugin();
    let b = plugin();
    let name = unique("shared");
    ok(&a.create(&name, &[("size", "64")]));
    // Global scope: the other host sees the volume.
    ok(&b.get(&name));
    assert!(b.call("VolumeDriver.List", "{}").json["Volumes"].as_array().unwrap().iter().any(|v| v["Name"] == name.as_str()));

    ok(&a.mount(&name, &id(1)));
    let refused = b.mount(&name, &id(2));
    let msg = refused.err();
    assert!(msg.contains(&format!("mounted on host '{}'", a.host_id)) && msg.contains("since"), "{msg}");
    assert!(b.leftovers().is_empty(), "{:?}", b.leftovers());
    assert!(b.remove(&name).err().contains(&a.host_id), "remove from another host while mounted");
    std::thread::sleep(Duration::from_millis(1100)); // past the status cache
    assert_eq!(b.get(&name).json["Volume"]["Status"]["mounted_by"], a.host_id.as_str());

    ok(&a.unmount(&name, &id(1)));
    ok(&b.mount(&name, &id(2)));
    assert!(a.mount(&name, &id(3)).err().contains(&b.host_id));
    ok(&b.unmount(&name, &id(2)));
    ok(&a.remove(&name));
    assert!(cluster().image_deleted(&name));
}

#[test]
fn a_half_made_volume_is_completed_never_exposed() {
    let p = plugin();
    let name = unique("half");
    // What a crash between image creation and mkfs leaves behind.
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    pool.metadata_set(&records::directory_key(&name), r#"{"pool":"rbd","namespace":"","state":"creating"}"#).unwrap();
    pool.create_image(&name, 64 << 20, &Default::default()).unwrap();
    let marker = format!(r#"{{"name":"{name}","fstype":"ext4","uid":null,"gid":null,"mode":null,"created_at":"2026-01-01T00:00:00Z"}}"#);
    pool.open_image(&name).unwrap().metadata_set(records::VOLUME_KEY, &marker).unwrap();
    assert!(p.get(&name).err().contains("does not exist"), "half-made volume exposed");
    assert!(!p.call("VolumeDriver.List", "{}").json["Volumes"].as_array().unwrap().iter().any(|v| v["Name"] == name.as_str()));
    // The next Create completes it.
    ok(&p.create(&name, &[("size", "64")]));
    ok(&p.get(&name));
    ok(&p.mount(&name, &id(1)));
    ok(&p.unmount(&name, &id(1)));
    ok(&p.remove(&name));

    // A crash before the image existed: Mount says it does not exist,
    // Create makes it.
    let name = unique("half");
    pool.metadata_set(&records::directory_key(&name), r#"{"pool":"rbd","namespace":"","state":"creating"}"#).unwrap();
    assert!(p.get(&name).err().contains("does not exist"));
    ok(&p.create(&name, &[("size", "64")]));
    ok(&p.mount(&name, &id(1)));
    ok(&p.unmount(&name, &id(1)));
    ok(&p.remove(&name));
}

#[test]
fn a_removed_volume_is_deleted_in_the_background_and_its_name_is_free_at_once() {
    let mut p = plugin();
    let name = unique("purge");
    ok(&p.create(&name, &[("size", "64")]));
    ok(&p.mount(&name, &id(1)));
    std::fs::write(p.mount_root().join(&name).join("old.txt"), "old\n").unwrap();
    ok(&p.unmount(&name, &id(1)));
    // Remove, then at once Create again (scripts do): the new volume is a
    // fresh one, never the old image.
    ok(&p.remove(&name));
    assert!(p.get(&name).err().contains("does not exist"), "a removed volume is hidden at once");
    ok(&p.create(&name, &[("size", "64")]));
    ok(&p.mount(&name, &id(2)));
    assert!(!p.mount_root().join(&name).join("old.txt").exists(), "the old image came back");
    ok(&p.unmount(&name, &id(2)));
    ok(&p.remove(&name));
    assert!(cluster().image_deleted(&name));

    // A removal the plugin did not finish (a crash between hiding the
    // volume and deleting its image) is finished at the next start.
    let name = unique("purge");
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    pool.create_image(&name, 16 << 20, &Default::default()).unwrap();
    let key = records::directory_key(&name);
    pool.metadata_set(&key, r#"{"pool":"rbd","namespace":"","state":"removing"}"#).unwrap();
    assert!(p.get(&name).err().contains("does not exist"));
    p.restart();
    assert!(cluster().image_deleted(&name), "the pending deletion was not resumed");
    let start = std::time::Instant::now();
    while pool.metadata_get(&key).unwrap().is_some() {
        assert!(start.elapsed() < Duration::from_secs(15), "directory entry left: {:?}", pool.metadata_get(&key));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn remove_takes_the_image_out_of_rbd_ls_before_it_answers_and_purges_it_from_the_trash() {
    let p = plugin();
    let name = unique("trash");
    ok(&p.create(&name, &[("size", "64")]));
    ok(&p.mount(&name, &id(1)));
    ok(&p.unmount(&name, &id(1)));
    ok(&p.remove(&name));
    assert!(!rbd_ls().contains(&name), "rbd ls still lists {name} after Remove answered");
    assert!(cluster().image_deleted(&name), "the trashed image was not purged");
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    let start = Instant::now();
    while records::parse_trash(pool.metadata_list(records::TRASH_PREFIX).unwrap()).iter().any(|r| r.name == name) {
        assert!(start.elapsed() < Duration::from_secs(15), "the trash record of {name} stays");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cluster().rbdvol(&["trash", "restore", &name], &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no such volume in the trash"), "{out:?}");
}

#[test]
fn a_trashed_image_is_purged_when_its_delay_is_over() {
    let p = Plugin::start_with(cluster(), &unique("host"), None, &["--trash-delay", "3"]);
    let name = unique("delayed");
    ok(&p.create(&name, &[("size", "16")]));
    ok(&p.remove(&name));
    assert!(!rbd_ls().contains(&name));
    assert_eq!(cluster().trash_ids(&name).len(), 1, "purged before its delay");
    let start = Instant::now();
    while !cluster().trash_ids(&name).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "still in the trash 20 s after a 3 s delay");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(start.elapsed() > Duration::from_secs(1), "purged before its delay");
}

#[test]
fn within_the_trash_delay_a_removed_volume_comes_back_with_its_data_and_its_name_is_free_meanwhile() {
    let p = Plugin::start_with(cluster(), &unique("host"), None, &["--trash-delay", "3600"]);
    let name = unique("restore");
    ok(&p.create(&name, &[("size", "64")]));
    let m = p.mount(&name, &id(1));
    ok(&m);
    std::fs::write(p.mount_root().join(&name).join("data.txt"), "kept in the trash\n").unwrap();
    ok(&p.unmount(&name, &id(1)));
    ok(&p.remove(&name));
    assert!(!rbd_ls().contains(&name), "rbd ls still lists {name}");
    assert_eq!(cluster().trash_ids(&name).len(), 1, "not in rbd trash ls");
    let listed = cluster().rbdvol(&["trash", "ls", "--json"], &[]);
    let records: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_else(|e| panic!("{e}: {listed:?}"));
    let mine = records.as_array().unwrap().iter().find(|r| r["name"] == name.as_str()).unwrap_or_else(|| panic!("trash ls: {records}"));
    assert_eq!(mine["purge_after_ms"].as_u64().unwrap() - mine["removed_ms"].as_u64().unwrap(), 3_600_000);

    // The name is free at once: a new, empty volume.
    ok(&p.create(&name, &[("size", "32")]));
    ok(&p.mount(&name, &id(2)));
    assert!(!p.mount_root().join(&name).join("data.txt").exists(), "the trashed image came back");
    ok(&p.unmount(&name, &id(2)));
    let out = cluster().rbdvol(&["trash", "restore", &name], &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exists: remove it first"), "{out:?}");
    ok(&p.remove(&name));
    assert_eq!(cluster().trash_ids(&name).len(), 2);
    let out = cluster().rbdvol(&["trash", "restore", "no-such-volume"], &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no such volume in the trash"), "{out:?}");

    // Restore brings back the latest removal: the empty volume.
    let restore = || {
        let out = cluster().rbdvol(&["trash", "restore", &name], &[]);
        assert!(out.status.success(), "{out:?}");
        ok(&p.get(&name));
        assert!(rbd_ls().contains(&name));
        let m = p.mount(&name, &id(3));
        ok(&m);
        let data = std::fs::read_to_string(p.mount_root().join(&name).join("data.txt")).ok();
        ok(&p.unmount(&name, &id(3)));
        data
    };
    assert_eq!(restore(), None);
    ok(&p.remove(&name));
    // That one purged for good (as if due), the one before it comes back
    // with its data.
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    let newest = records::parse_trash(pool.metadata_list(records::TRASH_PREFIX).unwrap()).into_iter().filter(|r| r.name == name).max_by_key(|r| r.removed_ms).unwrap();
    pool.trash_remove(&newest.id, true).unwrap();
    pool.metadata_remove(&records::trash_key(&newest.id)).unwrap();
    assert_eq!(restore().as_deref(), Some("kept in the trash\n"));
    ok(&p.remove(&name));
}

/// The write IOPS fio measures on a file of volume `name`, mounted as
/// `id`: 4 KiB direct random writes at queue depth 1 for 4 s.
fn fio_write_iops(p: &Plugin, name: &str, id: &str) -> f64 {
    let m = p.mount(name, id);
    ok(&m);
    let file = format!("{}/fio.dat", m.json["Mountpoint"].as_str().unwrap());
    let out = Command::new("fio")
        .args(["--name=qos", &format!("--filename={file}"), "--rw=randwrite", "--bs=4k", "--direct=1", "--size=16M", "--runtime=4", "--time_based", "--ioengine=psync", "--output-format=json"])
        .output()
        .expect("run fio");
    ok(&p.unmount(name, id));
    assert!(out.status.success(), "fio: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fio json");
    report["jobs"][0]["write"]["iops"].as_f64().expect("write iops")
}

#[test]
fn a_qos_limit_caps_a_volumes_io_through_librbd_and_can_be_changed_later() {
    let p = plugin();
    let limited = unique("qos");
    ok(&p.create(&limited, &[("size", "64"), ("qos_iops", "50")]));
    assert_eq!(p.get(&limited).json["Volume"]["Status"]["qos"], "qos_iops=50");
    let meta = |key: &str| {
        let out = cluster().cli("rbd", &["image-meta", "get", &format!("{POOL}/{limited}"), key]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(meta("conf_rbd_qos_iops_limit").as_deref(), Some("50"), "the limit is librbd's own image override");
    let free = unique("noqos");
    ok(&p.create(&free, &[("size", "64")]));
    let (capped, uncapped) = (fio_write_iops(&p, &limited, &id(1)), fio_write_iops(&p, &free, &id(2)));
    println!("4 KiB direct random writes, qd 1: {capped:.0} IOPS with qos_iops=50, {uncapped:.0} without");
    assert!(capped < 75.0, "qos_iops=50 let {capped:.0} IOPS through");
    assert!(uncapped > 2.0 * capped, "without a limit only {uncapped:.0} IOPS (limited: {capped:.0}): the cap is not what slowed it");

    // Bad limits are refused and make nothing.
    let bad = unique("qosbad");
    for (k, v) in [("qos_iops", "fast"), ("qos_bps", "-1"), ("qos_iops", "1k")] {
        let a = p.create(&bad, &[("size", "64"), (k, v)]);
        assert!(a.err().contains(k), "{k}={v}: {:?}", a.json);
    }
    assert!(rbd_info(&bad).is_none());

    // Changed later with the admin CLI; 0 removes a limit.
    let out = cluster().rbdvol(&["qos", &limited, "qos_iops=0", "qos_write_bps=10M", "--json"], &[]);
    assert!(out.status.success(), "{out:?}");
    let now: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(now["qos"], serde_json::json!({ "qos_write_bps": 10485760 }));
    assert_eq!(meta("conf_rbd_qos_iops_limit"), None);
    assert_eq!(meta("conf_rbd_qos_write_bps_limit").as_deref(), Some("10485760"));
    let out = cluster().rbdvol(&["qos", &limited, "qos_iops=lots"], &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).starts_with("error: invalid qos_iops='lots'"), "{out:?}");
    ok(&p.remove(&limited));
    ok(&p.remove(&free));
}

#[test]
fn a_create_resuming_a_crashed_one_never_writes_to_or_deletes_a_foreign_image() {
    let p = plugin();
    let name = unique("foreignhalf");
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    // A Create crashed before it made its image; someone else then made an
    // image of that name and wrote to it.
    pool.metadata_set(&records::directory_key(&name), r#"{"pool":"rbd","namespace":"","state":"creating"}"#).unwrap();
    pool.create_image(&name, 16 << 20, &Default::default()).unwrap();
    pool.open_image(&name).unwrap().write_at(0, b"someone else's data").unwrap();
    let a = p.create(&name, &[("size", "16")]);
    assert!(a.err().contains("not an rbdvol volume"), "{:?}", a.json);
    let mut buf = [0u8; 19];
    pool.open_image_read_only(&name).unwrap().read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"someone else's data", "the foreign image was written to");
    assert!(pool.open_image_read_only(&name).unwrap().metadata_list().unwrap().is_empty(), "rbdvol's metadata written on a foreign image");
    assert!(p.get(&name).err().contains("does not exist"));
    pool.remove_image(&name).unwrap();
    pool.metadata_remove(&records::directory_key(&name)).unwrap();
}

#[test]
fn a_volume_left_creating_mid_copy_is_formatted_anew() {
    let p = plugin();
    let name = unique("halfcopy");
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    // A crash in the middle of copying the scratch filesystem in: the
    // superblock is there (a probe says ext4), the rest is not.
    pool.metadata_set(&records::directory_key(&name), r#"{"pool":"rbd","namespace":"","state":"creating"}"#).unwrap();
    pool.create_image(&name, 64 << 20, &Default::default()).unwrap();
    let marker = format!(r#"{{"name":"{name}","fstype":"ext4","uid":null,"gid":null,"mode":null,"created_at":"2026-01-01T00:00:00Z"}}"#);
    let image = pool.open_image(&name).unwrap();
    image.metadata_set(records::VOLUME_KEY, &marker).unwrap();
    let scratch = std::env::temp_dir().join(format!("{name}.img"));
    std::fs::File::create(&scratch).unwrap().set_len(64 << 20).unwrap();
    assert!(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&scratch).status().unwrap().success());
    let head = std::fs::read(&scratch).unwrap()[..(1 << 20)].to_vec();
    std::fs::remove_file(&scratch).unwrap();
    image.write_at(0, &head).unwrap();
    drop(image);
    ok(&p.create(&name, &[("size", "64")]));
    cluster().assert_filesystem_clean(&name, "ext4");
    ok(&p.mount(&name, &id(1)));
    std::fs::write(p.mount_root().join(&name).join("x"), "x\n").unwrap();
    ok(&p.unmount(&name, &id(1)));
    cluster().assert_filesystem_clean(&name, "ext4");
    ok(&p.remove(&name));
}

#[test]
fn an_image_made_elsewhere_is_adopted_with_its_data_and_removing_the_volume_leaves_it() {
    let p = plugin();
    let (image, name) = (unique("legacy"), unique("adopted"));
    cluster().ext4_image_made_elsewhere(&image, 64, &[("hello.txt", "made by another plugin\n")]);

    ok(&p.create(&name, &[("image", &image), ("mount_options", "noatime")]));
    let got = p.get(&name);
    ok(&got);
    let status = &got.json["Volume"]["Status"];
    assert_eq!(status["image"], format!("{POOL}/{image}").as_str(), "{status}");
    assert!(status["adopted"].as_str().is_some_and(|a| a.contains("leaves the image")), "{status}");
    assert_eq!(status["fstype"], "ext4");
    // Docker repeats a Create: the same volume.
    ok(&p.create(&name, &[("image", &image)]));
    ok(&p.mount(&name, &id(1)));
    let mp = p.mount_root().join(&name);
    assert_eq!(std::fs::read_to_string(mp.join("hello.txt")).unwrap(), "made by another plugin\n");
    std::fs::write(mp.join("written.txt"), "written through rbdvol\n").unwrap();
    // Mounted here: nobody else adopts it, or removes it under the container.
    let other = unique("second");
    let a = p.create(&other, &[("image", &image)]);
    assert!(a.err().contains(&format!("cannot adopt image '{POOL}/{image}': it is already rbdvol volume '{name}'")), "{:?}", a.json);
    assert!(p.remove(&name).err().contains("mounted on this host"));
    ok(&p.unmount(&name, &id(1)));
    let a = p.create(&other, &[("image", &image)]);
    assert!(a.err().contains(&format!("already rbdvol volume '{name}'")), "{:?}", a.json);
    let keys = cluster().image_meta_keys(&image);
    assert!(keys.contains(&records::FORMATTED_KEY.to_string()) && keys.contains(&records::VOLUME_KEY.to_string()), "a refused adoption touched the volume's keys: {keys:?}");
    assert!(p.get(&other).err().contains("does not exist"));
    // Read back by a path that shares nothing with rbdvol.
    assert_eq!(cluster().read_files_from_image(&image, &["written.txt", "hello.txt"]), ["written through rbdvol\n", "made by another plugin\n"]);
    // Snapshots and clones work as on any volume.
    let out = admin_cli(&p, &["snapshot", "create", &format!("{name}@s1")]);
    assert!(out.status.success(), "{out:?}");
    let clone = unique("adoptclone");
    ok(&p.create(&clone, &[("from", &format!("{name}@s1"))]));
    ok(&p.mount(&clone, &id(2)));
    assert_eq!(std::fs::read_to_string(p.mount_root().join(&clone).join("hello.txt")).unwrap(), "made by another plugin\n");
    ok(&p.unmount(&clone, &id(2)));
    ok(&p.remove(&clone));
    let out = admin_cli(&p, &["snapshot", "rm", &format!("{name}@s1")]);
    assert!(out.status.success(), "{out:?}");

    // Remove forgets the volume: the image stays, with its data, without
    // rbdvol's keys, out of the trash.
    ok(&p.remove(&name));
    assert!(p.get(&name).err().contains("does not exist"));
    assert!(rbd_ls().contains(&image), "the adopted image was deleted");
    assert!(cluster().trash_ids(&image).is_empty(), "the adopted image went to the trash");
    assert_eq!(cluster().image_meta_keys(&image), Vec::<String>::new());
    assert_eq!(cluster().read_files_from_image(&image, &["written.txt"]), ["written through rbdvol\n"]);
    assert!(p.log().contains(&format!("volume '{name}' forgotten")), "the plugin's log does not say it forgot the volume");

    // The CLI does the same (a read-only adoption replays the journal
    // once: the plugin's to do).
    let out = admin_cli(&p, &["adopt", &other, &image, "-o", "readonly=true"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("needs the plugin"), "{out:?}");
    assert_eq!(cluster().image_meta_keys(&image), Vec::<String>::new());
    let out = admin_cli(&p, &["adopt", &other, &image, "-o", "mount_options=noatime"]);
    assert!(out.status.success(), "{out:?}");
    ok(&p.get(&other));
    let out = admin_cli(&p, &["forget", &name]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not exist"), "{out:?}");
    let out = admin_cli(&p, &["forget", &other]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("stays in the pool"), "{out:?}");
    // The plugin's answers are cached for a second.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(p.get(&other).err().contains("does not exist"));
    assert!(rbd_ls().contains(&image));
    assert_eq!(cluster().image_meta_keys(&image), Vec::<String>::new());
    // Read-only, through the plugin: shared, never written.
    ok(&p.create(&other, &[("image", &image), ("readonly", "true")]));
    assert!(p.get(&other).json["Volume"]["Status"]["readonly"].is_string());
    ok(&p.mount(&other, &id(3)));
    assert_eq!(std::fs::read_to_string(p.mount_root().join(&other).join("written.txt")).unwrap(), "written through rbdvol\n");
    assert!(std::fs::write(p.mount_root().join(&other).join("x"), "x").is_err());
    ok(&p.unmount(&other, &id(3)));
    ok(&p.remove(&other));
    assert!(rbd_ls().contains(&image));
    // forget never deletes rbdvol's own volumes.
    let own = unique("own");
    ok(&p.create(&own, &[("size", "16")]));
    let out = admin_cli(&p, &["forget", &own]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not adopted"), "{out:?}");
    ok(&p.remove(&own));
    let out = cluster().cli("rbd", &["rm", &format!("{POOL}/{image}")]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn adoption_refuses_what_it_cannot_mount_safely_and_changes_nothing() {
    let p = plugin();
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    let refused = |image: &str, opts: &[(&str, &str)], says: &str| {
        let name = unique("refused");
        let mut all = vec![("image", image)];
        all.extend_from_slice(opts);
        let a = p.create(&name, &all);
        assert!(a.err().contains(says), "{image} {opts:?}: {:?}", a.json);
        assert!(p.get(&name).err().contains("does not exist"), "{image}: a volume was made");
        if rbd_ls().contains(&image.to_string()) {
            assert_eq!(cluster().image_meta_keys(image), Vec::<String>::new(), "{image}: metadata was written");
        }
    };
    refused(&unique("nothere"), &[], "does not exist in pool");
    let blank = unique("blank");
    pool.create_image(&blank, 32 << 20, &Default::default()).unwrap();
    refused(&blank, &[], "add -o format=true");
    refused(&blank, &[("size", "1G")], "adopted as it is");
    // Data, but nothing blkid knows.
    let garbage = unique("garbage");
    pool.create_image(&garbage, 32 << 20, &Default::default()).unwrap();
    pool.open_image(&garbage).unwrap().write_at(8 << 20, &[0x5a; 4096]).unwrap();
    refused(&garbage, &[("format", "true")], "never formats an image that holds data");
    // A partition table.
    let parted = unique("parted");
    let file = std::env::temp_dir().join(format!("{parted}.img"));
    // A DOS (MBR) table with one Linux partition from sector 2048, as fdisk writes it.
    let mut mbr = [0u8; 512];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&(((32u32 << 20) / 512) - 2048).to_le_bytes());
    mbr[510..].copy_from_slice(&[0x55, 0xaa]);
    let f = std::fs::File::create(&file).unwrap();
    f.set_len(32 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &mbr, 0).unwrap();
    let out = cluster().cli("rbd", &["import", "--no-progress", file.to_str().unwrap(), &format!("{POOL}/{parted}")]);
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "{out:?}");
    refused(&parted, &[("format", "true")], "dos partition table");
    // Open by another client (a peer plugin's mapping), or locked.
    let busy = unique("busy");
    cluster().ext4_image_made_elsewhere(&busy, 32, &[("f", "x")]);
    {
        let _open = pool.open_image(&busy).unwrap();
        refused(&busy, &[], "open or mapped by");
    }
    let out = cluster().cli("rbd", &["lock", "add", &format!("{POOL}/{busy}"), "backup-job"]);
    assert!(out.status.success(), "{out:?}");
    refused(&busy, &[], "locked by");
    // Mount options the filesystem found does not take.
    let out = cluster().cli("rbd", &["lock", "rm", &format!("{POOL}/{busy}"), "backup-job", &lock_holder(&busy)]);
    assert!(out.status.success(), "{out:?}");
    refused(&busy, &[("mount_options", "nouuid")], "has a ext4 filesystem");

    // A blank image is formatted when asked, and is then an ordinary volume.
    let name = unique("formatted");
    ok(&p.create(&name, &[("image", &blank), ("format", "true"), ("fstype", "ext4"), ("mode", "0750")]));
    ok(&p.mount(&name, &id(1)));
    let mp = p.mount_root().join(&name);
    assert_eq!(std::fs::metadata(&mp).unwrap().mode() & 0o7777, 0o750);
    std::fs::write(mp.join("new.txt"), "on a formatted blank image\n").unwrap();
    ok(&p.unmount(&name, &id(1)));
    assert_eq!(cluster().read_files_from_image(&blank, &["new.txt"]), ["on a formatted blank image\n"]);
    ok(&p.remove(&name));
    for image in [&blank, &garbage, &parted, &busy] {
        assert!(rbd_ls().contains(image), "{image} is gone");
        pool.remove_image(image).unwrap();
    }
}

#[test]
fn one_image_adopted_by_two_names_at_once_becomes_one_volume_formatted_once() {
    let p = plugin();
    let image = unique("contended");
    cluster().cli("rbd", &["create", "--size", "32", &format!("{POOL}/{image}")]);
    let names = [unique("first"), unique("second")];
    let answers: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = names.iter().map(|n| s.spawn(|| p.create(n, &[("image", &image), ("format", "true")]))).collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let won: Vec<_> = names.iter().zip(&answers).filter(|(_, a)| a.err().is_empty()).map(|(n, _)| n.clone()).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    let lost = answers.iter().find(|a| !a.err().is_empty()).unwrap();
    assert!(lost.err().contains("already rbdvol volume") || lost.err().contains("holds it"), "{:?}", lost.json);
    let winner = &won[0];
    ok(&p.mount(winner, &id(1)));
    std::fs::write(p.mount_root().join(winner).join("f"), "kept").unwrap();
    ok(&p.unmount(winner, &id(1)));
    // The loser's retry, and a repeat of the winner's Create, format nothing.
    let loser = names.iter().find(|n| *n != winner).unwrap();
    assert!(!p.create(loser, &[("image", &image), ("format", "true")]).err().is_empty());
    ok(&p.create(winner, &[("image", &image), ("format", "true")]));
    // An adoption finished but for its directory entry (another host's,
    // or a crash) is finished, never formatted again.
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    pool.metadata_remove(&records::directory_key(winner)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    ok(&p.create(winner, &[("image", &image), ("format", "true")]));
    assert_eq!(cluster().read_files_from_image(&image, &["f"]), ["kept"]);
    ok(&p.remove(winner));
    pool.remove_image(&image).unwrap();
}

#[test]
fn a_stale_entry_never_deletes_the_image_another_volume_adopted() {
    let p = plugin();
    let (stale, adopter) = (unique("web"), unique("x"));
    // A Create of `stale` cut short before its marker: an entry, a blank image.
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    pool.create_image(&stale, 32 << 20, &Default::default()).unwrap();
    let entry = records::DirEntry { pool: POOL.into(), namespace: String::new(), state: records::EntryState::Creating, id: None, trash_delay_s: None, adopted: None };
    pool.metadata_set(&records::directory_key(&stale), &entry.to_json()).unwrap();
    // Another volume adopts that image and writes to it.
    ok(&p.create(&adopter, &[("image", &stale), ("format", "true")]));
    ok(&p.mount(&adopter, &id(1)));
    std::fs::write(p.mount_root().join(&adopter).join("f"), "x's data").unwrap();
    ok(&p.unmount(&adopter, &id(1)));
    ok(&p.remove(&stale));
    std::thread::sleep(Duration::from_secs(2));
    assert!(rbd_ls().contains(&stale), "the image volume '{adopter}' adopted was deleted through a stale entry");
    assert!(cluster().trash_ids(&stale).is_empty(), "it went to the trash");
    assert_eq!(cluster().read_files_from_image(&stale, &["f"]), ["x's data"]);
    ok(&p.remove(&adopter));
    pool.remove_image(&stale).unwrap();
}

/// The holder of the first advisory lock on `image` (`rbd lock ls`).
fn lock_holder(image: &str) -> String {
    let out = cluster().cli("rbd", &["lock", "ls", "--format", "json", &format!("{POOL}/{image}")]);
    let locks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    locks[0]["locker"].as_str().unwrap_or_else(|| panic!("rbd lock ls: {locks}")).to_string()
}

#[test]
fn an_existing_foreign_image_is_not_taken_over() {
    let p = plugin();
    let name = unique("foreign");
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    pool.create_image(&name, 16 << 20, &Default::default()).unwrap();
    let a = p.create(&name, &[]);
    assert!(a.err().contains("not an rbdvol volume"), "{:?}", a.json);
    assert!(p.get(&name).err().contains("does not exist"));
    assert!(rbd_info(&name).is_some(), "the foreign image must survive");
    pool.remove_image(&name).unwrap();
}

#[test]
fn the_filesystem_grows_with_the_image() {
    let p = plugin();
    let name = unique("grow");
    ok(&p.create(&name, &[("size", "64")]));
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    pool.open_image(&name).unwrap().grow(256 << 20, &|_, _| {}).unwrap();
    let m = p.mount(&name, &id(1));
    ok(&m);
    let mp = PathBuf::from(m.json["Mountpoint"].as_str().unwrap().to_string());
    let st = nix::sys::statvfs::statvfs(&mp).unwrap();
    let size = st.blocks() as u64 * st.fragment_size() as u64;
    assert!(size > 200 << 20, "filesystem is {} MiB after growing the image to 256 MiB", size >> 20);
    ok(&p.unmount(&name, &id(1)));
    ok(&p.remove(&name));
}

#[test]
fn xfs_volumes() {
    let p = plugin();
    let name = unique("xfs");
    ok(&p.create(&name, &[("size", "320M"), ("fstype", "xfs")]));
    let mp = PathBuf::from(p.mount(&name, &id(1)).json["Mountpoint"].as_str().unwrap().to_string());
    std::fs::write(mp.join("x"), b"xfs").unwrap();
    let fstype = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
        .and_then(|l| l.split(" - ").nth(1).map(|r| r.split(' ').next().unwrap().to_string()))
        .unwrap();
    assert_eq!(fstype, "xfs");
    assert_eq!(p.get(&name).json["Volume"]["Status"]["fstype"], "xfs");
    ok(&p.unmount(&name, &id(1)));
    ok(&p.remove(&name));
}

#[test]
fn socket_is_private_and_the_plugin_stops_on_sigterm() {
    let mut p = plugin();
    let mode = std::fs::metadata(&p.socket).unwrap().mode();
    assert_eq!(mode & 0o777, 0o660);
    let took = p.stop();
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    assert!(!p.socket.exists(), "socket left behind");
}

#[test]
fn missing_settings_never_stop_the_plugin() {
    let dir = std::env::temp_dir().join(unique("nosettings"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("rbd.sock");
    let mut child = Command::new(common::plugin::bin())
        .args(["serve", "--socket", sock.to_str().unwrap(), "--state-dir"])
        .arg(dir.join("state"))
        .arg("--mount-root")
        .arg(dir.join("mnt"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(start.elapsed() < Duration::from_secs(2), "listening took {:?}", start.elapsed());
    let a = common::plugin::raw_call(&sock, "VolumeDriver.Create", r#"{"Name":"v","Opts":{}}"#);
    assert!(a.err().contains("RBD_CONF_GLOBAL_MON_HOST"), "{:?}", a.json);
    let a = common::plugin::raw_call(&sock, "VolumeDriver.Capabilities", "");
    assert_eq!(a.json["Capabilities"]["Scope"], "global");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn other_calls_answer_while_a_volume_is_being_formatted() {
    let p = Arc::new(plugin());
    let other = unique("bystander");
    ok(&p.create(&other, &[("size", "64")]));
    // A slow mkfs: every inode table written now, not lazily.
    let slow = unique("slow");
    let creating = {
        let (p, slow) = (Arc::clone(&p), slow.clone());
        std::thread::spawn(move || {
            p.create(&slow, &[("size", "4G"), ("mkfs_options", "-N 2000000 -E lazy_itable_init=0,lazy_journal_init=0,nodiscard")])
        })
    };
    // Wait until the create is under way (its intent is in the directory).
    let pool = cluster().connect().open_pool(POOL, "").unwrap();
    let key = records::directory_key(&slow);
    let start = std::time::Instant::now();
    while !pool.metadata_get(&key).unwrap().is_some_and(|v| v.contains("creating")) {
        assert!(start.elapsed() < Duration::from_secs(60), "the create never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    ok(&p.call("VolumeDriver.List", "{}"));
    ok(&p.get(&other));
    ok(&p.call("VolumeDriver.Path", &format!(r#"{{"Name":"{other}"}}"#)));
    assert_eq!(p.call("VolumeDriver.Capabilities", "{}").json["Capabilities"]["Scope"], "global");
    assert!(p.get(&slow).err().contains("does not exist"), "a volume being formatted is not exposed");
    assert!(!creating.is_finished(), "the other calls waited for the create");
    ok(&creating.join().unwrap());
    ok(&p.get(&slow));
    ok(&p.remove(&slow));
    ok(&p.remove(&other));
}

/// Runs the rbdvol CLI with the cluster settings and `p`'s state dir.
fn admin_cli(p: &Plugin, args: &[&str]) -> std::process::Output {
    let s = cluster().admin_settings();
    Command::new(common::plugin::bin())
        .args(args)
        .arg("--state-dir")
        .arg(p.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RBD_CONF_GLOBAL_MON_HOST", &s.mon_host)
        .env("RBD_CONF_KEYRING_USER", "client.admin")
        .env("RBD_CONF_KEYRING_KEY", s.key.expose())
        .output()
        .unwrap()
}

#[test]
fn resize_and_snapshots_from_the_cli() {
    let p = plugin();
    let v = unique("snap");
    let text = |o: &std::process::Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    ok(&p.create(&v, &[("size", "64")]));

    let out = admin_cli(&p, &["resize", &v, "32"]);
    assert!(!out.status.success() && text(&out).contains("cannot shrink"), "{}", text(&out));
    let out = admin_cli(&p, &["resize", &v, "96"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rbd_info(&v).unwrap()["size"], 96u64 << 20);

    let snap = format!("{v}@one");
    let out = admin_cli(&p, &["snapshot", "create", &snap]);
    assert!(out.status.success() && text(&out).contains("created snapshot"), "{}", text(&out));
    assert!(text(&admin_cli(&p, &["snapshot", "create", &snap])).contains("already exists"));
    assert!(text(&admin_cli(&p, &["snapshot", "ls", &v])).contains(&snap));
    let out = cluster().cli("rbd", &["snap", "ls", &format!("{POOL}/{v}")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("one"), "rbd snap ls does not show it");
    assert!(!admin_cli(&p, &["snapshot", "create", &v]).status.success(), "VOL without @SNAP accepted");
    // Remove refuses a volume with snapshots, naming them.
    let err = p.remove(&v).err().to_string();
    assert!(err.contains("has snapshots (one)"), "{err}");
    assert!(text(&admin_cli(&p, &["snapshot", "rm", &snap])).contains("removed snapshot"));

    // The filesystem grows to the new size at the next mount.
    let m = p.mount(&v, &id(1));
    ok(&m);
    let stat = nix::sys::statvfs::statvfs(m.json["Mountpoint"].as_str().unwrap()).unwrap();
    assert!(stat.blocks() * stat.fragment_size() > 80 << 20, "the filesystem did not grow");
    ok(&p.unmount(&v, &id(1)));
    ok(&p.remove(&v));
}

/// `rbdvol resize` on a volume mounted and being written to: the host that
/// has it mounted grows the filesystem online (xfs_growfs; ext4's online
/// resize needs CAP_SYS_RESOURCE, which this sandbox lacks, so ext4 is
/// grown at the next mount here — the test above), and no write is lost.
#[test]
fn a_mounted_volume_grows_online_while_written_to() {
    let p = Plugin::start_with(cluster(), &unique("host"), None, &["--check-interval", "1"]);
    let v = unique("online");
    ok(&p.create(&v, &[("size", "320M"), ("fstype", "xfs")]));
    let m = p.mount(&v, &id(1));
    ok(&m);
    let mp = PathBuf::from(m.json["Mountpoint"].as_str().unwrap());
    let fs_size = || {
        let st = nix::sys::statvfs::statvfs(&mp).unwrap();
        st.blocks() as u64 * st.fragment_size() as u64
    };
    assert!(fs_size() < 330 << 20);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), mp.join("log"));
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(&file).unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                writeln!(f, "{n:0>1000}").unwrap();
                if n % 64 == 0 {
                    f.sync_data().unwrap();
                }
            }
            f.sync_all().unwrap();
            n
        })
    };
    let out = admin_cli(&p, &["resize", &v, "1G"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let start = Instant::now();
    while fs_size() < 900 << 20 {
        assert!(start.elapsed() < Duration::from_secs(30), "not grown online after 30 s:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(p.log().contains("filesystem grown online to 1024 MiB"), "{}", p.log());
    let log = std::fs::read_to_string(mp.join("log")).unwrap();
    assert_eq!(log.lines().count() as u64, written);
    assert!(log.lines().enumerate().all(|(i, l)| l.trim_start_matches('0') == (i + 1).to_string()), "lines lost or torn");
    ok(&p.unmount(&v, &id(1)));
    cluster().assert_filesystem_clean(&v, "xfs");
    ok(&p.remove(&v));
}

#[test]
fn clones_of_snapshots_have_their_contents_and_keep_their_parents() {
    let p = plugin();
    let cli = |args: &[&str]| {
        let out = admin_cli(&p, args);
        assert!(out.status.success(), "rbdvol {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let mounted = |name: &str, n: u32| PathBuf::from(p.mount(name, &id(n)).json["Mountpoint"].as_str().unwrap_or_else(|| panic!("mount {name}")));
    for fstype in ["ext4", "xfs"] {
        let (base, clone) = (unique("base"), unique("clone"));
        ok(&p.create(&base, &[("size", "320M"), ("fstype", fstype)]));
        let mp = mounted(&base, 1);
        std::fs::write(mp.join("a"), "before").unwrap();
        ok(&p.unmount(&base, &id(1)));
        cli(&["snapshot", "create", &format!("{base}@s1")]);
        let mp = mounted(&base, 1);
        std::fs::write(mp.join("a"), "after").unwrap();

        // Bad clones are refused and make nothing.
        let refused = [
            (vec![("from", format!("{base}@nosuch"))], "has no snapshot 'nosuch'"),
            (vec![("from", "nosuch@s1".to_string())], "'nosuch' does not exist"),
            (vec![("from", format!("{base}@s1")), ("fstype", "ext4".to_string())], "leave it out"),
            (vec![("from", format!("{base}@s1")), ("size", "100M".to_string())], "cannot be smaller"),
        ];
        for (opts, why) in refused {
            let bad = unique("bad-clone");
            let opts: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let err = p.create(&bad, &opts).err().to_string();
            assert!(err.contains(why), "{opts:?}: {err}");
            assert!(!rbd_ls().contains(&bad), "{opts:?} left an image");
            assert!(p.get(&bad).err().contains("does not exist"));
        }

        // A clone, larger than its snapshot, mounted beside its parent
        // (xfs: same filesystem UUID, hence nouuid).
        ok(&p.create(&clone, &[("from", &format!("{base}@s1")), ("size", "400M")]));
        assert_eq!(p.get(&clone).json["Volume"]["Status"]["cloned_from"], format!("{base}@s1"));
        assert_eq!(p.get(&clone).json["Volume"]["Status"]["fstype"], fstype);
        let cmp = mounted(&clone, 2);
        assert_eq!(std::fs::read_to_string(cmp.join("a")).unwrap(), "before");
        std::fs::write(cmp.join("b"), "clone only").unwrap();
        let fs_size = |mp: &Path| {
            let st = nix::sys::statvfs::statvfs(mp).unwrap();
            st.blocks() * st.fragment_size()
        };
        // 80 MiB more than its parent's (an xfs log takes 64 MiB of each).
        assert!(fs_size(&cmp) > fs_size(&mp) + (70 << 20), "{fstype} clone not grown: {} MiB vs {} MiB", fs_size(&cmp) >> 20, fs_size(&mp) >> 20);
        assert_eq!(std::fs::read_to_string(mp.join("a")).unwrap(), "after");
        assert!(!mp.join("b").exists());
        ok(&p.unmount(&clone, &id(2)));
        ok(&p.unmount(&base, &id(1)));
        cluster().assert_filesystem_clean(&clone, fstype);

        // The parent cannot go while the clone exists.
        let err = p.remove(&base).err().to_string();
        assert!(err.contains("has clones") && err.contains(&clone), "{err}");
        let out = admin_cli(&p, &["inspect", &base]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["clones"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().ends_with(&clone)), "{v}");
        ok(&p.remove(&clone));
        assert!(cluster().image_deleted(&clone));
        cli(&["snapshot", "rm", &format!("{base}@s1")]);
        ok(&p.remove(&base));
    }
}

#[test]
fn admin_cli_lists_inspects_and_unlocks() {
    let p = plugin();
    let (a, b) = (unique("adm"), unique("adm"));
    ok(&p.create(&a, &[("size", "64")]));
    ok(&p.create(&b, &[("size", "32")]));
    ok(&p.mount(&a, &id(1)));
    let cli = |args: &[&str]| admin_cli(&p, args);

    let out = cli(&["ls", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |n: &str| rows.iter().find(|r| r["name"] == n).cloned().unwrap_or_else(|| panic!("{n} not listed: {rows:?}"));
    let (ra, rb) = (find(&a), find(&b));
    assert_eq!((ra["size"].as_u64(), ra["host"].as_str(), ra["mapped_here"].as_bool()), (Some(64 << 20), Some(p.host_id.as_str()), Some(true)));
    assert!(ra["used"].as_u64().unwrap() > 0, "a formatted volume uses space: {ra}");
    assert_eq!((rb["host"].as_str(), rb["mapped_here"].as_bool(), rb["fstype"].as_str()), (Some(""), Some(false), Some("ext4")));
    let table = String::from_utf8_lossy(&cli(&["ls"]).stdout).into_owned();
    assert!(table.lines().any(|l| l.starts_with(&a) && l.ends_with("here") && l.contains(&p.host_id)), "{table}");

    let out = cli(&["inspect", &a]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["host_lock"][0]["host"], p.host_id.as_str(), "{v}");
    assert!(!v["watchers"].as_array().unwrap().is_empty(), "{v}");
    let out = cli(&["inspect", "no-such-volume"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("volume 'no-such-volume' does not exist"));

    // The holder is alive (its mapping watches the image): unlock refuses.
    let out = cli(&["unlock", &a]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still has it open"), "{}", String::from_utf8_lossy(&out.stderr));
    ok(&p.unmount(&a, &id(1)));

    // A host that died holding b: its lock stays, nothing watches the image.
    {
        let c = cluster().connect();
        let image = c.open_pool(POOL, "").unwrap().open_image_read_only(&b).unwrap();
        image.header().unwrap().host_lock("dead-host", "rbdvol on dead-host").unwrap();
    }
    assert!(p.mount(&b, &id(2)).err().contains("mounted on host 'dead-host'"));
    let out = cli(&["unlock", &b]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("broke host 'dead-host'"));
    ok(&p.mount(&b, &id(2)));
    ok(&p.unmount(&b, &id(2)));
    ok(&p.remove(&a));
    ok(&p.remove(&b));
}
