//! Connections to origins: a pool of keep-alive HTTP/1.1 connections per origin (`client`),
//! connect and first-byte timeouts, and failover to the next origin when one cannot be reached.
//! The caller builds the request (headers, target); this module only picks an origin and
//! carries the request there.

pub(crate) mod body;
pub mod client;
pub mod cluster;
pub mod files;
pub mod health;
pub mod pool;
pub mod route;
pub mod s3;
pub mod select;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Response;
use hyper_util::client::legacy::connect::HttpConnector;

pub use body::{RequestBody, RequestBodyError};
pub use client::OriginBody;
pub use pool::Pool;

use crate::cache::CacheKey;
use crate::clock::now_millis;
use crate::config::{Config, RetryConfig};
use client::{Client, ClientError};

/// Why an origin request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No origin accepted a connection.
    #[error("cannot connect to origin {origin}: {reason}")]
    Connect {
        /// The last origin tried.
        origin: String,
        /// The connector's error.
        reason: String,
    },
    /// The origin did not send a response head in time.
    #[error("origin {origin} sent no response within {timeout:?}")]
    Timeout {
        /// The origin.
        origin: String,
        /// The first-byte timeout.
        timeout: Duration,
    },
    /// The connection broke or the origin spoke invalid HTTP.
    #[error("origin {origin} failed: {reason}")]
    Protocol {
        /// The origin.
        origin: String,
        /// What went wrong.
        reason: String,
    },
    /// The client's request body could not be read while forwarding it.
    #[error(transparent)]
    RequestBody(RequestBodyError),
    /// Every URL an application named (`X-Reproxy-URL`) was tried and none gave the object.
    #[error("no reproxy URL worked ({tried} tried; last: {reason})")]
    NoTarget {
        /// How many URLs were tried.
        tried: usize,
        /// What the last one did.
        reason: String,
    },
    /// Every host of the pool was tried and none could be reached.
    #[error("no host of pool {pool} could be reached ({reason})")]
    Unavailable {
        /// The pool.
        pool: String,
        /// The last host's error.
        reason: String,
    },
}

/// Which host answered and how fast: returned with every response `Upstream` gets, for the
/// access log.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The host's `host:port` (shared with the pool's host: no copy per response).
    pub host: Arc<str>,
    /// From sending the request to its response head.
    pub first_byte: Duration,
}

/// How the health checks' connections are made: TCP, and TLS for `https://` hosts.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A connector speaking plain HTTP or, for `https://` URLs, TLS with `tls` (SNI from the URL's
/// host).
pub fn connector(tls: rustls::ClientConfig, connect_timeout: Option<Duration>) -> Connector {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(connect_timeout);
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp)
}

/// One worker's HTTP client for every upstream host, with the retry rules.
pub struct Upstream {
    /// For every pool that does not bring its own TLS settings (plain HTTP, and HTTPS
    /// verified against the system's roots).
    client: Client,
    /// The pools with their own `tls_ca` or unverified TLS, by name.
    pool_clients: Vec<(String, Client)>,
    /// The pools that are buckets of an object store (`[pools.s3]`), by name.
    buckets: Vec<(String, s3::Bucket)>,
    first_byte_timeout: Duration,
    /// Send each origin its own `host:port` as `Host` (`origin.host_header = "origin"`).
    host_is_origin: bool,
    retries: RetryConfig,
    /// `retries.deadline`, or what it is when unset.
    retry_deadline: Duration,
}

impl Upstream {
    /// Clients with the timeouts and pool limits of `config.origin`, TLS settings per pool,
    /// and the retry rules; fails when a pool's `tls_ca` cannot be read.
    pub fn new(config: &Config) -> Result<Upstream, String> {
        let origin = &config.origin;
        let client = |tls: rustls::ClientConfig| {
            Client::new(
                tls,
                origin.connect_timeout.duration(),
                origin.idle_timeout.duration(),
                origin.max_idle_per_origin,
            )
        };
        let pool_clients = config
            .effective_pools()
            .iter()
            .filter(|pool| pool.tls_ca.is_some() || pool.danger_accept_invalid_certs_for_testing)
            .map(|pool| {
                let tls = crate::tls::client_config(
                    pool.tls_ca.as_deref(),
                    pool.danger_accept_invalid_certs_for_testing,
                )
                .map_err(|error| format!("pool `{}`: {error}", pool.name))?;
                Ok((pool.name.clone(), client(tls)))
            })
            .collect::<Result<_, String>>()?;
        let buckets = config
            .effective_pools()
            .iter()
            .filter_map(|pool| Some((pool, pool.s3.as_ref()?)))
            .map(|(pool, s3)| Ok((pool.name.clone(), s3::Bucket::new(s3, pool)?)))
            .collect::<Result<_, String>>()?;
        Ok(Upstream {
            client: client(crate::tls::client_config(None, false)?),
            pool_clients,
            buckets,
            first_byte_timeout: origin.first_byte_timeout.duration(),
            host_is_origin: origin.host_header == crate::config::HostHeader::Origin,
            retries: config.retries.clone(),
            retry_deadline: config.retry_deadline(),
        })
    }

    fn client_for(&self, pool: &Pool) -> &Client {
        self.pool_clients
            .iter()
            .find(|(name, _)| *name == pool.name)
            .map_or(&self.client, |(_, client)| client)
    }

    /// Sends the request `head` and `body` (the URI holds only path and query) to a host of
    /// `pool`, chosen for cache key `key`. The head is lent, not copied for each attempt; an
    /// attempt may set its `Host` for the host it contacts. A host that refuses the connection
    /// got nothing, so the next one is tried; timeouts, broken connections and the configured
    /// 5xx statuses are retried on the next host only for idempotent requests; all within
    /// `retries.tries` and `retries.deadline`. A request body that an attempt started to send
    /// is never resent.
    /// With `fallthrough_404`, a 404 is tried on the next host too (every host of the pool
    /// gets a chance), and only the last 404 is returned.
    pub async fn send(
        &self,
        pool: &Pool,
        key: CacheKey,
        head: &mut http::request::Parts,
        body: RequestBody,
        fallthrough_404: bool,
    ) -> Result<(Response<OriginBody>, Trace), UpstreamError> {
        self.send_with(pool, head, body, fallthrough_404, |tried, now| {
            pool.pick(key, tried, now)
        })
        .await
    }

    /// Sends the request `head` and `body` to host `index` of `pool`, once.
    pub async fn send_to(
        &self,
        pool: &Pool,
        index: usize,
        head: &mut http::request::Parts,
        body: RequestBody,
    ) -> Result<(Response<OriginBody>, Trace), UpstreamError> {
        self.send_with(pool, head, body, false, |tried, _| {
            tried.is_empty().then_some(index)
        })
        .await
    }

    /// [`Upstream::send`] with the host of each attempt chosen by `pick` (given the hosts
    /// tried and the time).
    async fn send_with(
        &self,
        pool: &Pool,
        parts: &mut http::request::Parts,
        body: RequestBody,
        fallthrough_404: bool,
        pick: impl Fn(&[usize], u64) -> Option<usize>,
    ) -> Result<(Response<OriginBody>, Trace), UpstreamError> {
        let idempotent = parts.method.is_idempotent();
        let started = Instant::now();
        let mut tried: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
        let mut last_error = None;
        let mut last_response = None;
        let tries = match fallthrough_404 {
            true => (self.retries.tries as usize).max(pool.hosts.len()),
            false => self.retries.tries as usize,
        };
        for attempt in 0..tries {
            if attempt > 0 && started.elapsed() >= self.retry_deadline {
                break;
            }
            let Some(index) = pick(&tried, now_millis()) else {
                break;
            };
            if attempt > 0 {
                pool.retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            tried.push(index);
            let host = &pool.hosts[index];
            if let (Some(root), Some(files)) = (&host.url.directory, &pool.files) {
                // Answered here, from the directory: nothing to retry elsewhere but another
                // copy of it, which the next attempt reaches like any host.
                let Some(attempt_body) = body.retry() else {
                    break;
                };
                let sent = Instant::now();
                // The first-byte timeout bounds a read's opening (a hung disk), not an upload,
                // which lasts as long as its body does (`server.body_read_timeout` bounds that).
                // A slow disk is not a failing host: no ejection.
                let answer = files.answer(root, parts, attempt_body);
                let answered = match parts.method.is_safe() {
                    true => tokio::time::timeout(self.first_byte_timeout, answer).await,
                    false => Ok(answer.await),
                };
                let Ok(response) = answered else {
                    last_error = Some(UpstreamError::Timeout {
                        origin: host.url.authority.clone(),
                        timeout: self.first_byte_timeout,
                    });
                    continue;
                };
                let first_byte = sent.elapsed();
                pool.first_byte.observe(first_byte);
                let trace = Trace {
                    host: host.label.clone(),
                    first_byte,
                };
                pool.succeeded(index);
                let (head, body) = response.into_parts();
                let response = Response::from_parts(head, OriginBody::from(body));
                // A directory is tried after another's 404 as a server would be.
                if fallthrough_404
                    && response.status() == http::StatusCode::NOT_FOUND
                    && attempt + 1 < tries
                {
                    last_response = Some((response, trace));
                    continue;
                }
                return Ok((response, trace));
            }
            if self.host_is_origin && !pool.parent {
                if let Ok(value) = http::HeaderValue::from_str(&host.url.authority) {
                    parts.headers.insert(http::header::HOST, value);
                }
            }
            // A bucket's request is its own, rewritten and signed for this host and time.
            let signed;
            // Looked up by name only for the pools that are buckets (most requests are not).
            let bucket = match pool.bucket {
                true => self.buckets.iter().find(|(name, _)| *name == pool.name),
                false => None,
            };
            let request = match bucket {
                None => &*parts,
                Some((_, bucket)) => {
                    let writable = pool.writable.is_some();
                    match bucket.request(&host.url, parts, writable, std::time::SystemTime::now()) {
                        Ok(request) => {
                            signed = request;
                            &signed
                        }
                        Err(refused) => return Ok(bucket_refusal(refused, writable, host)),
                    }
                }
            };
            // The body can go to another host only if no attempt took any of it.
            let Some(attempt_body) = body.retry() else {
                break;
            };
            let _in_flight = pool.begin(index);
            let sent = Instant::now();
            let origin = || host.url.authority.clone();
            let client = self.client_for(pool);
            match tokio::time::timeout(
                self.first_byte_timeout,
                client.send(&host.url, request, attempt_body),
            )
            .await
            {
                Err(_) => {
                    pool.failed(index, now_millis());
                    last_error = Some(UpstreamError::Timeout {
                        origin: origin(),
                        timeout: self.first_byte_timeout,
                    });
                    if !idempotent {
                        break;
                    }
                }
                Ok(Ok(mut response)) => {
                    if let Some((_, bucket)) = bucket {
                        bucket.received(&mut response);
                    }
                    let first_byte = sent.elapsed();
                    pool.first_byte.observe(first_byte);
                    let trace = Trace {
                        host: host.label.clone(),
                        first_byte,
                    };
                    let status = response.status();
                    if status.is_server_error() {
                        pool.failed(index, now_millis());
                    } else {
                        pool.succeeded(index);
                    }
                    let retried = idempotent
                        && attempt + 1 < tries
                        && (self.retries.on_status.contains(&status.as_u16())
                            || (fallthrough_404 && status == http::StatusCode::NOT_FOUND));
                    if !retried {
                        return Ok((response, trace));
                    }
                    tracing::debug!(pool = %pool.name, host = %host.url.authority, %status, "trying the next host");
                    last_response = Some((response, trace));
                }
                Ok(Err(ClientError::Connect(reason))) => {
                    pool.failed(index, now_millis());
                    last_error = Some(UpstreamError::Connect {
                        origin: origin(),
                        reason,
                    });
                }
                Ok(Err(ClientError::RequestBody(error))) => {
                    return Err(UpstreamError::RequestBody(error));
                }
                Ok(Err(ClientError::Protocol(reason))) => {
                    pool.failed(index, now_millis());
                    last_error = Some(UpstreamError::Protocol {
                        origin: origin(),
                        reason,
                    });
                    if !idempotent {
                        break;
                    }
                }
            }
        }
        // The last real answer (a retried 5xx) beats an error of a later attempt.
        if let Some(response) = last_response {
            return Ok(response);
        }
        // No host took the request (every one tried refused it, or none could be tried: all
        // down, draining or at their connection limit): unavailable, 503 and Retry-After.
        match last_error {
            Some(UpstreamError::Connect { reason, .. }) => Err(UpstreamError::Unavailable {
                pool: pool.name.clone(),
                reason,
            }),
            Some(error) => Err(error),
            None => Err(UpstreamError::Unavailable {
                pool: pool.name.clone(),
                reason: String::from("no host can be tried (down, draining or at its limit)"),
            }),
        }
    }
}

/// The node's own answer to a request a bucket does not take: 404 for `/` (which would be a
/// listing of the bucket), 405 for other methods.
fn bucket_refusal(
    refused: s3::Refused,
    writable: bool,
    host: &pool::Host,
) -> (Response<OriginBody>, Trace) {
    let response = match refused {
        s3::Refused::NoKey => files::text(http::StatusCode::NOT_FOUND, "not found\n"),
        s3::Refused::Method => {
            let mut response =
                files::text(http::StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            let allow = match writable {
                true => "GET, HEAD, PUT, DELETE",
                false => "GET, HEAD",
            };
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            response
        }
    };
    let (head, body) = response.into_parts();
    let trace = Trace {
        host: host.label.clone(),
        first_byte: Duration::ZERO,
    };
    (Response::from_parts(head, OriginBody::from(body)), trace)
}

/// URLs an application named for one object (`X-Reproxy-URL`), to try in order, and the size
/// it said the object has (`X-Reproxy-Expected-Size`).
#[derive(Debug)]
pub struct Targets {
    /// Where each copy is: the server, and the path and query there.
    pub urls: Vec<(crate::config::OriginUrl, http::uri::PathAndQuery)>,
    /// An answer of another length is a wrong copy.
    pub expected_size: Option<u64>,
}

impl Upstream {
    /// Sends the bodiless request `head` to each of `targets` in turn (`Host` and target set
    /// for each), until one answers with the object: a refused connection, a timeout, a 404,
    /// a 5xx, any other status that is not the object's, or an object of another size than
    /// expected (when the answer tells its size) moves on to the next, as Perlbal does. The servers
    /// are the application's (not a pool's): no health is kept for them.
    pub async fn send_in_turn(
        &self,
        targets: &Targets,
        head: &mut http::request::Parts,
    ) -> Result<(Response<OriginBody>, Trace), UpstreamError> {
        let started = Instant::now();
        let mut reason = String::from("no URL");
        for (tried, (url, path)) in targets.urls.iter().enumerate() {
            if tried > 0 && started.elapsed() >= self.retry_deadline {
                reason = format!("{reason}; out of time after {tried} URLs");
                break;
            }
            head.uri = http::Uri::from(path.clone());
            if let Ok(value) = http::HeaderValue::from_str(&url.authority) {
                head.headers.insert(http::header::HOST, value);
            }
            let sent = Instant::now();
            let answer = self.client.send(url, head, RequestBody::empty());
            let response = match tokio::time::timeout(self.first_byte_timeout, answer).await {
                Err(_) => {
                    reason = format!(
                        "{}: no answer in {:?}",
                        url.authority, self.first_byte_timeout
                    );
                    continue;
                }
                Ok(Err(error)) => {
                    reason = format!("{}: {error}", url.authority);
                    continue;
                }
                Ok(Ok(response)) => response,
            };
            // The object, part of it, or a verdict on the request's own conditions; anything
            // else (a 404, a 5xx, a redirect or a refusal meant for the node) is not a copy.
            let status = response.status();
            let copy = status.is_success() || matches!(status.as_u16(), 304 | 412 | 416);
            if !copy {
                reason = format!("{}: {status}", url.authority);
                continue;
            }
            if let Some(expected) = targets.expected_size {
                // The whole's length: Content-Length of a 200, the total of a 206's range.
                let headers = response.headers();
                let text = |name| {
                    headers
                        .get(name)
                        .and_then(|v: &http::HeaderValue| v.to_str().ok())
                };
                let length = match status {
                    http::StatusCode::OK => text(http::header::CONTENT_LENGTH)
                        .and_then(|value| value.parse::<u64>().ok()),
                    http::StatusCode::PARTIAL_CONTENT => text(http::header::CONTENT_RANGE)
                        .and_then(|value| value.rsplit_once('/')?.1.parse::<u64>().ok()),
                    _ => None,
                };
                if length.is_some_and(|length| length != expected) {
                    reason = format!(
                        "{}: {} bytes, not the expected {expected}",
                        url.authority,
                        length.unwrap_or(0)
                    );
                    continue;
                }
            }
            let trace = Trace {
                host: Arc::from(url.authority.as_str()),
                first_byte: sent.elapsed(),
            };
            return Ok((response, trace));
        }
        Err(UpstreamError::NoTarget {
            tried: targets.urls.len(),
            reason,
        })
    }
}

/// The innermost error message, which is the one that says what happened (such as
/// "Connection refused").
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
