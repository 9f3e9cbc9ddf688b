//! Sliced objects: a large object is cached as a *head* (its metadata, with `slice_size` set)
//! under the URL's key and its body as slices of `cache.slice_size` bytes, each an ordinary
//! object under its own key (`CacheKey::slice`: URL key, variant, version, index). Slices are
//! stored, evicted, written to disk and collapsed like any object, so:
//!
//! - a range request fetches from the origin only the slices it touches, with `Range`
//!   requests, and a full request assembles the object from slices, fetching what is missing;
//! - a very large object streams through slice by slice and is never held in memory whole;
//! - slices of different versions of an object never mix: the version (a hash of the strong
//!   `ETag`, or of `Last-Modified`) is part of their key, and a slice fetched from the origin
//!   whose validator no longer matches the head invalidates the head.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, DATE, ETAG, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::{BodyError, Counter, Proxy};
use super::{FlightGuard, FlightOutcome, Role};
use crate::cache::policy;
use crate::cache::CacheKey;
use crate::store::disk::variant_hash;
use crate::store::{BodyReader, Fields, Object, ObjectMeta, ReaderMark};
use crate::upstream::{OriginBody, RequestBody};

/// How long a node that found an object changed makes its next fetch of it ask the upstream
/// to revalidate.
const CHANGED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// The version of a response for slicing: a hash of its strong `ETag`, or of a strong
/// `Last-Modified` (at least a minute older than `Date`, RFC 9110 §8.8.2.2). `None` when the
/// response has neither, and its slices could not be told apart from another version's.
pub(super) fn version(headers: &HeaderMap) -> Option<u64> {
    version_of(|name| headers.get(name).cloned())
}

/// [`version`] of a stored response.
fn stored_version(fields: &Fields) -> Option<u64> {
    version_of(|name| fields.get(name))
}

fn version_of(field: impl Fn(&HeaderName) -> Option<HeaderValue>) -> Option<u64> {
    if let Some(etag) = field(&ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            return Some(xxhash_rust::xxh3::xxh3_64(etag.as_bytes()));
        }
    }
    let last_modified = field(&LAST_MODIFIED)?;
    let modified = policy::http_date_value(&last_modified)?;
    let date = field(&DATE)
        .and_then(|date| policy::http_date_value(&date))
        .unwrap_or_else(super::now_millis);
    (date >= modified + 60_000)
        .then(|| xxhash_rust::xxh3::xxh3_64_with_seed(last_modified.as_bytes(), 1))
}

/// Whether a stored response should be sliced: a whole 200 larger than one slice, with a
/// version.
pub(super) fn sliceable(
    status: StatusCode,
    headers: &HeaderMap,
    length: Option<u64>,
    slice_size: u64,
) -> bool {
    status == StatusCode::OK
        && length.is_some_and(|length| length > slice_size)
        && version(headers).is_some()
}

/// `Content-Range: bytes first-last/total` as `(first, last, total)`.
pub(super) fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    Some((first.parse().ok()?, last.parse().ok()?, total))
}

/// A sliced object being read: its head and what is needed to find or fetch its slices.
pub struct SlicedBody {
    proxy: Arc<Proxy>,
    key: CacheKey,
    head: Arc<ObjectMeta>,
    /// The stored head, which the body's readers watch (`Object::watch`), so that a fill can
    /// tell when they have all gone.
    head_object: Arc<Object>,
    head_on_disk: bool,
    variant: u64,
    version: u64,
    /// The head's `slices_since`.
    since: u64,
    slice_size: u64,
    length: u64,
    /// The request as forwarded to the origin, without conditionals or range.
    request: http::request::Parts,
}

impl SlicedBody {
    /// The body of `head`, stored under `key`, for a client whose forwarded request is
    /// `request`. `None` if the head is not a sliced object's.
    pub(super) fn new(
        proxy: &Arc<Proxy>,
        key: CacheKey,
        head: &Arc<Object>,
        request: http::request::Parts,
    ) -> Option<Arc<SlicedBody>> {
        let meta = head.meta_full();
        if meta.slice_size == 0 {
            return None;
        }
        Some(Arc::new(SlicedBody {
            proxy: Arc::clone(proxy),
            key,
            variant: variant_hash(&meta.variant),
            version: stored_version(&meta.fields)?,
            since: meta.slices_since,
            slice_size: u64::from(meta.slice_size),
            length: meta.content_length?,
            head_on_disk: head.is_on_disk(),
            head_object: Arc::clone(head),
            head: meta,
            request,
        }))
    }

    /// The whole object's length.
    pub fn length(&self) -> u64 {
        self.length
    }

    pub(super) fn slice_key(&self, index: u64) -> CacheKey {
        self.key.slice(self.variant, self.version, index)
    }

    /// Whether `slice`, stored under one of this body's slice keys, belongs to this head: it
    /// was stored since the head was (a slice carries its head's response time). One stored
    /// for an earlier head of the same version (before a purge, say) is not used.
    fn current(&self, slice: &Object) -> bool {
        slice.meta().timing.response_time >= self.since
    }

    /// Bytes `[start, end)` of slice `index`'s range of the object.
    fn bounds(&self, index: u64) -> (u64, u64) {
        let start = index * self.slice_size;
        (start, (start + self.slice_size).min(self.length))
    }

    /// A reader of bytes `[start, end)` of the object (`end` = `None` for everything).
    pub fn reader(self: &Arc<Self>, start: u64, end: Option<u64>) -> SliceReader {
        SliceReader {
            _watch: self.head_object.watch(),
            body: Arc::clone(self),
            position: start,
            end: end.unwrap_or(self.length).min(self.length),
            current: None,
            next: None,
        }
    }

    /// Whether every slice holding bytes `[start, end)` is stored (in RAM or on disk) or on its
    /// way from another request's fetch: whether an answer with those bytes is a hit.
    pub(super) fn holds(&self, start: u64, end: u64) -> bool {
        if end <= start {
            return true;
        }
        let proxy = &self.proxy;
        (start / self.slice_size..=(end - 1) / self.slice_size).all(|index| {
            let key = self.slice_key(index);
            // On disk, a slice is not read to see whether it is current: after a purge, an
            // earlier head's may count here until it is read and replaced.
            // A look, not an access: the slice's own read counts that.
            let in_ram = proxy.tiers.ram().peek(key);
            proxy.collapser.in_flight(key)
                || in_ram.is_some_and(|entry| entry.variants.iter().any(|s| self.current(s)))
                || proxy.tiers.on_disk(key)
        })
    }

    /// Slice `index`: from RAM, from disk, from a fetch in flight, or fetched now.
    async fn slice(self: &Arc<Self>, index: u64) -> Result<Arc<Object>, BodyError> {
        let proxy = &self.proxy;
        let key = self.slice_key(index);
        // A slice has one variant: its object's.
        let current = |slice: &Object| self.current(slice);
        let promote_after_hits = proxy.live().config.disk.promote_after_hits;
        let found = proxy.tiers.lookup(key, current, promote_after_hits).await;
        if let Some(object) = found.usable() {
            return Ok(object);
        }
        let stored = || proxy.tiers.in_ram(key, current);
        match proxy.collapser.join_unless(key, stored) {
            Role::Leader(guard) => {
                let (reply, answer) = oneshot::channel();
                tokio::spawn(fetch_slices(Arc::clone(self), index, guard, Some(reply)));
                answer
                    .await
                    .unwrap_or_else(|_| Err(BodyError::Origin("slice fetch ended".into())))
            }
            Role::Follower(follower) => match follower.outcome().await {
                FlightOutcome::Object(object) => Ok(object),
                FlightOutcome::Failed(status) => Err(BodyError::Origin(format!(
                    "slice {index} could not be fetched ({status})"
                ))),
                FlightOutcome::Pass | FlightOutcome::Pending => Err(BodyError::Origin(format!(
                    "slice {index} could not be fetched"
                ))),
            },
        }
    }

    /// The metadata of slice `index`: the head's, for a body of the slice's length.
    fn slice_meta(&self, index: u64) -> ObjectMeta {
        let (start, end) = self.bounds(index);
        let mut meta = ObjectMeta::clone(&self.head);
        meta.url = format!("{} (bytes {start}-{})", meta.url, end - 1);
        meta.variant = Vec::new();
        meta.content_length = Some(end - start);
        meta.slice_size = 0;
        meta
    }
}

/// A slice being found or fetched ahead of its reader.
type SliceTask = tokio::task::JoinHandle<Result<Arc<Object>, BodyError>>;

/// Reads a byte range of a sliced object, slice after slice, with the next slice on its way
/// (from disk or the origin) while the current one is sent.
pub struct SliceReader {
    /// Counts this reader as one of the object's while it reads.
    _watch: ReaderMark,
    body: Arc<SlicedBody>,
    position: u64,
    end: u64,
    current: Option<BodyReader>,
    next: Option<(u64, SliceTask)>,
}

impl SliceReader {
    /// The next piece of the range; `Ok(None)` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            if let Some(reader) = &mut self.current {
                match reader.next_chunk().await {
                    Ok(Some(chunk)) => {
                        self.position += chunk.len() as u64;
                        return Ok(Some(chunk));
                    }
                    Ok(None) => self.current = None,
                    Err(error) => return Err(BodyError::Origin(error.to_string())),
                }
            }
            if self.position >= self.end {
                return Ok(None);
            }
            let index = self.position / self.body.slice_size;
            let (start, end) = self.body.bounds(index);
            let slice = match self.next.take() {
                Some((next, task)) if next == index => task
                    .await
                    .unwrap_or_else(|_| Err(BodyError::Origin("slice read ended".into())))?,
                _ => self.body.slice(index).await?,
            };
            if end < self.end {
                let body = Arc::clone(&self.body);
                let task = tokio::spawn(async move { body.slice(index + 1).await });
                self.next = Some((index + 1, task));
            }
            self.current =
                Some(slice.reader(self.position - start, Some(self.end.min(end) - start)));
        }
    }

    /// Appends what is ready now in the current slice, without waiting.
    pub fn ready_chunks(&mut self, out: &mut Vec<Bytes>, budget: u64) {
        if let Some(reader) = &mut self.current {
            let before = out.len();
            reader.ready_chunks(out, budget);
            self.position += out[before..].iter().map(|c| c.len() as u64).sum::<u64>();
        }
    }
}

/// Fetches slice `first` with a `Range` request and stores it. An origin that ignores `Range`
/// answers with the whole object: the slices from `first` on are then all taken from it.
async fn fetch_slices(
    body: Arc<SlicedBody>,
    first: u64,
    guard: FlightGuard,
    mut reply: Option<oneshot::Sender<Result<Arc<Object>, BodyError>>>,
) {
    let proxy = &body.proxy;
    let (start, end) = body.bounds(first);
    let mut request = body.request.clone();
    if let Ok(range) = HeaderValue::from_str(&format!("bytes={start}-{}", end - 1)) {
        request.headers.insert(RANGE, range);
    }
    let fail =
        |guard: FlightGuard, reply: &mut Option<oneshot::Sender<_>>, status, reason: String| {
            tracing::warn!(url = %body.head.url, slice = first, %reason, "slice fetch failed");
            guard.finish(FlightOutcome::Failed(status));
            if let Some(reply) = reply.take() {
                let _ = reply.send(Err(BodyError::Origin(reason)));
            }
        };
    let mut revalidated = false;
    let (parts, incoming) = loop {
        proxy.metrics.add(Counter::OriginRequests, 1);
        let route = body.key.slice_route(first);
        let sent = proxy.forward(route, &mut request, RequestBody::empty(), true);
        let response = match sent.await {
            Ok((response, _trace)) => response,
            Err(error) => {
                proxy.metrics.origin_failure(&error);
                let reason = error.to_string();
                return fail(guard, &mut reply, StatusCode::BAD_GATEWAY, reason);
            }
        };
        let (parts, incoming) = response.into_parts();
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let fits = match parts.status {
            StatusCode::PARTIAL_CONTENT => {
                content_range(&parts.headers).is_some_and(|(from, last, total)| {
                    from == start && last + 1 == end && total == Some(body.length)
                })
            }
            StatusCode::OK if declared.is_none_or(|length| length == body.length) => true,
            status => {
                if status.is_server_error() {
                    proxy.metrics.origin_error(Counter::OriginServerErrors);
                }
                let status = if status.is_server_error() {
                    status
                } else {
                    StatusCode::BAD_GATEWAY
                };
                let reason = format!("origin answered {}", parts.status);
                return fail(guard, &mut reply, status, reason);
            }
        };
        if fits && version(&parts.headers) == Some(body.version) {
            break (parts, incoming);
        }
        if !revalidated {
            // Another version than the head's. In a cluster the slice's owner may hold an
            // older copy that is still fresh there, or this head may be the old one: ask once
            // more with `no-cache`, which makes a peer (or parent) revalidate with the origin.
            revalidated = true;
            request
                .headers
                .append(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            continue;
        }
        // The origin's object is no longer the one the head describes: forget the head, and
        // have the next fetch of it ask the upstream to revalidate too (a peer or parent may
        // hold the old head, fresh), so the next request starts over with the new version.
        proxy.purge(body.key);
        proxy.collapser.mark_changed(body.key, CHANGED_FOR);
        return fail(
            guard,
            &mut reply,
            StatusCode::BAD_GATEWAY,
            "the origin's object changed while it was read in slices".into(),
        );
    };
    let base = match parts.status {
        StatusCode::PARTIAL_CONTENT => start,
        _ => 0,
    };
    let mut slices = vec![(first, Some(guard))];
    if parts.status == StatusCode::OK {
        // The whole object is coming: keep every later slice not stored or in flight already.
        for index in first + 1..body.length.div_ceil(body.slice_size) {
            let key = body.slice_key(index);
            if proxy
                .tiers
                .in_ram(key, |slice| body.current(slice))
                .is_none()
            {
                if let Role::Leader(guard) = proxy.collapser.join(key) {
                    slices.push((index, Some(guard)));
                }
            }
        }
    }
    fill_slices(&body, incoming, base, slices, &mut reply).await;
}

/// Reads an origin body that starts at byte `base` of the object into the slices listed (each
/// with the flight it fills), publishing each slice as its first byte arrives and storing it
/// when complete. Bytes of slices not listed are skipped.
pub(super) async fn fill_slices(
    body: &Arc<SlicedBody>,
    mut incoming: OriginBody,
    base: u64,
    slices: Vec<(u64, Option<FlightGuard>)>,
    reply: &mut Option<oneshot::Sender<Result<Arc<Object>, BodyError>>>,
) {
    let proxy = &body.proxy;
    let timeout = proxy.live().config.origin.body_timeout.duration();
    // Slices follow their head to disk; otherwise they go on their own second request.
    let to_disk = body.head_on_disk;
    let last_end = slices
        .last()
        .map_or(base, |(index, _)| body.bounds(*index).1);
    let mut slices = slices.into_iter().peekable();
    let mut current: Option<(u64, Arc<Object>, FlightGuard)> = None;
    let mut position = base;
    // The slice being filled is in flight; a finished one is in the store.
    let mut held = proxy.inflight.hold();
    while position < last_end {
        let mut data = match tokio::time::timeout(timeout, incoming.frame()).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    proxy.metrics.add(Counter::OriginBytes, data.len() as u64);
                    data
                }
                Err(_) => continue,
            },
            outcome => {
                let (kind, reason) = match outcome {
                    Ok(Some(Err(error))) => (Counter::OriginBroken, error.to_string()),
                    Err(_) => (
                        Counter::OriginTimeouts,
                        format!("no body data for {timeout:?}"),
                    ),
                    _ => (Counter::OriginBroken, "the body ended early".to_owned()),
                };
                proxy.metrics.origin_error(kind);
                tracing::warn!(url = %body.head.url, position, %reason, "slice fetch cut short");
                if let Some((_, object, guard)) = current.take() {
                    object.abort();
                    guard.finish(FlightOutcome::Failed(StatusCode::BAD_GATEWAY));
                }
                for guard in slices.filter_map(|(_, guard)| guard) {
                    guard.finish(FlightOutcome::Failed(StatusCode::BAD_GATEWAY));
                }
                if let Some(reply) = reply.take() {
                    let _ = reply.send(Err(BodyError::Origin(reason)));
                }
                return;
            }
        };
        while !data.is_empty() && position < last_end {
            if current.is_none() {
                // Start the slice that begins here, if it is one to fill.
                while slices
                    .peek()
                    .is_some_and(|(index, _)| body.bounds(*index).1 <= position)
                {
                    slices.next();
                }
                if slices
                    .peek()
                    .is_some_and(|(index, _)| body.bounds(*index).0 == position)
                {
                    if let Some((index, Some(mut guard))) = slices.next() {
                        let object = Object::filling(body.slice_meta(index));
                        guard.publish(Arc::clone(&object));
                        if let Some(reply) = reply.take() {
                            let _ = reply.send(Ok(Arc::clone(&object)));
                        }
                        current = Some((index, object, guard));
                    }
                }
            }
            // Up to the end of the current slice, or (skipping) to the start of the next one.
            let limit = match (&current, slices.peek()) {
                (Some((index, _, _)), _) => body.bounds(*index).1,
                (None, Some((index, _))) => body.bounds(*index).0.max(position + 1),
                (None, None) => last_end,
            };
            let piece = data.split_to(((limit - position) as usize).min(data.len()));
            position += piece.len() as u64;
            let Some((index, object, _)) = &current else {
                continue;
            };
            let (start, end) = body.bounds(*index);
            object.append(&piece, Some(end - start));
            held.add(piece.len() as u64);
            if position == end {
                let (index, object, guard) = current.take().expect("the slice being filled");
                object.finish();
                held.release();
                let key = body.slice_key(index);
                // On disk where the head is, whatever the admission filter says.
                proxy.tiers.insert_in_ram(key, &object);
                if to_disk {
                    proxy.tiers.offer_to_disk(key, &object);
                }
                guard.finish(FlightOutcome::Pending);
                let finish_limit = proxy.live().config.cache.finish_without_readers.bytes();
                if last_end - position > finish_limit && body.head_object.readers_left() {
                    // Nobody reads this object now: the slices stored so far stay, the rest
                    // is fetched when someone asks for it.
                    proxy.metrics.add(Counter::AbandonedFills, 1);
                    tracing::debug!(url = %body.head.url, position, "every reader left; slice fill abandoned");
                    for guard in slices.filter_map(|(_, guard)| guard) {
                        guard.finish(FlightOutcome::Pending);
                    }
                    return;
                }
            }
        }
    }
}
