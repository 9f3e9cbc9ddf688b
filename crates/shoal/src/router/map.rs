//! The routing map: which nodes a client gets. A client address is matched against the
//! operator's prefixes (longest first), then its AS number, country and continent from the
//! MaxMind databases, then the default; the first rule found names groups in order of
//! preference, and the first group with a node up gives the answer: a weighted random choice of
//! distinct nodes. Built whole from a configuration, then only read (a reload builds a new one).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use super::config::RouterConfig;
use crate::geo::{Code2, Geo};
use crate::prefix::IpPrefix;

/// One edge node.
#[derive(Debug)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// The addresses answered for it.
    pub addresses: Vec<IpAddr>,
    /// Its share of the answers within a group.
    pub weight: u32,
    /// The URL its health is checked at, if any (else it is assumed up).
    pub check: Option<String>,
    /// Its base URL for redirects.
    pub url: String,
    /// Whether it is handed out.
    up: AtomicBool,
    /// Checks in a row with the same outcome, and that outcome.
    streak: AtomicU32,
    streak_passed: AtomicBool,
    /// The last check's outcome, for the status.
    last_check: Mutex<Option<String>>,
    /// What it can take.
    capacity: super::config::CapacityConfig,
    /// The share of its weight it gets now, in thousandths: 1000 until its reported load
    /// passes 80 % of its capacity, then less, down to 10 at full capacity.
    headroom: AtomicU32,
    /// The load it last reported.
    load: Mutex<Option<super::Load>>,
}

impl Node {
    /// Whether it is up (handed out).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The last check's outcome, if it was checked.
    pub fn last_check(&self) -> Option<String> {
        self.last_check
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The weight the choices use now, in thousandths: its weight scaled by its headroom.
    pub fn effective_weight(&self) -> u64 {
        (u64::from(self.weight.max(1)) * u64::from(self.headroom.load(Ordering::Relaxed))).max(1)
    }

    /// The load it last reported, if any.
    pub fn load(&self) -> Option<super::Load> {
        *self
            .load
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the load a node reports and lowers its share as the load nears its capacity.
    pub fn record_load(&self, load: super::Load) {
        let use_of = |used: u64, capacity: u64| match capacity {
            0 => 0.0,
            capacity => used as f64 / capacity as f64,
        };
        let used = use_of(load.requests_per_second, self.capacity.requests_per_second)
            .max(use_of(
                load.bytes_per_second,
                self.capacity.bytes_per_second,
            ))
            .max(use_of(load.connections, self.capacity.connections));
        // Full weight up to 80 %, then down in a line to 1 % at 100 % and beyond.
        let share = match used {
            used if used <= 0.8 => 1.0,
            used if used >= 1.0 => 0.01,
            used => (1.0 - used) / 0.2,
        };
        self.headroom
            .store((share * 1000.0).round().max(10.0) as u32, Ordering::Relaxed);
        *self
            .load
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(load);
    }

    /// Records a check; returns whether the node went up or down with it.
    pub fn record_check(&self, passed: bool, detail: String, rise: u32, fall: u32) -> bool {
        let streak = match self.streak_passed.swap(passed, Ordering::Relaxed) == passed {
            true => self.streak.fetch_add(1, Ordering::Relaxed) + 1,
            false => {
                self.streak.store(1, Ordering::Relaxed);
                1
            }
        };
        *self
            .last_check
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(detail);
        let was_up = self.is_up();
        let now_up = crate::upstream::health::up_after(was_up, passed, streak, rise, fall);
        self.up.store(now_up, Ordering::Relaxed);
        was_up != now_up
    }
}

#[derive(Debug)]
struct Rule {
    groups: Vec<usize>,
}

/// Why a rule was chosen, for `?explain` and the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// An operator prefix of this length.
    Prefix(u8),
    /// The client's AS number.
    Asn(u32),
    /// The client's country.
    Country(Code2),
    /// The client's continent.
    Continent(Code2),
    /// Nothing more specific.
    Default,
}

/// The routing data of one configuration.
pub struct Map {
    nodes: Vec<Node>,
    groups: Vec<(String, Vec<usize>)>,
    rules: Vec<Rule>,
    prefixes: PrefixTable,
    asns: HashMap<u32, usize>,
    countries: HashMap<Code2, usize>,
    continents: HashMap<Code2, usize>,
    default: usize,
    geo: Geo,
    /// Set while every node a client could get is down and answers come from the default
    /// rule's nodes regardless (logged when it starts and ends).
    failing_open: AtomicBool,
}

impl Map {
    /// The map of a checked configuration. A MaxMind database that cannot be read is logged
    /// and left out: those clients get the default rule, and the router keeps answering.
    pub fn build(config: &RouterConfig, previous: Option<&Map>) -> Map {
        let geo = Geo::open(config.geoip.country.as_deref(), config.geoip.asn.as_deref())
            .unwrap_or_else(|error| {
                tracing::error!(%error, "answering without GeoIP: every client gets the default rule");
                Geo::none()
            });
        let nodes: Vec<Node> = config
            .nodes
            .iter()
            .map(|node| {
                // A node kept across a reload keeps its health.
                let before = previous.and_then(|map| {
                    map.nodes
                        .iter()
                        .find(|old| old.name == node.name && old.check == node.check)
                });
                Node {
                    name: node.name.clone(),
                    addresses: node.addresses.clone(),
                    weight: node.weight,
                    check: node.check.clone(),
                    url: node
                        .url
                        .clone()
                        .unwrap_or_else(|| match node.addresses.first() {
                            Some(IpAddr::V6(v6)) => format!("http://[{v6}]"),
                            Some(address) => format!("http://{address}"),
                            None => String::new(),
                        }),
                    up: AtomicBool::new(before.is_none_or(Node::is_up)),
                    streak: AtomicU32::new(
                        before.map_or(0, |old| old.streak.load(Ordering::Relaxed)),
                    ),
                    streak_passed: AtomicBool::new(
                        before.is_none_or(|old| old.streak_passed.load(Ordering::Relaxed)),
                    ),
                    last_check: Mutex::new(before.and_then(Node::last_check)),
                    capacity: node.capacity.clone(),
                    headroom: AtomicU32::new(
                        before.map_or(1000, |old| old.headroom.load(Ordering::Relaxed)),
                    ),
                    load: Mutex::new(before.and_then(Node::load)),
                }
            })
            .collect();
        let node_index = |name: &String| nodes.iter().position(|node| &node.name == name);
        let groups: Vec<(String, Vec<usize>)> = config
            .groups
            .iter()
            .map(|group| {
                (
                    group.name.clone(),
                    group.nodes.iter().filter_map(node_index).collect(),
                )
            })
            .collect();
        let group_index = |name: &String| groups.iter().position(|(known, _)| known == name);
        let mut map = Map {
            rules: Vec::new(),
            prefixes: PrefixTable::default(),
            asns: HashMap::new(),
            countries: HashMap::new(),
            continents: HashMap::new(),
            default: 0,
            geo,
            failing_open: AtomicBool::new(false),
            nodes: Vec::new(),
            groups: Vec::new(),
        };
        for (index, rule) in config.rules.iter().enumerate() {
            map.rules.push(Rule {
                groups: rule.groups.iter().filter_map(group_index).collect(),
            });
            for prefix in &rule.prefixes {
                if let Some((network, length)) = parse_cidr(prefix) {
                    map.prefixes.insert(network, length, index);
                }
            }
            for asn in &rule.asns {
                map.asns.entry(*asn).or_insert(index);
            }
            let code = |text: &String| {
                let bytes = text.as_bytes();
                (bytes.len() == 2)
                    .then(|| [bytes[0].to_ascii_uppercase(), bytes[1].to_ascii_uppercase()])
            };
            for country in rule.countries.iter().filter_map(code) {
                map.countries.entry(country).or_insert(index);
            }
            for continent in rule.continents.iter().filter_map(code) {
                map.continents.entry(continent).or_insert(index);
            }
            if rule.default {
                map.default = index;
            }
        }
        map.nodes = nodes;
        map.groups = groups;
        map
    }

    /// The rule for a client at `address`, and why.
    fn rule_for(&self, address: IpAddr) -> (usize, Matched) {
        let address = address.to_canonical();
        if let Some((rule, length)) = self.prefixes.lookup(address) {
            return (rule, Matched::Prefix(length));
        }
        if let Some(asn) = self.geo.asn(address) {
            if let Some(&rule) = self.asns.get(&asn) {
                return (rule, Matched::Asn(asn));
            }
        }
        let (country, continent) = self.geo.location(address);
        if let Some((rule, country)) =
            country.and_then(|code| Some((*self.countries.get(&code)?, code)))
        {
            return (rule, Matched::Country(country));
        }
        if let Some((rule, continent)) =
            continent.and_then(|code| Some((*self.continents.get(&code)?, code)))
        {
            return (rule, Matched::Continent(continent));
        }
        (self.default, Matched::Default)
    }

    /// The EDNS Client Subnet scope of an answer for `address` (RFC 7871 §7.2.1): the prefix
    /// length over which the data that decided it (`matched`) gives the same rule. Not the
    /// length of the matched rule's prefix or GeoIP network alone: a longer operator prefix
    /// inside it, or the GeoIP network consulted before the one that decided, could decide
    /// otherwise for part of it, so the scope is the longest of the data consulted.
    pub fn scope(&self, address: IpAddr, matched: Matched) -> u8 {
        let canonical = address.to_canonical();
        let mut scope = self.prefixes.constant_block(canonical);
        if !matches!(matched, Matched::Prefix(_)) {
            scope = scope.max(self.geo.asn_network(canonical));
            if !matches!(matched, Matched::Asn(_)) {
                scope = scope.max(self.geo.location_network(canonical));
            }
        }
        if canonical.is_ipv4() && address.is_ipv6() {
            scope += 96; // an IPv4-mapped IPv6 subnet: the scope counts the mapping's bits
        }
        scope
    }

    /// Up to `count` distinct nodes for a client at `address` that have addresses of the
    /// family asked for (`v6`), from the first group of its rule with such a node up; when
    /// every node is down, the router fails open from the default rule's groups, all nodes
    /// counted as up. Writes their addresses into `chosen` (cleared first; the caller reuses
    /// it, so a DNS answer allocates nothing here) and returns why.
    pub fn choose(
        &self,
        address: IpAddr,
        v6: bool,
        count: usize,
        chosen: &mut Vec<IpAddr>,
    ) -> Matched {
        chosen.clear();
        let (rule, matched) = self.rule_for(address);
        for &group in &self.rules[rule].groups {
            self.pick(group, true, v6, count, chosen);
            if !chosen.is_empty() {
                // Read first: a write on every answer would bounce the line between cores.
                if self.failing_open.load(Ordering::Relaxed)
                    && self.failing_open.swap(false, Ordering::Relaxed)
                {
                    tracing::info!("nodes are up again: answers follow the rules");
                }
                return matched;
            }
        }
        // Nothing up for this client: fail open rather than answer nothing.
        if !self.failing_open.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "no node of the client's rule is up: failing open to the default rule's nodes"
            );
        }
        for &group in &self.rules[self.default].groups {
            self.pick(group, false, v6, count, chosen);
            if !chosen.is_empty() {
                return Matched::Default;
            }
        }
        matched
    }

    /// Up to `count` nodes for a client at `address`, best first, for the redirect mode: the
    /// nodes that are up in the rule's groups in order, each group's in weighted random order
    /// (or, with `hash`, in weighted rendezvous order of that hash, so that one path keeps
    /// going to one node); failing open to every node of the default rule when none is up.
    /// Returns the nodes, why the rule was chosen, and the name of the group of the first.
    pub fn ranked(
        &self,
        address: IpAddr,
        count: usize,
        hash: Option<u64>,
    ) -> (Vec<&Node>, Matched, Option<&str>) {
        let (rule, matched) = self.rule_for(address);
        let mut ranked: Vec<&Node> = Vec::new();
        let mut first_group = None;
        let order = |group: usize, everyone: bool| {
            let mut members: Vec<(u64, usize)> = self.groups[group]
                .1
                .iter()
                .filter(|&&node| everyone || self.nodes[node].is_up())
                .map(|&node| {
                    let weight = self.nodes[node].effective_weight();
                    let draw = match hash {
                        Some(hash) => hash_pair(hash, node as u64),
                        None => random(),
                    };
                    // Weighted: the largest of draw^(1/weight), compared through logarithms.
                    let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
                    let score = unit.max(f64::MIN_POSITIVE).ln() / weight as f64;
                    ((score * -1e12) as u64, node)
                })
                .collect();
            members.sort_unstable();
            members
        };
        for &group in &self.rules[rule].groups {
            for (_, node) in order(group, false) {
                if !ranked
                    .iter()
                    .any(|known| std::ptr::eq(*known, &self.nodes[node]))
                {
                    first_group.get_or_insert(self.groups[group].0.as_str());
                    ranked.push(&self.nodes[node]);
                }
            }
        }
        if ranked.is_empty() {
            for &group in &self.rules[self.default].groups {
                for (_, node) in order(group, true) {
                    first_group.get_or_insert(self.groups[group].0.as_str());
                    ranked.push(&self.nodes[node]);
                }
            }
        }
        ranked.truncate(count);
        (ranked, matched, first_group)
    }

    /// A weighted random choice of `count` distinct nodes among `candidates`; their addresses
    /// of the asked family.
    /// Adds to `chosen`, up to `count` in all, addresses of `group`'s nodes (only those up
    /// when `only_up`) in the family asked for, each drawn at random by effective weight from
    /// the nodes whose address is not chosen yet. Two passes over the group per address rather
    /// than a list of candidates: groups are small, and nothing is allocated.
    fn pick(&self, group: usize, only_up: bool, v6: bool, count: usize, chosen: &mut Vec<IpAddr>) {
        while chosen.len() < count {
            let taken: &[IpAddr] = chosen;
            let candidates = || {
                self.groups[group]
                    .1
                    .iter()
                    .map(|&node| &self.nodes[node])
                    .filter(|node| !only_up || node.is_up())
                    .filter_map(|node| {
                        let address = node.addresses.iter().copied().find(|a| a.is_ipv6() == v6)?;
                        (!taken.contains(&address)).then_some((node.effective_weight(), address))
                    })
            };
            let total: u64 = candidates().map(|(weight, _)| weight).sum();
            if total == 0 {
                return;
            }
            let mut point = random() % total;
            let mut drawn = None;
            for (weight, address) in candidates() {
                drawn = Some(address);
                if point < weight {
                    break;
                }
                point -= weight;
            }
            // Weights may have moved between the passes: then the last candidate is drawn.
            match drawn {
                Some(address) => chosen.push(address),
                None => return,
            }
        }
    }

    /// The nodes, for the status and the health checks.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Whether the last answer had to fail open.
    pub fn failing_open(&self) -> bool {
        self.failing_open.load(Ordering::Relaxed)
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x2545_F491_4F6C_DD1D, |elapsed| elapsed.as_nanos() as u64)
            | 1,
    );
}

/// SplitMix64 per thread: a weighted choice needs spread, not secrecy.
fn random() -> u64 {
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A well-mixed 64-bit value of two (for rendezvous hashing).
fn hash_pair(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `192.0.2.0/24` or `2001:db8::/32` as the network (host bits cleared) and its length.
pub fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let prefix: IpPrefix = text.parse().ok()?;
    Some((prefix.network, prefix.length))
}

/// Longest-prefix match: one hash map per prefix length present, tried longest first, so a
/// lookup costs a hash probe per distinct length (a few, even for a full table of peering
/// prefixes). Written here because it is twenty lines and tries in crates bring more than that.
#[derive(Default)]
struct PrefixTable {
    /// (length, network → rule), longest first; IPv4 and IPv6 apart.
    v4: Vec<(u8, HashMap<IpAddr, usize>)>,
    v6: Vec<(u8, HashMap<IpAddr, usize>)>,
    /// At index `d`, the `/d` networks that hold a prefix longer than `d`: where the answer
    /// for an address could change within its `/d` (for EDNS Client Subnet scopes).
    above_v4: Vec<HashSet<IpAddr>>,
    above_v6: Vec<HashSet<IpAddr>>,
}

impl PrefixTable {
    fn insert(&mut self, network: IpAddr, length: u8, rule: usize) {
        let above = if network.is_ipv4() {
            &mut self.above_v4
        } else {
            &mut self.above_v6
        };
        for depth in 0..length {
            if above.len() <= usize::from(depth) {
                above.resize_with(usize::from(depth) + 1, HashSet::new);
            }
            above[usize::from(depth)].insert(crate::prefix::mask(network, depth));
        }
        let table = if network.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        match table.iter_mut().find(|(known, _)| *known == length) {
            Some((_, map)) => {
                map.entry(network).or_insert(rule);
            }
            None => {
                table.push((length, HashMap::from([(network, rule)])));
                table.sort_by_key(|(length, _)| std::cmp::Reverse(*length));
            }
        }
    }

    fn lookup(&self, address: IpAddr) -> Option<(usize, u8)> {
        let table = if address.is_ipv4() {
            &self.v4
        } else {
            &self.v6
        };
        table.iter().find_map(|(length, map)| {
            map.get(&crate::prefix::mask(address, *length))
                .map(|&rule| (rule, *length))
        })
    }

    /// The shortest prefix length `s` such that every address in `address`'s `/s` gets the
    /// same answer from this table: one more than the deepest `/d` around `address` that holds
    /// a longer prefix. Such depths are the first ones, 0 to some `d`, so a binary search
    /// finds the last.
    fn constant_block(&self, address: IpAddr) -> u8 {
        let above = if address.is_ipv4() {
            &self.above_v4
        } else {
            &self.above_v6
        };
        let holds =
            |depth: usize| above[depth].contains(&crate::prefix::mask(address, depth as u8));
        if above.is_empty() || !holds(0) {
            return 0;
        }
        let (mut deepest, mut beyond) = (0, above.len());
        while beyond - deepest > 1 {
            let middle = (deepest + beyond) / 2;
            if holds(middle) {
                deepest = middle;
            } else {
                beyond = middle;
            }
        }
        deepest as u8 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::config::RouterConfig;

    #[test]
    fn the_longest_prefix_wins() {
        let mut table = PrefixTable::default();
        for (prefix, rule) in [("10.0.0.0/8", 1), ("10.1.0.0/16", 2), ("2001:db8::/32", 3)] {
            let (network, length) = parse_cidr(prefix).unwrap();
            table.insert(network, length, rule);
        }
        let at = |text: &str| table.lookup(text.parse().unwrap());
        assert_eq!(at("10.1.2.3"), Some((2, 16)));
        assert_eq!(at("10.2.2.3"), Some((1, 8)));
        assert_eq!(at("11.0.0.1"), None);
        assert_eq!(at("2001:db8:1::1"), Some((3, 32)));
        // Where the answer stays the same: 10.2.0.0/15 (10.1.0.0/16 is the other half of
        // 10.0.0.0/15), the whole /16, 11.0.0.0/8 (10.0.0.0/8 the other half of its /7).
        let block = |text: &str| table.constant_block(text.parse().unwrap());
        assert_eq!(block("10.2.2.3"), 15);
        assert_eq!(block("10.1.2.3"), 16);
        assert_eq!(block("11.0.0.1"), 8);
        assert_eq!(block("200.0.0.1"), 1);
        assert_eq!(block("2001:db8:1::1"), 32);
        assert_eq!(
            PrefixTable::default().constant_block("10.0.0.1".parse().unwrap()),
            0
        );
        assert_eq!(
            parse_cidr("10.1.2.3/8"),
            Some(("10.0.0.0".parse().unwrap(), 8))
        );
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
    }

    /// A map of one group of three nodes (weights 3, 1, 1), the default rule's.
    fn three_nodes() -> Map {
        let text = r#"
            [dns]
            zone = "cdn.test"
            names = ["dl.cdn.test"]
            [[nodes]]
            name = "a"
            addresses = ["127.0.0.1", "::1"]
            weight = 3
            [[nodes]]
            name = "b"
            addresses = ["127.0.0.2"]
            [[nodes]]
            name = "c"
            addresses = ["127.0.0.3"]
            [[groups]]
            name = "all"
            nodes = ["a", "b", "c"]
            [[rules]]
            default = true
            groups = ["all"]
        "#;
        let config: RouterConfig =
            crate::config::parse_toml(text, std::path::Path::new("route.toml")).unwrap();
        Map::build(&config, None)
    }

    #[test]
    fn choices_are_distinct_weighted_up_and_of_the_family_asked() {
        let map = three_nodes();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let mut chosen = Vec::new();
        let mut first = std::collections::HashMap::new();
        for _ in 0..5000 {
            map.choose(client, false, 2, &mut chosen);
            assert_eq!(chosen.len(), 2);
            assert_ne!(chosen[0], chosen[1]);
            *first.entry(chosen[0]).or_insert(0u32) += 1;
        }
        // a has three fifths of the weight: drawn first about 3,000 times in 5,000.
        let a = first[&"127.0.0.1".parse::<IpAddr>().unwrap()];
        assert!((2700..3300).contains(&a), "{first:?}");
        map.choose(client, false, 5, &mut chosen);
        assert_eq!(chosen.len(), 3, "no more than the nodes there are");
        map.choose(client, true, 2, &mut chosen);
        assert_eq!(
            chosen,
            ["::1".parse::<IpAddr>().unwrap()],
            "only a has IPv6"
        );

        // a down: never chosen while b or c is up; all down: fail open to everyone.
        map.nodes()[0].record_check(false, "down".into(), 1, 1);
        for _ in 0..200 {
            map.choose(client, false, 1, &mut chosen);
            assert_ne!(chosen[0], "127.0.0.1".parse::<IpAddr>().unwrap());
        }
        assert!(!map.failing_open());
        map.nodes()[1].record_check(false, "down".into(), 1, 1);
        map.nodes()[2].record_check(false, "down".into(), 1, 1);
        map.choose(client, false, 3, &mut chosen);
        assert_eq!(chosen.len(), 3);
        assert!(map.failing_open());
    }
}
