//! Cleartext HTTP/2 with prior knowledge, served by hyper's HTTP/2 server on a connection the
//! HTTP/1 reader found to start with the HTTP/2 preface. Each stream runs through the same
//! [`Proxy::handle`] as HTTP/1 requests.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{HeaderValue, AGE, CONTENT_LENGTH, VIA};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::stream::ClientStream;
use super::{BodyError, ClientRequest, Proxy, ProxyResponse};
use crate::upstream::RequestBody;

/// A socket whose first bytes were already read: they are replayed before the socket's own.
struct Rewind {
    prefix: Bytes,
    stream: ClientStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let count = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..count]);
            self.prefix.advance(count);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

type H2Body = BoxBody<Bytes, BodyError>;

/// Serves an HTTP/2 connection whose first bytes (`prefix`) were already read.
pub async fn serve(stream: ClientStream, prefix: Bytes, peer: SocketAddr, proxy: Arc<Proxy>) {
    let tls = stream.is_tls();
    let io = TokioIo::new(Rewind { prefix, stream });
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let proxy = Arc::clone(&proxy);
        async move {
            let (head, body) = request.into_parts();
            let has_body = !http_body::Body::is_end_stream(&body);
            let limit = proxy.live().config.server.max_request_body.bytes();
            let request = ClientRequest {
                head,
                body: RequestBody::stream(body, limit),
                has_body,
                client: peer,
                tls,
            };
            let is_head = request.head.method == http::Method::HEAD;
            let logged = proxy
                .live()
                .access_log()
                .is_some()
                .then(|| super::http1::LoggedRequest::of(&request.head));
            let mut response = proxy.handle(request).await;
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
            Ok::<_, Infallible>(into_h2_response(&proxy, response, is_head, tls))
        }
    });
    let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(io, service)
        .await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP/2 connection ended with an error");
    }
}

fn into_h2_response(
    proxy: &Proxy,
    response: ProxyResponse,
    is_head: bool,
    tls: bool,
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
    let body: H2Body = if is_head || !body.is_sent() {
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed()
    } else {
        let stream = futures_util::stream::unfold(body, |mut body| async move {
            match body.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), body)),
                Ok(None) => None,
                Err(error) => Some((Err(error), body)),
            }
        });
        StreamBody::new(stream).boxed()
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
