//! Counters of the request path, read by the admin API. Each worker thread counts in its own
//! cache-line-sized shard, so that counting costs no cross-core traffic on the hot path; a read
//! sums the shards. Each counter is exact; a snapshot across counters is approximately
//! simultaneous, which is all a metric needs.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::CacheStatus;
pub use crate::histogram::{Histogram, HistogramSnapshot, LATENCY_BUCKETS_MICROS};

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Requests received (all protocols).
    Requests,
    /// Answered fresh from the cache.
    Hits,
    /// Fetched from the origin for the cache.
    Misses,
    /// Answered stale from the cache.
    Stale,
    /// Answered from the cache after a 304 from the origin.
    Revalidated,
    /// Passed to the origin without the cache.
    Passes,
    /// Answered by the node itself (errors).
    Synthetic,
    /// Requests sent to origins.
    OriginRequests,
    /// Origin requests that failed (connect, timeout, protocol, 5xx, cut-short bodies); the
    /// four counters after it split them by kind.
    OriginErrors,
    /// No host of the pool accepted a connection.
    OriginConnectErrors,
    /// No response head within the first-byte timeout, or a body that stalled.
    OriginTimeouts,
    /// Invalid HTTP, or a connection or body broken before its end.
    OriginBroken,
    /// 5xx answers from the origin.
    OriginServerErrors,
    /// Requests rejected as malformed.
    ClientErrors,
    /// Client connections accepted.
    Connections,
    /// Client connections open now (a gauge).
    OpenConnections,
    /// Connections refused because `server.max_connections` was reached.
    RefusedConnections,
    /// Body bytes sent to clients over HTTP/1.
    BytesSent,
    /// Misses answered by a fetch already under way instead of making their own.
    Collapsed,
    /// Misses of URLs recently found uncacheable, fetched without collapsing (and stored if
    /// the answer is cacheable now).
    HitForMiss,
    /// Body bytes received from origins (and peers and parents).
    OriginBytes,
    /// TLS handshakes that failed (not in time: `HandshakeTimeouts`).
    TlsHandshakeErrors,
    /// Connections closed because their TLS handshake, or the HTTP/2 preface and first
    /// SETTINGS, did not complete within `server.header_read_timeout`.
    HandshakeTimeouts,
    /// Requests whose head did not arrive within `server.header_read_timeout` (HTTP/1: 408;
    /// HTTP/2: a header block or a frame left unfinished, the connection closed with GOAWAY).
    HeaderTimeouts,
    /// Connections closed after `server.keepalive_timeout` with no request (HTTP/2 with
    /// GOAWAY).
    IdleTimeouts,
    /// Connections dropped because the client took nothing written to it for
    /// `server.send_timeout`.
    SendTimeouts,
    /// Request bodies that stalled for `server.body_read_timeout` (HTTP/2: the stream, or a
    /// connection stalled inside a DATA frame, with GOAWAY).
    BodyTimeouts,
    /// Connections refused because their client IP had `server.max_connections_per_ip` open
    /// (also counted in `RefusedConnections`).
    RefusedPerClient,
    /// Requests answered 429 because their client IP went over `server.rate_limit_per_ip`.
    RateLimited,
    /// Misses not fetched (503, or stale content) because `server.max_inflight_memory` was
    /// reached.
    Shed,
    /// Fills abandoned because every reader left with more than
    /// `cache.finish_without_readers` still to fetch.
    AbandonedFills,
    /// Application answers (`X-Accel-Redirect`, `X-Reproxy-URL`) followed to another object.
    Reproxied,
    /// Reproxy instructions that could not be followed: invalid, or no URL gave the object.
    ReproxyFailures,
    /// Body bytes sent to clients with `sendfile`, straight from a file (also in `BytesSent`).
    SendfileBytes,
}

impl Counter {
    const ALL: [Counter; 34] = [
        Counter::Requests,
        Counter::Hits,
        Counter::Misses,
        Counter::Stale,
        Counter::Revalidated,
        Counter::Passes,
        Counter::Synthetic,
        Counter::OriginRequests,
        Counter::OriginErrors,
        Counter::OriginConnectErrors,
        Counter::OriginTimeouts,
        Counter::OriginBroken,
        Counter::OriginServerErrors,
        Counter::ClientErrors,
        Counter::Connections,
        Counter::OpenConnections,
        Counter::RefusedConnections,
        Counter::BytesSent,
        Counter::Collapsed,
        Counter::HitForMiss,
        Counter::OriginBytes,
        Counter::TlsHandshakeErrors,
        Counter::HandshakeTimeouts,
        Counter::HeaderTimeouts,
        Counter::IdleTimeouts,
        Counter::BodyTimeouts,
        Counter::SendTimeouts,
        Counter::RefusedPerClient,
        Counter::RateLimited,
        Counter::Shed,
        Counter::AbandonedFills,
        Counter::Reproxied,
        Counter::ReproxyFailures,
        Counter::SendfileBytes,
    ];

    /// The name used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Requests => "requests",
            Counter::Hits => "hits",
            Counter::Misses => "misses",
            Counter::Stale => "stale",
            Counter::Revalidated => "revalidated",
            Counter::Passes => "passes",
            Counter::Synthetic => "synthetic",
            Counter::OriginRequests => "origin_requests",
            Counter::OriginErrors => "origin_errors",
            Counter::OriginConnectErrors => "origin_connect_errors",
            Counter::OriginTimeouts => "origin_timeouts",
            Counter::OriginBroken => "origin_broken",
            Counter::OriginServerErrors => "origin_server_errors",
            Counter::ClientErrors => "client_errors",
            Counter::Connections => "connections",
            Counter::OpenConnections => "open_connections",
            Counter::RefusedConnections => "refused_connections",
            Counter::BytesSent => "bytes_sent",
            Counter::Collapsed => "collapsed",
            Counter::HitForMiss => "hit_for_miss",
            Counter::OriginBytes => "origin_bytes",
            Counter::TlsHandshakeErrors => "tls_handshake_errors",
            Counter::HandshakeTimeouts => "handshake_timeouts",
            Counter::HeaderTimeouts => "header_timeouts",
            Counter::IdleTimeouts => "idle_timeouts",
            Counter::BodyTimeouts => "body_timeouts",
            Counter::SendTimeouts => "send_timeouts",
            Counter::RefusedPerClient => "refused_per_client",
            Counter::RateLimited => "rate_limited",
            Counter::Shed => "shed",
            Counter::AbandonedFills => "abandoned_fills",
            Counter::Reproxied => "reproxied",
            Counter::ReproxyFailures => "reproxy_failures",
            Counter::SendfileBytes => "sendfile_bytes",
        }
    }
}

/// One worker's counters, alone on its cache lines.
#[repr(align(128))]
struct Shard([AtomicU64; Counter::ALL.len()]);

/// One worker's latency histograms, one per cache status.
#[repr(align(128))]
struct LatencyShard([Histogram; CacheStatus::ALL.len()]);

/// The node's request counters and latency histograms.
pub struct Metrics {
    shards: Box<[Shard]>,
    latency: Box<[LatencyShard]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

impl Metrics {
    /// Counters for `workers` worker threads.
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            shards: (0..workers.max(1))
                .map(|_| Shard(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            latency: (0..workers.max(1))
                .map(|_| LatencyShard(std::array::from_fn(|_| Histogram::default())))
                .collect(),
        }
    }

    fn shard(&self) -> &Shard {
        &self.shards[super::worker_index() % self.shards.len()]
    }

    /// Counts a failed origin request, in all and by `kind` (one of the `Origin*` counters).
    pub fn origin_error(&self, kind: Counter) {
        self.add(Counter::OriginErrors, 1);
        self.add(kind, 1);
    }

    /// Counts a failed origin request by what `error` says.
    pub fn origin_failure(&self, error: &crate::upstream::UpstreamError) {
        use crate::upstream::UpstreamError;
        self.origin_error(match error {
            UpstreamError::Connect { .. } | UpstreamError::Unavailable { .. } => {
                Counter::OriginConnectErrors
            }
            UpstreamError::Timeout { .. } => Counter::OriginTimeouts,
            UpstreamError::Protocol { .. }
            | UpstreamError::RequestBody(_)
            | UpstreamError::NoTarget { .. } => Counter::OriginBroken,
        });
    }

    /// Adds `amount` to `counter`.
    pub fn add(&self, counter: Counter, amount: u64) {
        self.shard().0[counter as usize].fetch_add(amount, Ordering::Relaxed);
    }

    /// Subtracts one from a gauge.
    pub fn decrement(&self, counter: Counter) {
        self.shard().0[counter as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value of `counter`.
    pub fn get(&self, counter: Counter) -> u64 {
        // Gauges may be raised on one shard and lowered on another: sum with wrapping.
        self.shards.iter().fold(0u64, |sum, shard| {
            sum.wrapping_add(shard.0[counter as usize].load(Ordering::Relaxed))
        })
    }

    /// Records the time to answer a request (until its response head was ready).
    pub fn observe_latency(&self, status: CacheStatus, elapsed: std::time::Duration) {
        let shard = &self.latency[super::worker_index() % self.latency.len()];
        shard.0[status as usize].observe(elapsed);
    }

    /// The request latency histograms by cache status, summed over the workers.
    pub fn latency(&self) -> Vec<(CacheStatus, HistogramSnapshot)> {
        CacheStatus::ALL
            .iter()
            .map(|&status| {
                let mut total = HistogramSnapshot::default();
                for shard in self.latency.iter() {
                    shard.0[status as usize].add_to(&mut total);
                }
                (status, total)
            })
            .collect()
    }

    /// Counts one answered request by its cache status.
    pub fn record(&self, status: CacheStatus) {
        let counter = match status {
            CacheStatus::Hit => Counter::Hits,
            CacheStatus::Miss => Counter::Misses,
            CacheStatus::Stale => Counter::Stale,
            CacheStatus::Revalidated => Counter::Revalidated,
            CacheStatus::Pass => Counter::Passes,
            CacheStatus::Synthetic => Counter::Synthetic,
        };
        self.add(counter, 1);
    }

    /// Every counter with its name, for the admin API.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&counter| (counter.as_str(), self.get(counter)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up() {
        let metrics = Metrics::new(2);
        metrics.add(Counter::Hits, 2);
        metrics.record(CacheStatus::Hit);
        metrics.add(Counter::OpenConnections, 1);
        metrics.decrement(Counter::OpenConnections);
        assert_eq!(metrics.get(Counter::Hits), 3);
        assert_eq!(metrics.get(Counter::OpenConnections), 0);
        assert!(metrics.snapshot().contains(&("hits", 3)));
    }
}
