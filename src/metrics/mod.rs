//! Prometheus metrics, at the bottom of the layers beside `config` and
//! `state`: what the daemon counts as things happen (Docker calls,
//! takeovers, fencings, settings put in force, Consul's answers), the text
//! exposition, and the endpoint's address. What is read at scrape time
//! instead (volumes, the cluster's health, the user-space servers' I/O) is
//! the engine's to report and the daemon's to write out.
//!
//! Everything here is atomics: counting never takes a lock or waits, so it
//! can sit on any path.

mod addr;
pub mod histogram;
pub mod text;

use std::sync::atomic::{AtomicI8, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

pub use addr::MetricsAddr;
pub use histogram::{Histogram, HistogramSnapshot};
pub use text::{Exposition, Kind, CONTENT_TYPE};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid RBDVOL_METRICS_ADDR '{value}': {reason}")]
    InvalidAddr { value: String, reason: String },
}

/// The endpoints of Docker's volume-plugin protocol, as labelled; any other
/// path is `other` (a fixed set: a caller cannot add series).
pub const ENDPOINTS: [&str; 10] = [
    "/Plugin.Activate",
    "/VolumeDriver.Capabilities",
    "/VolumeDriver.Create",
    "/VolumeDriver.Remove",
    "/VolumeDriver.Mount",
    "/VolumeDriver.Unmount",
    "/VolumeDriver.Path",
    "/VolumeDriver.Get",
    "/VolumeDriver.List",
    "other",
];

/// The label of a request path.
pub fn endpoint_index(path: &str) -> usize {
    ENDPOINTS.iter().position(|e| *e == path).unwrap_or(ENDPOINTS.len() - 1)
}

struct DockerCalls {
    ok: AtomicU64,
    error: AtomicU64,
    duration: Histogram,
}

/// What the process counts.
pub struct Metrics {
    docker: Vec<DockerCalls>,
    takeovers: AtomicU64,
    fencings: AtomicU64,
    settings_generation: AtomicU64,
    /// -1 without Consul, else 0 or 1: whether its last answer came.
    consul_up: AtomicI8,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics: one set per process, as Prometheus scrapes one
/// process.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            docker: ENDPOINTS
                .iter()
                .map(|_| DockerCalls { ok: AtomicU64::new(0), error: AtomicU64::new(0), duration: Histogram::new(histogram::DOCKER_CALL_BOUNDS) })
                .collect(),
            takeovers: AtomicU64::new(0),
            fencings: AtomicU64::new(0),
            settings_generation: AtomicU64::new(0),
            consul_up: AtomicI8::new(-1),
        }
    }

    /// A Docker call to `path` answered, with an `Err` or not, after `took`.
    pub fn docker_call(&self, path: &str, ok: bool, took: Duration) {
        let calls = &self.docker[endpoint_index(path)];
        if ok { &calls.ok } else { &calls.error }.fetch_add(1, Ordering::Relaxed);
        calls.duration.observe(took);
    }

    /// This host took a volume over from another host.
    pub fn took_over(&self) {
        self.takeovers.fetch_add(1, Ordering::Relaxed);
    }

    /// This host blocklisted `clients` clients of another host.
    pub fn fenced(&self, clients: usize) {
        self.fencings.fetch_add(clients as u64, Ordering::Relaxed);
    }

    /// Settings were put in force (at start, and each change).
    pub fn settings_applied(&self) {
        self.settings_generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Consul answered (or did not) the last time it was asked.
    pub fn consul_answered(&self, up: bool) {
        self.consul_up.store(up as i8, Ordering::Relaxed);
    }

    /// Writes what the process counted.
    pub fn write(&self, e: &mut Exposition) {
        e.family("rbdvol_docker_requests_total", Kind::Counter, "Docker volume-plugin calls answered, by endpoint and outcome (error: the answer carried an Err)");
        for (path, calls) in ENDPOINTS.iter().zip(&self.docker) {
            for (outcome, n) in [("ok", &calls.ok), ("error", &calls.error)] {
                e.sample("rbdvol_docker_requests_total", &[("endpoint", path), ("outcome", outcome)], n.load(Ordering::Relaxed) as f64);
            }
        }
        e.family("rbdvol_docker_request_duration_seconds", Kind::Histogram, "time to answer a Docker volume-plugin call, by endpoint");
        for (path, calls) in ENDPOINTS.iter().zip(&self.docker) {
            e.histogram("rbdvol_docker_request_duration_seconds", &[("endpoint", path)], &calls.duration.snapshot());
        }
        e.family("rbdvol_takeovers_total", Kind::Counter, "volumes this host took over from another host, fencing it first");
        e.sample("rbdvol_takeovers_total", &[], self.takeovers.load(Ordering::Relaxed) as f64);
        e.family("rbdvol_fencings_total", Kind::Counter, "clients of other hosts this host blocklisted in ceph to take their volumes over");
        e.sample("rbdvol_fencings_total", &[], self.fencings.load(Ordering::Relaxed) as f64);
        e.family("rbdvol_settings_generation", Kind::Gauge, "how many times settings were put in force since start (1: the first settings)");
        e.sample("rbdvol_settings_generation", &[], self.settings_generation.load(Ordering::Relaxed) as f64);
        let consul = self.consul_up.load(Ordering::Relaxed);
        if consul >= 0 {
            e.family("rbdvol_consul_up", Kind::Gauge, "whether consul answered the last read of the settings (1) or not (0); absent without consul");
            e.sample("rbdvol_consul_up", &[], consul as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_are_counted_as_other() {
        assert_eq!(ENDPOINTS[endpoint_index("/VolumeDriver.Mount")], "/VolumeDriver.Mount");
        assert_eq!(ENDPOINTS[endpoint_index("/VolumeDriver.Teleport")], "other");
        assert_eq!(ENDPOINTS[endpoint_index("/metrics")], "other");
    }

    #[test]
    fn calls_are_counted_by_endpoint_and_outcome() {
        let m = Metrics::new();
        m.docker_call("/VolumeDriver.Mount", true, Duration::from_millis(20));
        m.docker_call("/VolumeDriver.Mount", false, Duration::from_millis(200));
        m.fenced(2);
        m.settings_applied();
        let mut e = Exposition::default();
        m.write(&mut e);
        let text = e.finish();
        for line in [
            "rbdvol_docker_requests_total{endpoint=\"/VolumeDriver.Mount\",outcome=\"ok\"} 1",
            "rbdvol_docker_requests_total{endpoint=\"/VolumeDriver.Mount\",outcome=\"error\"} 1",
            "rbdvol_docker_request_duration_seconds_bucket{endpoint=\"/VolumeDriver.Mount\",le=\"0.025\"} 1",
            "rbdvol_docker_request_duration_seconds_bucket{endpoint=\"/VolumeDriver.Mount\",le=\"0.1\"} 1",
            "rbdvol_docker_request_duration_seconds_bucket{endpoint=\"/VolumeDriver.Mount\",le=\"0.25\"} 2",
            "rbdvol_docker_request_duration_seconds_bucket{endpoint=\"/VolumeDriver.Mount\",le=\"+Inf\"} 2",
            "rbdvol_docker_request_duration_seconds_count{endpoint=\"/VolumeDriver.Mount\"} 2",
            "rbdvol_fencings_total 2",
            "rbdvol_settings_generation 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
        }
        assert!(!text.contains("rbdvol_consul_up"), "consul_up without consul:\n{text}");
        m.consul_answered(false);
        let mut e = Exposition::default();
        m.write(&mut e);
        assert!(e.finish().lines().any(|l| l == "rbdvol_consul_up 0"));
    }
}
