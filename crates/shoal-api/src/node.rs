//! The node as a whole: `GET /status` and `POST /reload`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `GET /status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The node's version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// The plain HTTP listeners' addresses.
    pub listen: Vec<SocketAddr>,
    /// The TLS listeners' addresses.
    pub listen_tls: Vec<SocketAddr>,
    /// Worker threads serving connections.
    pub workers: usize,
    /// The cluster, when the node is in one.
    pub cluster: Option<ClusterStatus>,
    /// Requests since start.
    pub requests: u64,
    /// Origin fetches under way.
    pub fetches_in_flight: usize,
    /// 1 at start, one more per configuration reload.
    pub config_generation: u64,
    /// When the configuration in force was loaded (ms since the Unix epoch).
    pub config_loaded_at: u64,
    /// The last reload asked for, applied or refused.
    pub last_reload: Option<ReloadOutcome>,
    /// Requests and bytes per second since the previous `/status`, connections open: what a
    /// request router reads to spare a node near its capacity.
    pub load: Load,
}

/// The cluster a node is in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node, as the peer list names it.
    pub this_node: String,
    /// Peers in the list, this node included.
    pub peers: usize,
}

/// A node's load, as reported to request routers (`load` in `GET /status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Requests per second.
    #[serde(default)]
    pub requests_per_second: u64,
    /// Body bytes sent per second.
    #[serde(default)]
    pub bytes_per_second: u64,
    /// Client connections open.
    #[serde(default)]
    pub connections: u64,
}

/// What a reload did (`POST /reload`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The generation now in force.
    pub generation: u64,
    /// The sections whose settings changed (and are in force now).
    pub changed: Vec<String>,
    /// Settings that changed in the file but keep their running value until a restart.
    pub needs_restart: Vec<String>,
}

/// The outcome of the last reload, for the status endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// When it was asked for, in milliseconds since the Unix epoch.
    pub at: u64,
    /// What it changed, if it was applied.
    #[serde(flatten)]
    pub report: Option<ReloadReport>,
    /// Why it was refused, if it was.
    pub error: Option<String>,
}
