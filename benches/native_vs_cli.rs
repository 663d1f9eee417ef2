//! Native librbd through rbdvol's ceph layer against the `rbd` processes the
//! peer plugins run, on the same throwaway cluster in the same run.
//!
//!   cargo bench --bench native_vs_cli
//!
//! prints criterion's figures and then the ratio of the means. Under
//! `cargo test` each benchmark runs once, to prove it works.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::{TestCluster, POOL};
use criterion::Criterion;
use rbdvol::ceph::CreateOptions;

const SIZE_MIB: u64 = 64;

fn rbd(tc: &TestCluster, args: &[&str]) {
    let out = Command::new("rbd").arg("-c").arg(&tc.conf).args(args).output().expect("run rbd");
    assert!(out.status.success(), "rbd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn mean_ns(group: &str, bench: &str) -> Option<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let tc = TestCluster::start();
    let cluster = tc.connect();
    let pool = cluster.open_pool(POOL, "").unwrap();
    let spec = |name: &str| format!("{POOL}/{name}");

    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2))
        .configure_from_args();

    let mut group = c.benchmark_group("create_remove");
    group.bench_function("native", |b| {
        b.iter(|| {
            pool.create_image("bench-native", SIZE_MIB << 20, &CreateOptions::default()).unwrap();
            pool.remove_image("bench-native").unwrap();
        })
    });
    let size = SIZE_MIB.to_string();
    group.bench_function("rbd_cli", |b| {
        b.iter(|| {
            rbd(&tc, &["create", "--size", &size, &spec("bench-cli")]);
            rbd(&tc, &["rm", "--no-progress", &spec("bench-cli")]);
        })
    });
    group.finish();

    pool.create_image("bench-open", SIZE_MIB << 20, &CreateOptions::default()).unwrap();
    let mut group = c.benchmark_group("open_close");
    group.bench_function("native", |b| b.iter(|| drop(pool.open_image("bench-open").unwrap())));
    // `rbd info` is the cheapest whole process that opens and closes an image.
    group.bench_function("rbd_cli", |b| b.iter(|| rbd(&tc, &["info", &spec("bench-open")])));
    group.finish();
    c.final_summary();

    if bench_mode {
        println!("\nratios of means (rbd process / native), same cluster, same run:");
        for group in ["create_remove", "open_close"] {
            if let (Some(native), Some(cli)) = (mean_ns(group, "native"), mean_ns(group, "rbd_cli")) {
                println!(
                    "  {group:<14} native {:>8.2} ms   rbd {:>8.2} ms   {:>6.1}x faster",
                    native / 1e6,
                    cli / 1e6,
                    cli / native
                );
            }
        }
    }
}
