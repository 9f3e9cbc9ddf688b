//! The cluster of peer caches: every node has the same list of peers, itself included, and
//! each object has one owner among them, found by weighted rendezvous hashing of its cache
//! key over the peers that are up. A miss for an object another peer owns is fetched from that
//! peer, which fetches it from the origin (once for the whole cluster); a request that came
//! from a peer is never sent to another one, so requests cannot loop.

use std::net::SocketAddr;

use super::select::rendezvous;
use super::Pool;
use crate::cache::CacheKey;
use crate::config::{Config, Policy};

/// The header that marks a request sent by a peer; its value is the sender's id (and, with
/// `cluster.secret`, the time and a signature: `ID; t=SECONDS; sig=HEX`).
pub const PEER_HEADER: &str = "x-shoal-peer";

/// This node's view of its cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Every peer, this node included.
    pub peers: Pool,
    /// This node's place in `peers`.
    pub me: usize,
    /// This node's id (its `host:port` in the list), sent in [`PEER_HEADER`].
    pub id: http::HeaderValue,
    /// The peers' addresses: [`PEER_HEADER`] is believed only from them (and from
    /// `server.trusted_proxies`, such as the edges in front of a parent tier).
    addresses: Vec<std::net::IpAddr>,
    /// `cluster.secret`: when set, markers are signed and only signed ones believed.
    secret: Option<Vec<u8>>,
}

/// How long a signed marker is believed after it was made (either way, for clocks that
/// differ a little).
const MARKER_LIFETIME_SECS: u64 = 30;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl Cluster {
    /// The cluster of `config`; `None` without peers, or (logged) when this node is not in
    /// the list, in which case it works alone.
    pub fn new(config: &Config) -> Option<Cluster> {
        let peers = &config.cluster.peers;
        if peers.is_empty() {
            return None;
        }
        let me = peers.iter().position(|peer| match &config.cluster.node_id {
            Some(id) => peer.authority.eq_ignore_ascii_case(id),
            None => peer
                .authority
                .parse::<SocketAddr>()
                .is_ok_and(|address| config.server.listen.contains(&address)),
        });
        let Some(me) = me else {
            tracing::error!(
                "this node is not in cluster.peers (by cluster.node_id or a server.listen address); it works alone"
            );
            return None;
        };
        Some(Cluster {
            peers: Pool::of_urls(
                "cluster",
                Policy::Hash,
                true,
                peers.iter().map(|peer| (peer.clone(), 1, 0)),
            ),
            me,
            id: http::HeaderValue::from_str(&peers[me].authority)
                .unwrap_or_else(|_| http::HeaderValue::from_static("peer")),
            addresses: peer_addresses(peers),
            secret: config
                .cluster
                .secret
                .as_ref()
                .map(|secret| secret.as_bytes().to_vec()),
        })
    }

    /// The marker of a request this node sends to a peer: its id, and with `cluster.secret`
    /// the time and a signature binding it to this request.
    pub fn marker(&self, request: &MarkedRequest<'_>, now_secs: u64) -> http::HeaderValue {
        let Some(secret) = &self.secret else {
            return self.id.clone();
        };
        let id = self.id.to_str().unwrap_or("peer");
        let signature = marker_signature(secret, id, now_secs, request);
        http::HeaderValue::from_str(&format!("{id}; t={now_secs}; sig={signature}"))
            .unwrap_or_else(|_| self.id.clone())
    }

    /// Whether a marker received from a peer's address is believed: always without
    /// `cluster.secret`; with it, only when signed with it for this request, recently.
    pub fn believes(
        &self,
        marker: &http::HeaderValue,
        request: &MarkedRequest<'_>,
        now_secs: u64,
    ) -> bool {
        use hmac::Mac;
        let Some(secret) = &self.secret else {
            return true;
        };
        let Ok(text) = marker.to_str() else {
            return false;
        };
        let mut parts = text.split(';').map(str::trim);
        let id = parts.next().unwrap_or("");
        let (Some(time), Some(signature), None) = (
            parts.next().and_then(|part| part.strip_prefix("t=")),
            parts.next().and_then(|part| part.strip_prefix("sig=")),
            parts.next(),
        ) else {
            return false;
        };
        let (Ok(time), Some(signature)) = (
            time.parse::<u64>(),
            crate::signed_url::decode_hex(signature),
        ) else {
            return false;
        };
        if time.abs_diff(now_secs) > MARKER_LIFETIME_SECS {
            return false;
        }
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        marker_input(&mut mac, id, time, request);
        // Compared in constant time.
        mac.verify_slice(&signature).is_ok()
    }

    /// Whether a client at `address` is one of the peers.
    pub fn is_peer(&self, address: std::net::IpAddr) -> bool {
        self.addresses.contains(&address.to_canonical())
    }

    /// The peer that owns `key` among those up and not `tried`; `None` when it is this node.
    pub fn owner(&self, key: CacheKey, tried: &[usize], now: u64) -> Option<usize> {
        let peer = |index: usize| self.peers.candidate(index, now);
        let owner = rendezvous(self.peers.hosts.len(), peer, key, |index| {
            (index == self.me || peer(index).available) && !tried.contains(&index)
        })?;
        (owner != self.me).then_some(owner)
    }
}

/// The addresses of `peers`: as written, or what their names resolve to now (once, when the
/// configuration is put in force).
fn peer_addresses(peers: &[crate::config::OriginUrl]) -> Vec<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let mut addresses: Vec<std::net::IpAddr> = peers
        .iter()
        .flat_map(|peer| {
            let host = peer.host.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<std::net::IpAddr>() {
                Ok(address) => vec![address],
                Err(_) => (host, peer.port)
                    .to_socket_addrs()
                    .map(|found| found.map(|address| address.ip()).collect())
                    .unwrap_or_else(|error| {
                        tracing::warn!(peer = %peer.authority, %error, "cannot resolve a peer; its requests are not taken as a peer's");
                        Vec::new()
                    }),
            }
        })
        .map(|address| address.to_canonical())
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

/// What a peer marker's signature covers of the request it rides on.
pub struct MarkedRequest<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The host (`request_host`), compared without regard to case.
    pub host: &'a str,
    /// The target (path and query).
    pub target: &'a str,
}

fn marker_signature(secret: &[u8], id: &str, time: u64, request: &MarkedRequest<'_>) -> String {
    use hmac::Mac;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    marker_input(&mut mac, id, time, request);
    crate::signed_url::to_hex(&mac.finalize().into_bytes())
}

fn marker_input(mac: &mut HmacSha256, id: &str, time: u64, request: &MarkedRequest<'_>) {
    use hmac::Mac;
    let mut time_text = itoa::Buffer::new();
    for part in [id, time_text.format(time), request.method.as_str()] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    // The host without regard to case, lowercased as it is fed in rather than copied.
    for byte in request.host.bytes() {
        mac.update(&[byte.to_ascii_lowercase()]);
    }
    mac.update(b"\n");
    mac.update(request.target.as_bytes());
    mac.update(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(me: &str) -> Cluster {
        let mut config = Config::default();
        config.server.listen = vec![me.parse().unwrap()];
        config.cluster.peers = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]
            .iter()
            .map(|peer| format!("http://{peer}").parse().unwrap())
            .collect();
        Cluster::new(&config).unwrap()
    }

    #[test]
    fn every_node_agrees_on_the_owner() {
        let nodes: Vec<Cluster> = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]
            .iter()
            .map(|me| cluster(me))
            .collect();
        let mut owned = [0; 3];
        for n in 0..3000u64 {
            let key = CacheKey(xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes()));
            let owners: Vec<usize> = nodes
                .iter()
                .map(|node| node.owner(key, &[], 0).unwrap_or(node.me))
                .collect();
            assert!(owners.iter().all(|&owner| owner == owners[0]), "{owners:?}");
            owned[owners[0]] += 1;
        }
        assert!(
            owned.iter().all(|&count| (800..1200).contains(&count)),
            "{owned:?}"
        );
    }

    #[test]
    fn a_node_finds_itself_by_its_listen_address() {
        assert_eq!(cluster("127.0.0.1:8002").me, 1);
        let mut config = Config::default();
        config.cluster.peers = vec!["http://10.0.0.1:80".parse().unwrap()];
        assert!(Cluster::new(&config).is_none(), "not in the list: alone");
    }
}
