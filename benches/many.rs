//! Many mounted user-space volumes on one host: each Mount's latency as the
//! count grows (the first 10 against the last 10), the memory of every
//! rbdvol process with all of them mounted and written to, and List/Get
//! latency while they are.
//!
//!   cargo bench --bench many                (100 volumes)
//!   VOLUMES=50 cargo bench --bench many
//!
//! Under `cargo test` it mounts 4, to prove it works.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::time::Duration;

use common::cluster::TestCluster;
use common::measure::{ms, percentile, timed, Memory};
use common::plugin::Plugin;

/// What each container writes: 1 MiB, fsynced.
const WRITTEN: usize = 1 << 20;

fn id(i: usize) -> String {
    format!("{i:064x}")
}

fn line(what: &str, samples: &[Duration]) {
    println!("  {what:<28} p50 {:>7.1} ms   p95 {:>7.1} ms   ({} calls)", ms(percentile(samples, 0.5)), ms(percentile(samples, 0.95)), samples.len());
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n: usize = if bench_mode { std::env::var("VOLUMES").ok().and_then(|v| v.parse().ok()).unwrap_or(100) } else { 4 };
    let tc = TestCluster::start();
    let p = Plugin::start(&tc, "many-bench");
    let names: Vec<String> = (0..n).map(|i| format!("many-{i:03}")).collect();
    for name in &names {
        assert_eq!(p.create(name, &[("size", "64")]).err(), "", "create {name}");
    }

    let mut mounts = Vec::with_capacity(n);
    for (i, name) in names.iter().enumerate() {
        let mut answer = None;
        mounts.push(timed(|| answer = Some(p.mount(name, &id(i)))));
        let answer = answer.unwrap();
        assert_eq!(answer.err(), "", "mount {name} ({} mounted)", i);
        let mp = answer.json["Mountpoint"].as_str().unwrap().to_string();
        let mut f = std::fs::File::create(format!("{mp}/data")).unwrap();
        f.write_all(&vec![b'a' + (i % 26) as u8; WRITTEN]).unwrap();
        f.sync_all().unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    // Every child of the plugin: one server per mounted volume and the
    // spare, connected and waiting for the next Mount.
    let servers = common::measure::children(p.pid());
    assert!(servers.len() > n, "{} processes under rbdvol serve for {n} mounted volumes and a spare", servers.len());
    let daemon = Memory::of(p.pid());
    let all = Memory::total(&servers);
    let per = Memory { rss: all.rss / servers.len() as f64, anon: all.anon / servers.len() as f64, pss: all.pss / servers.len() as f64 };

    let lists: Vec<Duration> = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            timed(|| assert_eq!(p.call("VolumeDriver.List", "{}").err(), ""))
        })
        .collect();
    // Each volume's status read from Ceph, then asked again at once
    // (Docker's repeated calls, answered from the 1 s cache).
    let (mut gets_cold, mut gets_warm) = (Vec::new(), Vec::new());
    for name in &names {
        gets_cold.push(timed(|| assert_eq!(p.get(name).err(), "")));
        gets_warm.push(timed(|| assert_eq!(p.get(name).err(), "")));
    }

    let mut unmounts = Vec::with_capacity(n);
    for (i, name) in names.iter().enumerate() {
        unmounts.push(timed(|| assert_eq!(p.unmount(name, &id(i)).err(), "", "unmount {name}")));
    }
    let text = tc.read_files_from_image(&names[n - 1], &["/data"]).remove(0);
    assert_eq!(text.len(), WRITTEN, "the last volume's data, read from ceph");

    let first = &mounts[..n.min(10)];
    let last = &mounts[n.saturating_sub(10)..];
    println!("{n} user-space volumes mounted on one host (cargo bench --bench many; VOLUMES={n})");
    line("Mount, first 10", first);
    line(&format!("Mount, last 10 (of {n})"), last);
    println!("  last/first p50: {:.2}x", ms(percentile(last, 0.5)) / ms(percentile(first, 0.5)));
    line(&format!("List ({n} mounted)"), &lists);
    line(&format!("Get ({n} mounted), cold"), &gets_cold);
    line(&format!("Get ({n} mounted), cached"), &gets_warm);
    line("Unmount", &unmounts);
    println!("  memory with all {n} mounted, 1 MiB written to each (the servers: one per volume and the spare):");
    println!("    {:<28}{daemon}", "rbdvol serve:");
    println!("    {:<28}{all}", format!("{} user-space servers:", servers.len()));
    println!("    {:<28}{per}", "per server:");
    println!(
        "    {:<28}{:.0} MiB PSS (what they use together), {:.0} MiB anonymous, {:.0} MiB summed RSS (counts each shared library page once per process)",
        "all rbdvol processes:",
        daemon.pss + all.pss,
        daemon.anon + all.anon,
        daemon.rss + all.rss
    );
    for name in &names {
        assert_eq!(p.remove(name).err(), "", "remove {name}");
    }
}
