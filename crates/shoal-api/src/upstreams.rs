//! Pools, their hosts and the states operators set (`GET /upstreams`,
//! `POST /upstreams/state`).

use serde::{Deserialize, Serialize};

/// How a pool picks a host (`policy` of a `[[pools]]` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Each host in turn.
    RoundRobin,
    /// In proportion to the hosts' weights, spread evenly (smooth weighted round-robin).
    Weighted,
    /// The first available host in the configured order.
    Failover,
    /// The same host for the same cache key (weighted rendezvous hashing).
    Hash,
}

/// A state an operator set for a host, overriding what the checks say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Follow the health checks (the default).
    Auto,
    /// Take requests whatever the checks say.
    Up,
    /// Take no requests.
    Down,
    /// Take no new requests; those in flight finish.
    Drain,
}

/// The latest active check of a host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckResult {
    /// When, in milliseconds since the epoch.
    pub at: u64,
    /// Whether it passed.
    pub passed: bool,
    /// What happened (the status, or the error).
    pub detail: String,
}

/// One pool (the cluster's peers are one too).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolView {
    /// Its name.
    pub pool: String,
    /// How it picks a host.
    pub policy: Policy,
    /// Whether it is a parent tier.
    pub parent: bool,
    /// Its hosts.
    pub hosts: Vec<HostView>,
}

/// One host of a pool.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostView {
    /// `host:port`.
    pub host: String,
    /// Its weight.
    pub weight: u32,
    /// What requests see: up, down (set), drain (set), unhealthy (checks) or ejected (failures).
    pub state: String,
    /// The state an operator set.
    pub admin: AdminState,
    /// What the active checks say.
    pub healthy: bool,
    /// How long it stays ejected after failures, in milliseconds.
    pub ejected_for_ms: u64,
    /// Requests to it under way.
    pub in_flight: u32,
    /// The latest active check.
    pub last_check: Option<CheckResult>,
    /// In the cluster's pool: whether this is the node itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub this_node: bool,
}

/// `POST /upstreams/state?pool=&host=&state=`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostStateChange {
    /// The pool.
    pub pool: String,
    /// The host.
    pub host: String,
    /// The state set.
    pub state: AdminState,
    /// The state before.
    pub previous: AdminState,
}
