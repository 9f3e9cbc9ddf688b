//! HTTP caching policy (RFC 9111 and the parts of RFC 9110 a cache answers for): cache keys,
//! storability, freshness and age, variant selection, conditional requests, ranges, and the
//! collapsing of concurrent misses. Pure functions over headers and times, plus the in-flight
//! table; no sockets and no files.

pub mod ban;
pub mod collapse;
pub mod conditional;
pub mod control;
pub mod key;
pub mod policy;
pub mod range;

pub use collapse::{Collapser, FlightGuard, FlightOutcome, Role};
pub use control::CacheControl;
pub use key::{CacheKey, KeyHasher, KeyMap};

/// How a request was answered, for the status header, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the cache, fresh.
    Hit,
    /// Fetched from the origin (and stored if storable).
    Miss,
    /// From the cache, stale (grace, `max-stale`, or the origin failed).
    Stale,
    /// From the cache after the origin confirmed it with 304.
    Revalidated,
    /// Sent to the origin without using the cache.
    Pass,
    /// Answered by the node itself (errors, `only-if-cached` misses).
    Synthetic,
}

impl CacheStatus {
    /// Every status, in declaration order.
    pub const ALL: [CacheStatus; 6] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Stale,
        CacheStatus::Revalidated,
        CacheStatus::Pass,
        CacheStatus::Synthetic,
    ];

    /// The name used in the status header and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Pass => "PASS",
            CacheStatus::Synthetic => "SYNTH",
        }
    }
}
