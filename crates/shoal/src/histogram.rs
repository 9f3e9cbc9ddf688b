//! Latency histograms with fixed buckets, updated without locks: one per cache status and per
//! pool, read by the admin API and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

pub use shoal_api::stats::{HistogramSnapshot, LATENCY_BUCKETS_MICROS};

/// A latency histogram with fixed buckets, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (the last one is `+Inf`), not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: std::time::Duration) {
        let micros = elapsed.as_micros() as u64;
        let bucket = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Adds this histogram's counts to `into` (per bucket, not cumulative) and its sum.
    pub fn add_to(&self, into: &mut HistogramSnapshot) {
        for (total, bucket) in into.buckets.iter_mut().zip(&self.buckets) {
            *total += bucket.load(Ordering::Relaxed);
        }
        into.sum_micros += self.sum_micros.load(Ordering::Relaxed);
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut snapshot = HistogramSnapshot::default();
        self.add_to(&mut snapshot);
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_put_observations_in_their_buckets() {
        let histogram = Histogram::default();
        histogram.observe(std::time::Duration::from_micros(100));
        histogram.observe(std::time::Duration::from_micros(101));
        histogram.observe(std::time::Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets[0], 1, "bounds are inclusive");
        assert_eq!(snapshot.buckets[1], 1);
        assert_eq!(snapshot.buckets[LATENCY_BUCKETS_MICROS.len()], 1);
        assert_eq!((snapshot.count(), snapshot.sum_micros), (3, 60_000_201));
    }
}
