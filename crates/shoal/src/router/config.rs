//! The router's configuration file (`shoal route --config FILE`; `examples/route.toml` shows
//! every key). Unknown keys are errors; a bad file names the file, line and key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{parse_toml, ConfigError, Span};

/// The whole router configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// The authoritative DNS server.
    pub dns: DnsConfig,
    /// Client location databases.
    pub geoip: GeoipConfig,
    /// The HTTP redirect mode.
    pub http: HttpConfig,
    /// How nodes are checked.
    pub health: HealthConfig,
    /// The router's own status API (and `shoal ctl --admin`).
    pub admin: AdminConfig,
    /// The edge nodes answers are made of.
    pub nodes: Vec<NodeConfig>,
    /// Named sets of nodes that rules send clients to.
    pub groups: Vec<GroupConfig>,
    /// Which groups serve which clients.
    pub rules: Vec<RuleConfig>,
}

/// The DNS side.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Addresses to answer on, UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// The zone this router is authoritative for, such as "cdn.test".
    pub zone: String,
    /// The names in the zone answered with node addresses, such as "dl.cdn.test".
    pub names: Vec<String>,
    /// TTL of the answers: short, so that clients follow changes quickly.
    pub ttl: Span,
    /// Addresses per answer (distinct nodes of the chosen group, at most).
    pub answers: usize,
    /// The zone's name servers (NS records); empty: `ns1.<zone>`.
    pub nameservers: Vec<String>,
    /// The zone's SOA contact, such as "hostmaster.cdn.test"; empty: `hostmaster.<zone>`.
    pub hostmaster: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            zone: String::new(),
            names: Vec::new(),
            ttl: Span(std::time::Duration::from_secs(30)),
            answers: 1,
            nameservers: Vec::new(),
            hostmaster: String::new(),
        }
    }
}

/// MaxMind databases; without them (or when they cannot be read), every client gets the
/// default rule.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoipConfig {
    /// A GeoIP2/GeoLite2 Country (or City) database: country and continent.
    pub country: Option<PathBuf>,
    /// A GeoLite2 ASN database.
    pub asn: Option<PathBuf>,
}

/// The HTTP redirect mode: requests for CDN URLs answered with a redirect to the chosen
/// node, plus the ordered fallbacks.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to answer on; unset: no redirect mode.
    pub listen: Option<SocketAddr>,
    /// Fallback nodes listed after the chosen one (`Link: <...>; rel=duplicate`, RFC 6249).
    pub fallbacks: usize,
    /// Within a group, send the same path to the same node (rendezvous hashing by weight)
    /// instead of a weighted random one: each file is cached on fewer nodes.
    pub hash_paths: bool,
    /// Take the client's address from the last `X-Forwarded-For` element (only behind a
    /// proxy that sets it).
    pub trust_x_forwarded_for: bool,
}

/// Active checks of the nodes that have a `check` URL (the others are assumed up).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between two checks of a node.
    pub interval: Span,
    /// Time a check may take.
    pub timeout: Span,
    /// Passes in a row that bring a node that is down back.
    pub rise: u32,
    /// Failures in a row that take a node that is up down.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Span(std::time::Duration::from_secs(2)),
            timeout: Span(std::time::Duration::from_secs(1)),
            rise: 2,
            fall: 3,
        }
    }
}

/// The status API.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of `GET /status`; unset: none.
    pub listen: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9190))),
        }
    }
}

/// One edge node.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Its name, which groups refer to.
    pub name: String,
    /// The addresses answered for it (A for IPv4, AAAA for IPv6).
    pub addresses: Vec<IpAddr>,
    /// Its share of the answers within a group.
    #[serde(default = "one")]
    pub weight: u32,
    /// The node's base URL for the redirect mode, such as `https://london.cdn.test`;
    /// unset: `http://` and its first address.
    #[serde(default)]
    pub url: Option<String>,
    /// The URL checked (a 2xx answer passes), such as the node's admin `/status`,
    /// `http://10.0.0.1:9090/status`, whose `load` is then read; unset: not checked, assumed up.
    #[serde(default)]
    pub check: Option<String>,
    /// What the node can take; as its reported load nears it (past 80 %), its weight is
    /// lowered so that traffic spills to the group's other nodes before it saturates.
    #[serde(default)]
    pub capacity: CapacityConfig,
}

/// A node's capacity; 0 means no limit of that kind.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    /// Requests per second.
    pub requests_per_second: u64,
    /// Body bytes sent per second.
    pub bytes_per_second: u64,
    /// Client connections open.
    pub connections: u64,
}

fn one() -> u32 {
    1
}

/// A named set of nodes.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Its name, which rules refer to.
    pub name: String,
    /// Its nodes, by name.
    pub nodes: Vec<String>,
}

/// Clients matching any of its criteria go to the first of its groups that has nodes up. When
/// several rules match, the most specific kind wins: prefix, then ASN, then country, then
/// continent, then the default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Operator prefixes (CIDR, such as "216.160.83.56/29" or "2001:db8::/32"), matched
    /// longest first: the networks that peer with a node group.
    pub prefixes: Vec<String>,
    /// AS numbers.
    pub asns: Vec<u32>,
    /// ISO 3166-1 country codes, such as "GB".
    pub countries: Vec<String>,
    /// Continent codes: AF, AN, AS, EU, NA, OC, SA.
    pub continents: Vec<String>,
    /// The rule for everyone else (exactly one rule must be the default).
    pub default: bool,
    /// The groups, in order of preference.
    pub groups: Vec<String>,
}

impl RouterConfig {
    /// Reads and checks `file`.
    pub fn load(file: &Path) -> Result<RouterConfig, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        let config: RouterConfig = parse_toml(&text, file)?;
        config
            .check()
            .map_err(|(key, message)| ConfigError::Invalid {
                file: file.to_owned(),
                line: 0,
                key: key.to_owned(),
                message,
            })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.dns.zone.is_empty() || self.dns.names.is_empty() {
            return Err((
                "dns",
                "expected a zone and the names to answer in it".into(),
            ));
        }
        let zone = self.dns.zone.trim_end_matches('.').to_ascii_lowercase();
        if let Some(name) = self.dns.names.iter().find(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name != zone && !name.ends_with(&format!(".{zone}"))
        }) {
            return Err(("dns.names", format!("{name} is not in the zone {zone}")));
        }
        if self.dns.answers == 0 {
            return Err(("dns.answers", "expected at least 1".into()));
        }
        for group in &self.groups {
            if let Some(node) = group
                .nodes
                .iter()
                .find(|node| !self.nodes.iter().any(|known| &known.name == *node))
            {
                return Err((
                    "groups",
                    format!(
                        "group `{}` names node `{node}`, which is not defined",
                        group.name
                    ),
                ));
            }
        }
        for rule in &self.rules {
            if rule.groups.is_empty() {
                return Err(("rules", "a rule needs at least one group".into()));
            }
            if let Some(group) = rule
                .groups
                .iter()
                .find(|group| !self.groups.iter().any(|known| &known.name == *group))
            {
                return Err(("rules", format!("group `{group}` is not defined")));
            }
            if let Some(prefix) = rule
                .prefixes
                .iter()
                .find(|prefix| prefix.parse::<crate::prefix::IpPrefix>().is_err())
            {
                return Err((
                    "rules.prefixes",
                    format!("`{prefix}`: expected a CIDR prefix such as 192.0.2.0/24"),
                ));
            }
        }
        match self.rules.iter().filter(|rule| rule.default).count() {
            1 => Ok(()),
            count => Err((
                "rules",
                format!("expected exactly one rule with default = true, found {count}"),
            )),
        }
    }
}
