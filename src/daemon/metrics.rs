//! The metrics endpoint (RBDVOL_METRICS_ADDR): `GET /metrics` over HTTP/1.1
//! on a TCP address or a unix socket, in Prometheus' text format. A scrape
//! writes what the process counted (`crate::metrics`) and what the engine
//! knows now (`Engine::observe`): atomics and in-memory snapshots, read off
//! the async threads, so that it never waits for a volume's lock or the
//! cluster, nor holds up a Docker call.

use std::os::unix::fs::PermissionsExt;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::DaemonError;
use crate::engine::{Engine, Observed};
use crate::host::io_stats::IoStats;
use crate::metrics::{Exposition, Kind, MetricsAddr};

/// A bound metrics listener, not yet served.
pub enum MetricsListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Binds `addr`: a unix socket replaces a stale one and gets the plugin
/// socket's mode (0660).
pub async fn bind_metrics(addr: &MetricsAddr) -> Result<MetricsListener, DaemonError> {
    let failed = |source| DaemonError::MetricsListen { addr: addr.to_string(), source };
    match addr {
        MetricsAddr::Tcp(a) => tokio::net::TcpListener::bind(a).await.map(MetricsListener::Tcp).map_err(failed),
        MetricsAddr::Unix(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| DaemonError::CreateDir { path: dir.to_path_buf(), source })?;
            }
            match std::fs::remove_file(path) {
                Err(source) if source.kind() != std::io::ErrorKind::NotFound => return Err(DaemonError::RemoveStaleSocket { path: path.clone(), source }),
                _ => {}
            }
            let listener = tokio::net::UnixListener::bind(path).map_err(failed)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(failed)?;
            Ok(MetricsListener::Unix(listener))
        }
    }
}

/// Serves `/metrics` on `listener` until the runtime stops.
pub fn serve_metrics(listener: MetricsListener, engine: Engine) {
    let app = Router::new().route("/metrics", get(scrape)).with_state(engine);
    tokio::spawn(async move {
        let served = match listener {
            MetricsListener::Tcp(l) => axum::serve(l, app).await,
            MetricsListener::Unix(l) => axum::serve(l, app).await,
        };
        if let Err(e) = served {
            tracing::error!("the metrics endpoint stopped: {e}");
        }
    });
}

async fn scrape(State(engine): State<Engine>) -> Response {
    // Observing reads files (the user-space servers' counters, /proc).
    let observed = tokio::task::spawn_blocking(move || engine.observe()).await;
    match observed {
        Ok(observed) => ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], render(&observed, SystemTime::now())).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("observing the engine failed: {e}\n")).into_response(),
    }
}

/// A per-volume series' value from its server's counters.
type PerVolume = fn(&IoStats) -> Option<u64>;

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The whole exposition: the process's counters, then the engine's state.
pub fn render(o: &Observed, now: SystemTime) -> String {
    let mut e = Exposition::default();
    crate::metrics::global().write(&mut e);
    if let Some(n) = o.volumes_known {
        e.family("rbdvol_volumes", Kind::Gauge, "volumes in the volume directory as last read (state=known)");
        e.sample("rbdvol_volumes", &[("state", "known")], n as f64);
    }
    e.family("rbdvol_volumes_mounted", Kind::Gauge, "volumes mounted on this host, by mapper");
    for (mapper, n) in &o.mounted {
        e.sample("rbdvol_volumes_mounted", &[("mapper", mapper)], *n as f64);
    }
    e.family("rbdvol_cluster_up", Kind::Gauge, "whether the last health probe found the monitors and every pool answering (1) or not (0)");
    e.sample("rbdvol_cluster_up", &[], if o.cluster_up { 1.0 } else { 0.0 });
    if let Some(t) = o.cluster_last_success {
        e.family("rbdvol_cluster_last_success_timestamp_seconds", Kind::Gauge, "when a health probe last found the cluster answering, in seconds since the epoch");
        e.sample("rbdvol_cluster_last_success_timestamp_seconds", &[], unix_seconds(t));
        e.family("rbdvol_cluster_seconds_since_last_success", Kind::Gauge, "seconds since a health probe last found the cluster answering");
        e.sample("rbdvol_cluster_seconds_since_last_success", &[], now.duration_since(t).map(|d| d.as_secs_f64()).unwrap_or(0.0));
    }
    let per_volume: [(&str, Kind, &str, PerVolume); 6] = [
        ("rbdvol_userspace_read_bytes_total", Kind::Counter, "bytes read from the volume's image by its user-space server", |s| Some(s.read_bytes)),
        ("rbdvol_userspace_written_bytes_total", Kind::Counter, "bytes written to the volume's image by its user-space server", |s| Some(s.written_bytes)),
        ("rbdvol_userspace_reads_total", Kind::Counter, "reads the volume's user-space server completed (failed ones included)", |s| Some(s.reads)),
        ("rbdvol_userspace_writes_total", Kind::Counter, "writes the volume's user-space server completed (failed ones included)", |s| Some(s.writes)),
        ("rbdvol_userspace_flushes_total", Kind::Counter, "flushes the volume's user-space server completed (an fsync, or a close, of its device's file)", |s| Some(s.flushes)),
        ("rbdvol_userspace_server_resident_bytes", Kind::Gauge, "resident memory of the volume's user-space server process (VmRSS)", |s| s.resident_bytes),
    ];
    for (name, kind, help, value) in per_volume {
        e.family(name, kind, help);
        for (volume, stats) in &o.userspace {
            if let Some(v) = value(stats) {
                e.sample(name, &[("volume", volume)], v as f64);
            }
        }
    }
    e.family("rbdvol_userspace_io_duration_seconds", Kind::Histogram, "time from submitting a read, write or flush to librbd to its completion, per volume on the user-space mapper");
    for (volume, stats) in &o.userspace {
        e.histogram("rbdvol_userspace_io_duration_seconds", &[("volume", volume)], &stats.io);
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::HistogramSnapshot;

    #[test]
    fn the_engine_state_is_written_with_units_and_labels() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let stats = IoStats {
            read_bytes: 10,
            written_bytes: 4096,
            reads: 1,
            writes: 2,
            flushes: 3,
            io: HistogramSnapshot { bounds: vec![0.001], counts: vec![5], count: 6, sum_seconds: 2.5 },
            resident_bytes: Some(1 << 20),
        };
        let o = Observed {
            volumes_known: Some(4),
            mounted: [("krbd", 0), ("nbd", 0), ("userspace", 1)].into_iter().collect(),
            cluster_up: true,
            cluster_last_success: Some(now - Duration::from_secs(2)),
            userspace: vec![("v\"1".into(), stats)],
        };
        let text = render(&o, now);
        for line in [
            "rbdvol_volumes{state=\"known\"} 4",
            "rbdvol_volumes_mounted{mapper=\"userspace\"} 1",
            "rbdvol_volumes_mounted{mapper=\"krbd\"} 0",
            "rbdvol_cluster_up 1",
            "rbdvol_cluster_last_success_timestamp_seconds 999998",
            "rbdvol_cluster_seconds_since_last_success 2",
            "rbdvol_userspace_written_bytes_total{volume=\"v\\\"1\"} 4096",
            "rbdvol_userspace_flushes_total{volume=\"v\\\"1\"} 3",
            "rbdvol_userspace_server_resident_bytes{volume=\"v\\\"1\"} 1048576",
            "rbdvol_userspace_io_duration_seconds_bucket{volume=\"v\\\"1\",le=\"+Inf\"} 6",
            "# TYPE rbdvol_userspace_io_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
        }
    }

    #[test]
    fn nothing_known_yet_leaves_those_series_out() {
        let o = Observed { volumes_known: None, mounted: Default::default(), cluster_up: false, cluster_last_success: None, userspace: vec![] };
        let text = render(&o, SystemTime::now());
        assert!(text.lines().any(|l| l == "rbdvol_cluster_up 0"));
        assert!(!text.contains("rbdvol_volumes{"), "{text}");
        assert!(!text.contains("last_success_timestamp_seconds "), "{text}");
    }
}
