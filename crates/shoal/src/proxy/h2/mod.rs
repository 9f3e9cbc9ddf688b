//! HTTP/2, served by hyper's HTTP/2 server: on TLS connections that chose it by ALPN, and on
//! cleartext ones the HTTP/1 reader found to start with the preface (prior knowledge). Each
//! stream runs through the same [`Proxy::handle`] as HTTP/1 requests, under the same request
//! limits; the connection's timeouts are kept by `watch`.

pub mod frames;
mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, AGE, CONTENT_LENGTH, VIA};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::watch::{Activity, StreamGuard, Watched};
use super::settings::Settings;
use super::{BodyError, ClientRequest, Proxy, ProxyError, ProxyResponse};
use crate::throttle::LogBudget;
use crate::upstream::RequestBody;
use crate::wire::http1::Limits;
use crate::wire::stream::ClientStream;

type H2Body = BoxBody<Bytes, BodyError>;

/// Serves an HTTP/2 connection whose first bytes (`prefix`) were already read, until it
/// closes or misses one of its deadlines (`watch`).
pub async fn serve(
    stream: ClientStream,
    prefix: Bytes,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    settings: Settings,
) {
    let tls = stream.is_tls();
    let activity = Activity::new();
    let io = TokioIo::new(Watched::new(stream, prefix, Arc::clone(&activity)));
    let (max_streams, max_uploads) = {
        let server = &proxy.live().config.server;
        (server.h2_max_streams, server.h2_max_uploads.max(1))
    };
    let uploads = Arc::new(Semaphore::new(max_uploads));
    let streams = Arc::clone(&activity);
    let node = Arc::clone(&proxy);
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let proxy = Arc::clone(&node);
        let stream = streams.open_stream();
        let activity = Arc::clone(&streams);
        let uploads = Arc::clone(&uploads);
        async move {
            let response = answer(&proxy, request, peer, tls, settings, uploads).await;
            let (response, is_head, upload) = response;
            let connection = (tls, &*activity, settings.send_timeout);
            let held = (stream, upload);
            Ok::<_, Infallible>(into_h2_response(
                &proxy, response, is_head, connection, held,
            ))
        }
    });
    let limits = &settings.limits;
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_streams)
        // A bound on what one header block may hold in memory; the precise limits are the
        // node's own (`answer`), with the same statuses as over HTTP/1.
        .max_header_list_size(header_list_bound(limits))
        .serve_connection(io, service);
    let result = watch::enforce(
        connection,
        |connection| connection.graceful_shutdown(),
        &activity,
        &settings,
        &proxy,
        peer,
    )
    .await;
    if let Some(Err(error)) = result {
        tracing::debug!(%peer, %error, "HTTP/2 connection ended with an error");
    }
}

/// The largest header list hyper accepts: what the request limits allow, counted the way
/// HTTP/2 counts (32 bytes more per field), with room to spare.
fn header_list_bound(limits: &Limits) -> u32 {
    let bytes = limits.max_header_bytes + limits.max_request_line + 32 * (limits.max_headers + 8);
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Runs one stream's request through the pipeline: the request limits HTTP/1 has (414 and
/// 431), a request body cut off when it stalls (`body_read_timeout`) and forwarded only with a
/// turn among the connection's uploads; returns the response, whether it answers a HEAD, and
/// the upload's turn (held until the response is sent: the origin request lasts that long).
async fn answer(
    proxy: &Arc<Proxy>,
    request: http::Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    settings: Settings,
    uploads: Arc<Semaphore>,
) -> (ProxyResponse, bool, Option<OwnedSemaphorePermit>) {
    let (head, body) = request.into_parts();
    let is_head = head.method == http::Method::HEAD;
    if let Err(error) = check_limits(&head, &settings.limits) {
        proxy.metrics().add(super::Counter::ClientErrors, 1);
        static LOGGED: LogBudget = LogBudget::new(10);
        if let Some(held_back) = LOGGED.admit() {
            let status = error.status().as_u16();
            tracing::info!(%peer, status, %error, held_back, "malformed request");
        }
        return (super::error_response(&error), is_head, None);
    }
    let has_body = !http_body::Body::is_end_stream(&body);
    // Waited for before any of the body is read: nothing reaches an origin meanwhile.
    let upload = match has_body {
        true => uploads.acquire_owned().await.ok(),
        false => None,
    };
    let request = ClientRequest {
        head,
        body: RequestBody::stream(body, settings.max_body, settings.body_timeout),
        has_body,
        client: peer,
        tls,
    };
    let logged = proxy
        .live()
        .access_log()
        .is_some()
        .then(|| super::logged::LoggedRequest::of(&request.head));
    let mut response = proxy.handle(request).await;
    if response.status == http::StatusCode::REQUEST_TIMEOUT {
        proxy.metrics().add(super::Counter::BodyTimeouts, 1);
    }
    if let (Some(logged), Some(log)) = (logged, proxy.access_log()) {
        // The body is still to stream: HTTP/2 lines carry its declared length and the
        // time to the response head.
        let bytes = if is_head {
            0
        } else {
            response.body.length().unwrap_or(0)
        };
        let status = response.status.as_u16();
        let origin = response.origin.take();
        log.record(logged.entry(peer.ip(), status, bytes, response.cache_status, origin));
    }
    (response, is_head, upload)
}

/// The limits of `server.max_request_line`, `max_headers` and `max_header_bytes`, as HTTP/1
/// applies them: the request line is method, target and version; the head, every field.
fn check_limits(head: &http::request::Parts, limits: &Limits) -> Result<(), ProxyError> {
    let target = head
        .uri
        .path_and_query()
        .map_or(1, |target| target.as_str().len());
    if head.method.as_str().len() + target + " HTTP/2".len() + 1 > limits.max_request_line {
        return Err(ProxyError::BadRequest {
            status: http::StatusCode::URI_TOO_LONG,
            reason: "request target too long",
        });
    }
    if head.headers.len() > limits.max_headers {
        return Err(ProxyError::BadRequest {
            status: http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason: "too many header fields",
        });
    }
    let bytes: usize = head
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(ProxyError::BadRequest {
            status: http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason: "request head too large",
        });
    }
    Ok(())
}

/// What a response body holds until it has been sent: its stream's place among the
/// connection's open streams, and its upload's turn.
type Held = (StreamGuard, Option<OwnedSemaphorePermit>);

/// The HTTP/2 response for `response`; its body is kept where the connection's watch
/// (`activity`) can let it go if the client stops taking it for `send_timeout`.
fn into_h2_response(
    proxy: &Proxy,
    response: ProxyResponse,
    is_head: bool,
    (tls, activity, send_timeout): (bool, &Activity, std::time::Duration),
    held: Held,
) -> http::Response<H2Body> {
    let ProxyResponse {
        status,
        headers,
        age,
        cache_status,
        body,
        ..
    } = response;
    let mut map = headers.to_map();
    if let Some(age) = age {
        map.insert(AGE, HeaderValue::from(age));
    }
    let live = proxy.live();
    if let Some(name) = &live.status_header {
        map.insert(
            name.clone(),
            HeaderValue::from_static(cache_status.as_str()),
        );
    }
    map.append(VIA, live.via.clone());
    if let (true, Some(hsts)) = (tls, &live.hsts) {
        map.insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    let length = body.length();
    if let (Some(length), true) = (
        length,
        status != http::StatusCode::NOT_MODIFIED && status != http::StatusCode::NO_CONTENT,
    ) {
        map.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    let body: H2Body = match (!is_head && body.is_sent()).then_some(body) {
        // Nothing to send: what the stream holds goes when hyper drops the body.
        None => StreamBody::new(futures_util::stream::unfold(held, |_| async { None })).boxed(),
        Some(body) => {
            let outgoing = activity.sending(body, held, send_timeout);
            let chunks = futures_util::stream::unfold(Some(outgoing), |outgoing| async move {
                let outgoing = outgoing?;
                match outgoing.next_chunk().await {
                    Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), Some(outgoing))),
                    Ok(None) => None,
                    Err(error) => Some((Err(error), None)),
                }
            });
            StreamBody::new(chunks).boxed()
        }
    };
    let mut builder = http::Response::builder().status(status);
    if let Some(target) = builder.headers_mut() {
        *target = map;
    }
    builder.body(body).unwrap_or_else(|_| {
        let mut fallback = http::Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        );
        *fallback.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}
