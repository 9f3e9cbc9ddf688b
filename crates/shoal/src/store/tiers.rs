//! The tiers as one: RAM in front, the disk (when configured) behind it. The tier policy lives
//! here and nowhere else: a lookup tries RAM, then the disk, and copies into RAM what the disk
//! served often enough; an object is written to disk the second time it is wanted (a RAM hit,
//! or a fetch for a key the disk's admission filter has seen); a removal covers both. Which
//! stored variant a request may use is the caller's to say (`cache::variant_matches`), so
//! this knows nothing of HTTP.

use std::sync::Arc;

use super::{DiskStore, Entry, MemoryStore, Object, StoreStats};
use crate::cache::CacheKey;

/// What a lookup found under a key.
pub enum Found {
    /// A variant the caller may use.
    Usable(Arc<Object>),
    /// Only variants the caller may not use: one of them, whose `Vary` names the fields
    /// that tell the variants apart.
    OtherVariant(Arc<Object>),
    /// Nothing.
    Nothing,
}

impl Found {
    /// The usable variant, if one was found.
    pub fn usable(self) -> Option<Arc<Object>> {
        match self {
            Found::Usable(object) => Some(object),
            Found::OtherVariant(_) | Found::Nothing => None,
        }
    }
}

/// RAM and disk, with the policy between them.
pub struct Tiers {
    ram: MemoryStore,
    disk: Option<Arc<DiskStore>>,
}

impl Tiers {
    /// RAM of `memory` bytes, in front of `disk`.
    pub fn new(memory: u64, disk: Option<DiskStore>) -> Tiers {
        Tiers {
            ram: MemoryStore::new(memory),
            disk: disk.map(Arc::new),
        }
    }

    /// The RAM tier, for the admin API and tests.
    pub fn ram(&self) -> &MemoryStore {
        &self.ram
    }

    /// The disk tier, if configured.
    pub fn disk(&self) -> Option<&Arc<DiskStore>> {
        self.disk.as_ref()
    }

    /// The variant of `key` that `usable` accepts: from RAM (then offered to the disk: it is
    /// wanted a second time), else read back from disk and copied into RAM once it has been
    /// read there `promote_after_hits` times. A record that cannot be read is not found.
    pub async fn lookup(
        &self,
        key: CacheKey,
        usable: impl Fn(&Object) -> bool,
        promote_after_hits: u8,
    ) -> Found {
        let mut other = None;
        if let Some(entry) = self.ram.lookup(key) {
            if let Some(object) = entry.variants.iter().find(|object| usable(object)) {
                self.offer_to_disk(key, object);
                return Found::Usable(Arc::clone(object));
            }
            other = entry.variants.first().cloned();
        }
        if let Some(disk) = &self.disk {
            for location in disk.locate(key) {
                let Ok(object) = disk.read(key, location).await else {
                    continue;
                };
                if usable(&object) {
                    if location.hits >= promote_after_hits {
                        self.ram.insert(key, Arc::clone(&object));
                    }
                    return Found::Usable(object);
                }
                other.get_or_insert(object);
            }
        }
        other.map_or(Found::Nothing, Found::OtherVariant)
    }

    /// The variant of `key` in RAM that `usable` accepts, counting the access.
    pub fn in_ram(&self, key: CacheKey, usable: impl Fn(&Object) -> bool) -> Option<Arc<Object>> {
        let entry = self.ram.lookup(key)?;
        entry.variants.iter().find(|object| usable(object)).cloned()
    }

    /// The variants of `key` in RAM, counting the access.
    pub fn ram_entry(&self, key: CacheKey) -> Option<Arc<Entry>> {
        self.ram.lookup(key)
    }

    /// Whether `key` is stored on disk (without counting an access).
    pub fn on_disk(&self, key: CacheKey) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|disk| !disk.peek(key).is_empty())
    }

    /// Stores a fetched `object` under `key`: in RAM, and on disk if the disk's admission
    /// filter has seen the key before.
    pub fn insert(&self, key: CacheKey, object: &Arc<Object>) {
        self.ram.insert(key, Arc::clone(object));
        if self.disk.as_ref().is_some_and(|disk| disk.admit(key)) {
            self.offer_to_disk(key, object);
        }
    }

    /// Stores `object` in RAM only.
    pub fn insert_in_ram(&self, key: CacheKey, object: &Arc<Object>) {
        self.ram.insert(key, Arc::clone(object));
    }

    /// Writes `object` to disk unless it is there (or queued) already.
    pub fn offer_to_disk(&self, key: CacheKey, object: &Object) {
        let Some(disk) = &self.disk else {
            return;
        };
        if object.is_on_disk() || !object.claim_disk_write() {
            return;
        }
        // An object the disk cannot hold stays claimed, so hits do not ask again.
        if disk.can_hold(object) && !disk.write(key, object) {
            object.release_disk_write();
        }
    }

    /// Writes `object` to disk again if it is there (its headers or freshness changed), so
    /// that a restart finds it as it is now.
    pub fn rewrite_on_disk(&self, key: CacheKey, object: &Object) {
        if let (true, Some(disk)) = (object.is_on_disk(), &self.disk) {
            disk.write(key, object);
        }
    }

    /// Drops every variant of `key` from both tiers; returns whether there was one.
    pub fn remove(&self, key: CacheKey) -> bool {
        let in_ram = self.ram.remove(key);
        let on_disk = self.disk.as_ref().is_some_and(|disk| disk.remove(key));
        in_ram || on_disk
    }

    /// Drops `key` from the disk only.
    pub fn remove_from_disk(&self, key: CacheKey) {
        if let Some(disk) = &self.disk {
            disk.remove(key);
        }
    }

    /// Changes the RAM budget (on reload).
    pub fn resize(&self, memory: u64) {
        self.ram.resize(memory);
    }

    /// The RAM tier's counters.
    pub fn stats(&self) -> StoreStats {
        self.ram.stats()
    }

    /// Writes what is queued for the disk. Blocks.
    pub fn shutdown(&self) {
        if let Some(disk) = &self.disk {
            disk.shutdown();
        }
    }
}
