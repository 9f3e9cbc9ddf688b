//! The disk tier: objects persisted in cache directories, behind the RAM tier.
//!
//! Each directory (`volume`) is a ring of segment files written sequentially, and a key
//! always lives in the same directory (chosen by its hash). The `index` of what is where is
//! in memory and rebuilt from the segments at start. Objects reach the disk through the
//! admission filter ([`DiskStore::admit`]) and come back as complete [`Object`]s, read and
//! verified by the directory's reader threads. A directory whose disk fails is dropped, and the
//! node goes on with the others, RAM and the origin.

mod index;
mod record;
mod volume;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use bytes::Bytes;

pub use index::Location;
pub use record::variant_hash;
pub use volume::{ReadError, VolumeState};

use super::{Object, ObjectMeta};
use crate::cache::CacheKey;
use crate::config::{Admission, DiskConfig};
use record::RECORD_HEADER_LEN;
use volume::{Volume, WriteJob};

/// Counters of the disk tier.
#[derive(Default)]
pub(super) struct Counters {
    objects_written: AtomicU64,
    bytes_written: AtomicU64,
    writes_dropped: AtomicU64,
    evictions: AtomicU64,
    hits: AtomicU64,
    corrupt: AtomicU64,
    timeouts: AtomicU64,
}

pub use shoal_api::stats::{DirStats, DiskStats};

/// The disk tier.
pub struct DiskStore {
    shared: Arc<Shared>,
    doorkeeper: Mutex<Doorkeeper>,
    admission: Admission,
    max_object_size: u64,
    read_timeout: std::time::Duration,
    capacity: u64,
}

/// What the disk tier and its doctor thread share.
struct Shared {
    dirs: Vec<Dir>,
    index: Arc<index::Index>,
    counters: Arc<Counters>,
    io_threads: usize,
    /// Set by [`DiskStore::shutdown`]: failed directories are not tried again.
    stopping: AtomicBool,
}

/// A configured cache directory and the volume in use for it, which the doctor replaces when
/// one that failed can be opened again.
struct Dir {
    number: u8,
    path: std::path::PathBuf,
    size: u64,
    segment_size: u64,
    volume: ArcSwap<Volume>,
}

impl Dir {
    fn open(
        &self,
        shared_index: &Arc<index::Index>,
        counters: &Arc<Counters>,
        io: usize,
    ) -> Arc<Volume> {
        Volume::open(
            self.number,
            &self.path,
            self.size,
            self.segment_size,
            io,
            shared_index,
            counters,
        )
    }
}

/// The first wait before a failed directory is tried again, and the longest.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(300);
/// A directory back in use for this long has its next failure retried after `FIRST_RETRY`
/// again.
const STABLE: Duration = Duration::from_secs(600);

impl DiskStore {
    /// Opens every configured directory; those that cannot be used are logged and tried again
    /// later (with back-off), as are those whose disk fails while in use. The index is rebuilt
    /// in the background: until a directory is ready it is not used.
    pub fn open(config: &DiskConfig) -> DiskStore {
        let index = Arc::new(index::Index::default());
        let counters = Arc::new(Counters::default());
        let dirs = config
            .dirs
            .iter()
            .enumerate()
            .map(|(number, dir)| {
                let size = dir.size.bytes();
                let segment_size = config.segment_size_for(size);
                let volume = Volume::open(
                    number as u8,
                    &dir.path,
                    size,
                    segment_size,
                    config.io_threads,
                    &index,
                    &counters,
                );
                Dir {
                    number: number as u8,
                    path: dir.path.clone(),
                    size,
                    segment_size,
                    volume: ArcSwap::new(volume),
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            dirs,
            index,
            counters,
            io_threads: config.io_threads,
            stopping: AtomicBool::new(false),
        });
        let doctor = Arc::downgrade(&shared);
        if let Err(error) = std::thread::Builder::new()
            .name("shoal-disk-doctor".into())
            .spawn(move || retry_failed(&doctor))
        {
            tracing::error!(%error, "failed disk cache directories will not be tried again");
        }
        let capacity: u64 = config.dirs.iter().map(|dir| dir.size.bytes()).sum();
        DiskStore {
            shared,
            // Remember about as many keys as the disk holds objects of 32 KiB.
            doorkeeper: Mutex::new(Doorkeeper::new((capacity / (32 << 10)) as usize)),
            admission: config.admission,
            max_object_size: config.max_object_size.bytes(),
            read_timeout: config.read_timeout.duration(),
            capacity,
        }
    }

    fn volume_of(&self, key: CacheKey) -> arc_swap::Guard<Arc<Volume>> {
        let dirs = &self.shared.dirs;
        dirs[(key.0 % dirs.len() as u128) as usize].volume.load()
    }

    fn volume(&self, number: u8) -> arc_swap::Guard<Arc<Volume>> {
        self.shared.dirs[number as usize].volume.load()
    }

    /// Whether an object fetched for `key` should go to disk now. With `second-request`
    /// admission, the first request for a key is only remembered; the second is admitted.
    pub fn admit(&self, key: CacheKey) -> bool {
        match self.admission {
            Admission::Always => true,
            Admission::SecondRequest => self
                .doorkeeper
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .seen_before(key),
        }
    }

    /// Whether `object` can be written at all (complete and small enough).
    pub fn can_hold(&self, object: &Object) -> bool {
        object.state() == super::FillState::Complete && object.length() <= self.max_object_size
    }

    /// Queues `object` for writing as `key`'s variant. Returns false when it was not queued
    /// (not storable on disk, queue full, directory not in use).
    pub fn write(&self, key: CacheKey, object: &Object) -> bool {
        let Some(body) = object.complete_body().filter(|_| self.can_hold(object)) else {
            return false;
        };
        let meta = object.meta_full();
        let job = WriteJob {
            key,
            variant: record::variant_hash(&meta.variant),
            meta,
            body,
        };
        let queued = self.volume_of(key).write(job);
        if !queued {
            self.shared
                .counters
                .writes_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Where `key`'s variants are on disk (counting a disk hit), in directories in use.
    pub fn locate(&self, key: CacheKey) -> Vec<Location> {
        let mut locations = self.shared.index.locate(key);
        locations.retain(|location| self.volume(location.volume).state() == VolumeState::Ready);
        locations
    }

    /// Where `key`'s variants are on disk, without counting a disk hit (for the admin API).
    pub fn peek(&self, key: CacheKey) -> Vec<Location> {
        let mut locations = self.shared.index.peek(key);
        locations.retain(|location| self.volume(location.volume).state() == VolumeState::Ready);
        locations
    }

    /// Reads the object at `location`, verified. A record that fails its checksum is dropped
    /// from the index (and logged), so the object is fetched again; a read error disables the
    /// directory.
    pub async fn read(&self, key: CacheKey, location: Location) -> Result<Arc<Object>, ReadError> {
        let volume = self.volume(location.volume);
        let index = &self.shared.index;
        let counters = &self.shared.counters;
        let result = volume
            .read(key, location, self.read_timeout, index)
            .await
            .and_then(|record| decode_object(&record).ok_or(ReadError::Corrupt));
        match &result {
            Ok(_) => {
                counters.hits.fetch_add(1, Ordering::Relaxed);
            }
            Err(ReadError::Corrupt) => {
                counters.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    dir = %volume.path.display(),
                    segment = location.segment,
                    offset = location.offset,
                    "disk record failed its checksum; dropped, the object will be fetched again"
                );
                index.remove_location(key, &location);
            }
            Err(ReadError::Overwritten) => index.remove_location(key, &location),
            Err(ReadError::Io(error)) => {
                volume.fail(index, &format!("read failed: {error}"));
            }
            Err(ReadError::TimedOut) => {
                counters.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(dir = %volume.path.display(), "disk read timed out; fetching from the origin");
            }
            Err(ReadError::Busy | ReadError::Unavailable) => {}
        }
        result
    }

    /// Removes every variant of `key`, now and after a restart.
    pub fn remove(&self, key: CacheKey) -> bool {
        // The tombstone is queued before the index entry goes, so that a write of the key
        // already queued cannot put it back (see the writer's flush).
        self.volume_of(key).tombstone(key, &self.shared.index);
        self.shared.index.remove(key)
    }

    /// Whether every directory has finished rebuilding (or failed).
    pub fn is_ready(&self) -> bool {
        self.shared
            .dirs
            .iter()
            .all(|dir| dir.volume.load().state() != VolumeState::Rebuilding)
    }

    /// Writes what is queued and syncs; the store takes no more writes.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        for dir in &self.shared.dirs {
            dir.volume.load().shutdown();
        }
    }

    /// Counters and per-directory state.
    pub fn stats(&self) -> DiskStats {
        let counter = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.shared.counters;
        let dirs: Vec<DirStats> = self
            .shared
            .dirs
            .iter()
            .map(|dir| dir.volume.load_full())
            .map(|volume| DirStats {
                path: volume.path.display().to_string(),
                state: volume.state(),
                failure: volume.failure(),
                segments: volume.segments(),
                bytes: volume.bytes(),
                rebuild_millis: volume.rebuild_millis.load(Ordering::Relaxed),
            })
            .collect();
        DiskStats {
            entries: self.shared.index.len() as u64,
            bytes: dirs.iter().map(|dir| dir.bytes).sum(),
            capacity: self.capacity,
            objects_written: counter(&counters.objects_written),
            bytes_written: counter(&counters.bytes_written),
            writes_dropped: counter(&counters.writes_dropped),
            evictions: counter(&counters.evictions),
            hits: counter(&counters.hits),
            corrupt: counter(&counters.corrupt),
            read_timeouts: counter(&counters.timeouts),
            dirs,
        }
    }
}

/// The doctor: tries each failed directory again, after 1 s, then twice as long after every
/// failed try (at most 5 minutes), and puts it back in use when it opens (its index rebuilt
/// from what its segments hold). A disk that fills up, goes read-only or loses its directory
/// is used again once it is fixed, without a restart.
fn retry_failed(shared: &std::sync::Weak<Shared>) {
    let mut retries: Vec<Retry> = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        retries.resize_with(shared.dirs.len(), Retry::default);
        let now = Instant::now();
        for (dir, retry) in shared.dirs.iter().zip(&mut retries) {
            let volume = dir.volume.load_full();
            if volume.state() != VolumeState::Failed {
                if retry.ready_since.get_or_insert(now).elapsed() >= STABLE {
                    retry.wait = FIRST_RETRY;
                }
                continue;
            }
            retry.ready_since = None;
            let due = *retry.due.get_or_insert(now + retry.wait);
            if now < due {
                continue;
            }
            // The failed volume lets go of the directory's lock for the new one.
            volume.release();
            let fresh = dir.open(&shared.index, &shared.counters, shared.io_threads);
            retry.due = None;
            match fresh.state() {
                VolumeState::Failed => {
                    retry.wait = (retry.wait * 2).min(LAST_RETRY);
                    tracing::warn!(dir = %dir.path.display(), seconds = retry.wait.as_secs(), "disk cache directory still unusable; trying again later");
                }
                _ => {
                    tracing::info!(dir = %dir.path.display(), failure = volume.failure().unwrap_or_default(), "disk cache directory usable again; back in use once its index is rebuilt");
                    retry.wait = (retry.wait * 2).min(LAST_RETRY);
                    dir.volume.store(fresh);
                }
            }
        }
    }
}

/// When a failed directory is tried next.
struct Retry {
    wait: Duration,
    due: Option<Instant>,
    ready_since: Option<Instant>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            wait: FIRST_RETRY,
            due: None,
            ready_since: None,
        }
    }
}

/// Turns a verified record back into a complete object.
fn decode_object(record: &Bytes) -> Option<Arc<Object>> {
    let header = record::RecordHeader::parse(record)?;
    let meta_end = RECORD_HEADER_LEN + header.meta_len as usize;
    let meta: ObjectMeta = record::decode_meta(record.get(RECORD_HEADER_LEN..meta_end)?)?;
    let body = record.slice(meta_end..);
    // A whole object's declared length is its body's; a sliced object's head has no body.
    let consistent = match meta.slice_size {
        0 => meta
            .content_length
            .is_none_or(|length| length == body.len() as u64),
        _ => body.is_empty(),
    };
    if !consistent {
        return None;
    }
    let object = Object::complete(meta, body);
    object.set_on_disk();
    Some(object)
}

/// Remembers which keys were requested recently, for `second-request` admission: two
/// generations of a three-hash bit filter (a Bloom filter); when the current one has taken `capacity` keys, the
/// older is cleared and they swap. A key is "seen before" if either generation has it.
pub struct Doorkeeper {
    current: Vec<u64>,
    previous: Vec<u64>,
    inserted: usize,
    capacity: usize,
}

impl Doorkeeper {
    /// A filter remembering about `capacity` keys per generation.
    pub fn new(capacity: usize) -> Doorkeeper {
        let capacity = capacity.clamp(1 << 14, 1 << 24);
        // Twelve bits per key and three hashes: about one first request in a hundred per
        // generation is admitted by mistake.
        let words = capacity * 12 / 64;
        Doorkeeper {
            current: vec![0; words],
            previous: vec![0; words],
            inserted: 0,
            capacity,
        }
    }

    fn bits(&self, key: CacheKey) -> [usize; 3] {
        let bits = (self.current.len() * 64) as u64;
        let (low, high) = (key.0 as u64, (key.0 >> 64) as u64);
        [low, high, low.wrapping_add(high.rotate_left(21))].map(|hash| (hash % bits) as usize)
    }

    /// Whether `key` was seen recently; remembers it either way.
    pub fn seen_before(&mut self, key: CacheKey) -> bool {
        let bits = self.bits(key);
        let has = |filter: &[u64]| {
            bits.iter()
                .all(|&bit| filter[bit / 64] & (1 << (bit % 64)) != 0)
        };
        if has(&self.current) {
            return true;
        }
        let seen = has(&self.previous);
        for bit in bits {
            self.current[bit / 64] |= 1 << (bit % 64);
        }
        self.inserted += 1;
        if self.inserted >= self.capacity {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.fill(0);
            self.inserted = 0;
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys as the cache makes them: 128-bit hashes.
    fn key(n: u64) -> CacheKey {
        CacheKey(xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes()))
    }

    #[test]
    fn the_doorkeeper_admits_the_second_request() {
        let mut doorkeeper = Doorkeeper::new(1 << 14);
        assert!(!doorkeeper.seen_before(key(0)));
        assert!(doorkeeper.seen_before(key(0)));
        // It is remembered across one rotation.
        for other in 1..=(1 << 14) {
            doorkeeper.seen_before(key(other));
        }
        assert!(doorkeeper.seen_before(key(0)));
        let false_positives = (1_000_000..1_010_000)
            .filter(|&n| doorkeeper.seen_before(key(n)))
            .count();
        assert!(
            false_positives < 300,
            "{false_positives} false positives in 10,000"
        );
    }
}
