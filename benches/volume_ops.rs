//! Volume operations end to end: rbdvol's Create (with mkfs), Mount,
//! Unmount and Remove through its socket, against the same sequence done
//! the way the peer plugins do it — shelling out to `rbd`, a mapper, `mkfs`
//! and `mount` — on the same throwaway cluster in the same run.
//!
//!   cargo bench --bench volume_ops            (20 volumes each)
//!   VOLUMES=50 cargo bench --bench volume_ops
//!
//! This kernel has no rbd module, so the peers' `rbd map` is replaced by
//! Ceph's own user-space equivalent, `rbd-fuse` + `losetup`: the same data
//! path rbdvol's user-space mapper uses. Under `cargo test` it runs one
//! volume each, to prove it works.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{TestCluster, POOL};
use common::measure::{ms, percentile, timed, Memory};
use common::plugin::Plugin;
use rbdvol::engine::records;

const SIZE_MIB: u32 = 512;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What a peer plugin does, one process per step.
struct Peer<'a> {
    tc: &'a TestCluster,
    dir: PathBuf,
}

impl Peer<'_> {
    fn conf(&self) -> &str {
        self.tc.conf.to_str().unwrap()
    }

    fn map(&self, image: &str) -> (PathBuf, String) {
        let fuse = self.dir.join(format!("fuse-{image}"));
        std::fs::create_dir_all(&fuse).unwrap();
        run("rbd-fuse", &["-c", self.conf(), "-p", POOL, "-r", image, fuse.to_str().unwrap()]);
        let dev = run("losetup", &["--direct-io=on", "--show", "-f", fuse.join(image).to_str().unwrap()]);
        (fuse, dev)
    }

    fn unmap(&self, fuse: &Path, dev: &str) {
        run("losetup", &["-d", dev]);
        run("fusermount3", &["-u", fuse.to_str().unwrap()]);
    }

    fn create(&self, image: &str) {
        run("rbd", &["-c", self.conf(), "create", "--size", &SIZE_MIB.to_string(), &format!("{POOL}/{image}")]);
        let (fuse, dev) = self.map(image);
        let _ = Command::new("blkid").arg(&dev).output();
        run("mkfs.ext4", &["-q", "-F", &dev]);
        self.unmap(&fuse, &dev);
    }

    fn mount(&self, image: &str) -> (PathBuf, String, PathBuf) {
        let (fuse, dev) = self.map(image);
        let mp = self.dir.join(format!("mnt-{image}"));
        std::fs::create_dir_all(&mp).unwrap();
        run("mount", &[&dev, mp.to_str().unwrap()]);
        (fuse, dev, mp)
    }

    fn unmount(&self, fuse: &Path, dev: &str, mp: &Path) {
        run("umount", &[mp.to_str().unwrap()]);
        self.unmap(fuse, dev);
    }

    fn remove(&self, image: &str) {
        run("rbd", &["-c", self.conf(), "rm", "--no-progress", &format!("{POOL}/{image}")]);
    }
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n: usize = if bench_mode { std::env::var("VOLUMES").ok().and_then(|v| v.parse().ok()).unwrap_or(20) } else { 1 };
    let tc = TestCluster::start();
    let plugin = Plugin::start(&tc, "bench-host");
    let peer_dir = std::env::temp_dir().join(format!("rbdvol-peer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&peer_dir).unwrap();
    let peer = Peer { tc: &tc, dir: peer_dir.clone() };

    let ops = ["create", "mount", "unmount", "remove"];
    let mut ours: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    let mut theirs: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    let mut deleted: Vec<Duration> = Vec::new();
    let pool = tc.connect().open_pool(POOL, "").unwrap();
    let size = format!("{SIZE_MIB}");
    for i in 0..n {
        let name = format!("vol-{i}");
        let id = format!("{i:064x}");
        ours[0].push(timed(|| assert_eq!(plugin.create(&name, &[("size", &size)]).err(), "")));
        ours[1].push(timed(|| assert_eq!(plugin.mount(&name, &id).err(), "")));
        ours[2].push(timed(|| assert_eq!(plugin.unmount(&name, &id).err(), "")));
        let removed = Instant::now();
        ours[3].push(timed(|| assert_eq!(plugin.remove(&name).err(), "")));
        // Remove returns once the image is in the trash (out of `rbd ls`);
        // it is purged in the background. Also measure until it is gone
        // from Ceph, trash included.
        while pool.image_id(&name).is_ok() || pool.trash_list().is_ok_and(|t| t.iter().any(|e| e.name == name)) {
            std::thread::sleep(Duration::from_millis(1));
        }
        deleted.push(removed.elapsed());

        let image = format!("peer-{i}");
        theirs[0].push(timed(|| peer.create(&image)));
        let mut mounted = None;
        theirs[1].push(timed(|| mounted = Some(peer.mount(&image))));
        let (fuse, dev, mp) = mounted.unwrap();
        theirs[2].push(timed(|| peer.unmount(&fuse, &dev, &mp)));
        theirs[3].push(timed(|| peer.remove(&image)));
    }
    let _ = std::fs::remove_dir_all(&peer_dir);

    println!("\n{n} volumes of {SIZE_MIB} MiB, ext4 (ms; peer = rbd CLI + rbd-fuse + losetup + mkfs.ext4 + mount)");
    println!("{:<9} {:>10} {:>10} {:>10} {:>10} {:>8}", "op", "rbdvol p50", "p95", "peer p50", "p95", "ratio");
    let (mut sum_ours, mut sum_theirs) = (0.0, 0.0);
    for (i, op) in ops.iter().enumerate() {
        let (o50, o95, t50, t95) =
            (percentile(&ours[i], 0.5), percentile(&ours[i], 0.95), percentile(&theirs[i], 0.5), percentile(&theirs[i], 0.95));
        sum_ours += ms(o50);
        sum_theirs += ms(t50);
        println!("{op:<9} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>7.1}x", ms(o50), ms(o95), ms(t50), ms(t95), ms(t50) / ms(o50));
    }
    println!("{:<9} {:>10.1} {:>10} {:>10.1} {:>10} {:>7.1}x", "end2end", sum_ours, "", sum_theirs, "", sum_theirs / sum_ours);
    let (d50, d95) = (ms(percentile(&deleted, 0.5)), ms(percentile(&deleted, 0.95)));
    let with_delete = sum_ours - ms(percentile(&ours[3], 0.5)) + d50;
    println!("remove until the image is deleted in ceph: p50 {d50:.1} ms, p95 {d95:.1} ms; end to end counting that: {with_delete:.1} ms = {:.1}x", sum_theirs / with_delete);
    print_steps(&plugin.log());

    scale(&tc, &plugin, if bench_mode { 1000 } else { 10 });
}

/// List latency and the plugin's memory with many volumes. The volumes are
/// made through the Ceph layer (directory entry, image, metadata) rather than
/// by 1,000 mkfs runs: List and Get only read those.
fn scale(tc: &TestCluster, plugin: &Plugin, n: usize) {
    let pool = tc.connect().open_pool(POOL, "").unwrap();
    for i in 0..n {
        let name = format!("many-{i:04}");
        pool.create_image(&name, 64 << 20, &Default::default()).unwrap();
        let image = pool.open_image(&name).unwrap();
        let meta = format!(r#"{{"name":"{name}","fstype":"ext4","uid":null,"gid":null,"mode":null,"created_at":"2026-01-01T00:00:00Z"}}"#);
        image.metadata_set(records::VOLUME_KEY, &meta).unwrap();
        image.metadata_set(records::FORMATTED_KEY, &(64u64 << 20).to_string()).unwrap();
        pool.metadata_set(&records::directory_key(&name), r#"{"pool":"rbd","namespace":"","state":"ready"}"#).unwrap();
    }
    let list = |expect: usize| {
        let a = plugin.call("VolumeDriver.List", "{}");
        assert_eq!(a.err(), "");
        assert!(a.json["Volumes"].as_array().unwrap().len() >= expect);
    };
    // Cold: the directory cache (1 s) has expired before each call.
    let mut cold = Vec::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(1100));
        cold.push(timed(|| list(n)));
    }
    let warm: Vec<Duration> = (0..10).map(|_| timed(|| list(n))).collect();
    let rss_before = Memory::of(plugin.pid()).rss;
    let get_all = timed(|| {
        for i in 0..n {
            assert_eq!(plugin.get(&format!("many-{i:04}")).err(), "");
        }
    });
    let rss = Memory::of(plugin.pid()).rss;
    println!("\n{n} volumes: List p50 {:.1} ms cold (directory read from ceph), {:.2} ms warm; Get of all {n}: {:.0} ms; rbdvol serve RSS {:.1} MiB after List, {:.1} MiB after Get of all",
        ms(percentile(&cold, 0.5)), ms(percentile(&warm, 0.5)), ms(get_all), rss_before, rss);
}

/// Where rbdvol's time went: the median of each step the plugin logs at
/// debug level (`RBDVOL_TEST_LOG=rbdvol=debug cargo bench ...`).
fn print_steps(log: &str) {
    let mut by_op: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<f64>>> = Default::default();
    let mut order: Vec<(String, String)> = Vec::new();
    for line in log.lines() {
        // "... create 'vol-3' took 61.2 ms: directory: creating 1.0, ..."
        let Some((head, steps)) = line.split_once(" ms: ") else { continue };
        let Some(op) = head.split(" took ").next().and_then(|h| h.rsplit(' ').nth(1)) else { continue };
        if !head.contains("'vol-") {
            continue;
        }
        for step in steps.split(", ") {
            if let Some((what, ms)) = step.rsplit_once(' ') {
                if let Ok(ms) = ms.parse::<f64>() {
                    if !order.contains(&(op.to_string(), what.to_string())) {
                        order.push((op.to_string(), what.to_string()));
                    }
                    by_op.entry(op.to_string()).or_default().entry(what.to_string()).or_default().push(ms);
                }
            }
        }
    }
    if by_op.is_empty() {
        return;
    }
    println!("\nrbdvol steps, median ms:");
    for op in ["create", "mount", "unmount", "remove"] {
        let steps: Vec<String> = order
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, what)| {
                let mut v = by_op[op][what].clone();
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                format!("{what} {:.1}", v[v.len() / 2])
            })
            .collect();
        println!("  {op:<8} {}", steps.join(", "));
    }
}
