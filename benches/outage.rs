//! Docker's calls while the cluster is stopped (every monitor, OSD and
//! manager process SIGSTOPped): p50/p99 of Get, List, Path, Create and
//! Mount over CALLS calls each, 8 at a time; then the time from the
//! cluster's return to the first successful Create. For comparison, the
//! same calls with the cluster up, in the same run.
//!
//!   cargo bench --bench outage            (100 calls each)
//!   CALLS=300 cargo bench --bench outage
//!
//! Under `cargo test` it runs 8 calls each, to prove it works.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::measure::percentile;
use common::plugin::Plugin;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const THREADS: usize = 8;

/// `calls` calls of `body(i)` to `endpoint`, THREADS at a time: their
/// latencies, and how many answered without an Err.
fn measure(p: &Plugin, endpoint: &str, calls: usize, body: &(dyn Fn(usize) -> String + Sync)) -> (Vec<Duration>, usize) {
    let next = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    let samples = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= calls {
                    return;
                }
                let start = Instant::now();
                let a = p.call(endpoint, &body(i));
                samples.lock().unwrap().push(start.elapsed());
                if a.err().is_empty() {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (samples.into_inner().unwrap(), ok.into_inner())
}

fn signal(pids: &[u32], sig: Signal) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let calls: usize = if bench_mode { std::env::var("CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(100) } else { 8 };
    let tc = TestCluster::start();
    let p = Plugin::start(&tc, "outage-bench");
    for n in ["known-a", "known-b", "mounted"] {
        assert_eq!(p.create(n, &[("size", "64")]).err(), "");
    }
    assert_eq!(p.mount("mounted", &format!("{:064x}", 1)).err(), "");
    for n in ["known-a", "known-b", "mounted"] {
        assert_eq!(p.get(n).err(), "");
    }
    type Body = Box<dyn Fn(usize) -> String + Sync>;
    let reads: [(&str, &str, Body); 3] = [
        ("Get", "VolumeDriver.Get", Box::new(|i| format!(r#"{{"Name":"{}"}}"#, ["known-a", "known-b", "mounted"][i % 3]))),
        ("List", "VolumeDriver.List", Box::new(|_| "{}".to_string())),
        ("Path", "VolumeDriver.Path", Box::new(|i| format!(r#"{{"Name":"{}"}}"#, ["known-a", "mounted"][i % 2]))),
    ];
    let mounts = |tag: &'static str| move |i: usize| format!(r#"{{"Name":"known-{}","ID":"{:064x}"}}"#, ["a", "b"][i % 2], i + 100 * tag.len());
    let creates = |tag: &'static str| move |i: usize| format!(r#"{{"Name":"{tag}-{i}","Opts":{{"size":"64"}}}}"#);

    let mut rows = Vec::new();
    let mut row = |what: &str, state: &str, (samples, ok): (Vec<Duration>, usize)| {
        rows.push(format!(
            "{what:<7} {state:<13} p50 {:>8.1} ms   p99 {:>8.1} ms   {ok}/{} answered without Err",
            percentile(&samples, 0.5).as_secs_f64() * 1000.0,
            percentile(&samples, 0.99).as_secs_f64() * 1000.0,
            samples.len()
        ));
    };
    for (what, endpoint, body) in &reads {
        row(what, "cluster up", measure(&p, endpoint, calls, body.as_ref()));
    }

    let pids = tc.daemon_pids();
    signal(&pids, Signal::SIGSTOP);
    // The prober's verdict: a probe is bounded to 3 s, every 2 s.
    std::thread::sleep(Duration::from_secs(6));
    for (what, endpoint, body) in &reads {
        row(what, "cluster down", measure(&p, endpoint, calls, body.as_ref()));
    }
    row("Create", "cluster down", measure(&p, "VolumeDriver.Create", calls, &creates("down")));
    row("Mount", "cluster down", measure(&p, "VolumeDriver.Mount", calls, &mounts("down")));
    signal(&pids, Signal::SIGCONT);
    let back = Instant::now();
    let mut attempts = 0;
    while !p.create("after-return", &[("size", "64")]).err().is_empty() {
        attempts += 1;
        assert!(back.elapsed() < Duration::from_secs(60), "no Create succeeded within 60 s of the cluster's return");
        std::thread::sleep(Duration::from_millis(50));
    }
    let first_create = back.elapsed();
    println!("outage: {calls} calls each, {THREADS} at a time (cargo bench --bench outage)");
    for r in &rows {
        println!("  {r}");
    }
    println!("  first successful Create {:.0} ms after the cluster's return ({attempts} refused before it)", first_create.as_secs_f64() * 1000.0);
    assert_eq!(p.unmount("mounted", &format!("{:064x}", 1)).err(), "");
}
