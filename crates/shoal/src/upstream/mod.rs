//! Connections to origins: a pool of keep-alive HTTP/1.1 connections per origin (hyper's
//! client), connect and first-byte timeouts, and failover to the next origin when one cannot be
//! reached. The caller builds the request (headers, target); this module only picks an origin and
//! carries the request there.

mod body;
pub mod select;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use body::{RequestBody, RequestBodyError};

use crate::config::{OriginConfig, OriginUrl};

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
}

/// The pooled client for all origins.
pub struct Upstream {
    client: Client<HttpConnector, RequestBody>,
    origins: Vec<OriginUrl>,
    next: AtomicUsize,
    first_byte_timeout: Duration,
    /// Send each origin its own `host:port` as `Host` (`origin.host_header = "origin"`).
    host_is_origin: bool,
}

impl Upstream {
    /// A client for `origins` with the timeouts and pool limits of `config`.
    pub fn new(config: &OriginConfig, origins: Vec<OriginUrl>) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout.duration()));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout.duration())
            .pool_max_idle_per_host(config.max_idle_per_origin)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .set_host(false)
            .build(connector);
        Upstream {
            client,
            origins,
            next: AtomicUsize::new(0),
            first_byte_timeout: config.first_byte_timeout.duration(),
            host_is_origin: config.host_header == crate::config::HostHeader::Origin,
        }
    }

    /// The origins, in configuration order.
    pub fn origins(&self) -> &[OriginUrl] {
        &self.origins
    }

    /// Sends `request` (whose URI holds only path and query) to an origin. Origins are used in
    /// turn; when one refuses the connection, nothing was sent, so the next one is tried.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (mut parts, body) = request.into_parts();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        for attempt in 0..self.origins.len() {
            let origin = &self.origins[(start + attempt) % self.origins.len()];
            parts.uri = absolute_uri(origin, &parts.uri);
            if self.host_is_origin {
                if let Ok(host) = http::HeaderValue::from_str(&origin.authority) {
                    parts.headers.insert(http::header::HOST, host);
                }
            }
            // The body can go to another origin only if the failed attempt took none of it.
            let Some(attempt_body) = body.retry() else {
                break;
            };
            let request = Request::from_parts(parts.clone(), attempt_body);
            match tokio::time::timeout(self.first_byte_timeout, self.client.request(request)).await
            {
                Err(_) => {
                    return Err(UpstreamError::Timeout {
                        origin: origin.authority.clone(),
                        timeout: self.first_byte_timeout,
                    })
                }
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) if error.is_connect() => {
                    last_error = Some(UpstreamError::Connect {
                        origin: origin.authority.clone(),
                        reason: root_cause(&error),
                    });
                }
                Ok(Err(error)) => {
                    if let Some(body_error) = request_body_error(&error) {
                        return Err(UpstreamError::RequestBody(body_error.clone()));
                    }
                    let reason = root_cause(&error);
                    return Err(UpstreamError::Protocol {
                        origin: origin.authority.clone(),
                        reason,
                    });
                }
            }
        }
        Err(last_error.unwrap_or_else(|| UpstreamError::Connect {
            origin: String::from("(none)"),
            reason: String::from("no origin configured"),
        }))
    }
}

fn absolute_uri(origin: &OriginUrl, original: &Uri) -> Uri {
    let path = original.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder()
        .scheme("http")
        .authority(origin.authority.as_str())
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| original.clone())
}

/// The client-side body error behind a failed request, if that is what failed it.
fn request_body_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a RequestBodyError> {
    let mut cause = error.source();
    while let Some(current) = cause {
        if let Some(body_error) = current.downcast_ref::<RequestBodyError>() {
            return Some(body_error);
        }
        cause = current.source();
    }
    None
}

/// The innermost error message, which is the one that says what happened.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = error;
    let mut text = cause.to_string();
    while let Some(next) = cause.source() {
        cause = next;
        text = cause.to_string();
    }
    text
}
