//! The admin API, on its own listener: health, status, counters (JSON and Prometheus text),
//! the cache's contents and entries, purge, upstreams. It receives handles to the proxy's state
//! and never touches the request path. `shoal ctl` talks to this API only; every endpoint is
//! documented in `docs/admin-api.md`. With a token configured, every request must carry it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

mod fanout;
pub mod guard;

use self::guard::{Guard, Refusal};
use crate::cache::ban::Matcher;
use crate::clock::now_millis;
use crate::proxy::Generation;
use crate::proxy::Proxy;
use crate::throttle::LogBudget;
use crate::upstream::Pool;
use shoal_api::cache::{
    BanAdded, BanMatch, BanView, CachedObject, Inspection, Invalidation, Purged, ReportRow,
    VariantView,
};
use shoal_api::node::{ClusterStatus, Status};
use shoal_api::path;
use shoal_api::stats::{AccessLogStats, LatencyStats, Stats, VolumeState};
use shoal_api::upstreams::{AdminState, HostStateChange, HostView, PoolView};

/// Binds the admin API on `address`, requiring `token` (if any) on every request; returns the
/// bound address.
pub async fn start(
    address: SocketAddr,
    proxy: Arc<Proxy>,
    token: Option<String>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let guard = Arc::new(Guard::new(token.as_deref(), &proxy.config().admin.names));
    let token: Option<Arc<str>> = token.map(Into::into);
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let proxy = Arc::clone(&proxy);
            let token = token.clone();
            let guard = Arc::clone(&guard);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let proxy = Arc::clone(&proxy);
                        let token = token.clone();
                        let guard = Arc::clone(&guard);
                        async move {
                            if request.method() == Method::GET && guard.check(&request).is_ok() {
                                if let Some(page) = dashboard_file(request.uri().path()) {
                                    return Ok::<_, std::convert::Infallible>(page);
                                }
                            }
                            let response = match guard.check(&request) {
                                Ok(()) => route(&proxy, &request, started, token.as_deref()).await,
                                Err(refusal) => refused(&refusal, peer, request.uri().path()),
                            };
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

/// The dashboard's files: the paths they answer, their text, their type.
const DASHBOARD: [(&[&str], &str, &str); 3] = [
    (
        &["/", "/index.html"],
        include_str!("dashboard/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        &["/dashboard.js"],
        include_str!("dashboard/dashboard.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        &["/dashboard.css"],
        include_str!("dashboard/dashboard.css"),
        "text/css; charset=utf-8",
    ),
];

/// The dashboard's files, compiled in: they hold no data (the page reads the API with the
/// token the operator gives it), so they are served without the token.
fn dashboard_file(path: &str) -> Option<Response<Full<Bytes>>> {
    let (_, content, content_type) = DASHBOARD
        .iter()
        .find(|(paths, _, _)| paths.contains(&path))?;
    Response::builder()
        .header(http::header::CONTENT_TYPE, *content_type)
        .header(http::header::CACHE_CONTROL, "no-cache")
        // Nothing from elsewhere, ever: the dashboard works offline and cannot leak the token.
        .header(
            http::header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Full::new(Bytes::from_static(content.as_bytes())))
        .ok()
}

/// The answer to a request the guard refused, logged within a budget (anyone who can reach
/// the listener can send these as fast as they like).
fn refused(refusal: &Refusal, peer: SocketAddr, path: &str) -> Response<Full<Bytes>> {
    static LOGGED: LogBudget = LogBudget::new(5);
    if let Some(held_back) = LOGGED.admit() {
        tracing::warn!(%peer, path, ?refusal, held_back, "admin request refused");
    }
    let (status, reason) = refusal.answer();
    let mut response = text(status, reason.into());
    if *refusal == Refusal::Unauthorized {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"shoal admin\""),
        );
    }
    response
}

async fn route<B>(
    proxy: &Proxy,
    request: &http::Request<B>,
    started: std::time::Instant,
    token: Option<&str>,
) -> Response<Full<Bytes>> {
    let query = request.uri().query().unwrap_or("");
    match (request.method(), request.uri().path()) {
        (&Method::POST, route @ (path::PURGE | path::BAN | path::PURGE_TAG)) => {
            let done = match invalidate(proxy, route, query) {
                Ok(done) => done,
                Err((status, reason)) => return text(status, format!("{reason}\n")),
            };
            match fanout::wanted(query) {
                true => fanout::to_peers(proxy, route, query, token, done).await,
                false => json(&done),
            }
        }
        (&Method::GET, path::HEALTH) => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, path::STATUS) => json(&status(proxy, started)),
        (&Method::GET, path::CONFIG) => json(&*proxy.config()),
        (&Method::POST, path::RELOAD) => match proxy.reload_from_source() {
            Ok(report) => json(&report),
            Err(reason) => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("configuration refused, the running one stays: {reason}\n"),
            ),
        },
        (&Method::GET, path::FETCHES) => json(
            &proxy
                .fetch_keys()
                .iter()
                .map(|key| key.to_hex())
                .collect::<Vec<_>>(),
        ),
        (&Method::GET, path::INSPECT) => {
            let url = parameter(query, "url").unwrap_or_default();
            match parse_url(&url) {
                Some((host, target)) => {
                    json(&inspect(proxy, scheme_of(&url), &host, &target).await)
                }
                None => text(
                    StatusCode::BAD_REQUEST,
                    "expected /cache/inspect?url=http://host/path\n".into(),
                ),
            }
        }
        (&Method::GET, path::STATS) => json(&stats(proxy)),
        (&Method::GET, path::METRICS) => prometheus_text(prometheus(proxy, &stats(proxy))),
        (&Method::GET, path::CACHE) => json(&cache_listing(proxy)),
        (&Method::GET, path::UPSTREAMS) => json(&upstreams(proxy)),
        (&Method::GET, path::TOP_URLS) => {
            let top = parameter(query, "top")
                .and_then(|top| top.parse().ok())
                .unwrap_or(20usize);
            json(&proxy.top_urls().top(top))
        }
        (&Method::GET, path::REPORT) => {
            let by_asn = match parameter(query, "by").as_deref() {
                Some("asn") => true,
                Some("country") | None => false,
                Some(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "expected by=country or by=asn\n".into(),
                    )
                }
            };
            let top = parameter(query, "top")
                .and_then(|top| top.parse().ok())
                .unwrap_or(20usize);
            let rows = proxy
                .access_log()
                .map(|log| log.report(by_asn, top))
                .unwrap_or_default();
            json(
                &rows
                    .into_iter()
                    .map(|(key, requests, bytes)| ReportRow {
                        key,
                        requests,
                        bytes,
                    })
                    .collect::<Vec<_>>(),
            )
        }
        (&Method::GET, path::BANS) => json(
            &proxy
                .bans()
                .iter()
                .map(|ban| {
                    let (kind, value) = ban.matcher.describe();
                    BanView {
                        created: ban.created,
                        kind: kind.into(),
                        value: value.into(),
                    }
                })
                .collect::<Vec<_>>(),
        ),
        (&Method::POST, path::UPSTREAM_STATE) => set_host_state(proxy, query),
        _ => text(
            StatusCode::NOT_FOUND,
            "unknown admin endpoint; see docs/admin-api.md: /health, /status, /stats, /metrics, \
             /config, /cache, /cache/inspect?url=, /fetches, /upstreams, /bans, POST /reload, \
             POST /purge?url=, \
             POST /ban?prefix= or ?regex=, POST /purge-tag?tag=, \
             POST /upstreams/state?pool=&host=&state=\n"
                .into(),
        ),
    }
}

/// `POST /ban?prefix=URL-PREFIX` or `POST /ban?regex=EXPRESSION`.
/// `POST /purge?url=`, `/ban?prefix=|regex=` and `/purge-tag?tag=` on this node: what was
/// done, as JSON, or why the request is refused.
fn invalidate(
    proxy: &Proxy,
    endpoint: &str,
    query: &str,
) -> Result<Invalidation, (StatusCode, String)> {
    let refuse = |message: &str| Err((StatusCode::BAD_REQUEST, message.to_owned()));
    let matcher = match endpoint {
        path::PURGE => {
            let Some((host, target)) = parameter(query, "url").as_deref().and_then(parse_url)
            else {
                return refuse("expected /purge?url=http://host/path");
            };
            let purged = proxy.purge_url(&host, &target);
            return Ok(Invalidation::Purged(Purged { purged }));
        }
        path::PURGE_TAG => match parameter(query, "tag") {
            Some(tag) if !tag.is_empty() && !tag.contains([' ', ',']) => Matcher::Tag(tag),
            _ => return refuse("expected /purge-tag?tag=TAG (one tag, without spaces or commas)"),
        },
        _ => match (parameter(query, "prefix"), parameter(query, "regex")) {
            (Some(prefix), None)
                if prefix.starts_with("http://") || prefix.starts_with("https://") =>
            {
                Matcher::Prefix(prefix)
            }
            (None, Some(expression)) => match regex::Regex::new(&expression) {
                Ok(regex) => Matcher::Regex(regex),
                Err(error) => return refuse(&format!("bad regex: {error}")),
            },
            _ => {
                return refuse(
                    "expected /ban?prefix=http://host/path or /ban?regex=EXPRESSION (matched \
                     against http://host/path?query)",
                )
            }
        },
    };
    let banned = match &matcher {
        Matcher::Prefix(prefix) => BanMatch::Prefix(prefix.clone()),
        Matcher::Regex(regex) => BanMatch::Regex(regex.as_str().into()),
        Matcher::Tag(tag) => BanMatch::Tag(tag.clone()),
    };
    let created = proxy.ban(matcher).map_err(|held| {
        let reason = format!(
            "the node holds {held} bans, its cache.max_bans; a broader ban covers several, and \
             bans end after 30 days"
        );
        (StatusCode::INSUFFICIENT_STORAGE, reason)
    })?;
    tracing::info!(?banned, "ban added through the admin API");
    Ok(Invalidation::Banned(BanAdded { banned, created }))
}

/// `http://host/path?query` as host and target.
fn parse_url(url: &str) -> Option<(String, String)> {
    let uri = url.parse::<http::Uri>().ok()?;
    let host = uri.authority()?.as_str().to_owned();
    let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Some((host, target))
}

/// `https` for an `https://` URL, else `http`.
fn scheme_of(url: &str) -> &'static str {
    crate::proxy::scheme(url.starts_with("https://"))
}

/// Decodes `%XX` escapes (the admin API's query parameters are URLs themselves).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[index], hex(index + 1), hex(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                index += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(proxy: &Proxy, started: std::time::Instant) -> Status {
    let live = proxy.live();
    let (listen, listen_tls) = proxy.listening();
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: started.elapsed().as_secs(),
        listen,
        listen_tls,
        workers: proxy.workers(),
        cluster: live.cluster().map(|cluster| ClusterStatus {
            this_node: cluster.peers.hosts[cluster.me].url.authority.clone(),
            peers: cluster.peers.hosts.len(),
        }),
        requests: proxy.metrics().get(crate::proxy::Counter::Requests),
        fetches_in_flight: proxy.fetches_in_flight(),
        config_generation: live.number,
        config_loaded_at: live.loaded_at,
        last_reload: proxy.last_reload(),
        load: proxy.load(),
    }
}

/// How far an object's body has come, for the listing and inspection.
fn fill_state(object: &crate::store::Object) -> String {
    match object.state() {
        crate::store::FillState::Filling => "filling",
        crate::store::FillState::Complete => "complete",
        crate::store::FillState::Aborted => "aborted",
    }
    .into()
}

fn variant_view(object: &crate::store::Object, tiers: Vec<&'static str>) -> VariantView {
    let meta = object.meta();
    let age = meta.timing.current_age(now_millis());
    VariantView {
        tiers: tiers.iter().map(|&tier| tier.into()).collect(),
        status: meta.status.as_u16(),
        vary: meta.variant.clone(),
        headers: meta
            .fields
            .iter()
            .map(|(name, value)| {
                (
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        age_seconds: age / 1000,
        fresh_for_seconds: (meta.freshness.lifetime as i64 - age as i64) / 1000,
        bytes: match meta.slice_size {
            0 => object.length(),
            _ => meta.content_length.unwrap_or(0),
        },
        state: fill_state(object),
        slice_size: (meta.slice_size > 0).then_some(meta.slice_size),
    }
}

async fn inspect(proxy: &Proxy, scheme: &str, host: &str, target: &str) -> Inspection {
    let key = proxy.key_of(scheme, host, target);
    let mut variants: Vec<(Arc<crate::store::Object>, Vec<&'static str>)> = proxy
        .store()
        .peek(key)
        .map(|entry| {
            entry
                .variants
                .iter()
                .map(|object| {
                    let tiers = match object.is_on_disk() {
                        true => vec!["ram", "disk"],
                        false => vec!["ram"],
                    };
                    (Arc::clone(object), tiers)
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(disk) = proxy.disk() {
        for location in disk.peek(key) {
            let Ok(object) = disk.read(key, location).await else {
                continue;
            };
            let known = variants
                .iter()
                .any(|(other, _)| other.meta().variant == object.meta().variant);
            if !known {
                variants.push((object, vec!["disk"]));
            }
        }
    }
    Inspection {
        url: format!("{scheme}://{host}{target}"),
        key: key.to_hex(),
        fetch_in_flight: proxy.fetch_keys().contains(&key),
        variants: variants
            .into_iter()
            .map(|(object, tiers)| variant_view(&object, tiers))
            .collect(),
    }
}

fn stats(proxy: &Proxy) -> Stats {
    let counters: std::collections::BTreeMap<String, u64> = proxy
        .metrics()
        .snapshot()
        .into_iter()
        .map(|(name, count)| (name.to_owned(), count))
        .collect();
    let count = |name: &str| counters.get(name).copied().unwrap_or(0) as f64;
    let from_cache = count("hits") + count("stale") + count("revalidated");
    let looked_up = from_cache + count("misses");
    Stats {
        time_ms: now_millis(),
        hit_ratio: (looked_up > 0.0).then(|| from_cache / looked_up),
        counters,
        store: proxy.store().stats(),
        disk: proxy.disk().map(|disk| disk.stats()),
        access_log: proxy.access_log().map(|log| AccessLogStats {
            written: log.written(),
            dropped: log.dropped(),
        }),
        fetches_in_flight: proxy.fetches_in_flight(),
        clients_tracked: proxy.clients_tracked(),
        inflight_bytes: proxy.inflight_bytes(),
        latency: LatencyStats {
            bounds_micros: crate::histogram::LATENCY_BUCKETS_MICROS.to_vec(),
            requests: proxy
                .metrics()
                .latency()
                .into_iter()
                .map(|(status, histogram)| (status.as_str().to_owned(), histogram))
                .collect(),
            origin_first_byte: {
                let live = proxy.live();
                let mut total = crate::histogram::HistogramSnapshot::default();
                for pool in upstream_pools(&live) {
                    pool.first_byte.add_to(&mut total);
                }
                total
            },
        },
    }
}

fn cache_listing(proxy: &Proxy) -> Vec<CachedObject> {
    let now = now_millis();
    let mut listing = Vec::new();
    for entry in proxy.store().entries() {
        for object in &entry.variants {
            let meta = object.meta();
            let age = meta.timing.current_age(now);
            listing.push(CachedObject {
                key: entry.key.to_hex(),
                url: meta.url.clone(),
                status: meta.status.as_u16(),
                bytes: object.length(),
                chunks: object.chunk_count(),
                age_seconds: age / 1000,
                fresh_for_seconds: (meta.freshness.lifetime as i64 - age as i64) / 1000,
                state: fill_state(object),
            });
        }
    }
    listing.sort_by(|a, b| a.url.cmp(&b.url));
    listing
}

fn pool_view(pool: &Pool, me: Option<usize>) -> PoolView {
    let now = now_millis();
    PoolView {
        pool: pool.name.clone(),
        policy: pool.policy(),
        parent: pool.parent,
        hosts: pool
            .hosts
            .iter()
            .enumerate()
            .map(|(index, host)| HostView {
                host: host.url.authority.clone(),
                weight: host.weight,
                state: match host.admin_state() {
                    AdminState::Down => "down",
                    AdminState::Drain => "drain",
                    _ if host.is_available(now) => "up",
                    _ if !host.is_healthy() => "unhealthy",
                    _ => "ejected",
                }
                .into(),
                admin: host.admin_state(),
                healthy: host.is_healthy(),
                ejected_for_ms: host.ejected_until().saturating_sub(now),
                in_flight: host.in_flight(),
                last_check: host.last_check(),
                this_node: me == Some(index),
            })
            .collect(),
    }
}

fn upstreams(proxy: &Proxy) -> Vec<PoolView> {
    let live = proxy.live();
    let mut pools: Vec<PoolView> = live
        .routes()
        .pools()
        .iter()
        .map(|pool| pool_view(pool, None))
        .collect();
    if let Some(cluster) = live.cluster() {
        pools.push(pool_view(&cluster.peers, Some(cluster.me)));
    }
    pools
}

/// `POST /upstreams/state?pool=NAME&host=HOST:PORT&state=up|down|drain|auto`.
fn set_host_state(proxy: &Proxy, query: &str) -> Response<Full<Bytes>> {
    let state = match parameter(query, "state").as_deref() {
        Some("up") => AdminState::Up,
        Some("down") => AdminState::Down,
        Some("drain") => AdminState::Drain,
        Some("auto") => AdminState::Auto,
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "expected state=up, down, drain or auto\n".into(),
            )
        }
    };
    let (Some(pool_name), Some(host_name)) = (parameter(query, "pool"), parameter(query, "host"))
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected /upstreams/state?pool=NAME&host=HOST:PORT&state=STATE\n".into(),
        );
    };
    let live = proxy.live();
    let cluster = live.cluster().map(|cluster| &cluster.peers);
    let pool = live
        .routes()
        .pools()
        .iter()
        .map(AsRef::as_ref)
        .chain(cluster)
        .find(|pool| pool.name == pool_name);
    let Some(host) = pool.and_then(|pool| pool.hosts.iter().find(|h| h.url.authority == host_name))
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no host {host_name} in pool {pool_name}\n"),
        );
    };
    let previous = host.admin_state();
    host.set_admin_state(state);
    tracing::info!(
        pool = pool_name,
        host = host_name,
        ?previous,
        ?state,
        "upstream host state set by the admin API"
    );
    json(&HostStateChange {
        pool: pool_name,
        host: host_name,
        state,
        previous,
    })
}

/// The Prometheus text exposition format: counters end in `_total`, gauges do not.
fn prometheus(proxy: &Proxy, stats: &Stats) -> String {
    let mut out = String::new();
    let metric = |out: &mut String, name: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# TYPE shoal_{name} {kind}\nshoal_{name} {value}");
    };
    for (name, value) in &stats.counters {
        if *name == "open_connections" {
            metric(&mut out, name, "gauge", *value);
        } else {
            metric(&mut out, &format!("{name}_total"), "counter", *value);
        }
    }
    metric(&mut out, "store_entries", "gauge", stats.store.entries);
    metric(&mut out, "store_bytes", "gauge", stats.store.bytes);
    metric(
        &mut out,
        "store_capacity_bytes",
        "gauge",
        stats.store.capacity,
    );
    metric(
        &mut out,
        "store_evictions_total",
        "counter",
        stats.store.evictions,
    );
    metric(
        &mut out,
        "fetches_in_flight",
        "gauge",
        stats.fetches_in_flight as u64,
    );
    histogram(
        &mut out,
        "request_duration_seconds",
        "time to answer a request (until its response head is ready), by cache status",
        proxy
            .metrics()
            .latency()
            .into_iter()
            .map(|(status, histogram)| (format!("cache=\"{}\"", status.as_str()), histogram)),
    );
    let live = proxy.live();
    let pools = upstream_pools(&live);
    histogram(
        &mut out,
        "origin_first_byte_seconds",
        "time from sending a request upstream to its response head, by pool",
        pools.iter().map(|pool| {
            (
                format!("pool=\"{}\"", pool.name),
                pool.first_byte.snapshot(),
            )
        }),
    );
    let _ = writeln!(out, "# TYPE shoal_upstream_retries_total counter");
    for pool in &pools {
        let retries = pool.retries.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "shoal_upstream_retries_total{{pool=\"{}\"}} {retries}",
            pool.name
        );
    }
    let _ = writeln!(out, "# TYPE shoal_upstream_up gauge");
    let now = now_millis();
    for pool in &pools {
        for host in &pool.hosts {
            let up = u8::from(host.is_available(now));
            let _ = writeln!(
                out,
                "shoal_upstream_up{{pool=\"{}\",host=\"{}\"}} {up}",
                pool.name, host.url.authority
            );
        }
    }
    if let Some(log) = &stats.access_log {
        metric(&mut out, "access_log_lines_total", "counter", log.written);
        metric(&mut out, "access_log_dropped_total", "counter", log.dropped);
    }
    if let Some(disk) = &stats.disk {
        metric(&mut out, "disk_entries", "gauge", disk.entries);
        metric(&mut out, "disk_bytes", "gauge", disk.bytes);
        metric(&mut out, "disk_capacity_bytes", "gauge", disk.capacity);
        metric(&mut out, "disk_hits_total", "counter", disk.hits);
        metric(
            &mut out,
            "disk_objects_written_total",
            "counter",
            disk.objects_written,
        );
        metric(
            &mut out,
            "disk_bytes_written_total",
            "counter",
            disk.bytes_written,
        );
        metric(
            &mut out,
            "disk_writes_dropped_total",
            "counter",
            disk.writes_dropped,
        );
        metric(&mut out, "disk_evictions_total", "counter", disk.evictions);
        metric(
            &mut out,
            "disk_corrupt_records_total",
            "counter",
            disk.corrupt,
        );
        metric(
            &mut out,
            "disk_read_timeouts_total",
            "counter",
            disk.read_timeouts,
        );
        let failed = disk
            .dirs
            .iter()
            .filter(|dir| dir.state == VolumeState::Failed)
            .count();
        metric(&mut out, "disk_dirs_failed", "gauge", failed as u64);
    }
    out
}

/// The value of query parameter `name`, percent-decoded.
/// Every pool, the cluster's included (labels are bounded by the configuration).
fn upstream_pools(live: &Generation) -> Vec<&Pool> {
    let mut pools: Vec<&Pool> = live.routes().pools().iter().map(AsRef::as_ref).collect();
    pools.extend(live.cluster().map(|cluster| &cluster.peers));
    pools
}

/// Writes a histogram family in the Prometheus text format (cumulative `_bucket`s in seconds).
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (String, crate::histogram::HistogramSnapshot)>,
) {
    let _ = writeln!(
        out,
        "# HELP shoal_{name} {help}\n# TYPE shoal_{name} histogram"
    );
    for (labels, histogram) in series {
        let mut cumulative = 0;
        for (index, count) in histogram.buckets.iter().enumerate() {
            cumulative += count;
            let bound = match crate::histogram::LATENCY_BUCKETS_MICROS.get(index) {
                Some(micros) => format!("{}", *micros as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "shoal_{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "shoal_{name}_sum{{{labels}}} {}\nshoal_{name}_count{{{labels}}} {cumulative}",
            histogram.sum_micros as f64 / 1e6
        );
    }
}

fn parameter(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        pair.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
            .map(percent_decode)
    })
}

/// A JSON answer (also the router's status API's).
pub(crate) fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(value).unwrap_or_default(),
    )));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A plain-text answer with `status` (also the router's).
pub(crate) fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Metrics in the Prometheus text format, with the media type its scrapers expect.
fn prometheus_text(body: String) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dashboard must work offline and never send the token elsewhere: no file names
    /// another site.
    #[test]
    fn the_dashboard_loads_nothing_from_elsewhere() {
        for (paths, text, _) in DASHBOARD {
            for scheme in ["http:", "https:", "//cdn", "@import"] {
                assert!(!text.contains(scheme), "{paths:?} mentions {scheme}");
            }
            assert!(dashboard_file(paths[0]).is_some());
        }
        assert!(dashboard_file("/secret").is_none());
    }
}
