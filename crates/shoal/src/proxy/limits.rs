//! Per-client limits: open connections per client IP, and requests per second per client IP (a
//! token bucket). One small record per client that has a connection open or a bucket not yet
//! full again, in sharded maps, so memory follows the clients that are active and no lock is
//! shared by all of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 64;
/// A shard this large is swept of the clients that need no record any more.
const SWEEP_ABOVE: usize = 4096;

/// The per-client state of the node.
pub struct ClientLimits {
    shards: [Mutex<HashMap<IpAddr, Client>>; SHARDS],
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

#[derive(Clone, Copy)]
struct Client {
    connections: u32,
    /// Requests the client may still make at once.
    tokens: f64,
    /// When `tokens` was last brought up to date, in milliseconds.
    refilled_at: u64,
}

/// A rate: `per_second` requests on average, `burst` at once.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after a quiet time.
    pub burst: u32,
}

impl Client {
    fn new(burst: u32, now: u64) -> Client {
        Client {
            connections: 0,
            tokens: f64::from(burst),
            refilled_at: now,
        }
    }

    fn refill(&mut self, rate: Option<Rate>, now: u64) {
        let Some(rate) = rate else {
            return;
        };
        let elapsed = now.saturating_sub(self.refilled_at) as f64 / 1000.0;
        self.tokens =
            (self.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst));
        self.refilled_at = now;
    }

    /// Whether the record says nothing a fresh one would not.
    fn idle(&self, rate: Option<Rate>) -> bool {
        self.connections == 0 && rate.is_none_or(|rate| self.tokens >= f64::from(rate.burst))
    }
}

/// A client's open connection; counted until dropped.
pub struct ConnectionSlot {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut shard = self.limits.shard(self.ip);
        if let Some(client) = shard.get_mut(&self.ip) {
            client.connections = client.connections.saturating_sub(1);
            // A bucket still refilling keeps its record until a sweep finds it full.
            if client.connections == 0 && client.tokens.is_infinite() {
                shard.remove(&self.ip);
            }
        }
    }
}

impl ClientLimits {
    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Client>> {
        let hash = match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64 ^ u128::from(v6) as u64,
        };
        let index = (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a new connection from `ip`, or refuses it when `ip` has `max` open already (0: no
    /// limit).
    pub fn connect(self: &Arc<Self>, ip: IpAddr, max: u32, now: u64) -> Option<ConnectionSlot> {
        let mut shard = self.shard(ip);
        let client = shard.entry(ip).or_insert_with(|| Client {
            // No bucket yet: requests fill it when a rate is set.
            tokens: f64::INFINITY,
            ..Client::new(0, now)
        });
        if max > 0 && client.connections >= max {
            return None;
        }
        client.connections += 1;
        Some(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Takes a token for a request from `ip`; when there is none, how many seconds until there
    /// is one.
    pub fn admit(&self, ip: IpAddr, rate: Rate, now: u64) -> Result<(), u64> {
        let mut shard = self.shard(ip);
        if shard.len() > SWEEP_ABOVE {
            shard.retain(|_, client| {
                client.refill(Some(rate), now);
                !client.idle(Some(rate))
            });
        }
        let client = shard
            .entry(ip)
            .or_insert_with(|| Client::new(rate.burst, now));
        if client.tokens.is_infinite() {
            client.tokens = f64::from(rate.burst);
        }
        client.refill(Some(rate), now);
        if client.tokens >= 1.0 {
            client.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - client.tokens;
        Err((missing / f64::from(rate.per_second.max(1)))
            .ceil()
            .max(1.0) as u64)
    }

    /// Clients with a record now (for the admin API).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |shard| shard.len()))
            .sum()
    }
}

/// Bytes of origin response bodies being filled into objects that are not complete yet (so not
/// yet in a store, which bounds them once they are). New misses are shed while it is over
/// `server.max_inflight_memory`.
#[derive(Default)]
pub struct InflightMemory(AtomicU64);

impl InflightMemory {
    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// A holder for one fill's bytes, released when it is dropped.
    pub fn hold(&self) -> Held<'_> {
        Held {
            memory: self,
            bytes: 0,
        }
    }
}

/// The bytes one fill holds.
pub struct Held<'a> {
    memory: &'a InflightMemory,
    bytes: u64,
}

impl Held<'_> {
    /// `bytes` more arrived.
    pub fn add(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.memory.0.fetch_add(bytes, Ordering::Relaxed);
    }

    /// What was held went into a store (or away).
    pub fn release(&mut self) {
        self.memory.0.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_client_and_released() {
        let limits = Arc::new(ClientLimits::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = limits.connect(a, 2, 0).unwrap();
        let _second = limits.connect(a, 2, 0).unwrap();
        assert!(limits.connect(a, 2, 0).is_none(), "the third is refused");
        assert!(limits.connect(b, 2, 0).is_some(), "others are not affected");
        drop(first);
        assert!(
            limits.connect(a, 2, 0).is_some(),
            "a closed one frees a place"
        );
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let limits = ClientLimits::default();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let rate = Rate {
            per_second: 10,
            burst: 5,
        };
        for _ in 0..5 {
            assert_eq!(limits.admit(ip, rate, 1000), Ok(()));
        }
        assert_eq!(limits.admit(ip, rate, 1000), Err(1), "retry after a second");
        // 100 ms later, one more token.
        assert_eq!(limits.admit(ip, rate, 1100), Ok(()));
        assert!(limits.admit(ip, rate, 1100).is_err());
    }

    #[test]
    fn records_of_quiet_clients_are_swept() {
        let limits = ClientLimits::default();
        let rate = Rate {
            per_second: 1000,
            burst: 1,
        };
        for n in 0..400_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(n));
            let _ = limits.admit(ip, rate, u64::from(n));
        }
        assert!(
            limits.tracked() <= SHARDS * (SWEEP_ABOVE + 1),
            "{}",
            limits.tracked()
        );
    }
}
