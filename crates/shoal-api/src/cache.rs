//! What the cache holds and what changes it: listing, inspection, purges, bans, the most
//! requested URLs and the traffic report.

use serde::{Deserialize, Serialize};

/// One object in RAM (`GET /cache`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedObject {
    /// Its cache key, in hex.
    pub key: String,
    /// `scheme://host/path?query`.
    pub url: String,
    /// The stored status.
    pub status: u16,
    /// Body bytes held.
    pub bytes: u64,
    /// Body chunks held.
    pub chunks: usize,
    /// Its age, in seconds.
    pub age_seconds: u64,
    /// Seconds until it is stale; negative when it is.
    pub fresh_for_seconds: i64,
    /// "filling", "complete" or "aborted".
    pub state: String,
}

/// `GET /cache/inspect?url=`: what the cache holds for a URL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Inspection {
    /// The URL, as given.
    pub url: String,
    /// Its cache key, in hex.
    pub key: String,
    /// Whether a fetch for it is under way.
    pub fetch_in_flight: bool,
    /// Its stored variants, in RAM and on disk.
    pub variants: Vec<VariantView>,
}

/// One stored variant of a URL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantView {
    /// Where it is: "ram", "disk", or both.
    pub tiers: Vec<String>,
    /// The stored status.
    pub status: u16,
    /// The request values it was stored for, per field named in `Vary` (`None`: absent).
    pub vary: Vec<(String, Option<String>)>,
    /// The stored response header fields.
    pub headers: Vec<(String, String)>,
    /// Its age, in seconds.
    pub age_seconds: u64,
    /// Seconds until it is stale; negative when it is.
    pub fresh_for_seconds: i64,
    /// The body's length.
    pub bytes: u64,
    /// "filling", "complete" or "aborted".
    pub state: String,
    /// For a large object stored in slices: the slice size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_size: Option<u32>,
}

/// `POST /purge?url=`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Purged {
    /// Whether the URL was cached.
    pub purged: bool,
}

/// What a ban matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanMatch {
    /// URLs (`http://host/path?query`) starting with this.
    Prefix(String),
    /// URLs matching this regular expression.
    Regex(String),
    /// Objects with this tag in their tag header.
    Tag(String),
}

/// `POST /ban?prefix=|regex=` and `POST /purge-tag?tag=`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BanAdded {
    /// What it matches.
    pub banned: BanMatch,
    /// When it was added (ms since the Unix epoch): objects stored before it are banned.
    pub created: u64,
}

/// One ban in force (`GET /bans`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BanView {
    /// When it was added (ms since the Unix epoch).
    pub created: u64,
    /// "prefix", "regex" or "tag".
    pub kind: String,
    /// The prefix, expression or tag.
    pub value: String,
}

/// A purge or ban sent to the whole cluster (`&cluster=1`): this node's result and each
/// other peer's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterResult<T> {
    /// This node's result.
    pub this_node: T,
    /// Every other peer's.
    pub peers: Vec<PeerResult<T>>,
    /// How many peers failed.
    pub failed: usize,
}

/// One peer's answer to a cluster-wide purge or ban.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerResult<T> {
    /// The peer's admin API.
    pub admin: String,
    /// Whether it did it.
    pub ok: bool,
    /// Its answer, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One of the most requested URLs (`GET /top-urls`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopUrl {
    /// `http://host/path?query`.
    pub url: String,
    /// Requests (an upper bound: at most `error` more than the true count).
    pub requests: u64,
    /// Body bytes of the responses (declared lengths).
    pub bytes: u64,
    /// How much `requests` may over-count.
    pub error: u64,
}

/// One row of the traffic report (`GET /report`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportRow {
    /// The country code, or the AS number and name.
    pub key: String,
    /// Requests.
    pub requests: u64,
    /// Body bytes sent.
    pub bytes: u64,
}

/// What a `POST /purge`, `/ban` or `/purge-tag` did: the body of its answer, and of each
/// peer's in a [`ClusterResult`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Invalidation {
    /// A purge.
    Purged(Purged),
    /// A ban (or a tag purge, which is a ban by tag).
    Banned(BanAdded),
}
