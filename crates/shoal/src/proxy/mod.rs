//! The request path: the phases every request goes through, and the state they share.
//!
//! Every request goes through [`Proxy::handle`], which reads top to bottom as the phases
//! `recv → lookup → hit | stale | miss | pass → fetch → store → deliver`. Client connections
//! (`http1`, `h2`) only parse requests into a [`ClientRequest`] and write the
//! [`ProxyResponse`] back; policy lives in `cache`, bytes in `store`.

mod deliver;
mod error;
mod fetch;
mod generation;
pub mod h2;
mod headers;
pub mod http1;
mod limits;
mod listener;
mod logged;
mod metrics;
mod node;
mod pass;
pub mod reproxy;
mod response;
mod settings;
mod slices;
mod top_urls;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub(crate) use crate::clock::now_millis;

// The collapsed fetches of the pipeline, of stored objects.
type Collapser = crate::cache::Collapser<Arc<Object>>;
type FlightGuard = crate::cache::FlightGuard<Arc<Object>>;
type FlightOutcome = crate::cache::FlightOutcome<Arc<Object>>;
type Role = crate::cache::Role<Arc<Object>>;
use http::header::{HeaderValue, HOST, RANGE};
use http::{Method, StatusCode};

pub use error::{error_response, ProxyError, Side};
pub use generation::{Generation, ReloadReport};
pub use listener::{serve, Listeners};
pub use metrics::{Counter, Histogram, HistogramSnapshot, Metrics, LATENCY_BUCKETS_MICROS};
use node::Reloads;
pub use node::{Load, ReloadOutcome};
pub use response::{BodyError, ProxyResponse, ResponseBody, ResponseHeaders};
pub use top_urls::{TopUrl, TopUrls};

use crate::cache::ban::{Ban, Bans, Matcher};
use crate::cache::key::variant_matches;
use crate::cache::policy::{self, Reuse};
use crate::cache::{CacheControl, CacheKey, CacheStatus};
use crate::config::Config;
use crate::store::{DiskStore, Found, MemoryStore, Object, Tiers};
use crate::throttle::LogBudget;
use crate::tls::{CertResolver, Certificates};
use crate::upstream::cluster::{MarkedRequest, PEER_HEADER};
use crate::upstream::{RequestBody, Trace, UpstreamError};
use fetch::{FetchPlan, FetchResult};

/// A request as the pipeline sees it, whatever the client's HTTP version.
pub struct ClientRequest {
    /// Method, target, version and header fields.
    pub head: http::request::Parts,
    /// The body, streamed to the origin when the request is forwarded.
    pub body: RequestBody,
    /// Whether there is a body at all.
    pub has_body: bool,
    /// Whether it came over TLS (`https`).
    pub tls: bool,
    /// The client's address.
    pub client: SocketAddr,
}

/// The edge node's request pipeline and the state it shares across connections.
pub struct Proxy {
    /// The configuration in force and what was built from it; a reload swaps it.
    live: ArcSwap<Generation>,
    /// How to read the configuration again, and the last reload's outcome.
    reloads: std::sync::Mutex<Reloads>,
    /// Worker threads, each with its own origin client.
    workers: usize,
    /// RAM, and the disk when cache directories are configured.
    tiers: Tiers,
    collapser: Arc<Collapser>,
    /// Bans (by prefix, regex or tag), tested lazily at lookup.
    bans: Bans,
    /// Set when the node shuts down: listeners stop accepting and connections close after
    /// their current response.
    draining: std::sync::atomic::AtomicBool,
    /// Wakes idle connections when the node starts shutting down.
    drain_started: tokio::sync::Notify,
    metrics: Arc<Metrics>,
    /// The most requested URLs.
    top_urls: TopUrls,
    /// Connections and request rates per client IP.
    limits: Arc<limits::ClientLimits>,
    /// Bytes of bodies being filled, not yet in a store.
    inflight: limits::InflightMemory,
    /// The counters at the last load report, to give rates since then.
    load_sample: std::sync::Mutex<Option<(std::time::Instant, u64, u64)>>,
    /// The certificates of the TLS listeners and their rustls configuration, when there are
    /// TLS listeners.
    tls: Option<(Arc<CertResolver>, Arc<rustls::ServerConfig>)>,
    /// The addresses the listeners were bound to (plain, TLS), where they differ from the
    /// configured ones (port 0), for the status.
    bound: std::sync::OnceLock<(Vec<SocketAddr>, Vec<SocketAddr>)>,
}

/// A cacheable request on its way through the phases, with what they share, computed once
/// at recv.
pub(crate) struct Exchange {
    /// The client's request.
    pub request: ClientRequest,
    /// Its cache key.
    pub key: CacheKey,
    /// Its `Cache-Control` directives.
    pub cache_control: CacheControl,
}

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The calling thread's worker index (0 outside worker threads).
pub(crate) fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

/// Declares the calling thread to be worker `index`, for per-worker state.
pub fn set_worker(index: usize) {
    WORKER.with(|worker| worker.set(index));
}

impl Proxy {
    /// A pipeline for `config`, fetching from `config.origin.urls`, for `workers` worker
    /// threads (see [`set_worker`]). Fails when the TLS listeners' certificates do not load.
    pub fn new(config: Arc<Config>, workers: usize) -> Result<Arc<Proxy>, String> {
        let config = Arc::unwrap_or_clone(config);
        for warning in config.warnings() {
            tracing::warn!(%warning, "configuration");
        }
        let tls = match config.server.listen_tls.is_empty() {
            true => None,
            false => {
                let resolver = CertResolver::new(Certificates::load(&config.tls)?);
                let server = resolver.server_config();
                Some((resolver, server))
            }
        };
        Ok(Arc::new(Proxy {
            tls,
            bound: std::sync::OnceLock::new(),
            tiers: Tiers::new(
                config.cache.memory.bytes(),
                (!config.disk.dirs.is_empty()).then(|| DiskStore::open(&config.disk)),
            ),
            collapser: Arc::new(Collapser::default()),
            // Kept beside the first cache directory's segments.
            bans: Bans::saved_in(config.disk.dirs.first().map(|dir| dir.path.join("bans"))),
            draining: std::sync::atomic::AtomicBool::new(false),
            drain_started: tokio::sync::Notify::new(),
            metrics: Arc::new(Metrics::new(workers)),
            top_urls: TopUrls::new(workers),
            limits: Arc::default(),
            inflight: limits::InflightMemory::default(),
            load_sample: std::sync::Mutex::new(None),
            reloads: std::sync::Mutex::new(Reloads::default()),
            workers,
            live: ArcSwap::from_pointee(Generation::first(config, workers)?),
        }))
    }

    /// The configuration in force and what was built from it. Cheap; hold it briefly (load
    /// [`Proxy::generation`] to keep it across awaits).
    pub fn live(&self) -> arc_swap::Guard<Arc<Generation>> {
        self.live.load()
    }

    /// The generation in force, to keep.
    pub fn generation(&self) -> Arc<Generation> {
        self.live.load_full()
    }

    /// Sends a request upstream: to the peer that owns `key` when `shared` (a cache fetch) and
    /// the node is in a cluster, unless the request came from a peer; otherwise (or when no
    /// peer that owns it answers) to the pool its route names.
    pub(super) async fn forward(
        &self,
        key: CacheKey,
        head: &mut http::request::Parts,
        body: RequestBody,
        shared: bool,
    ) -> Result<(http::Response<crate::upstream::OriginBody>, Trace), UpstreamError> {
        let live = self.generation();
        if let Some(targets) = head
            .extensions
            .get::<Arc<crate::upstream::Targets>>()
            .cloned()
        {
            // An application's `X-Reproxy-URL`: its servers, not a pool's or a peer's.
            head.headers.remove(PEER_HEADER);
            let (mut response, trace) = live.upstream().send_in_turn(&targets, head).await?;
            reproxy::take(response.headers_mut(), false, head);
            return Ok((response, trace));
        }
        let from_peer = head.headers.remove(PEER_HEADER).is_some();
        if let (Some(cluster), true, false) = (live.cluster(), shared, from_peer) {
            let mut tried = Vec::new();
            while let Some(owner) = cluster.owner(key, &tried, now_millis()) {
                tried.push(owner);
                // A cache fetch has no body: the same head goes to the peer, marked as a
                // peer's, and (if the peer fails) on to the next one or the origin unmarked.
                let request = MarkedRequest {
                    method: &head.method,
                    host: request_host_of(&head.headers, &head.uri),
                    target: target(head),
                };
                let marker = cluster.marker(&request, now_millis() / 1000);
                head.headers.insert(PEER_HEADER, marker);
                let sent = live
                    .upstream()
                    .send_to(&cluster.peers, owner, head, RequestBody::empty())
                    .await;
                head.headers.remove(PEER_HEADER);
                match sent {
                    Ok((mut response, trace)) => {
                        if let Some(name) = &live.status_header {
                            response.headers_mut().remove(name);
                        }
                        // The peer followed any instruction itself (or removed it).
                        reproxy::take(response.headers_mut(), false, head);
                        return Ok((response, trace));
                    }
                    Err(error) => {
                        // The owner is down: the next peer in the key's order owns it now.
                        tracing::warn!(%error, "peer failed; trying the next owner");
                    }
                }
            }
        }
        let destination = live
            .routes
            .destination(request_host_of(&head.headers, &head.uri), head.uri.path());
        let sent = live.upstream().send(
            destination.pool,
            key,
            head,
            body,
            destination.fallthrough_404,
        );
        let (mut response, trace) = sent.await?;
        // The cache status header is this node's to give: a parent's or origin's would be
        // stored with the object and served beside the node's own.
        if let Some(name) = &live.status_header {
            response.headers_mut().remove(name);
        }
        if let Some(instruction) =
            reproxy::take(response.headers_mut(), destination.pool.reproxy, head)
        {
            response.extensions_mut().insert(instruction);
        }
        Ok((response, trace))
    }

    /// The worker threads serving connections (`server.workers`, or one per core for 0).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.live().config)
    }

    /// The request counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Bytes of origin bodies being filled into objects not yet complete.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight.bytes()
    }

    /// Whether new origin fetches must wait: `server.max_inflight_memory` is reached.
    fn overloaded(&self) -> bool {
        let cap = self.live().config.server.max_inflight_memory.bytes();
        cap > 0 && self.inflight.bytes() >= cap
    }

    /// Client IP addresses with a record in the per-client limits now.
    pub fn clients_tracked(&self) -> usize {
        self.limits.tracked()
    }

    /// The most requested URLs.
    pub fn top_urls(&self) -> &TopUrls {
        &self.top_urls
    }

    /// The RAM store.
    pub fn store(&self) -> &MemoryStore {
        self.tiers.ram()
    }

    /// The disk tier, if configured.
    pub fn disk(&self) -> Option<&Arc<DiskStore>> {
        self.tiers.disk()
    }

    /// Whether a ban newer than `object` matches it; a banned object is purged. Costs one
    /// comparison while no ban is newer than the object.
    fn banned(&self, key: CacheKey, object: &Object) -> bool {
        let tested = object.ban_tested();
        if !self.bans.newer_than(tested) {
            return false;
        }
        let meta = object.meta();
        let tags = meta.fields.get(&self.live().tag_header);
        let (banned, tested) =
            self.bans
                .test(&meta.url, tags.as_ref().map(HeaderValue::as_bytes), tested);
        object.set_ban_tested(tested);
        if banned {
            self.purge(key);
        }
        banned
    }

    /// Adds a ban, unless `cache.max_bans` are held (then the number held); it is saved next
    /// to the disk tier so that it outlives a restart.
    pub fn ban(&self, matcher: Matcher) -> Result<u64, usize> {
        let max = self.live().config.cache.max_bans;
        self.bans.add(matcher, now_millis(), max)
    }

    /// Every ban, oldest first.
    pub fn bans(&self) -> Vec<Ban> {
        self.bans.list()
    }

    /// Removes every variant of `key` from every tier; returns whether there was one.
    pub fn purge(&self, key: CacheKey) -> bool {
        self.tiers.remove(key)
    }

    /// The keys of the fetches in flight now.
    pub fn fetch_keys(&self) -> Vec<CacheKey> {
        self.collapser.flight_keys()
    }

    /// Fetches in flight now.
    pub fn fetches_in_flight(&self) -> usize {
        self.collapser.flights()
    }

    /// The key of `target` on `host` over `scheme`, as the cache computes it.
    pub fn key_of(&self, scheme: &str, host: &str, target: &str) -> CacheKey {
        CacheKey::new(scheme, host, target, &self.live().config.cache)
    }

    /// Removes `target` on `host` from the cache, over both schemes (what was fetched for
    /// `http` and for `https` clients); returns whether there was one.
    pub fn purge_url(&self, host: &str, target: &str) -> bool {
        let http = self.purge(self.key_of("http", host, target));
        let https = self.purge(self.key_of("https", host, target));
        // A copy an application named (`X-Reproxy-URL`), by its own URL.
        let named = self.purge(self.key_of(reproxy::TARGET_SCHEME, host, target));
        http || https || named
    }

    /// Answers one request. Never fails: errors become responses here.
    pub async fn handle(self: &Arc<Self>, request: ClientRequest) -> ProxyResponse {
        let started = std::time::Instant::now();
        self.metrics.add(Counter::Requests, 1);
        let response = match self.route(request).await {
            Ok(response) => response,
            Err(error) => {
                // Lines within a budget: clients choose how many of these there are.
                static REJECTED: LogBudget = LogBudget::new(10);
                static FAILED: LogBudget = LogBudget::new(50);
                match error.side() {
                    // Counted; a line each would let a flood fill the log.
                    _ if matches!(error, ProxyError::RateLimited(_) | ProxyError::Overloaded) => {
                        tracing::debug!(%error, "request rejected")
                    }
                    Side::Client => {
                        if let Some(held_back) = REJECTED.admit() {
                            tracing::info!(%error, held_back, "request rejected")
                        }
                    }
                    Side::Origin | Side::Internal => {
                        if let Some(held_back) = FAILED.admit() {
                            tracing::warn!(%error, held_back, "request failed")
                        }
                    }
                }
                error_response(&error)
            }
        };
        self.metrics.record(response.cache_status);
        self.metrics
            .observe_latency(response.cache_status, started.elapsed());
        response
    }

    /// recv: decide between the cache and a plain pass to the origin.
    async fn route(
        self: &Arc<Self>,
        mut request: ClientRequest,
    ) -> Result<ProxyResponse, ProxyError> {
        if let Some(answer) = self.admit(&mut request)? {
            return Ok(answer);
        }
        let method = &request.head.method;
        let cacheable_method = method == Method::GET || method == Method::HEAD;
        if !cacheable_method || request.has_body {
            // Boxed, here and for misses: the cold paths' state is allocated only when taken,
            // which keeps the hit path's future (and every connection's task) small.
            let pass = Box::pin(self.pass(request));
            return pass.await;
        }
        let key = self.key_of(
            request.scheme(),
            request_host(&request.head),
            target(&request.head),
        );
        self.top_urls.record(key, || {
            format!(
                "{}://{}{}",
                request.scheme(),
                request_host(&request.head),
                target(&request.head)
            )
        });
        let exchange = Exchange {
            cache_control: CacheControl::parse(&request.head.headers),
            request,
            key,
        };
        let response = self.lookup(exchange).await;
        if let Ok(response) = &response {
            self.top_urls
                .add_bytes(key, response.body.length().unwrap_or(0));
        }
        response
    }

    /// recv, the admission checks, in order: the client's request rate (429), the method
    /// (405), a request that has been through this node before (508), credentials in the host
    /// (400); then the path is normalized (what the cache key and the origin both see from
    /// here on); plain HTTP on a node that redirects to HTTPS (308, the answer), the URL's
    /// signature where its route wants one (403; the signature's parameters are removed), the
    /// declared body size (413).
    fn admit(&self, request: &mut ClientRequest) -> Result<Option<ProxyResponse>, ProxyError> {
        let live = self.live();
        let server = &live.config.server;
        if let Some(rate) = live.rate_limit {
            if let Err(retry_after) = self.limits.admit(request.client.ip(), rate, now_millis()) {
                self.metrics.add(Counter::RateLimited, 1);
                return Err(ProxyError::RateLimited(retry_after));
            }
        }
        let method = &request.head.method;
        if method == Method::CONNECT || !live.methods.contains(method) {
            return Err(ProxyError::MethodNotAllowed(live.allow.clone()));
        }
        if live.looped(&request.head.headers) {
            return Err(ProxyError::LoopDetected);
        }
        if request_host(&request.head).contains('@') {
            // Credentials in the target (`http://user:pw@host/`) or in `Host`: never a host.
            return Err(ProxyError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                reason: "userinfo in the request's host",
            });
        }
        normalize_target(&mut request.head)?;
        if !request.tls && server.redirect_to_https {
            return redirect_to_https(server, request).map(Some);
        }
        check_signature(&live, request)?;
        if live.route_checks {
            let (host, path) = (request_host(&request.head), request.head.uri.path());
            let pool = live.routes.destination(host, path).pool;
            if pool.internal && !self.sent_by_a_peer(&live, request) {
                return Err(ProxyError::Internal404);
            }
            if pool.bucket && request.head.uri.query().is_some() {
                // The store never sees the query (it could ask for a listing or an ACL), so
                // neither does the key: `?v=2` is the same object, fetched and purged once.
                drop_query(&mut request.head)?;
            }
        }
        authorize_write(&live, request)?;
        if request.body.declared_over(server.max_request_body.bytes()) {
            return Err(ProxyError::BadRequest {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                reason: "request body too large",
            });
        }
        Ok(None)
    }

    /// lookup: a stored variant decides between hit, stale and revalidation; none is a miss.
    async fn lookup(self: &Arc<Self>, exchange: Exchange) -> Result<ProxyResponse, ProxyError> {
        let key = exchange.key;
        let headers = &exchange.request.head.headers;
        let usable = |object: &Object| variant_matches(&object.meta().variant, headers);
        let promote_after_hits = self.live().config.disk.promote_after_hits;
        let found = Box::pin(self.tiers.lookup(key, usable, promote_after_hits)).await;
        let object = match found {
            Found::Usable(object) if !self.banned(key, &object) => object,
            _ if exchange.cache_control.only_if_cached => return Err(ProxyError::NotCached),
            // The response varies: this request's fetch collapses with the requests that want
            // the same variant, not with those fetching another.
            Found::OtherVariant(other) | Found::Usable(other) => {
                let flight = flight_key(key, &other, headers);
                return Box::pin(self.miss(exchange, flight, None)).await;
            }
            Found::Nothing => return Box::pin(self.miss(exchange, key, None)).await,
        };
        match reuse_of(&object, &exchange.cache_control) {
            Reuse::Fresh => Ok(self.deliver(&object, &exchange, CacheStatus::Hit).await),
            Reuse::StaleAccepted => Ok(self.deliver(&object, &exchange, CacheStatus::Stale).await),
            Reuse::StaleWhileRevalidate => {
                self.refresh_in_background(&exchange, &object);
                Ok(self.deliver(&object, &exchange, CacheStatus::Stale).await)
            }
            Reuse::Revalidate { .. } if exchange.cache_control.only_if_cached => {
                Err(ProxyError::NotCached)
            }
            Reuse::Revalidate { stale_if_error } => {
                let fallback = Stale {
                    object,
                    usable_on_error: stale_if_error,
                };
                let flight = flight_key(key, &fallback.object, headers);
                let miss = Box::pin(self.miss(exchange, flight, Some(fallback)));
                miss.await
            }
        }
    }

    /// miss: join or lead the collapsed fetch under `flight` (the URL's key, or its
    /// variant's when a stored variant says which fields the response varies on).
    async fn miss(
        self: &Arc<Self>,
        exchange: Exchange,
        flight: CacheKey,
        stale: Option<Stale>,
    ) -> Result<ProxyResponse, ProxyError> {
        let key = exchange.key;
        let headers = &exchange.request.head.headers;
        // Shed a new fetch, not one under way (joining it costs no memory), and serve stale
        // content instead when there is some.
        if self.overloaded() && !self.collapser.in_flight(flight) {
            self.metrics.add(Counter::Shed, 1);
            return match stale {
                // As when the origin fails: only where stale-if-error (or the grace) allows.
                Some(stale) if stale.usable_on_error => Ok(self
                    .deliver(&stale.object, &exchange, CacheStatus::Stale)
                    .await),
                _ => Err(ProxyError::Overloaded),
            };
        }
        let fetched_meanwhile = || self.fetched_meanwhile(&exchange);
        let uncacheable = self.collapser.is_uncacheable(key);
        if uncacheable && exchange.request.head.headers.contains_key(RANGE) {
            // Its range cannot be stored as a slice (or at all): the client's own range.
            self.metrics.add(Counter::HitForMiss, 1);
            return self.pass(exchange.request).await;
        }
        let guard = if uncacheable {
            // Hit-for-miss: fetch without making anyone wait for this fetch, and still store
            // a response that turns out cacheable.
            self.metrics.add(Counter::HitForMiss, 1);
            self.collapser.alone(key)
        } else {
            // Without a stored variant, first collapse on the URL; a follower whose leader
            // fetched another variant (the response varies and this request's values differ)
            // then collapses with the requests that want its own variant, as Varnish wakes
            // its waiting list.
            let mut flight = flight;
            loop {
                let follower = match self.collapser.join_unless(flight, fetched_meanwhile) {
                    Role::Leader(guard) => break guard,
                    Role::Follower(follower) => follower,
                };
                match follower.outcome().await {
                    FlightOutcome::Object(object)
                        if variant_matches(&object.meta().variant, headers) =>
                    {
                        self.metrics.add(Counter::Collapsed, 1);
                        return Ok(self.deliver(&object, &exchange, CacheStatus::Hit).await);
                    }
                    FlightOutcome::Object(object) if flight == key => {
                        let meta = object.meta();
                        let vary = meta.variant.iter().map(|(name, _)| name.as_str());
                        flight = key.variant(vary, headers);
                    }
                    FlightOutcome::Failed(status) => {
                        self.metrics.add(Counter::Collapsed, 1);
                        return match stale {
                            Some(stale) if stale.usable_on_error => Ok(self
                                .deliver(&stale.object, &exchange, CacheStatus::Stale)
                                .await),
                            _ => Err(ProxyError::FollowedFailure(status)),
                        };
                    }
                    _ => return self.pass(exchange.request).await,
                }
            }
        };
        let plan = FetchPlan::new(
            self,
            &exchange,
            stale.as_ref().map(|s| Arc::clone(&s.object)),
        );
        let Some(fetched) = fetch::lead(Arc::clone(self), plan, guard).await else {
            return Err(ProxyError::Internal("fetch task ended without a result"));
        };
        let mut response = self.answer_miss(fetched.result, exchange, stale).await?;
        if response.origin.is_none() {
            response.origin = fetched.origin;
        }
        Ok(response)
    }

    /// miss, continued: the response to the leading client, from what its fetch got.
    async fn answer_miss(
        self: &Arc<Self>,
        result: FetchResult,
        exchange: Exchange,
        stale: Option<Stale>,
    ) -> Result<ProxyResponse, ProxyError> {
        match result {
            FetchResult::Stored(object) => {
                Ok(self.deliver(&object, &exchange, CacheStatus::Miss).await)
            }
            FetchResult::Refreshed(object) => Ok(self
                .deliver(&object, &exchange, CacheStatus::Revalidated)
                .await),
            FetchResult::NotStored(response) => {
                if let Some(instruction) = response.extensions().get::<reproxy::Instruction>() {
                    let (instruction, first) = (instruction.clone(), response.into_parts().0);
                    return self
                        .follow(instruction, &first.headers, exchange.request)
                        .await;
                }
                if response.status().is_server_error() {
                    if let Some(stale) = stale.filter(|s| s.usable_on_error) {
                        return Ok(self
                            .deliver(&stale.object, &exchange, CacheStatus::Stale)
                            .await);
                    }
                }
                if exchange.request.head.headers.contains_key(RANGE) {
                    // The whole object was fetched and will not be stored: ask the origin for
                    // just the range instead of relaying all of it.
                    drop(response);
                    return self.pass(exchange.request).await;
                }
                Ok(self.relay(response, None, &exchange.request, CacheStatus::Pass))
            }
            FetchResult::Failed(error) => match stale {
                Some(stale) if stale.usable_on_error => Ok(self
                    .deliver(&stale.object, &exchange, CacheStatus::Stale)
                    .await),
                _ => Err(error),
            },
        }
    }

    /// The stored variant for `request` that it may use as it is: what a request about to lead
    /// a fetch for `key` looks for once more (`Collapser::join_unless`).
    fn fetched_meanwhile(&self, exchange: &Exchange) -> Option<Arc<Object>> {
        let (key, headers) = (exchange.key, &exchange.request.head.headers);
        self.tiers
            .in_ram(key, |object| {
                variant_matches(&object.meta().variant, headers)
            })
            .filter(|object| !self.banned(key, object))
            .filter(|object| reuse_of(object, &exchange.cache_control) == Reuse::Fresh)
    }

    /// Starts one background revalidation of a stale object, unless one is already running.
    fn refresh_in_background(self: &Arc<Self>, exchange: &Exchange, object: &Arc<Object>) {
        let flight = flight_key(exchange.key, object, &exchange.request.head.headers);
        if self.collapser.in_flight(flight) || self.overloaded() {
            return;
        }
        let fetched_meanwhile = || self.fetched_meanwhile(exchange);
        if let Role::Leader(guard) = self.collapser.join_unless(flight, fetched_meanwhile) {
            let plan = FetchPlan::new(self, exchange, Some(Arc::clone(object)));
            fetch::spawn(Arc::clone(self), plan, guard);
        }
    }
}

/// Routes with `signing_keys` serve only signed URLs: checked before anything else, and the
/// signature's parameters removed from the target (one cache object per file, and the origin
/// never sees them).
fn check_signature(live: &Generation, request: &mut ClientRequest) -> Result<(), ProxyError> {
    let Some(keys) = live
        .routes
        .signing_keys(request_host(&request.head), request.head.uri.path())
    else {
        return Ok(());
    };
    let now = now_millis() / 1000;
    let verified = crate::signed_url::verify_signed(target(&request.head), keys, now)
        .map_err(ProxyError::Forbidden)?;
    if let Some(method) = &verified.method {
        if method != request.head.method.as_str() {
            return Err(ProxyError::Forbidden(
                crate::signed_url::Denied::WrongMethod,
            ));
        }
        request.head.extensions.insert(SignedForItsMethod);
    }
    replace_target(&mut request.head, &verified.target)
}

/// Marks a request whose URL was signed for its method (`method=PUT` in the signature): a
/// write the route's signing keys allowed.
#[derive(Clone, Copy, Debug)]
struct SignedForItsMethod;

/// A PUT or DELETE to a writable pool with `writable_auth` needs the admin token (which is not
/// sent on) or a URL signed for that method. (A URL signed for reading does not do: its
/// signature does not cover the method, so a download link would become an upload link.)
fn authorize_write(live: &Generation, request: &mut ClientRequest) -> Result<(), ProxyError> {
    if !matches!(request.head.method, Method::PUT | Method::DELETE) {
        return Ok(());
    }
    let (host, path) = (request_host(&request.head), request.head.uri.path());
    let destination = live.routes.destination(host, path);
    if destination.pool.writable != Some(crate::upstream::pool::WriteAuth::Token) {
        return Ok(());
    }
    let token = live
        .write_token
        .as_ref()
        .is_some_and(|token| token.admits(&request.head.headers));
    let signed = request
        .head
        .extensions
        .get::<SignedForItsMethod>()
        .is_some();
    match token || signed {
        true => {
            request.head.headers.remove(http::header::AUTHORIZATION);
            Ok(())
        }
        false => Err(ProxyError::WriteUnauthorized),
    }
}

/// Removes the query from the request's target.
fn drop_query(head: &mut http::request::Parts) -> Result<(), ProxyError> {
    let path = head.uri.path().to_owned();
    replace_target(head, &path)
}

/// Puts `target` (a path and query derived from the request's own) in the request's URI,
/// keeping its scheme and authority.
fn replace_target(head: &mut http::request::Parts, target: &str) -> Result<(), ProxyError> {
    let invalid = || ProxyError::Internal("a target derived from the request no longer parses");
    let mut parts = head.uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().map_err(|_| invalid())?);
    head.uri = http::Uri::from_parts(parts).map_err(|_| invalid())?;
    Ok(())
}

/// Puts the request's path in its normal form (`cache::key::normalize_path`), so that the
/// cache key, the route, the signature check and the origin all read the same one.
fn normalize_target(head: &mut http::request::Parts) -> Result<(), ProxyError> {
    let Some(normal) = crate::cache::key::normalize_path(head.uri.path()) else {
        return Ok(());
    };
    let target = match head.uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    replace_target(head, &target)
}

/// `server.redirect_to_https`: the same URL over HTTPS, on the first TLS listener's port.
fn redirect_to_https(
    server: &crate::config::ServerConfig,
    request: &ClientRequest,
) -> Result<ProxyResponse, ProxyError> {
    let port = server.listen_tls.first().map_or(443, |a| a.port());
    let host = request_host(&request.head);
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    if name.is_empty() {
        return Err(ProxyError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            reason: "no Host to redirect to",
        });
    }
    let location = match port {
        443 => format!("https://{name}{}", target(&request.head)),
        port => format!("https://{name}:{port}{}", target(&request.head)),
    };
    let location = HeaderValue::from_str(&location).map_err(|_| ProxyError::BadRequest {
        status: StatusCode::BAD_REQUEST,
        reason: "invalid Host",
    })?;
    Ok(error::redirect_response(location))
}

/// A stored object that needs revalidation, kept as the fallback if the origin fails.
struct Stale {
    object: Arc<Object>,
    usable_on_error: bool,
}

/// The key a miss for `key` collapses under, knowing a stored variant `known`: the URL's when
/// the response does not vary, else that of the variant `headers` want.
fn flight_key(key: CacheKey, known: &Object, headers: &http::HeaderMap) -> CacheKey {
    let vary = &known.meta().variant;
    if vary.is_empty() {
        return key;
    }
    key.variant(vary.iter().map(|(name, _)| name.as_str()), headers)
}

/// Whether `object` may answer a request with `request_cc` as it is, now.
fn reuse_of(object: &Object, request_cc: &CacheControl) -> Reuse {
    let meta = object.meta();
    let age = meta.timing.current_age(now_millis());
    policy::reuse(&meta.freshness, age, request_cc)
}

/// `https` for requests that came over TLS, else `http`.
pub fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

impl ClientRequest {
    /// `https` or `http`: how the request reached the node.
    pub fn scheme(&self) -> &'static str {
        scheme(self.tls)
    }
}

/// The host a request is for: the absolute target's authority, else `Host`, else empty.
pub fn request_host(head: &http::request::Parts) -> &str {
    request_host_of(&head.headers, &head.uri)
}

/// The host of a request from its parts: the URI's authority, else `Host`, else empty.
fn request_host_of<'a>(headers: &'a http::HeaderMap, uri: &'a http::Uri) -> &'a str {
    if let Some(authority) = uri.authority() {
        return authority.as_str();
    }
    headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

/// The path and query of a request target.
pub fn target(head: &http::request::Parts) -> &str {
    head.uri.path_and_query().map_or("/", |p| p.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bodiless request from 127.0.0.1 over cleartext.
    fn client_request(head: http::request::Parts) -> ClientRequest {
        ClientRequest {
            head,
            body: RequestBody::empty(),
            has_body: false,
            client: SocketAddr::from(([127, 0, 0, 1], 1)),
            tls: false,
        }
    }

    /// The hit path's future is what every request carries; keep it small.
    #[test]
    fn the_request_future_stays_small() {
        let proxy = Proxy::new(Arc::new(Config::default()), 1).unwrap();
        let (head, ()) = http::Request::new(()).into_parts();
        let request = client_request(head);
        let size = std::mem::size_of_val(&proxy.handle(request));
        // 2,288 bytes when this test was written; a jump means a cold path's state landed in
        // every request's future (box it, as `miss` and `pass` are).
        assert!(size <= 2560, "Proxy::handle's future is {size} bytes");
    }

    /// The race this covers is too narrow to hit on purpose through sockets: a request's
    /// lookup finds nothing, then another fetch stores the object and leaves the in-flight
    /// table, then the request joins it. Calling `miss` with the object already stored is
    /// that request, after its lookup.
    #[tokio::test]
    async fn a_leader_that_finds_the_object_stored_after_its_lookup_does_not_fetch() {
        let mut config = Config::default();
        // Nothing listens there: a fetch would fail with 502.
        config.origin.urls = vec!["http://127.0.0.1:1".parse().unwrap()];
        let proxy = Proxy::new(Arc::new(config), 1).unwrap();
        let key = proxy.key_of("http", "test", "/raced");
        let mut meta = crate::store::ObjectMeta::for_tests();
        let now = now_millis();
        meta.timing.request_time = now;
        meta.timing.response_time = now;
        meta.timing.date = now;
        meta.freshness.lifetime = 60_000;
        meta.content_length = Some(5);
        proxy.tiers.insert_in_ram(
            key,
            &Object::complete(meta, bytes::Bytes::from_static(b"raced")),
        );
        let request = |cache_control: Option<&'static str>| {
            let mut head = http::Request::get("/raced").header(HOST, "test");
            if let Some(value) = cache_control {
                head = head.header(http::header::CACHE_CONTROL, value);
            }
            let (head, ()) = head.body(()).unwrap().into_parts();
            Exchange {
                cache_control: CacheControl::parse(&head.headers),
                request: client_request(head),
                key,
            }
        };

        let answer = proxy.miss(request(None), key, None).await.unwrap();
        assert_eq!(answer.cache_status, CacheStatus::Hit);
        assert_eq!(proxy.metrics.get(Counter::OriginRequests), 0);
        assert_eq!(proxy.fetches_in_flight(), 0, "the flight it led is over");

        // A background refresh decided on before the object was refreshed starts no fetch.
        let refreshing = request(None);
        let stored = proxy
            .tiers
            .in_ram(key, |object| {
                variant_matches(&object.meta().variant, &refreshing.request.head.headers)
            })
            .unwrap();
        proxy.refresh_in_background(&refreshing, &stored);
        assert_eq!(proxy.fetches_in_flight(), 0, "no refresh under way");

        // A request that wants the origin's word still goes to the origin.
        let answer = proxy.miss(request(Some("no-cache")), key, None).await;
        assert!(answer.is_err(), "fetched from the origin, which is down");
        assert_eq!(proxy.metrics.get(Counter::OriginRequests), 1);
    }
}
