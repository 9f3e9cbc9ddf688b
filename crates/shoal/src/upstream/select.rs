//! Choosing a host of a pool for a request: round-robin, smooth weighted round-robin, ordered
//! failover, and weighted rendezvous hashing by cache key. Pure decisions over the hosts'
//! weights and availability; health and connections live elsewhere.
//!
//! Rendezvous (highest random weight) hashing gives every (key, host) pair a score and sends the
//! key to the host with the highest one. Removing a host moves only the keys it owned (about
//! 1/N of them) and adding one takes about 1/(N+1) from the others; with weights, a host's
//! share is proportional to its weight (scores are `-weight / ln(u)`, `u` the pair's hash in
//! (0, 1)). The same function picks the owner of an object among a cluster's peers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::cache::CacheKey;

pub use crate::config::Policy;

/// What selection needs to know of a host.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// Relative share of requests.
    pub weight: u32,
    /// A stable hash of the host's identity (its address), for rendezvous hashing.
    pub id: u64,
    /// Up, not drained, not ejected, below its connection limit.
    pub available: bool,
}

/// A pool's host picker, with the state its policy needs.
#[derive(Debug)]
pub struct Selector {
    policy: Policy,
    next: AtomicUsize,
    /// Smooth weighted round-robin's current weights, one per host.
    current: Mutex<Vec<i64>>,
}

impl Selector {
    /// A picker for `hosts` hosts with `policy`.
    pub fn new(policy: Policy, hosts: usize) -> Selector {
        Selector {
            policy,
            next: AtomicUsize::new(0),
            current: Mutex::new(vec![0; hosts]),
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The host for a request with cache key `key`, among the available hosts not in `tried`
    /// (the hosts an earlier attempt of the same request used). `None` when none is left.
    pub fn pick(&self, hosts: &[Candidate], key: CacheKey, tried: &[usize]) -> Option<usize> {
        self.pick_with(hosts.len(), |index| hosts[index], key, tried)
    }

    /// [`Selector::pick`] over `count` hosts described by `host`, without a list of them.
    pub fn pick_with(
        &self,
        count: usize,
        host: impl Fn(usize) -> Candidate,
        key: CacheKey,
        tried: &[usize],
    ) -> Option<usize> {
        let eligible = |index: usize| host(index).available && !tried.contains(&index);
        match self.policy {
            Policy::Failover => (0..count).find(|&index| eligible(index)),
            Policy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..count)
                    .map(|offset| (start + offset) % count)
                    .find(|&index| eligible(index))
            }
            Policy::Weighted => {
                let mut current = self
                    .current
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                current.resize(count, 0);
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for index in (0..count).filter(|&index| eligible(index)) {
                    let weight = i64::from(host(index).weight.max(1));
                    current[index] += weight;
                    total += weight;
                    if best.is_none_or(|best| current[index] > current[best]) {
                        best = Some(index);
                    }
                }
                if let Some(best) = best {
                    current[best] -= total;
                }
                best
            }
            Policy::Hash => rendezvous(count, &host, key, eligible),
        }
    }
}

/// The host with the highest weighted rendezvous score for `key` among the `count` hosts
/// (described by `host`) that are `eligible`.
pub fn rendezvous(
    count: usize,
    host: impl Fn(usize) -> Candidate,
    key: CacheKey,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    (0..count)
        .filter(|&index| eligible(index))
        .map(|index| (index, score(key, &host(index))))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(index, _)| index)
}

/// Weighted rendezvous score: `-weight / ln(u)` with `u` uniform in (0, 1) from the pair's hash.
fn score(key: CacheKey, host: &Candidate) -> f64 {
    let mut input = [0u8; 24];
    input[..16].copy_from_slice(&key.0.to_le_bytes());
    input[16..].copy_from_slice(&host.id.to_le_bytes());
    let hash = xxhash_rust::xxh3::xxh3_64(&input);
    // 53 bits, offset by half a step: never 0 nor 1.
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(host.weight.max(1)) / unit.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(index, &weight)| Candidate {
                weight,
                id: xxhash_rust::xxh3::xxh3_64(format!("host-{index}").as_bytes()),
                available: true,
            })
            .collect()
    }

    fn key(n: u64) -> CacheKey {
        CacheKey(xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes()))
    }

    #[test]
    fn removing_one_of_ten_hosts_moves_only_its_keys() {
        let all = hosts(&[1; 10]);
        let selector = Selector::new(Policy::Hash, 10);
        let keys = 100_000;
        let before: Vec<usize> = (0..keys)
            .map(|n| selector.pick(&all, key(n), &[]).unwrap())
            .collect();
        let mut without = all.clone();
        without[3].available = false;
        let mut moved = 0;
        for n in 0..keys {
            let after = selector.pick(&without, key(n), &[]).unwrap();
            if after != before[n as usize] {
                assert_eq!(before[n as usize], 3, "only the removed host's keys move");
                moved += 1;
            }
        }
        let fraction = moved as f64 / keys as f64;
        // The removed host owned about a tenth of the keys; exactly those moved.
        assert!(
            (0.09..0.11).contains(&fraction),
            "{fraction} of the keys moved"
        );
        let owned = before.iter().filter(|&&owner| owner == 3).count();
        assert_eq!(moved, owned);
    }

    #[test]
    fn rendezvous_shares_follow_weights() {
        let weighted = hosts(&[1, 2, 5]);
        let selector = Selector::new(Policy::Hash, 3);
        let mut counts = [0u32; 3];
        for n in 0..80_000 {
            counts[selector.pick(&weighted, key(n), &[]).unwrap()] += 1;
        }
        for (count, expected) in counts.iter().zip([10_000.0, 20_000.0, 50_000.0]) {
            let ratio = f64::from(*count) / expected;
            assert!((0.95..1.05).contains(&ratio), "{counts:?}");
        }
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        let weighted = hosts(&[5, 1, 1]);
        let selector = Selector::new(Policy::Weighted, 3);
        let picks: Vec<usize> = (0..7)
            .map(|_| selector.pick(&weighted, CacheKey(0), &[]).unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn failover_takes_the_first_available_and_retries_the_next() {
        let mut ordered = hosts(&[1, 1, 1]);
        let selector = Selector::new(Policy::Failover, 3);
        assert_eq!(selector.pick(&ordered, CacheKey(1), &[]), Some(0));
        assert_eq!(selector.pick(&ordered, CacheKey(1), &[0]), Some(1));
        ordered[0].available = false;
        assert_eq!(selector.pick(&ordered, CacheKey(1), &[]), Some(1));
        assert_eq!(selector.pick(&ordered, CacheKey(1), &[1, 2]), None);
    }

    #[test]
    fn round_robin_skips_unavailable_and_tried_hosts() {
        let mut spread = hosts(&[1, 1, 1]);
        spread[1].available = false;
        let selector = Selector::new(Policy::RoundRobin, 3);
        let picks: Vec<usize> = (0..4)
            .map(|_| selector.pick(&spread, CacheKey(0), &[]).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 2, 0]);
        assert_eq!(selector.pick(&spread, CacheKey(0), &[0, 2]), None);
    }

    #[test]
    fn the_hash_retry_goes_to_the_next_host_in_the_keys_order() {
        let all = hosts(&[1; 5]);
        let selector = Selector::new(Policy::Hash, 5);
        let first = selector.pick(&all, key(42), &[]).unwrap();
        let second = selector.pick(&all, key(42), &[first]).unwrap();
        assert_ne!(first, second);
        let mut without = all.clone();
        without[first].available = false;
        // A retry and the owner after the first host dies agree.
        assert_eq!(selector.pick(&without, key(42), &[]), Some(second));
    }
}
