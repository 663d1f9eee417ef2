//! Figures for the benchmarks: latency percentiles and process memory as
//! `/proc` reports it.

use std::time::{Duration, Instant};

/// The `p` quantile (0.0–1.0) of `samples`, nearest rank.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `f`, returning how long it took.
pub fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// A field of `/proc/<pid>/<file>` given in KiB, as MiB. A process that is
/// gone is a broken benchmark, not a zero.
pub fn proc_mib(pid: u32, file: &str, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_else(|e| panic!("read /proc/{pid}/{file}: {e}"));
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/{file}"));
    kib / 1024.0
}

/// The pids of `pid`'s children.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // The parent is the 2nd field after the ")" that ends the name.
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// A process's memory: RSS; its anonymous part (heap, stacks, caches: what
/// it alone holds); and PSS (shared library pages divided among the
/// processes that map them, so that PSS adds up to what a group uses).
#[derive(Clone, Copy, Default, Debug)]
pub struct Memory {
    pub rss: f64,
    pub anon: f64,
    pub pss: f64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        Memory {
            rss: proc_mib(pid, "status", "VmRSS:"),
            anon: proc_mib(pid, "status", "RssAnon:"),
            pss: proc_mib(pid, "smaps_rollup", "Pss:"),
        }
    }

    /// The sum over `pids`.
    pub fn total(pids: &[u32]) -> Memory {
        pids.iter().map(|&p| Memory::of(p)).fold(Memory::default(), |a, m| Memory { rss: a.rss + m.rss, anon: a.anon + m.anon, pss: a.pss + m.pss })
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} MiB RSS ({:.1} MiB anonymous, {:.1} MiB PSS)", self.rss, self.anon, self.pss)
    }
}
