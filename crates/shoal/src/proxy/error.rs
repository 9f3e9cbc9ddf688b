//! Errors on the request path and the one function that turns them into responses.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, DATE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, StatusCode};

use super::response::{ProxyResponse, ResponseBody, ResponseHeaders};
use crate::cache::CacheStatus;
use crate::upstream::{RequestBodyError, UpstreamError};

/// Which side of the proxy failed, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something invalid.
    Client,
    /// The origin failed or was unreachable.
    Origin,
    /// Shoal itself.
    Internal,
}

/// Something that stops a request from being answered normally.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An invalid request; the status says which rule it broke.
    #[error("{reason}")]
    BadRequest {
        /// 400, 413, 414, 417, 431 or 501.
        status: StatusCode,
        /// What was wrong, for the log and the response body.
        reason: &'static str,
    },
    /// A method not in `server.methods` (CONNECT never is); the value of `Allow`.
    #[error("method not allowed")]
    MethodNotAllowed(HeaderValue),
    /// `server.max_inflight_memory` is reached: a new origin fetch must wait.
    #[error("shed: too much body data in flight")]
    Overloaded,
    /// The client went over its request rate; it may try again after this many seconds.
    #[error("client over its request rate")]
    RateLimited(u64),
    /// A route that serves only signed URLs got one without a valid signature.
    #[error("{}", .0.as_str())]
    Forbidden(crate::signed_url::Denied),
    /// A write to a writable pool without the admin token or a URL signed for it.
    #[error("a write without the admin token")]
    WriteUnauthorized,
    /// A path clients cannot reach (its route leads to an `internal` pool).
    #[error("a route to an internal pool")]
    Internal404,
    /// An application's reproxy instruction that cannot be followed.
    #[error("reproxy: {0}")]
    BadInstruction(&'static str),
    /// `only-if-cached` and nothing usable is stored.
    #[error("not cached (only-if-cached)")]
    NotCached,
    /// The origin failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A collapsed fetch that this request followed failed with this status.
    #[error("origin fetch failed ({0})")]
    FollowedFailure(StatusCode),
    /// The request has passed through this node before (its `Via` says so): the node is,
    /// through some path, its own origin.
    #[error("request loop: the request has been through this node already")]
    LoopDetected,
    /// A bug or an impossible state; the request cannot be served.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProxyError {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadRequest { .. }
            | ProxyError::MethodNotAllowed(_)
            | ProxyError::Forbidden(_)
            | ProxyError::WriteUnauthorized
            | ProxyError::Internal404
            | ProxyError::RateLimited(_) => Side::Client,
            ProxyError::BadInstruction(_) => Side::Origin,
            ProxyError::NotCached => Side::Client,
            ProxyError::Upstream(UpstreamError::RequestBody(_)) => Side::Client,
            ProxyError::Upstream(_) | ProxyError::FollowedFailure(_) => Side::Origin,
            ProxyError::Internal(_) | ProxyError::Overloaded | ProxyError::LoopDetected => {
                Side::Internal
            }
        }
    }

    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest { status, .. } => *status,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::WriteUnauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::Internal404 => StatusCode::NOT_FOUND,
            ProxyError::BadInstruction(_) => StatusCode::BAD_GATEWAY,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NotCached => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::Unavailable { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream(UpstreamError::RequestBody(RequestBodyError::TooLarge)) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ProxyError::Upstream(UpstreamError::RequestBody(RequestBodyError::TimedOut(_))) => {
                StatusCode::REQUEST_TIMEOUT
            }
            ProxyError::Upstream(UpstreamError::RequestBody(_)) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::FollowedFailure(status) => *status,
            ProxyError::LoopDetected => StatusCode::LOOP_DETECTED,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short text of the response body; origin details stay in the log.
    fn public_text(&self) -> &'static str {
        match self {
            ProxyError::BadRequest { reason, .. } => reason,
            ProxyError::MethodNotAllowed(_) => "method not allowed",
            ProxyError::Forbidden(crate::signed_url::Denied::Expired) => "this link has expired",
            ProxyError::Forbidden(crate::signed_url::Denied::WrongMethod) => {
                "this link was signed for another method"
            }
            ProxyError::Forbidden(_) => "this URL needs a valid signature",
            ProxyError::WriteUnauthorized => {
                "writing needs the admin token (Authorization: Bearer TOKEN) or a URL signed for the method"
            }
            ProxyError::RateLimited(_) => "too many requests; slow down",
            ProxyError::Internal404 => "not found",
            ProxyError::BadInstruction(_) => "origin failed",
            ProxyError::Overloaded => "busy; try again in a moment",
            ProxyError::NotCached => "not in cache (only-if-cached)",
            ProxyError::Upstream(UpstreamError::Connect { .. }) => "origin unreachable",
            ProxyError::Upstream(UpstreamError::Unavailable { .. }) => {
                "no origin server is reachable"
            }
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => "origin timed out",
            ProxyError::Upstream(UpstreamError::Protocol { .. }) => "origin failed",
            ProxyError::Upstream(UpstreamError::NoTarget { .. }) => {
                "no copy of the file could be fetched"
            }
            ProxyError::Upstream(UpstreamError::RequestBody(RequestBodyError::TooLarge)) => {
                "request body too large"
            }
            ProxyError::Upstream(UpstreamError::RequestBody(RequestBodyError::TimedOut(_))) => {
                "request body timed out"
            }
            ProxyError::Upstream(UpstreamError::RequestBody(_)) => "request body could not be read",
            ProxyError::FollowedFailure(status) if *status == StatusCode::GATEWAY_TIMEOUT => {
                "origin timed out"
            }
            ProxyError::FollowedFailure(StatusCode::SERVICE_UNAVAILABLE) => {
                "no origin server is reachable"
            }
            ProxyError::FollowedFailure(_) => "origin failed",
            ProxyError::LoopDetected => "request loop detected",
            ProxyError::Internal(_) => "internal error",
        }
    }
}

/// Turns an error into the response the client gets. The only place this happens.
pub fn error_response(error: &ProxyError) -> ProxyResponse {
    let status = error.status();
    let mut response = synthetic(status, error.public_text());
    if let (ProxyError::MethodNotAllowed(allow), ResponseHeaders::Map(headers)) =
        (error, &mut response.headers)
    {
        headers.insert(ALLOW, allow.clone());
    }
    if let (ProxyError::WriteUnauthorized, ResponseHeaders::Map(headers)) =
        (error, &mut response.headers)
    {
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"shoal\""),
        );
    }
    let retry_after = match error {
        ProxyError::RateLimited(seconds) => Some(*seconds),
        ProxyError::Overloaded => Some(1),
        // When ejected hosts come back, or an operator brings one up.
        ProxyError::Upstream(UpstreamError::Unavailable { .. }) => Some(5),
        ProxyError::FollowedFailure(StatusCode::SERVICE_UNAVAILABLE) => Some(5),
        _ => None,
    };
    if let (Some(seconds), ResponseHeaders::Map(headers)) = (retry_after, &mut response.headers) {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    // A client that broke a rule is not worth a kept connection; one that was only told to
    // wait or go elsewhere is.
    response.close = error.side() == Side::Client
        && !matches!(
            error,
            ProxyError::RateLimited(_) | ProxyError::Forbidden(_) | ProxyError::NotCached
        );
    response
}

/// A permanent redirect (308, which keeps the method and body) to `location`.
pub fn redirect_response(location: HeaderValue) -> ProxyResponse {
    let mut response = synthetic(StatusCode::PERMANENT_REDIRECT, "use HTTPS");
    if let ResponseHeaders::Map(headers) = &mut response.headers {
        headers.insert(LOCATION, location);
    }
    response
}

/// A short plain-text answer of the node's own: `STATUS REASON: text`, not to be stored.
fn synthetic(status: StatusCode, text: &str) -> ProxyResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A server with a clock sends Date (RFC 9110 §6.6.1), on its own answers too.
    headers.insert(DATE, crate::clock::http_date_now());
    let mut body = Vec::with_capacity(text.len() + 24);
    body.extend_from_slice(status.as_str().as_bytes());
    body.push(b' ');
    body.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    body.extend_from_slice(b": ");
    body.extend_from_slice(text.as_bytes());
    body.push(b'\n');
    ProxyResponse {
        status,
        headers: ResponseHeaders::Map(headers),
        age: None,
        cache_status: CacheStatus::Synthetic,
        body: ResponseBody::Full(Bytes::from(body)),
        close: false,
        origin: None,
    }
}
