//! Counters of the request path, read by the admin API. Relaxed atomics: each counter is
//! exact, and a snapshot across counters is approximately simultaneous, which is all a metric
//! needs.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::CacheStatus;

/// The node's request counters.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Requests received (all protocols).
    pub requests: AtomicU64,
    /// Answered fresh from the cache.
    pub hits: AtomicU64,
    /// Fetched from the origin for the cache.
    pub misses: AtomicU64,
    /// Answered stale from the cache.
    pub stale: AtomicU64,
    /// Answered from the cache after a 304 from the origin.
    pub revalidated: AtomicU64,
    /// Passed to the origin without the cache.
    pub passes: AtomicU64,
    /// Answered by the node itself (errors).
    pub synthetic: AtomicU64,
    /// Requests sent to origins.
    pub origin_requests: AtomicU64,
    /// Origin requests that failed (connect, timeout, protocol, 5xx).
    pub origin_errors: AtomicU64,
    /// Requests rejected as malformed.
    pub client_errors: AtomicU64,
    /// Client connections accepted.
    pub connections: AtomicU64,
    /// Client connections open now.
    pub open_connections: AtomicU64,
    /// Connections refused because `server.max_connections` was reached.
    pub refused_connections: AtomicU64,
    /// Body bytes sent to clients.
    pub bytes_sent: AtomicU64,
}

impl Metrics {
    /// Counts one answered request by its cache status.
    pub fn record(&self, status: CacheStatus) {
        let counter = match status {
            CacheStatus::Hit => &self.hits,
            CacheStatus::Miss => &self.misses,
            CacheStatus::Stale => &self.stale,
            CacheStatus::Revalidated => &self.revalidated,
            CacheStatus::Pass => &self.passes,
            CacheStatus::Synthetic => &self.synthetic,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter with its name, for the admin API.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        vec![
            ("requests", read(&self.requests)),
            ("hits", read(&self.hits)),
            ("misses", read(&self.misses)),
            ("stale", read(&self.stale)),
            ("revalidated", read(&self.revalidated)),
            ("passes", read(&self.passes)),
            ("synthetic", read(&self.synthetic)),
            ("origin_requests", read(&self.origin_requests)),
            ("origin_errors", read(&self.origin_errors)),
            ("client_errors", read(&self.client_errors)),
            ("connections", read(&self.connections)),
            ("open_connections", read(&self.open_connections)),
            ("refused_connections", read(&self.refused_connections)),
            ("bytes_sent", read(&self.bytes_sent)),
        ]
    }
}

/// Adds one to a counter.
pub fn increment(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
