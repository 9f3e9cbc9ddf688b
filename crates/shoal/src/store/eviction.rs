//! S3-FIFO eviction (Yang et al., SOSP 2023), weighted by bytes.
//!
//! Why S3-FIFO: most objects of a CDN workload are requested once. A small FIFO (10% of the
//! bytes) holds new arrivals; only those requested again while there move to the main FIFO, so
//! one-hit wonders never push out the working set. Objects evicted from the small queue leave a
//! ghost (their id), and a ghost hit goes straight to main. A hit only bumps a 2-bit counter with
//! one relaxed atomic store, so the hit path takes no lock; plain LRU would need a lock and a
//! list move on every hit. Written here rather than taken from a crate because the store needs
//! byte weights, lazy removal of replaced entries and the same policy on the disk tier later;
//! `bench/hit_ratio.rs` compares it with LRU on a Zipf trace.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// What the policy needs to know of an item it manages.
pub trait Resident {
    /// Bytes the item holds.
    fn weight(&self) -> u64;
    /// The access counter, bumped by [`touch`].
    fn frequency(&self) -> &AtomicU8;
    /// An id that survives the item, for the ghost queue.
    fn id(&self) -> u64;
    /// Whether the item already left the cache (replaced or purged): it is dropped when reached.
    fn is_gone(&self) -> bool;
}

/// Records an access; saturates at 3 as in the paper.
pub fn touch(frequency: &AtomicU8) {
    let value = frequency.load(Ordering::Relaxed);
    if value < 3 {
        frequency.store(value + 1, Ordering::Relaxed);
    }
}

/// What one admission evicted: usually one or two items, held inline (no allocation per insert).
pub type Evicted<T> = smallvec::SmallVec<[Arc<T>; 4]>;

/// The queues of S3-FIFO and their byte counts.
pub struct S3Fifo<T> {
    capacity: u64,
    small: VecDeque<Arc<T>>,
    main: VecDeque<Arc<T>>,
    small_bytes: u64,
    main_bytes: u64,
    ghost: VecDeque<u64>,
    /// Ids are hashes already: the hasher of the maps keyed by cache keys, not SipHash.
    ghost_ids: HashSet<u64, crate::cache::KeyHasher>,
}

impl<T: Resident> S3Fifo<T> {
    /// An empty policy for `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        S3Fifo {
            capacity,
            small: VecDeque::new(),
            main: VecDeque::new(),
            small_bytes: 0,
            main_bytes: 0,
            ghost: VecDeque::new(),
            ghost_ids: HashSet::default(),
        }
    }

    /// Bytes held, including items that are gone but not yet reached by eviction.
    pub fn bytes(&self) -> u64 {
        self.small_bytes + self.main_bytes
    }

    /// The byte budget.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Adds an item and returns the items evicted to make room for it (the item itself when it
    /// can never fit).
    pub fn admit(&mut self, item: Arc<T>) -> Evicted<T> {
        let weight = item.weight();
        if weight > self.capacity {
            return smallvec::smallvec![item];
        }
        if self.ghost_ids.remove(&item.id()) {
            self.main_bytes += weight;
            self.main.push_back(item);
        } else {
            self.small_bytes += weight;
            self.small.push_back(item);
        }
        self.evict_to_capacity()
    }

    /// Changes the byte budget; returns the items evicted to fit a smaller one.
    pub fn resize(&mut self, capacity: u64) -> Evicted<T> {
        self.capacity = capacity;
        self.evict_to_capacity()
    }

    fn evict_to_capacity(&mut self) -> Evicted<T> {
        let mut evicted = Evicted::new();
        while self.bytes() > self.capacity {
            match self.evict_one() {
                Some(item) => evicted.push(item),
                None if self.small.is_empty() && self.main.is_empty() => break,
                None => {}
            }
        }
        evicted
    }

    fn evict_one(&mut self) -> Option<Arc<T>> {
        if self.small_bytes > self.capacity / 10 || self.main.is_empty() {
            self.evict_small()
        } else {
            self.evict_main()
        }
    }

    fn evict_small(&mut self) -> Option<Arc<T>> {
        let item = self.small.pop_front()?;
        let weight = item.weight();
        self.small_bytes -= weight;
        if item.is_gone() {
            return None;
        }
        if item.frequency().load(Ordering::Relaxed) > 0 {
            item.frequency().store(0, Ordering::Relaxed);
            self.main_bytes += weight;
            self.main.push_back(item);
            return None;
        }
        self.remember_ghost(item.id());
        Some(item)
    }

    fn evict_main(&mut self) -> Option<Arc<T>> {
        let item = self.main.pop_front()?;
        if item.is_gone() {
            self.main_bytes -= item.weight();
            return None;
        }
        let frequency = item.frequency().load(Ordering::Relaxed);
        if frequency > 0 {
            item.frequency().store(frequency - 1, Ordering::Relaxed);
            self.main.push_back(item);
            return None;
        }
        self.main_bytes -= item.weight();
        Some(item)
    }

    fn remember_ghost(&mut self, id: u64) {
        let limit = (self.small.len() + self.main.len()).max(1024);
        while self.ghost.len() >= limit {
            if let Some(old) = self.ghost.pop_front() {
                self.ghost_ids.remove(&old);
            }
        }
        if self.ghost_ids.insert(id) {
            self.ghost.push_back(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct Item {
        id: u64,
        weight: u64,
        frequency: AtomicU8,
        gone: AtomicBool,
    }

    impl Resident for Item {
        fn weight(&self) -> u64 {
            self.weight
        }
        fn frequency(&self) -> &AtomicU8 {
            &self.frequency
        }
        fn id(&self) -> u64 {
            self.id
        }
        fn is_gone(&self) -> bool {
            self.gone.load(Ordering::Relaxed)
        }
    }

    fn item(id: u64, weight: u64) -> Arc<Item> {
        Arc::new(Item {
            id,
            weight,
            frequency: AtomicU8::new(0),
            gone: AtomicBool::new(false),
        })
    }

    #[test]
    fn stays_within_capacity_and_keeps_reused_items() {
        let mut policy = S3Fifo::new(1000);
        let hot = item(0, 100);
        policy.admit(hot.clone());
        let mut evicted_ids = Vec::new();
        for id in 1..100 {
            touch(hot.frequency());
            for gone in policy.admit(item(id, 100)) {
                evicted_ids.push(gone.id);
            }
            assert!(policy.bytes() <= 1000);
        }
        assert!(!evicted_ids.contains(&0), "the hot item was evicted");
        assert!(evicted_ids.len() >= 89);
    }

    #[test]
    fn oversized_items_are_refused() {
        let mut policy = S3Fifo::new(100);
        let evicted = policy.admit(item(1, 101));
        assert_eq!(evicted.len(), 1);
        assert_eq!(policy.bytes(), 0);
    }

    #[test]
    fn gone_items_free_their_bytes_without_being_reported() {
        let mut policy = S3Fifo::new(300);
        let first = item(1, 200);
        policy.admit(first.clone());
        first.gone.store(true, Ordering::Relaxed);
        let evicted = policy.admit(item(2, 200));
        assert!(evicted.is_empty());
        assert_eq!(policy.bytes(), 200);
    }
}
