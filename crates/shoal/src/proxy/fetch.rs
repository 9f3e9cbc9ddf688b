//! fetch and store: one origin request on behalf of a collapsed miss or a revalidation, run by
//! the leading client's task until the response head is in, then as a task of its own. It
//! reads the origin's body as fast as the origin sends it into a filling [`Object`] that any
//! number of clients read at their own pace, and stores the object once it is complete. A
//! client that goes away does not stop it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;

use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::{
    headers, now_millis, request_host, slices, target, ClientRequest, Counter, Proxy, ProxyError,
};
use super::{Exchange, FlightGuard, FlightOutcome, Role};
use crate::cache::key::normalized_header;
use crate::cache::policy::{self, NotStorable, Timing};
use crate::cache::{CacheControl, CacheKey};
use crate::store::{Fields, Object, ObjectMeta};
use crate::upstream::files::StraightFromFile;
use crate::upstream::{OriginBody, RequestBody, Trace, UpstreamError};

/// What the leader of a fetch learns once the response head is in.
pub(super) enum FetchResult {
    /// Stored (or being stored): read it from this object.
    Stored(Arc<Object>),
    /// The origin confirmed the stale object with 304; its metadata is refreshed.
    Refreshed(Arc<Object>),
    /// Not storable: relay this response.
    NotStored(Response<OriginBody>),
    /// The origin could not be reached or timed out.
    Failed(ProxyError),
}

/// Everything a fetch needs, prepared by the requesting client's task.
pub(super) struct FetchPlan {
    key: CacheKey,
    url: String,
    /// The request as forwarded. Also what `Vary` values and the `Authorization` rule are read
    /// from: the fields the origin actually saw (end-to-end fields are the client's own).
    request: http::request::Parts,
    request_cc: CacheControl,
    /// For a range miss: the slice holding the range's first byte, asked for instead of the
    /// whole object (see `slices`). In a cluster, a whole miss asks for slice 0.
    probe: Option<u64>,
    /// Whether the client wants the whole object (a probe is then only how it is fetched).
    whole_wanted: bool,
    /// The key that picks the peer or host the fetch goes to: the object's, or the probed
    /// slice's (`CacheKey::slice_route`).
    route: CacheKey,
    stale: Option<Arc<Object>>,
}

impl FetchPlan {
    /// A plan to fetch the whole object `request` asks for (its `Cache-Control` already
    /// parsed, as `request_cc`), conditionally when `stale` is given.
    pub(super) fn new(proxy: &Proxy, exchange: &Exchange, stale: Option<Arc<Object>>) -> FetchPlan {
        let (key, request) = (exchange.key, &exchange.request);
        let request_cc = exchange.cache_control.clone();
        let mut head = forwarded_request(proxy, request);
        let live = proxy.live();
        let slice_size = live.config.cache.slice_size.bytes();
        let wanted = request.head.headers.get(RANGE);
        // In a cluster each slice of a large object has its own owner, which alone fetches it
        // from the origin; so a whole miss is fetched from slice 0 on, slice by slice, not in
        // one origin request that would bring every other owner's slices here (and there
        // again when they are asked for). An object that turns out small comes whole.
        let in_slices = live.cluster().is_some() && !proxy.collapser.is_uncacheable(key);
        let probe = match (&stale, wanted) {
            (None, Some(range)) => Some(first_byte(range).unwrap_or(0) / slice_size),
            (None, None) if in_slices => Some(0),
            _ => None,
        };
        if let Some(index) = probe {
            let first = index * slice_size;
            if let Ok(value) =
                HeaderValue::from_str(&format!("bytes={first}-{}", first + slice_size - 1))
            {
                head.headers.insert(RANGE, value);
            }
        }
        if proxy.collapser.take_changed(key) {
            // Found changed while read in slices: a peer or parent may hold the old version,
            // fresh; this makes it revalidate.
            head.headers
                .append(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        if let Some(stale) = &stale {
            let meta = stale.meta();
            if let Some(etag) = meta.fields.etag() {
                head.headers.insert(IF_NONE_MATCH, etag.clone());
            }
            if let Some(modified) = meta.fields.get(&LAST_MODIFIED) {
                head.headers.insert(IF_MODIFIED_SINCE, modified);
            }
        }
        // One allocation of the exact size (`format!` grows its string two or three times).
        let url = [
            request.scheme(),
            "://",
            request_host(&request.head),
            target(&request.head),
        ]
        .concat();
        FetchPlan {
            key,
            url,
            request: head,
            request_cc,
            probe,
            whole_wanted: wanted.is_none(),
            route: probe.map_or(key, |index| key.slice_route(index)),
            stale,
        }
    }
}

/// `request` as sent to the origin on behalf of the cache: a GET (a HEAD miss is fetched as
/// GET so the object can serve both) for the whole, current object, since the client's own
/// conditions and ranges are answered from the stored object afterwards.
pub(super) fn forwarded_request(proxy: &Proxy, request: &ClientRequest) -> http::request::Parts {
    let mut head = request.head.clone();
    head.method = Method::GET;
    let answered_here = [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
        CONTENT_LENGTH,
    ];
    // Most requests have none of them: one pass over the names tells, without hashing any.
    if head.headers.keys().any(|name| answered_here.contains(name)) {
        for name in answered_here {
            head.headers.remove(name);
        }
    }
    proxy.forward_headers(
        &mut head,
        request_host(&request.head),
        request.client,
        request.tls,
    );
    head
}

/// The first byte a `Range: bytes=first-...` asks for (`None` for suffix ranges and others).
fn first_byte(range: &HeaderValue) -> Option<u64> {
    let spec = range.to_str().ok()?.trim().strip_prefix("bytes=")?;
    let (first, _) = spec.split(',').next()?.trim().split_once('-')?;
    first.trim().parse().ok()
}

/// What the leading client of a fetch receives.
pub(super) struct Fetched {
    pub(super) result: FetchResult,
    /// The upstream host that answered, for the leader's access log line.
    pub(super) origin: Option<Trace>,
}

/// The client whose miss started a fetch, if any (a background refresh has none).
struct Leader {
    sender: Option<oneshot::Sender<Fetched>>,
    origin: Option<Trace>,
}

impl Leader {
    /// A leader told through `sender`, or none (a background refresh).
    fn new(sender: Option<oneshot::Sender<Fetched>>) -> Leader {
        Leader {
            sender,
            origin: None,
        }
    }

    /// Tells the leader (once; later calls do nothing).
    fn send(&mut self, result: FetchResult) {
        if let Some(sender) = self.sender.take() {
            // The client may have gone; the fetch goes on for the others regardless.
            let _ = sender.send(Fetched {
                result,
                origin: self.origin.take(),
            });
        }
    }
}

/// Starts the fetch described by `plan` as a task of its own, with no client waiting for it:
/// a background refresh. Boxed as in [`Unfinished`].
pub(super) fn spawn(proxy: Arc<Proxy>, plan: FetchPlan, flight: FlightGuard) {
    tokio::spawn(Box::pin(run(proxy, plan, flight, Leader::new(None))));
}

/// Runs the fetch described by `plan` for the client whose miss leads it, and returns what the
/// client is to answer with once the response head is in (`None` if the fetch ended without
/// telling).
///
/// Until then the fetch runs in the client's own task, so the origin's answer wakes the client
/// directly, and a small object whose body came with its head is fetched and stored without a
/// task of its own; spawned at once, every miss took a spawn and two hand-overs between tasks
/// on the worker's queue. Whatever is left of the fetch then (the rest of the body, for the
/// followers and the store) goes on in a task of its own, as it does if the client goes away
/// first: the fetch belongs to the object, not to this client. (Measured in bench/RESULTS.md:
/// at 8,500 paced misses a second the difference is within the noise.)
pub(super) async fn lead(
    proxy: Arc<Proxy>,
    plan: FetchPlan,
    flight: FlightGuard,
) -> Option<Fetched> {
    let (sender, mut receiver) = oneshot::channel();
    let reply = Leader::new(Some(sender));
    let mut fetch = Unfinished::new(run(proxy, plan, flight, reply));
    std::future::poll_fn(|cx| {
        fetch.poll_here(cx);
        // Ready once the fetch has sent its result, or has ended (its sender dropped) without.
        Pin::new(&mut receiver).poll(cx).map(Result::ok)
    })
    .await
}

/// A fetch driven by whichever task holds it, and given a task of its own when dropped before
/// it has finished. The future is boxed: it holds a whole origin exchange and is several
/// kilobytes, and a spawn moves a task's future a few times; moving a pointer instead saved
/// about 5,000 instructions of `memcpy` per miss (callgrind).
struct Unfinished(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Unfinished {
    fn new(fetch: impl Future<Output = ()> + Send + 'static) -> Unfinished {
        Unfinished(Some(Box::pin(fetch)))
    }

    /// Drives the fetch as far as it can go now, in the calling task.
    fn poll_here(&mut self, cx: &mut Context<'_>) {
        if let Some(fetch) = &mut self.0 {
            if fetch.as_mut().poll(cx).is_ready() {
                self.0 = None;
            }
        }
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(fetch) = self.0.take() {
            // Without a runtime (it is shutting down) there is no one left to fetch for.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(fetch);
            }
        }
    }
}

/// Runs the fetch described by `plan`, reporting to the followers through `flight` and to the
/// leading client (if any) through `reply`.
async fn run(proxy: Arc<Proxy>, mut plan: FetchPlan, flight: FlightGuard, mut reply: Leader) {
    let request_time = now_millis();
    proxy.metrics.add(Counter::OriginRequests, 1);
    let sent = proxy.forward(plan.route, &mut plan.request, RequestBody::empty(), true);
    let response = match sent.await {
        Ok((response, trace)) => {
            reply.origin = Some(trace);
            response
        }
        Err(error) => {
            proxy.metrics.origin_failure(&error);
            tracing::warn!(url = %plan.url, %error, "origin fetch failed");
            let status = match error {
                UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            flight.finish(FlightOutcome::Failed(status));
            reply.send(FetchResult::Failed(error.into()));
            return;
        }
    };
    let response_time = now_millis();
    let (mut parts, incoming) = response.into_parts();

    if parts.status == StatusCode::NOT_MODIFIED {
        if let Some(stale) = &plan.stale {
            refresh(stale, &parts.headers, request_time, response_time, &proxy);
            // Rewrite it on disk with its new headers and freshness, for after a restart.
            proxy.tiers.rewrite_on_disk(plan.key, stale);
            flight.finish(FlightOutcome::Object(Arc::clone(stale)));
            reply.send(FetchResult::Refreshed(Arc::clone(stale)));
            return;
        }
    }

    let mut declared_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let slice_size = proxy.live().config.cache.slice_size.bytes();
    // A range miss asked for one slice. The answer is a part of the object to store, as if it
    // were the whole 200, or (when the origin ignores ranges) the whole object itself.
    let (mut base, mut probed) = (0, false);
    let probe_answer = match (plan.probe, parts.status) {
        (Some(index), StatusCode::PARTIAL_CONTENT) => {
            Some(storable_part(&parts.headers, index, slice_size))
        }
        // About the slice asked for, not the URL.
        (Some(_), StatusCode::RANGE_NOT_SATISFIABLE) => Some(None),
        _ => None,
    };
    match probe_answer {
        Some(None) if plan.whole_wanted => {
            return Box::pin(fetch_whole(proxy, plan, flight, reply)).await
        }
        Some(None) => {
            // Not a part this cache can store: the client's own range goes to the origin, and
            // so do the URL's next range misses for a while, without probing again (a whole
            // request still fetches it, and stores it if it can).
            if parts.status == StatusCode::PARTIAL_CONTENT {
                let remember = proxy.live().config.cache.remember_uncacheable.duration();
                proxy.collapser.mark_uncacheable(plan.key, remember);
            }
            flight.finish(FlightOutcome::Pass);
            reply.send(FetchResult::NotStored(Response::from_parts(
                parts, incoming,
            )));
            return;
        }
        Some(Some((first, total))) => {
            parts.status = StatusCode::OK;
            parts.headers.remove(CONTENT_RANGE);
            declared_length = Some(total);
            (base, probed) = (first, true);
        }
        None => {}
    }
    let sliced = slices::sliceable(parts.status, &parts.headers, declared_length, slice_size);
    let timing = Timing::of_response(&parts.headers, request_time, response_time);
    headers::forward_response(&mut parts.headers, response_time);
    let live = proxy.live();
    let config = &live.config.cache;
    let response_cc = CacheControl::of_response(&parts.headers, config);
    let verdict = policy::storability(
        &Method::GET,
        // The forwarded request: what the origin saw (Authorization included).
        &plan.request.headers,
        &plan.request_cc,
        parts.status,
        &parts.headers,
        &response_cc,
        config,
    )
    .and_then(|()| match declared_length {
        Some(length) if length > config.max_object_size.bytes() && !sliced => {
            Err(NotStorable::TooLarge)
        }
        _ => Ok(()),
    })
    .and_then(|()| match parts.extensions.get::<StraightFromFile>() {
        Some(_) => Err(NotStorable::FromFile),
        None => Ok(()),
    })
    .and_then(
        |()| match parts.extensions.get::<super::reproxy::Instruction>() {
            Some(_) => Err(NotStorable::Reproxy),
            None => Ok(()),
        },
    );
    if verdict.is_err() && probed && plan.whole_wanted && declared_length > Some(slice_size) {
        // Not to be stored, and only its first slice came: the client gets the whole of it.
        return Box::pin(fetch_whole(proxy, plan, flight, reply)).await;
    }
    if let Err(reason) = verdict {
        tracing::debug!(url = %plan.url, reason = reason.as_str(), status = parts.status.as_u16(), "not storable");
        if reason == NotStorable::ServerError {
            proxy.metrics.origin_error(Counter::OriginServerErrors);
            flight.finish(FlightOutcome::Failed(parts.status));
        } else {
            // Remember only what the response says about the URL, not what this one request
            // asked for (its credentials or its own no-store).
            let about_the_request = reason == NotStorable::Authorization
                || (reason == NotStorable::NoStore && plan.request_cc.no_store);
            if !about_the_request {
                proxy
                    .collapser
                    .mark_uncacheable(plan.key, config.remember_uncacheable.duration());
            }
            flight.finish(FlightOutcome::Pass);
        }
        reply.send(FetchResult::NotStored(Response::from_parts(
            parts, incoming,
        )));
        return;
    }

    let freshness = policy::freshness(parts.status, &parts.headers, &response_cc, &timing, config);
    for field in &response_cc.private_fields {
        parts.headers.remove(field.as_str());
    }
    let variant = policy::vary_names(&parts.headers)
        .map(|name| {
            let value = normalized_header(&plan.request.headers, &name);
            (name, value)
        })
        .collect();
    let meta = ObjectMeta {
        url: plan.url.clone(),
        status: parts.status,
        fields: Fields::new(&parts.headers),
        variant,
        timing,
        freshness,
        content_length: declared_length,
        slice_size: 0,
        slices_since: 0,
    };
    if sliced {
        let body = SliceBody {
            incoming,
            base,
            whole: !probed,
        };
        return store_sliced(&proxy, &plan, flight, reply, meta, body).await;
    }
    let object = Object::filling(meta);
    proxy.collapser.clear_uncacheable(plan.key);
    let mut flight = flight;
    flight.publish(Arc::clone(&object));
    reply.send(FetchResult::Stored(Arc::clone(&object)));
    fill(&proxy, &plan, flight, object, incoming, declared_length).await;
}

/// Runs `plan`'s fetch again for the whole object, when its probe for slice 0 (the way a whole
/// miss is fetched in a cluster) got something that cannot be stored as a slice.
async fn fetch_whole(proxy: Arc<Proxy>, mut plan: FetchPlan, flight: FlightGuard, reply: Leader) {
    plan.request.headers.remove(RANGE);
    plan.probe = None;
    plan.route = plan.key;
    run(proxy, plan, flight, reply).await;
}

/// The part a probe for slice `index` got, as `(first byte, object length)`, when it can be
/// stored: the whole slice asked for (an origin may answer with less, which is not a slice),
/// of an object within one slice (stored whole) or sliceable.
fn storable_part(headers: &HeaderMap, index: u64, slice_size: u64) -> Option<(u64, u64)> {
    let (first, last, total) = slices::content_range(headers)?;
    let total = total?;
    let whole_slice =
        first == index * slice_size && last < total && last + 1 == (first + slice_size).min(total);
    let small = first == 0 && total <= slice_size;
    (whole_slice && (small || slices::sliceable(StatusCode::OK, headers, Some(total), slice_size)))
        .then_some((first, total))
}

/// An origin body to store in slices: from byte `base` of the object, and either the whole rest
/// of the object or (answering a probe) one slice.
struct SliceBody {
    incoming: OriginBody,
    base: u64,
    whole: bool,
}

/// Stores a sliceable response as a head under the URL's key (at once: requests from now on
/// read its slices) and its body as slices, from byte `base` of the object on.
async fn store_sliced(
    proxy: &Arc<Proxy>,
    plan: &FetchPlan,
    flight: FlightGuard,
    mut reply: Leader,
    mut meta: ObjectMeta,
    SliceBody {
        incoming,
        base,
        whole,
    }: SliceBody,
) {
    let slice_size = proxy.live().config.cache.slice_size.bytes();
    meta.slice_size = slice_size as u32;
    meta.slices_since = meta.timing.response_time;
    let length = meta.content_length.unwrap_or(0);
    let head = Object::complete(meta, bytes::Bytes::new());
    proxy.tiers.insert(plan.key, &head);
    proxy.collapser.clear_uncacheable(plan.key);
    let mut request = plan.request.clone();
    request.headers.remove(RANGE);
    let Some(body) = slices::SlicedBody::new(proxy, plan.key, &head, request) else {
        flight.finish(FlightOutcome::Failed(StatusCode::BAD_GATEWAY));
        reply.send(FetchResult::Failed(ProxyError::Internal(
            "sliced head without a version",
        )));
        return;
    };
    // Every slice this body will bring is claimed before the head is published, so that
    // readers wait for it rather than fetch it again.
    let first = base / slice_size;
    let last = if whole {
        length.div_ceil(slice_size)
    } else {
        first + 1
    };
    let claimed = (first..last)
        .map(|index| match proxy.collapser.join(body.slice_key(index)) {
            Role::Leader(guard) => (index, Some(guard)),
            Role::Follower(_) => (index, None),
        })
        .collect();
    flight.finish(FlightOutcome::Object(Arc::clone(&head)));
    reply.send(FetchResult::Stored(head));
    slices::fill_slices(&body, incoming, base, claimed, &mut None).await;
}

/// How far a reader of an object too large to store may fall behind the fetch before it is cut
/// off; it bounds the memory such a pass-through holds.
const PASS_THROUGH_WINDOW: u64 = 32 << 20;

/// How many body bytes a fill takes between two looks at whether its readers are there.
pub(super) const LOOK_FOR_READERS_EVERY: u64 = 256 << 10;

/// Reads the origin's body into `object` and stores it when complete, unless every reader
/// leaves with more than `cache.finish_without_readers` to go (then it is abandoned).
async fn fill(
    proxy: &Proxy,
    plan: &FetchPlan,
    flight: FlightGuard,
    object: Arc<Object>,
    mut incoming: OriginBody,
    declared_length: Option<u64>,
) {
    let max = proxy.live().config.cache.max_object_size.bytes();
    let finish_limit = proxy.live().config.cache.finish_without_readers.bytes();
    // Whether the readers are still there is looked at every so often, not every piece.
    let mut next_look = 0;
    let timeout = proxy.live().config.origin.body_timeout.duration();
    let mut flight = Some(flight);
    let mut received: u64 = 0;
    // Released when this returns: the object is then complete (and in the store) or gone.
    let mut held = proxy.inflight.hold();
    loop {
        let frame = match tokio::time::timeout(timeout, incoming.frame()).await {
            Err(_) => Err((
                Counter::OriginTimeouts,
                format!("no body data for {timeout:?}"),
            )),
            Ok(None) => break,
            Ok(Some(Err(error))) => Err((Counter::OriginBroken, error.to_string())),
            Ok(Some(Ok(frame))) => Ok(frame),
        };
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    if declared_length.is_some_and(|length| received > length) {
                        proxy.metrics.origin_error(Counter::OriginBroken);
                        tracing::warn!(url = %plan.url, received, "origin body longer than its Content-Length; not stored");
                        object.abort();
                        return;
                    }
                    proxy.metrics.add(Counter::OriginBytes, data.len() as u64);
                    held.add(data.len() as u64);
                    object.append(&data, declared_length);
                    let rest_is_large = match declared_length {
                        Some(length) => length - received > finish_limit,
                        None => received > finish_limit,
                    };
                    if rest_is_large && received >= next_look {
                        next_look = received + LOOK_FOR_READERS_EVERY;
                        if object.readers_left() {
                            proxy.metrics.add(Counter::AbandonedFills, 1);
                            tracing::debug!(url = %plan.url, received, "every reader left; fill abandoned");
                            object.abort();
                            if let Some(flight) = flight.take() {
                                flight.finish(FlightOutcome::Pending);
                            }
                            return;
                        }
                    }
                    if received > max {
                        // Too large to keep: stop offering it to new requests and pass it
                        // through to the clients already reading it, in bounded memory.
                        if let Some(flight) = flight.take() {
                            flight.finish(FlightOutcome::Pending);
                            proxy.collapser.mark_uncacheable(
                                plan.key,
                                proxy.live().config.cache.remember_uncacheable.duration(),
                            );
                            tracing::debug!(url = %plan.url, "larger than cache.max_object_size; passing through");
                        }
                        if !object.release_read(PASS_THROUGH_WINDOW) {
                            // Every reader left: nobody wants the rest.
                            object.abort();
                            return;
                        }
                    }
                }
            }
            Err((kind, reason)) => {
                proxy.metrics.origin_error(kind);
                tracing::warn!(url = %plan.url, received, %reason, "origin body cut short; not stored");
                object.abort();
                return;
            }
        }
    }
    if declared_length.is_some_and(|length| length != received) {
        tracing::warn!(url = %plan.url, received, "origin body shorter than its Content-Length; not stored");
        object.abort();
        return;
    }
    object.finish();
    if let Some(flight) = flight {
        proxy.tiers.insert(plan.key, &object);
        proxy.collapser.clear_uncacheable(plan.key);
        flight.finish(FlightOutcome::Pending);
    }
}

/// Applies a `304 Not Modified` to a stored object: new header fields, new freshness.
fn refresh(
    stale: &Object,
    update: &HeaderMap,
    request_time: u64,
    response_time: u64,
    proxy: &Proxy,
) {
    let timing = Timing::of_response(update, request_time, response_time);
    let mut update = update.clone();
    headers::forward_response(&mut update, response_time);
    let mut meta = ObjectMeta::clone(&stale.meta());
    let mut fields = meta.fields.to_map();
    headers::merge_not_modified(&mut fields, &update);
    let live = proxy.live();
    let config = &live.config.cache;
    let cc = CacheControl::of_response(&fields, config);
    meta.freshness = policy::freshness(meta.status, &fields, &cc, &timing, config);
    meta.timing = timing;
    meta.fields = Fields::new(&fields);
    stale.set_meta(meta);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map;

    /// A probe's answer is stored only when it is the whole slice asked for: an origin that
    /// answers with less (or more) gives no slice the node could complete.
    #[test]
    fn a_probe_answer_is_a_slice_only_when_it_is_the_whole_slice() {
        let part = |range: &str| {
            let headers = header_map(&[("content-range", range), ("etag", "\"v1\"")]);
            storable_part(&headers, 0, 1024)
        };
        assert_eq!(part("bytes 0-9/10"), Some((0, 10)));
        assert_eq!(part("bytes 0-1023/5000"), Some((0, 5000)));
        assert_eq!(part("bytes 0-4/10"), None);
        assert_eq!(part("bytes 0-99/5000"), None);
        assert_eq!(part("bytes 0-4999/5000"), None);
        assert_eq!(part("bytes 5-9/10"), None);
        assert_eq!(part("bytes 0-9/*"), None);
        let second = header_map(&[
            ("content-range", "bytes 1024-2047/5000"),
            ("etag", "\"v1\""),
        ]);
        assert_eq!(storable_part(&second, 1, 1024), Some((1024, 5000)));
        let last = header_map(&[
            ("content-range", "bytes 4096-4999/5000"),
            ("etag", "\"v1\""),
        ]);
        assert_eq!(storable_part(&last, 4, 1024), Some((4096, 5000)));
    }
}
