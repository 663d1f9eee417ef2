//! A latency histogram of atomics: observing is a few relaxed adds, never
//! a lock, so it may sit on any path (a Docker call, a block I/O).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bounds of Docker calls, in seconds: from a Get answered from memory to
/// a Mount that waited for a dead holder's watches (dockerd gives up at
/// 30 s... and a call may outlive its caller).
pub const DOCKER_CALL_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Bounds of block I/O, in seconds: from a cached write to one that waited
/// out the mappers' 30 s I/O bound.
pub const IO_BOUNDS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// What a histogram holds at one moment: the count in each bucket (not
/// cumulative; the exposition sums them), beyond the last bound only in
/// `count`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, in seconds, ascending.
    pub bounds: Vec<f64>,
    /// Observations in each bucket: at most its bound, above the one before.
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// From the raw slots `bucket_index` fills: one per bound and one
    /// beyond the last.
    pub fn from_slots(bounds: &[f64], slots: &[u64], sum_nanos: u64) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: bounds.to_vec(),
            counts: slots[..bounds.len()].to_vec(),
            count: slots.iter().sum(),
            sum_seconds: sum_nanos as f64 / 1e9,
        }
    }
}

/// The slot of an observation of `d`: the first bound it does not exceed,
/// else the one beyond the last.
pub fn bucket_index(bounds: &[f64], d: Duration) -> usize {
    let s = d.as_secs_f64();
    bounds.iter().position(|b| s <= *b).unwrap_or(bounds.len())
}

pub struct Histogram {
    bounds: &'static [f64],
    /// One slot per bound, and one beyond the last.
    slots: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, slots: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_nanos: AtomicU64::new(0) }
    }

    pub fn observe(&self, d: Duration) {
        self.slots[bucket_index(self.bounds, d)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let slots: Vec<u64> = self.slots.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        HistogramSnapshot::from_slots(self.bounds, &slots, self.sum_nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_on_a_bound_counts_in_that_bound_and_beyond_the_last_only_in_the_count() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(10));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(s.counts, vec![1, 1]);
        assert_eq!(s.count, 3);
        assert!((s.sum_seconds - 3.06).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn bounds_ascend() {
        for b in [DOCKER_CALL_BOUNDS, IO_BOUNDS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
