//! `GET /stats`: counters, the tiers, latency histograms.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in microseconds (and `+Inf` after them).
pub const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// `GET /stats`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    /// When these numbers were read (ms since the Unix epoch): the clock to compute rates by.
    pub time_ms: u64,
    /// Every counter since start, by name.
    pub counters: BTreeMap<String, u64>,
    /// Requests answered from the cache (fresh, stale or after a 304) over the requests that
    /// looked in it (passes left out), since start; null before the first.
    pub hit_ratio: Option<f64>,
    /// The RAM tier.
    pub store: StoreStats,
    /// The disk tier, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskStats>,
    /// Origin fetches under way.
    pub fetches_in_flight: usize,
    /// Client IP addresses with an open connection or a request-rate bucket not yet full.
    pub clients_tracked: usize,
    /// Origin body bytes being filled into objects not yet complete.
    pub inflight_bytes: u64,
    /// The access log's lines written and dropped, when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogStats>,
    /// Latency histograms (per-bucket counts and sums since start), for rates and quantiles
    /// between two reads.
    pub latency: LatencyStats,
}

/// The RAM tier's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// URLs held.
    pub entries: u64,
    /// Bytes held (including replaced entries not yet reclaimed).
    pub bytes: u64,
    /// The byte budget.
    pub capacity: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

/// The disk tier's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiskStats {
    /// Keys on disk.
    pub entries: u64,
    /// Bytes of records on disk.
    pub bytes: u64,
    /// The space of all directories.
    pub capacity: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Writes not made because the queue was full or the directory not in use.
    pub writes_dropped: u64,
    /// Objects dropped to reuse their segment.
    pub evictions: u64,
    /// Objects read back.
    pub hits: u64,
    /// Records that failed their checksum (dropped and fetched again).
    pub corrupt: u64,
    /// Reads abandoned after `disk.read_timeout`.
    pub read_timeouts: u64,
    /// Each directory.
    pub dirs: Vec<DirStats>,
}

/// One cache directory's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirStats {
    /// Its path.
    pub path: String,
    /// In use, rebuilding or failed.
    pub state: VolumeState,
    /// Why it failed.
    pub failure: Option<String>,
    /// Segments in its ring.
    pub segments: usize,
    /// Bytes of records held.
    pub bytes: u64,
    /// How long the index rebuild took at start, in milliseconds.
    pub rebuild_millis: u64,
}

/// Whether a cache directory can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeState {
    /// Reading its segments' summaries after a start; not used until done.
    Rebuilding,
    /// In use.
    Ready,
    /// Disabled after an I/O error; the node goes on without it.
    Failed,
}

/// The access log's lines.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct AccessLogStats {
    /// Lines written.
    pub written: u64,
    /// Lines dropped because the writer was behind.
    pub dropped: u64,
}

/// The latency histograms.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyStats {
    /// The buckets' upper bounds; each histogram has one more bucket, above the last bound.
    pub bounds_micros: Vec<u64>,
    /// Request latency (to the end of the handler: response head ready) by cache status.
    pub requests: BTreeMap<String, HistogramSnapshot>,
    /// Origin first-byte latency, every pool's together.
    pub origin_first_byte: HistogramSnapshot,
}

/// A histogram's counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Observations per bucket, not cumulative (the last is above every bound).
    pub buckets: [u64; LATENCY_BUCKETS_MICROS.len() + 1],
    /// Sum of all observations, in microseconds.
    pub sum_micros: u64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}
