//! The admin API of a Shoal node (and the status API of a request router) as types: every
//! request parameter and response body that crosses it, with serde doing the JSON. The node
//! builds these to answer; `shoal ctl` reads them back. Being a crate of its own, with nothing
//! of the node in it, it is what makes "the CLI only talks to the admin API" a rule the
//! compiler keeps: `shoal-ctl` depends on this crate alone.
//!
//! docs/admin-api.md describes the endpoints; the paths are the constants of [`path`].

pub mod cache;
pub mod duration;
pub mod node;
pub mod router;
pub mod signed_url;
pub mod stats;
pub mod upstreams;

/// The header a change (POST) to the admin API must carry, which no cross-site form can send.
pub const CHANGE_HEADER: &str = "x-shoal-admin";

/// The endpoints' paths.
pub mod path {
    /// `GET`: "ok" while the node serves.
    pub const HEALTH: &str = "/health";
    /// `GET`: [`crate::node::Status`] (a router's: [`crate::router::RouterStatus`]).
    pub const STATUS: &str = "/status";
    /// `GET`: [`crate::stats::Stats`].
    pub const STATS: &str = "/stats";
    /// `GET`: the Prometheus text format.
    pub const METRICS: &str = "/metrics";
    /// `GET`: the configuration in force, secrets hidden.
    pub const CONFIG: &str = "/config";
    /// `POST`: [`crate::node::ReloadReport`].
    pub const RELOAD: &str = "/reload";
    /// `GET`: the keys of the fetches in flight (hex).
    pub const FETCHES: &str = "/fetches";
    /// `GET`: [`crate::cache::CachedObject`] for every object in RAM.
    pub const CACHE: &str = "/cache";
    /// `GET ?url=`: [`crate::cache::Inspection`].
    pub const INSPECT: &str = "/cache/inspect";
    /// `GET`: [`crate::upstreams::PoolView`] for every pool.
    pub const UPSTREAMS: &str = "/upstreams";
    /// `POST ?pool=&host=&state=`: [`crate::upstreams::HostStateChange`].
    pub const UPSTREAM_STATE: &str = "/upstreams/state";
    /// `GET ?top=`: [`crate::cache::TopUrl`] rows.
    pub const TOP_URLS: &str = "/top-urls";
    /// `GET ?by=country|asn&top=`: [`crate::cache::ReportRow`] rows.
    pub const REPORT: &str = "/report";
    /// `GET`: [`crate::cache::BanView`] for every ban.
    pub const BANS: &str = "/bans";
    /// `POST ?url=`: [`crate::cache::Purged`].
    pub const PURGE: &str = "/purge";
    /// `POST ?prefix=` or `?regex=`: [`crate::cache::BanAdded`].
    pub const BAN: &str = "/ban";
    /// `POST ?tag=`: [`crate::cache::BanAdded`].
    pub const PURGE_TAG: &str = "/purge-tag";
}
