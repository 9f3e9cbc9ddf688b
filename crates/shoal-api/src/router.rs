//! A request router's status API (`shoal route`, `GET /status`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::node::Load;

/// `GET /status` of a router.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouterStatus {
    /// 1 at start, one more per reload.
    pub generation: u64,
    /// Its nodes.
    pub nodes: Vec<NodeStatus>,
    /// Answers given, by what decided them.
    pub answers: Answers,
    /// Whether answers are failing open (every node of a client's rule is down).
    pub failing_open: bool,
}

/// One node a router hands out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Its configured weight.
    pub weight: u32,
    /// The weight choices use now: lowered as the node nears its capacity.
    pub effective_weight: f64,
    /// Whether its checks pass.
    pub up: bool,
    /// Whether it has been checked yet.
    pub checked: bool,
    /// The latest check's outcome.
    pub last_check: Option<String>,
    /// The load it reported.
    pub load: Option<Load>,
}

/// Answers given, by what decided them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Answers {
    /// An operator prefix.
    pub prefix: u64,
    /// The AS number.
    pub asn: u64,
    /// The country.
    pub country: u64,
    /// The continent.
    pub continent: u64,
    /// The default rule.
    pub default: u64,
}
