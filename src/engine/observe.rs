//! What the metrics endpoint reports of the engine, read at scrape time
//! from what the engine already keeps in memory (and the user-space
//! servers' counters files): no volume lock is taken and no cluster call
//! made, so a scrape never waits for, nor delays, a Docker call.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::Engine;
use crate::host::io_stats::IoStats;
use crate::host::mapper::MapperKind;
use crate::host::ImageRef;

/// The engine at one moment.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Volumes in the directory as last read (the health prober reads it
    /// every round); `None` until it was read once.
    pub volumes_known: Option<usize>,
    /// Volumes mounted on this host, by mapper (every mapper listed).
    pub mounted: BTreeMap<&'static str, usize>,
    /// Whether the last probe found the monitors and every pool answering.
    pub cluster_up: bool,
    /// When a probe last did.
    pub cluster_last_success: Option<SystemTime>,
    /// Each volume mounted here through the user-space mapper, with its
    /// server's counters (when they could be read).
    pub userspace: Vec<(String, IoStats)>,
}

impl Engine {
    /// What the engine knows now; blocking only on files (the user-space
    /// servers' counters, `/proc`): run off the async threads.
    pub fn observe(&self) -> Observed {
        let inner = &self.inner;
        let mut mounted: BTreeMap<&'static str, usize> = [MapperKind::Krbd, MapperKind::Nbd, MapperKind::Userspace].iter().map(|k| (k.as_str(), 0)).collect();
        let mut userspace = Vec::new();
        // Copied out under the map's own short lock (never a volume's).
        let volumes: Vec<(String, String, ImageRef)> = inner
            .mounted
            .lock()
            .unwrap()
            .values()
            .map(|v| (v.name.clone(), v.mapper.clone(), ImageRef { pool: v.pool.clone(), namespace: v.namespace.clone(), image: v.image.clone() }))
            .collect();
        for (name, mapper, image) in volumes {
            if let Some(n) = MapperKind::parse(&mapper).and_then(|k| mounted.get_mut(k.as_str())) {
                *n += 1;
            }
            if mapper == MapperKind::Userspace.as_str() {
                if let Some(stats) = inner.mapper.io_stats(&image) {
                    userspace.push((name, stats));
                }
            }
        }
        let (cluster_up, cluster_last_success) = inner.health.up();
        Observed { volumes_known: inner.cache.known_count(), mounted, cluster_up, cluster_last_success, userspace }
    }
}
