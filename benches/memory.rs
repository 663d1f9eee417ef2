//! Memory of a mounted user-space volume: the RSS of its `rbdvol
//! userspace-serve` process idle after the mount, and after rounds of mixed
//! fio I/O (sequential 1 MiB writes and reads, 4 KiB random writes and
//! reads, through the mounted ext4), to show whether it grows with the
//! traffic seen.
//!
//!   cargo bench --bench memory                 (2 GiB per round, 3 rounds)
//!   IO=1G ROUNDS=10 cargo bench --bench memory (flatness up to 10 GiB)
//!
//! Under `cargo test` it runs one 64 MiB round, to prove it works.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::cluster::TestCluster;
use common::measure::Memory;
use common::plugin::Plugin;

/// Bytes in fio's size syntax (`64M`, `2G`).
fn bytes(size: &str) -> u64 {
    let (n, unit) = size.split_at(size.trim_end_matches(char::is_alphabetic).len());
    let n: u64 = n.parse().expect("a size like 64M or 2G");
    n << match unit {
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => 0,
    }
}

fn fio(dir: &str, name: &str, rw: &str, bs: &str, size: &str) {
    let out = Command::new("fio")
        .args([
            &format!("--name={name}"),
            &format!("--directory={dir}"),
            &format!("--rw={rw}"),
            &format!("--bs={bs}"),
            &format!("--size={size}"),
            "--ioengine=libaio",
            "--iodepth=16",
            "--direct=1",
            "--end_fsync=1",
            "--output-format=terse",
        ])
        .output()
        .expect("run fio (scripts/deps.sh installs it)");
    assert!(out.status.success(), "fio {name}: {}", String::from_utf8_lossy(&out.stderr));
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let io = std::env::var("IO").ok().filter(|_| bench_mode).unwrap_or_else(|| if bench_mode { "2G".into() } else { "64M".into() });
    let rounds: usize = std::env::var("ROUNDS").ok().filter(|_| bench_mode).and_then(|r| r.parse().ok()).unwrap_or(if bench_mode { 3 } else { 1 });
    let tc = TestCluster::start();
    let p = Plugin::start(&tc, "memory-bench");
    // Room for the largest fio file with the filesystem's own overhead.
    let size_mib = (bytes(&io) >> 20) * 5 / 4 + 256;
    assert_eq!(p.create("mem", &[("size", &size_mib.to_string())]).err(), "");
    let m = p.mount("mem", &format!("{:064x}", 1));
    assert_eq!(m.err(), "", "{:?}", m.json);
    let mp = m.json["Mountpoint"].as_str().unwrap().to_string();
    let pid = *p.server_pids().first().expect("a user-space server");
    std::thread::sleep(std::time::Duration::from_secs(2));
    println!("memory of a mounted user-space volume (cargo bench --bench memory; IO={io} per round)");
    println!("  idle after the mount: {}", Memory::of(pid));
    let quarter = format!("{}M", (bytes(&io) / 4) >> 20);
    let mut seen = 0u64;
    for round in 1..=rounds {
        // Half sequential (1 MiB), half random (4 KiB), written then read.
        fio(&mp, "seq", "write", "1M", &quarter);
        fio(&mp, "seq", "read", "1M", &quarter);
        fio(&mp, "rand", "randwrite", "4k", &quarter);
        fio(&mp, "rand", "randread", "4k", &quarter);
        seen += bytes(&io);
        let busy = Memory::of(pid);
        // The server trims its buffers and allocator 2–4 s after I/O stops.
        std::thread::sleep(std::time::Duration::from_secs(5));
        println!("  after round {round} ({} MiB of I/O): {} right after; {} 5 s later", seen >> 20, busy, Memory::of(pid));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    println!("  idle after the I/O: {}", Memory::of(pid));
    assert_eq!(p.unmount("mem", &format!("{:064x}", 1)).err(), "");
}
