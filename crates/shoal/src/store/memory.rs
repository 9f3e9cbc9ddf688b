//! The RAM tier: a sharded hash map for lookups and S3-FIFO for eviction by bytes. A lookup
//! takes one shard's read lock and bumps an atomic counter; only inserts take the policy lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::{touch, Entry, Evicted, Object, S3Fifo, StoreStats, Variants, MAX_VARIANTS};
use crate::cache::{CacheKey, KeyMap};

const SHARDS: usize = 64;

/// Objects in memory, bounded by bytes.
pub struct MemoryStore {
    shards: Vec<RwLock<KeyMap<Arc<Entry>>>>,
    policy: Mutex<S3Fifo<Entry>>,
    evictions: AtomicU64,
}

impl MemoryStore {
    /// A store holding at most `capacity` bytes.
    pub fn new(capacity: u64) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(KeyMap::default()))
                .collect(),
            policy: Mutex::new(S3Fifo::new(capacity)),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: CacheKey) -> &RwLock<KeyMap<Arc<Entry>>> {
        &self.shards[(key.0 >> 64) as usize % SHARDS]
    }

    /// The entry of `key` without counting an access, for the admin API.
    pub fn peek(&self, key: CacheKey) -> Option<Arc<Entry>> {
        read(self.shard(key)).get(&key).cloned()
    }

    /// Changes the byte budget (on reload); a smaller one evicts at once.
    pub fn resize(&self, capacity: u64) {
        let evicted = self
            .policy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .resize(capacity);
        self.drop_evicted(evicted);
    }

    /// Removes what the eviction policy let go of from the map (unless it was replaced).
    fn drop_evicted(&self, evicted: Evicted<Entry>) {
        for victim in evicted {
            let mut shard = write(self.shard(victim.key));
            if shard
                .get(&victim.key)
                .is_some_and(|current| Arc::ptr_eq(current, &victim))
            {
                shard.remove(&victim.key);
            }
            drop(shard);
            victim.retire(&[]);
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every entry, for the admin API's listing.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.shards
            .iter()
            .flat_map(|shard| read(shard).values().cloned().collect::<Vec<_>>())
            .collect()
    }
}

// Poisoning only follows a panic while holding the lock; the maps stay consistent between
// statements, so the data is still good to use.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryStore {
    /// The variants stored for `key`, counting the access for eviction.
    pub fn lookup(&self, key: CacheKey) -> Option<Arc<Entry>> {
        let entry = read(self.shard(key)).get(&key).cloned()?;
        touch(&entry.frequency);
        Some(entry)
    }

    /// Stores `object` as a variant of `key`, replacing a variant with the same request
    /// values.
    pub fn insert(&self, key: CacheKey, object: Arc<Object>) {
        let entry = {
            let mut shard = write(self.shard(key));
            let mut variants: Variants = smallvec::smallvec![Arc::clone(&object)];
            let variant = object.meta().variant.clone();
            if let Some(old) = shard.get(&key) {
                variants.extend(
                    old.variants
                        .iter()
                        .filter(|other| !other.is_removed() && other.meta().variant != variant)
                        .take(MAX_VARIANTS - 1)
                        .cloned(),
                );
                old.retire(&variants);
            }
            let entry = Arc::new(Entry::new(key, variants));
            shard.insert(key, Arc::clone(&entry));
            entry
        };
        let evicted = self
            .policy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .admit(entry);
        self.drop_evicted(evicted);
    }

    /// Drops every variant of `key`; returns whether there was one.
    pub fn remove(&self, key: CacheKey) -> bool {
        match write(self.shard(key)).remove(&key) {
            Some(entry) => {
                entry.retire(&[]);
                true
            }
            None => false,
        }
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let policy = self
            .policy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        StoreStats {
            entries: self
                .shards
                .iter()
                .map(|shard| read(shard).len() as u64)
                .sum(),
            bytes: policy.bytes(),
            capacity: policy.capacity(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}
