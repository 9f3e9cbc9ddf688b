//! A cached object: metadata plus a body of refcounted chunks that may still be growing.
//!
//! The origin fetch writes into the body ([`Object::append`], [`Object::finish`],
//! [`Object::abort`]); any number of [`BodyReader`]s read it at their own pace, waiting when they
//! catch up with the writer. The writer never waits for readers, so the fetch runs at the speed
//! of the origin (and the fastest client), never the slowest one. Readers hold `Bytes` handles to
//! the same chunks: nothing is copied per client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use smallvec::SmallVec;
use tokio::sync::Notify;

use super::Fields;
use crate::cache::policy::{Freshness, Timing};

/// Everything about a stored response except its body.
#[derive(Clone, Debug)]
pub struct ObjectMeta {
    /// The URL the object was stored under, for the admin API and logs.
    pub url: String,
    /// Status of the stored response.
    pub status: StatusCode,
    /// Stored response header fields: end-to-end fields only, without `Age` and framing
    /// fields.
    pub fields: Fields,
    /// For each field named in `Vary`, the request's normalized value when it was stored.
    pub variant: Vec<(String, Option<String>)>,
    /// When and how the response was received.
    pub timing: Timing,
    /// Freshness lifetime and stale allowances.
    pub freshness: Freshness,
    /// The body length the origin declared, known before the body is complete. For a sliced
    /// object, the whole object's length.
    pub content_length: Option<u64>,
    /// Non-zero for the head of a sliced object: its body is not in this object but in slices
    /// of this many bytes, each stored under its own key (see `CacheKey::slice`).
    pub slice_size: u32,
    /// For the head of a sliced object: when it was first stored (its response time, Unix
    /// milliseconds). Its slices are those stored since: a purged, evicted or replaced head
    /// never uses the slices of its predecessor, which share their keys (see
    /// `CacheKey::slice`).
    pub slices_since: u64,
}

/// How the body's fill ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillState {
    /// The origin is still sending.
    Filling,
    /// The whole body is here.
    Complete,
    /// The fetch failed part-way; the body is truncated and must not be served to new readers.
    Aborted,
}

struct Body {
    /// Where appended bytes are copied; frozen pieces of it become chunks.
    staging: BytesMut,
    /// Bytes allocated for the body, for the RAM budget.
    allocated: u64,
    /// The body's pieces, each with the offset of its first byte (for range reads).
    /// Most bodies are one piece, held inline rather than in an allocation of its own.
    chunks: SmallVec<[(u64, Bytes); 1]>,
    /// Bytes before this offset were dropped after every reader had them (pass-through).
    released: u64,
    /// The readers that attached while the body was filling, for [`Object::release_read`]
    /// and [`Object::readers_left`] (and the watchers of [`Object::watch`]).
    readers: Vec<Weak<ReaderSlot>>,
    /// Whether any reader or watcher ever attached.
    had_readers: bool,
    length: u64,
    state: FillState,
}

/// A stored (or filling) response.
pub struct Object {
    meta: ArcSwap<ObjectMeta>,
    body: RwLock<Body>,
    /// Wakes the readers waiting for the body to change. Inline, where a channel would be an
    /// allocation of its own per stored object.
    progress: Notify,
    /// Set when the object leaves the cache (evicted, purged, replaced).
    removed: AtomicBool,
    /// Set once the object is on disk or queued for it, so it is written once.
    on_disk: AtomicBool,
    /// Bans made up to this time no longer concern it: those before it arrived, and those it
    /// was tested against (see `cache::ban`).
    ban_tested: AtomicU64,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("url", &self.meta.load().url)
            .field("length", &self.length())
            .field("state", &self.state())
            .finish()
    }
}

/// A reader found the body cut short: the fetch that filled it failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the origin response was cut short")]
pub struct Truncated;

impl Object {
    /// A new, empty object in the filling state.
    pub fn filling(meta: ObjectMeta) -> Arc<Object> {
        // Bans made before the response arrived are the only ones that can cover it.
        let stored = meta.timing.response_time;
        Arc::new(Object {
            meta: ArcSwap::from_pointee(meta),
            body: RwLock::new(Body {
                staging: BytesMut::new(),
                allocated: 0,
                chunks: SmallVec::new(),
                released: 0,
                readers: Vec::new(),
                had_readers: false,
                length: 0,
                state: FillState::Filling,
            }),
            progress: Notify::new(),
            removed: AtomicBool::new(false),
            on_disk: AtomicBool::new(false),
            ban_tested: AtomicU64::new(stored),
        })
    }

    /// The time up to which bans have been tested against the object (its arrival at first).
    pub fn ban_tested(&self) -> u64 {
        self.ban_tested.load(Ordering::Relaxed)
    }

    /// Records that the object passed the bans up to `time`.
    pub fn set_ban_tested(&self, time: u64) {
        self.ban_tested.store(time, Ordering::Relaxed);
    }

    /// A complete object with `body` (read back from disk).
    pub fn complete(meta: ObjectMeta, body: Bytes) -> Arc<Object> {
        let length = body.len() as u64;
        let object = Object::filling(meta);
        {
            let mut state = object.write_body();
            state.allocated = length;
            state.length = length;
            if !body.is_empty() {
                state.chunks.push((0, body));
            }
            state.state = FillState::Complete;
        }
        object
    }

    /// The whole body's chunks, if it is complete (handles, not copies).
    pub fn complete_body(&self) -> Option<Vec<Bytes>> {
        let body = self.read_body();
        (body.state == FillState::Complete && body.released == 0)
            .then(|| body.chunks.iter().map(|(_, chunk)| chunk.clone()).collect())
    }

    /// Claims the object's write to disk: true for the first caller only.
    pub fn claim_disk_write(&self) -> bool {
        !self.on_disk.swap(true, Ordering::AcqRel)
    }

    /// Gives up a claimed write that could not be queued, so a later request can try again.
    pub fn release_disk_write(&self) {
        self.on_disk.store(false, Ordering::Release);
    }

    /// Marks the object as already on disk.
    pub fn set_on_disk(&self) {
        self.on_disk.store(true, Ordering::Release);
    }

    /// Whether the object is on disk or queued for it.
    pub fn is_on_disk(&self) -> bool {
        self.on_disk.load(Ordering::Acquire)
    }

    /// Current metadata (it changes when a revalidation refreshes the headers).
    pub fn meta(&self) -> arc_swap::Guard<Arc<ObjectMeta>> {
        self.meta.load()
    }

    /// Current metadata as an owned handle.
    pub fn meta_full(&self) -> Arc<ObjectMeta> {
        self.meta.load_full()
    }

    /// Replaces the metadata, after a `304 Not Modified` refreshed it.
    pub fn set_meta(&self, meta: ObjectMeta) {
        self.meta.store(Arc::new(meta));
    }

    /// Bytes of body received so far.
    pub fn length(&self) -> u64 {
        self.read_body().length
    }

    /// Pieces the body is held in.
    pub fn chunk_count(&self) -> usize {
        self.read_body().chunks.len()
    }

    /// Whether the body is still filling, complete or aborted.
    pub fn state(&self) -> FillState {
        self.read_body().state
    }

    /// Memory held by the object, for the RAM budget: the body's allocations plus an estimate
    /// of the metadata.
    pub fn weight(&self) -> u64 {
        let meta = self.meta.load();
        let variant: usize = meta
            .variant
            .iter()
            .map(|(name, value)| name.len() + value.as_ref().map_or(0, String::len) + 48)
            .sum();
        // The object's fixed cost (its Arcs, lock, map slots, allocator headers and rounding),
        // measured: about 900 bytes per object beyond its bytes (RSS over entries, a cache
        // full of 1 KiB objects).
        let structures = 896;
        self.read_body().allocated
            + (meta.fields.byte_len() + meta.url.len() + variant + structures) as u64
    }

    /// Copies the next piece of the body into the object's own buffers and wakes the readers.
    /// Copying (once, as it arrives) keeps the stored body in allocations sized for it, instead
    /// of pinning the network read buffers the piece was cut from. `expected` is the whole
    /// body's declared length, when known, which sizes the buffers exactly.
    pub fn append(&self, mut data: &[u8], expected: Option<u64>) {
        if data.is_empty() {
            return;
        }
        {
            let mut body = self.write_body();
            while !data.is_empty() {
                let spare = body.staging.capacity() - body.staging.len();
                if spare == 0 {
                    let capacity = next_buffer_size(body.length, expected, data.len());
                    body.staging = BytesMut::with_capacity(capacity);
                    body.allocated += capacity as u64;
                    continue;
                }
                let take = spare.min(data.len());
                body.staging.extend_from_slice(&data[..take]);
                data = &data[take..];
                let chunk = body.staging.split().freeze();
                let offset = body.length;
                body.length += chunk.len() as u64;
                body.chunks.push((offset, chunk));
            }
        }
        self.progress.notify_waiters();
    }

    /// Marks the body complete.
    pub fn finish(&self) {
        self.end(FillState::Complete);
    }

    /// Marks the body truncated: readers past the received bytes get [`Truncated`].
    pub fn abort(&self) {
        self.end(FillState::Aborted);
    }

    fn end(&self, state: FillState) {
        {
            let mut body = self.write_body();
            if body.state == FillState::Filling {
                body.state = state;
                body.chunks.shrink_to_fit();
                // Drop the handle on the last buffer's unused tail; the chunks keep what is used.
                body.staging = BytesMut::new();
                // Readers are tracked for `release_read`, which only runs while the body fills.
                body.readers = Vec::new();
            }
        }
        self.progress.notify_waiters();
    }

    /// Marks the object as no longer in the cache.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// Whether the object has left the cache.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Waits until the body is complete or aborted, returning the final state.
    pub async fn wait_end(&self) -> FillState {
        loop {
            // Registered before looking, so that a change made in between still wakes it.
            let mut changed = std::pin::pin!(self.progress.notified());
            changed.as_mut().enable();
            let state = self.state();
            if state != FillState::Filling {
                return state;
            }
            changed.await;
        }
    }

    /// A reader of bytes `[start, end)` of the body (`end` = `None` for everything).
    pub fn reader(self: &Arc<Self>, start: u64, end: Option<u64>) -> BodyReader {
        // Readers of a filling body are tracked, in case it turns out too large to keep and must
        // be passed through in bounded memory; readers of complete bodies cost nothing extra.
        let slot = (self.state() == FillState::Filling).then(|| {
            let slot = Arc::new(ReaderSlot {
                position: AtomicU64::new(start),
                shed: AtomicBool::new(false),
            });
            self.track(&slot);
            slot
        });
        BodyReader {
            object: Arc::clone(self),
            position: start,
            end: end.unwrap_or(u64::MAX),
            slot,
        }
    }

    fn track(&self, slot: &Arc<ReaderSlot>) {
        let mut body = self.write_body();
        body.readers.retain(|reader| reader.strong_count() > 0);
        body.readers.push(Arc::downgrade(slot));
        body.had_readers = true;
    }

    /// Counts the holder of the returned mark as a reader of the object until the mark is
    /// dropped: for the readers of a sliced object, who read its slices, not its head.
    pub fn watch(&self) -> ReaderMark {
        let slot = Arc::new(ReaderSlot {
            position: AtomicU64::new(0),
            shed: AtomicBool::new(false),
        });
        self.track(&slot);
        ReaderMark { _slot: slot }
    }

    /// Whether the object had readers and every one has left (or was cut off): a fill that
    /// goes on now does so for nobody in particular.
    pub fn readers_left(&self) -> bool {
        let body = self.read_body();
        body.had_readers
            && !body
                .readers
                .iter()
                .filter_map(Weak::upgrade)
                .any(|slot| !slot.shed.load(Ordering::Acquire))
    }

    /// For a body passed through without being stored: drops the chunks every reader has
    /// read, and cuts off readers more than `window` bytes behind the writer, so that memory
    /// stays bounded while the fetch runs at the speed of the fastest reader. Returns whether
    /// anyone still holds the object (when nobody does, the fetch can stop).
    pub fn release_read(self: &Arc<Self>, window: u64) -> bool {
        let mut shed_any = false;
        {
            let mut body = self.write_body();
            let frontier = body.length;
            let mut lowest = frontier;
            body.readers.retain(|reader| reader.strong_count() > 0);
            for slot in body.readers.iter().filter_map(Weak::upgrade) {
                if slot.shed.load(Ordering::Acquire) {
                    continue;
                }
                let position = slot.position.load(Ordering::Acquire);
                if frontier.saturating_sub(position) > window {
                    slot.shed.store(true, Ordering::Release);
                    shed_any = true;
                    continue;
                }
                lowest = lowest.min(position);
            }
            let read_by_all = body
                .chunks
                .iter()
                .take_while(|(offset, chunk)| offset + chunk.len() as u64 <= lowest)
                .count();
            if let Some(last) = read_by_all.checked_sub(1) {
                let (offset, chunk) = &body.chunks[last];
                body.released = offset + chunk.len() as u64;
                body.chunks.drain(..read_by_all);
            }
        }
        if shed_any {
            self.progress.notify_waiters();
        }
        Arc::strong_count(self) > 1
    }

    fn read_body(&self) -> std::sync::RwLockReadGuard<'_, Body> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is plain
        // values that are always consistent between statements.
        self.body
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_body(&self) -> std::sync::RwLockWriteGuard<'_, Body> {
        self.body
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Largest buffer a body is copied into; large objects are a list of these.
const MAX_BUFFER: usize = 256 * 1024;

/// Size of the next body buffer: the rest of a declared body (up to `MAX_BUFFER`), or for bodies
/// of unknown length, double what arrives, between 4 KiB and 64 KiB.
fn next_buffer_size(received: u64, expected: Option<u64>, incoming: usize) -> usize {
    match expected {
        Some(total) if total > received => (total - received).min(MAX_BUFFER as u64) as usize,
        _ => (incoming * 2).clamp(4096, 64 * 1024),
    }
}

/// Counts as a reader of an object while held (`Object::watch`).
pub struct ReaderMark {
    _slot: Arc<ReaderSlot>,
}

/// A reader's progress, visible to the writer of a pass-through body.
struct ReaderSlot {
    position: AtomicU64,
    /// Set when the reader fell too far behind and was cut off.
    shed: AtomicBool,
}

/// The part of the chunk holding `position`, cut at `end`.
fn slice_at(body: &Body, position: u64, end: u64) -> Option<Bytes> {
    let index = match body
        .chunks
        .binary_search_by_key(&position, |(offset, _)| *offset)
    {
        Ok(index) => index,
        Err(0) => return None,
        Err(index) => index - 1,
    };
    let (offset, chunk) = &body.chunks[index];
    let from = (position - offset) as usize;
    let to = (end.min(offset + chunk.len() as u64) - offset) as usize;
    (from < to).then(|| chunk.slice(from..to))
}

/// Reads a byte range of an object's body, waiting for the fetch when it gets ahead of it.
pub struct BodyReader {
    object: Arc<Object>,
    position: u64,
    end: u64,
    slot: Option<Arc<ReaderSlot>>,
}

impl BodyReader {
    fn advance(&mut self, length: usize) {
        self.position += length as u64;
        if let Some(slot) = &self.slot {
            slot.position.store(self.position, Ordering::Release);
        }
    }

    fn is_cut_off(&self, body: &Body) -> bool {
        self.position < body.released
            || self
                .slot
                .as_ref()
                .is_some_and(|slot| slot.shed.load(Ordering::Acquire))
    }

    /// The next piece of the body; `Ok(None)` at the end of the range or body.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Truncated> {
        if let Some(ready) = self.take_ready() {
            return ready;
        }
        let object = Arc::clone(&self.object);
        loop {
            // Registered before looking again, so that an append made in between still wakes it.
            let mut changed = std::pin::pin!(object.progress.notified());
            changed.as_mut().enable();
            if let Some(ready) = self.take_ready() {
                return ready;
            }
            changed.await;
        }
    }

    /// What the reader can have now: the next piece, the end, or a truncation. `None` when it
    /// has caught up with a body that is still filling.
    fn take_ready(&mut self) -> Option<Result<Option<Bytes>, Truncated>> {
        if self.position >= self.end {
            return Some(Ok(None));
        }
        let body = self.object.read_body();
        if self.is_cut_off(&body) {
            return Some(Err(Truncated));
        }
        if self.position < body.length {
            if let Some(chunk) = slice_at(&body, self.position, self.end) {
                drop(body);
                self.advance(chunk.len());
                return Some(Ok(Some(chunk)));
            }
        }
        match body.state {
            FillState::Complete => Some(Ok(None)),
            FillState::Aborted => Some(Err(Truncated)),
            FillState::Filling => None,
        }
    }

    /// Appends the chunks that are already here, up to about `budget` bytes, without waiting.
    pub fn ready_chunks(&mut self, out: &mut Vec<Bytes>, budget: u64) {
        let object = Arc::clone(&self.object);
        let body = object.read_body();
        if self.is_cut_off(&body) {
            return;
        }
        let mut taken = 0;
        while taken < budget && self.position < self.end.min(body.length) {
            let Some(chunk) = slice_at(&body, self.position, self.end) else {
                break;
            };
            taken += chunk.len() as u64;
            self.advance(chunk.len());
            out.push(chunk);
        }
    }
}

#[cfg(test)]
impl ObjectMeta {
    /// A plain 200 without header fields, stale at once (lifetime 0), for tests.
    pub(crate) fn for_tests() -> ObjectMeta {
        let freshness = Freshness {
            lifetime: 0,
            stale_while_revalidate: 0,
            stale_if_error: 0,
            always_revalidate: false,
            forbids_stale: false,
        };
        ObjectMeta {
            url: "http://test/".into(),
            status: StatusCode::OK,
            fields: Fields::default(),
            variant: Vec::new(),
            timing: Timing {
                request_time: 0,
                response_time: 0,
                date: 0,
                age: 0,
            },
            freshness,
            content_length: None,
            slice_size: 0,
            slices_since: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(mut reader: BodyReader) -> Result<Vec<u8>, Truncated> {
        let mut out = Vec::new();
        while let Some(chunk) = reader.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn readers_follow_a_growing_body() {
        let object = Object::filling(ObjectMeta::for_tests());
        let reader = tokio::spawn(read_all(object.reader(0, None)));
        let ranged = tokio::spawn(read_all(object.reader(3, Some(7))));
        for part in [&b"abcd"[..], b"efgh", b"ij"] {
            tokio::task::yield_now().await;
            object.append(part, None);
        }
        object.finish();
        assert_eq!(reader.await.unwrap().unwrap(), b"abcdefghij");
        assert_eq!(ranged.await.unwrap().unwrap(), b"defg");
        // A reader that starts after completion gets the bytes without waiting.
        assert_eq!(
            read_all(object.reader(2, Some(9))).await.unwrap(),
            b"cdefghi"
        );
    }

    #[tokio::test]
    async fn pass_through_drops_what_was_read_and_cuts_off_laggards() {
        let object = Object::filling(ObjectMeta::for_tests());
        let mut fast = object.reader(0, None);
        let mut slow = object.reader(0, None);
        for _ in 0..4 {
            object.append(&[b'x'; 100], None);
            assert!(fast.next_chunk().await.unwrap().is_some());
            assert!(object.release_read(250));
        }
        // The slow reader fell 400 bytes behind, more than the window: it is cut off, and what
        // the fast one has read is gone.
        assert!(slow.next_chunk().await.is_err());
        assert_eq!(object.read_body().chunks.len(), 0);
        drop((fast, slow));
        assert!(!object.release_read(250), "nobody holds it any more");
    }

    #[tokio::test]
    async fn the_end_of_a_fill_wakes_its_waiters_and_leaves_a_compact_object() {
        let object = Object::filling(ObjectMeta::for_tests());
        let waiter = tokio::spawn({
            let object = Arc::clone(&object);
            async move { object.wait_end().await }
        });
        let reader = tokio::spawn(read_all(object.reader(0, None)));
        tokio::task::yield_now().await;
        object.append(&[b'x'; 1024], Some(1024));
        // Both take what the append brought and wait again: only the end can wake them now.
        tokio::task::yield_now().await;
        object.finish();
        // Bounded, so that a lost wake-up fails the test instead of hanging it.
        let within = std::time::Duration::from_secs(10);
        let state = tokio::time::timeout(within, waiter).await;
        assert_eq!(
            state.expect("the waiter was woken").unwrap(),
            FillState::Complete
        );
        let read = tokio::time::timeout(within, reader).await;
        assert_eq!(
            read.expect("the reader was woken").unwrap().unwrap().len(),
            1024
        );
        let body = object.read_body();
        // A body that came in one piece is one chunk, held inline; the readers tracked while
        // it filled are let go.
        assert_eq!(body.chunks.len(), 1);
        assert!(!body.chunks.spilled());
        assert!(body.readers.is_empty());
        assert_eq!(body.allocated, 1024);
    }

    #[tokio::test]
    async fn an_aborted_body_reports_truncation() {
        let object = Object::filling(ObjectMeta::for_tests());
        object.append(b"abc", None);
        let reader = tokio::spawn(read_all(object.reader(0, None)));
        tokio::task::yield_now().await;
        object.abort();
        assert!(reader.await.unwrap().is_err());
        // A later reader also ends in truncation, never in a short body that looks whole.
        assert!(read_all(object.reader(0, None)).await.is_err());
    }
}
