//! The admin API, on its own listener: health, counters (JSON and Prometheus text), the cache's
//! contents, and purge. It receives handles to the proxy's state and never touches the request
//! path. `shoal ctl` (a later issue) talks to this API only.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::proxy::{now_millis, Proxy};
use crate::store::disk::{DiskStats, VolumeState};
use crate::store::Store;
use crate::upstream::pool::{AdminState, CheckResult};
use crate::upstream::Pool;

/// Binds the admin API on `address`; returns the bound address.
pub async fn start(address: SocketAddr, proxy: Arc<Proxy>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let proxy = Arc::clone(&proxy);
                        async move { Ok::<_, std::convert::Infallible>(route(&proxy, &request)) }
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

#[derive(Serialize)]
struct Stats {
    counters: std::collections::BTreeMap<&'static str, u64>,
    store: crate::store::StoreStats,
    /// The disk tier, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<DiskStats>,
    fetches_in_flight: usize,
}

#[derive(Serialize)]
struct CachedObject {
    key: String,
    url: String,
    status: u16,
    bytes: u64,
    chunks: usize,
    age_seconds: u64,
    fresh_for_seconds: i64,
    state: &'static str,
}

fn route<B>(proxy: &Proxy, request: &http::Request<B>) -> Response<Full<Bytes>> {
    let query = request.uri().query().unwrap_or("");
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/health") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/stats") => json(&stats(proxy)),
        (&Method::GET, "/metrics") => text(StatusCode::OK, prometheus(&stats(proxy))),
        (&Method::GET, "/cache") => json(&cache_listing(proxy)),
        (&Method::GET, "/upstreams") => json(&upstreams(proxy)),
        (&Method::POST, "/upstreams/state") => set_host_state(proxy, query),
        (&Method::POST, "/purge") => {
            match parameter(query, "url").and_then(|url| url.parse::<http::Uri>().ok()) {
                Some(uri) => {
                    let host = uri.authority().map_or("", |a| a.as_str());
                    let target = uri.path_and_query().map_or("/", |p| p.as_str());
                    let purged = proxy.purge(proxy.key_of(host, target));
                    json(&serde_json::json!({ "purged": purged }))
                }
                None => text(
                    StatusCode::BAD_REQUEST,
                    "expected /purge?url=http://host/path\n".into(),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "unknown admin endpoint; try /health, /stats, /metrics, /cache, /upstreams, \
             POST /purge?url=, POST /upstreams/state?pool=&host=&state=\n"
                .into(),
        ),
    }
}

fn stats(proxy: &Proxy) -> Stats {
    Stats {
        counters: proxy.metrics().snapshot().into_iter().collect(),
        store: proxy.store().stats(),
        disk: proxy.disk().map(|disk| disk.stats()),
        fetches_in_flight: proxy.fetches_in_flight(),
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
                state: match object.state() {
                    crate::store::FillState::Filling => "filling",
                    crate::store::FillState::Complete => "complete",
                    crate::store::FillState::Aborted => "aborted",
                },
            });
        }
    }
    listing.sort_by(|a, b| a.url.cmp(&b.url));
    listing
}

#[derive(Serialize)]
struct PoolView {
    pool: String,
    policy: crate::config::Policy,
    parent: bool,
    hosts: Vec<HostView>,
}

#[derive(Serialize)]
struct HostView {
    host: String,
    weight: u32,
    /// What requests see: up, down (set), drain (set), unhealthy (checks) or ejected (failures).
    state: &'static str,
    admin: AdminState,
    healthy: bool,
    ejected_for_ms: u64,
    in_flight: u32,
    last_check: Option<CheckResult>,
    /// In the cluster's pool: whether this is the node itself.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    this_node: bool,
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
                },
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
    let mut pools: Vec<PoolView> = proxy
        .routes()
        .pools()
        .iter()
        .map(|pool| pool_view(pool, None))
        .collect();
    if let Some(cluster) = proxy.cluster() {
        pools.push(pool_view(&cluster.peers, Some(cluster.me)));
    }
    pools
}

/// `POST /upstreams/state?pool=NAME&host=HOST:PORT&state=up|down|drain|auto`.
fn set_host_state(proxy: &Proxy, query: &str) -> Response<Full<Bytes>> {
    let state = match parameter(query, "state") {
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
    let cluster = proxy.cluster().map(|cluster| &cluster.peers);
    let pool = proxy
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
    json(
        &serde_json::json!({ "pool": pool_name, "host": host_name, "state": state, "previous": previous }),
    )
}

/// The Prometheus text exposition format: counters end in `_total`, gauges do not.
fn prometheus(stats: &Stats) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# TYPE shoal_{name} {kind}\nshoal_{name} {value}");
    };
    for (name, value) in &stats.counters {
        if *name == "open_connections" {
            metric(name, "gauge", *value);
        } else {
            metric(&format!("{name}_total"), "counter", *value);
        }
    }
    metric("store_entries", "gauge", stats.store.entries);
    metric("store_bytes", "gauge", stats.store.bytes);
    metric("store_capacity_bytes", "gauge", stats.store.capacity);
    metric("store_evictions_total", "counter", stats.store.evictions);
    metric("fetches_in_flight", "gauge", stats.fetches_in_flight as u64);
    if let Some(disk) = &stats.disk {
        metric("disk_entries", "gauge", disk.entries);
        metric("disk_bytes", "gauge", disk.bytes);
        metric("disk_capacity_bytes", "gauge", disk.capacity);
        metric("disk_hits_total", "counter", disk.hits);
        metric(
            "disk_objects_written_total",
            "counter",
            disk.objects_written,
        );
        metric("disk_bytes_written_total", "counter", disk.bytes_written);
        metric("disk_writes_dropped_total", "counter", disk.writes_dropped);
        metric("disk_evictions_total", "counter", disk.evictions);
        metric("disk_corrupt_records_total", "counter", disk.corrupt);
        metric("disk_read_timeouts_total", "counter", disk.read_timeouts);
        let failed = disk
            .dirs
            .iter()
            .filter(|dir| dir.state == VolumeState::Failed)
            .count();
        metric("disk_dirs_failed", "gauge", failed as u64);
    }
    out
}

fn parameter<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        pair.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(value).unwrap_or_default(),
    )));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
