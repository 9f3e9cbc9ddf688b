//! Where bytes live. A tier maps a [`CacheKey`] to the variants of one URL, each an [`Object`]
//! with a body of refcounted chunks. The RAM tier ([`MemoryStore`], an [`Entry`] per URL) is in
//! front; the disk tier ([`DiskStore`]) behind it persists objects across restarts and holds
//! more than RAM can; [`Tiers`] owns both and the policy between them, and is what the pipeline
//! asks. This module knows nothing of HTTP caching rules (that is `cache`) nor of sockets (that
//! is `proxy` and `upstream`).

pub mod disk;
mod eviction;
mod fields;
mod memory;
mod object;
mod tiers;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use smallvec::SmallVec;

pub use disk::DiskStore;
pub use eviction::{touch, Evicted, Resident, S3Fifo};
pub use fields::Fields;
pub use memory::MemoryStore;
pub use object::{BodyReader, FillState, Object, ObjectMeta, ReaderMark, Truncated};
pub use tiers::{Found, Tiers};

use crate::cache::CacheKey;

/// Most variants kept per URL; the oldest is dropped beyond this.
pub const MAX_VARIANTS: usize = 16;

/// The variants of one URL, newest first; most URLs have one, held inline.
pub type Variants = SmallVec<[Arc<Object>; 1]>;

/// The stored variants of one URL, newest first. Immutable: adding a variant replaces the entry.
#[derive(Debug)]
pub struct Entry {
    /// The URL's key.
    pub key: CacheKey,
    /// Its variants, newest first.
    pub variants: Variants,
    weight: u64,
    frequency: AtomicU8,
    gone: AtomicBool,
}

impl Entry {
    /// An entry holding `variants`.
    pub fn new(key: CacheKey, variants: Variants) -> Entry {
        let weight = variants.iter().map(|object| object.weight()).sum();
        Entry {
            key,
            variants,
            weight,
            frequency: AtomicU8::new(0),
            gone: AtomicBool::new(false),
        }
    }

    /// Marks the entry and its objects as out of the cache.
    fn retire(&self, keep: &[Arc<Object>]) {
        self.gone.store(true, Ordering::Release);
        for object in &self.variants {
            if !keep.iter().any(|kept| Arc::ptr_eq(kept, object)) {
                object.mark_removed();
            }
        }
    }
}

impl Resident for Entry {
    fn weight(&self) -> u64 {
        self.weight
    }
    fn frequency(&self) -> &AtomicU8 {
        &self.frequency
    }
    fn id(&self) -> u64 {
        self.key.0 as u64
    }
    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }
}

pub use shoal_api::stats::StoreStats;
