//! The disk tier's index, in memory: for each key, where its variants' records are. It is
//! rebuilt from the segments at start and never written out itself.
//!
//! An entry costs about 56 bytes: the 16-byte key, a 32-byte slot (one [`Location`] inline;
//! several variants move to a vector of their own) and the hash table's control byte and spare
//! capacity. A million objects take about 56 MB.

use std::sync::Mutex;

use super::record::{Kind, SummaryEntry};
use crate::cache::{CacheKey, KeyMap};

const SHARDS: usize = 64;

/// Where one variant's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Hash of the variant's request values.
    pub variant: u64,
    /// Offset of the record in its segment.
    pub offset: u32,
    /// Length of the record.
    pub length: u32,
    /// Segment number in the directory.
    pub segment: u16,
    /// Directory number.
    pub volume: u8,
    /// Disk hits since it was written (saturating), for promotion to RAM.
    pub hits: u8,
}

impl Location {
    fn same_record(&self, other: &Location) -> bool {
        self.volume == other.volume && self.segment == other.segment && self.offset == other.offset
    }
}

/// The variants of one key: almost always one.
#[derive(Debug)]
enum Slot {
    One(Location),
    Many(Vec<Location>),
}

impl Slot {
    fn locations(&self) -> &[Location] {
        match self {
            Slot::One(location) => std::slice::from_ref(location),
            Slot::Many(locations) => locations,
        }
    }

    fn locations_mut(&mut self) -> &mut [Location] {
        match self {
            Slot::One(location) => std::slice::from_mut(location),
            Slot::Many(locations) => locations,
        }
    }

    /// Keeps the locations `keep` accepts; false when none is left.
    fn retain(&mut self, keep: impl Fn(&Location) -> bool) -> bool {
        match self {
            Slot::One(location) => keep(location),
            Slot::Many(locations) => {
                locations.retain(|location| keep(location));
                match locations.len() {
                    0 => false,
                    1 => {
                        *self = Slot::One(locations[0]);
                        true
                    }
                    _ => true,
                }
            }
        }
    }
}

/// Key to locations, in shards so that lookups on different keys do not contend.
pub struct Index {
    shards: Vec<Mutex<KeyMap<Slot>>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| Mutex::new(KeyMap::default())).collect(),
        }
    }
}

impl Index {
    fn shard(&self, key: CacheKey) -> std::sync::MutexGuard<'_, KeyMap<Slot>> {
        self.shards[(key.0 >> 64) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a record written (or found at start) in `segment` of `volume`: an object
    /// replaces the same variant's previous record; a tombstone removes the key's records in
    /// that volume.
    pub fn apply(&self, volume: u8, segment: u16, entry: &SummaryEntry) {
        let mut shard = self.shard(entry.key);
        match entry.kind {
            Kind::Object => {
                let location = Location {
                    variant: entry.variant,
                    offset: entry.offset,
                    length: entry.length,
                    segment,
                    volume,
                    hits: 0,
                };
                match shard.get_mut(&entry.key) {
                    None => {
                        shard.insert(entry.key, Slot::One(location));
                    }
                    Some(slot) => {
                        let mut others: Vec<Location> = slot
                            .locations()
                            .iter()
                            .filter(|other| other.variant != entry.variant)
                            .copied()
                            .collect();
                        *slot = if others.is_empty() {
                            Slot::One(location)
                        } else {
                            others.insert(0, location);
                            others.truncate(crate::store::MAX_VARIANTS);
                            Slot::Many(others)
                        };
                    }
                }
            }
            Kind::Tombstone => {
                let emptied = shard
                    .get_mut(&entry.key)
                    .is_some_and(|slot| !slot.retain(|location| location.volume != volume));
                if emptied {
                    shard.remove(&entry.key);
                }
            }
        }
    }

    /// The key's locations, counting a disk hit on each.
    pub fn locate(&self, key: CacheKey) -> Vec<Location> {
        let mut shard = self.shard(key);
        let Some(slot) = shard.get_mut(&key) else {
            return Vec::new();
        };
        for location in slot.locations_mut() {
            location.hits = location.hits.saturating_add(1);
        }
        slot.locations().to_vec()
    }

    /// The key's locations, without counting a hit.
    pub fn peek(&self, key: CacheKey) -> Vec<Location> {
        self.shard(key)
            .get(&key)
            .map_or_else(Vec::new, |slot| slot.locations().to_vec())
    }

    /// Removes every variant of `key`; returns whether there was one.
    pub fn remove(&self, key: CacheKey) -> bool {
        self.shard(key).remove(&key).is_some()
    }

    /// Removes one record's location (found corrupt or overwritten), if still indexed.
    pub fn remove_location(&self, key: CacheKey, location: &Location) {
        let mut shard = self.shard(key);
        let emptied = shard
            .get_mut(&key)
            .is_some_and(|slot| !slot.retain(|other| !other.same_record(location)));
        if emptied {
            shard.remove(&key);
        }
    }

    /// Forgets the records of a segment about to be reused; returns how many there were.
    pub fn remove_segment(&self, volume: u8, segment: u16) -> usize {
        self.remove_where(|location| location.volume == volume && location.segment == segment)
    }

    /// Forgets everything in a volume.
    pub fn remove_volume(&self, volume: u8) -> usize {
        self.remove_where(|location| location.volume == volume)
    }

    fn remove_where(&self, doomed: impl Fn(&Location) -> bool) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            shard.retain(|_, slot| {
                let before = slot.locations().len();
                let keep = slot.retain(|location| !doomed(location));
                removed += before - if keep { slot.locations().len() } else { 0 };
                keep
            });
        }
        removed
    }

    /// Keys with at least one record in `volume`.
    pub fn count_volume(&self, volume: u8) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                shard
                    .values()
                    .filter(|slot| slot.locations().iter().any(|l| l.volume == volume))
                    .count()
            })
            .sum()
    }

    /// Keys indexed.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: u128, variant: u64, offset: u32) -> SummaryEntry {
        SummaryEntry {
            kind: Kind::Object,
            key: CacheKey(key),
            variant,
            offset,
            length: 100,
        }
    }

    #[test]
    fn a_variant_replaces_its_previous_record_and_keeps_the_others() {
        let index = Index::default();
        index.apply(0, 1, &object(7, 0, 4096));
        index.apply(0, 2, &object(7, 0, 8192));
        assert_eq!(index.locate(CacheKey(7)).len(), 1);
        assert_eq!(index.locate(CacheKey(7))[0].segment, 2);
        index.apply(0, 2, &object(7, 5, 9000));
        let locations = index.locate(CacheKey(7));
        assert_eq!(locations.len(), 2);
        assert_eq!(locations[0].variant, 5);
    }

    #[test]
    fn tombstones_and_segment_reuse_remove_records() {
        let index = Index::default();
        index.apply(0, 1, &object(1, 0, 4096));
        index.apply(0, 1, &object(2, 0, 4196));
        index.apply(0, 2, &object(3, 0, 4096));
        index.apply(1, 1, &object(4, 0, 4096));
        assert_eq!(index.remove_segment(0, 1), 2);
        assert!(index.locate(CacheKey(1)).is_empty());
        assert_eq!(index.len(), 2);
        index.apply(
            0,
            3,
            &SummaryEntry {
                kind: Kind::Tombstone,
                ..object(3, 0, 0)
            },
        );
        assert!(index.locate(CacheKey(3)).is_empty());
        assert_eq!(index.count_volume(1), 1);
        assert_eq!(index.remove_volume(1), 1);
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn lookups_count_hits() {
        let index = Index::default();
        index.apply(0, 1, &object(1, 0, 4096));
        assert_eq!(index.locate(CacheKey(1))[0].hits, 1);
        assert_eq!(index.locate(CacheKey(1))[0].hits, 2);
    }

    #[test]
    fn a_location_is_small() {
        assert!(std::mem::size_of::<Location>() <= 24);
        assert!(std::mem::size_of::<Slot>() <= 32);
    }
}
