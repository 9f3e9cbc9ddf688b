//! The HTTP/1.1 client that carries requests to origins, parents and peers, with a pool of
//! keep-alive connections per host.
//!
//! Written by hand on `httparse` rather than used from hyper, because of where the work
//! happens. hyper's pooled client runs every connection as a task of its own, reached through
//! channels, and spawns another task per response to put the connection back in the pool, so a
//! cache miss took three more task wake-ups on its worker. Here the task that sends a request
//! (usually the fetch) writes it, parses the answer and reads the body from the socket itself,
//! and the body returns the connection to the pool the moment its last byte is read: 12% fewer
//! instructions per miss (bench/RESULTS.md).
//!
//! What it does: request heads in origin form with `Content-Length` or chunked framing; response
//! heads parsed strictly (obs-fold, invalid or conflicting `Content-Length`, oversized heads,
//! framing that could be read two ways and transfer codings other than chunked are errors); a
//! few 1xx interim responses skipped; bodies framed per RFC 9112 §6.3 (none for HEAD, 1xx, 204
//! and 304; chunked; a length; or until close); keep-alive per the response's version and
//! `Connection`; TLS for `https://` hosts. A request that finds its pooled connection closed
//! by the origin before any answer is sent again on a new connection, once. The request body,
//! if any, is sent before the answer is read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::files::FileBody;
use super::RequestBody;
use super::RequestBodyError;
use crate::config::OriginUrl;
use crate::wire::http1::{chunk_size_line, keep_alive, ChunkedDecoder, Decoded};
use crate::wire::stream::OriginStream;

/// Largest response head accepted from an upstream.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// What a body read asks the socket for at most (bodies are copied out as they arrive).
const BODY_READ: usize = 64 * 1024;
/// Most request body bytes gathered behind the head for its first write.
const GATHER_BODY: usize = 64 * 1024;
/// Most interim (1xx) responses accepted before the final one.
const MAX_INTERIM: usize = 8;
/// A pooled connection keeps a read buffer up to this size for its next response.
const KEEP_BUFFER: usize = 16 * 1024;

/// Why a request to an upstream host failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made (TCP or TLS): the host got nothing.
    #[error("{0}")]
    Connect(String),
    /// The request's body could not be read from the client.
    #[error(transparent)]
    RequestBody(RequestBodyError),
    /// The connection broke, or the host answered with something that is not HTTP/1.
    #[error("{0}")]
    Protocol(String),
}

/// Reading a response body failed: the connection broke or the framing was invalid.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(String);

/// One worker's connections to upstream hosts and the settings to make new ones.
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    pool: Arc<IdlePool>,
}

impl Client {
    /// A client verifying TLS hosts with `tls`, keeping at most `max_idle` idle connections per
    /// host, each for at most `idle_timeout`.
    pub fn new(
        mut tls: rustls::ClientConfig,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Client {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout,
            pool: Arc::new(IdlePool {
                hosts: Mutex::new(Vec::new()),
                max_idle,
                idle_timeout,
            }),
        }
    }

    /// Sends the request `parts` and `body` (the URI's path and query are the target; `Host`
    /// is sent as it is, or made from `host` when it has none) to `host` and returns the
    /// response head with a body that reads the rest from the connection.
    pub async fn send(
        &self,
        host: &OriginUrl,
        parts: &http::request::Parts,
        mut body: RequestBody,
    ) -> Result<Response<OriginBody>, ClientError> {
        if let Some(conn) = self.pool.checkout(host) {
            // A second handle on the body, in case the pooled connection turns out to be closed.
            let spare = body.retry();
            match exchange(conn, true, parts, body, host, &self.pool).await {
                Err(Exchange::Closed) => {}
                Err(Exchange::Failed(error)) => return Err(error),
                Ok(response) => return Ok(response),
            }
            tracing::debug!(host = %host.authority, "pooled connection was closed; reconnecting");
            body = spare.and_then(|spare| spare.retry()).ok_or_else(|| {
                ClientError::Protocol(
                    "the connection closed while the request body was sent".into(),
                )
            })?;
        }
        let conn = self.connect(host).await?;
        match exchange(conn, false, parts, body, host, &self.pool).await {
            Ok(response) => Ok(response),
            Err(Exchange::Failed(error)) => Err(error),
            Err(Exchange::Closed) => Err(ClientError::Protocol(
                "the connection closed before a response".into(),
            )),
        }
    }

    async fn connect(&self, host: &OriginUrl) -> Result<Box<Conn>, ClientError> {
        let connect = TcpStream::connect((host.host.as_str(), host.port));
        let tcp = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(ClientError::Connect(format!(
                    "connection timed out after {:?}",
                    self.connect_timeout
                )))
            }
            Ok(Err(error)) => return Err(ClientError::Connect(error.to_string())),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let stream = match host.tls {
            false => OriginStream::Plain(tcp),
            true => {
                let name = rustls::pki_types::ServerName::try_from(host.host.clone())
                    .map_err(|error| ClientError::Connect(format!("TLS server name: {error}")))?;
                let handshake = self.tls.connect(name, tcp);
                match tokio::time::timeout(self.connect_timeout, handshake).await {
                    Err(_) => return Err(ClientError::Connect("TLS handshake timed out".into())),
                    Ok(Err(error)) => {
                        return Err(ClientError::Connect(format!("TLS handshake: {error}")))
                    }
                    Ok(Ok(tls)) => OriginStream::Tls(Box::new(tls)),
                }
            }
        };
        Ok(Box::new(Conn {
            stream,
            buffer: BytesMut::new(),
            tls: host.tls,
            authority: host.authority.clone().into_boxed_str(),
        }))
    }
}

/// Idle keep-alive connections by host.
struct IdlePool {
    hosts: Mutex<Vec<HostIdle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// One host's idle connections, most recently used last, with the time each became idle.
struct HostIdle {
    tls: bool,
    authority: Box<str>,
    idle: VecDeque<(Box<Conn>, Instant)>,
}

impl HostIdle {
    fn is(&self, tls: bool, authority: &str) -> bool {
        self.tls == tls && *self.authority == *authority
    }
}

impl IdlePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HostIdle>> {
        // A panic while the lock was held leaves the lists consistent.
        self.hosts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection to `host` that is still open.
    fn checkout(&self, host: &OriginUrl) -> Option<Box<Conn>> {
        loop {
            let (mut conn, since) = {
                let mut hosts = self.lock();
                let entry = hosts
                    .iter_mut()
                    .find(|entry| entry.is(host.tls, &host.authority))?;
                entry.idle.pop_back()?
            };
            if since.elapsed() < self.idle_timeout && conn.still_open() {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for the next request to its host, dropping the oldest idle connection past
    /// `max_idle` and those idle longer than `idle_timeout`.
    fn checkin(&self, mut conn: Box<Conn>) {
        if self.max_idle == 0 {
            return;
        }
        if conn.buffer.capacity() > KEEP_BUFFER {
            conn.buffer = BytesMut::new();
        }
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut hosts = self.lock();
            let position = hosts
                .iter()
                .position(|entry| entry.is(conn.tls, &conn.authority));
            let index = match position {
                Some(index) => index,
                None => {
                    hosts.push(HostIdle {
                        tls: conn.tls,
                        authority: conn.authority.clone(),
                        idle: VecDeque::new(),
                    });
                    hosts.len() - 1
                }
            };
            let idle = &mut hosts[index].idle;
            while idle.len() >= self.max_idle
                || idle
                    .front()
                    .is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_timeout)
            {
                closed.extend(idle.pop_front());
            }
            idle.push_back((conn, now));
        }
        // Closed outside the lock.
        drop(closed);
    }
}

/// An open connection to a host.
struct Conn {
    stream: OriginStream,
    /// Bytes read and not yet consumed.
    buffer: BytesMut,
    tls: bool,
    authority: Box<str>,
}

impl Conn {
    /// Whether an idle connection is still usable: nothing arrived on it (a close, or bytes
    /// nobody asked for). Looks without waiting.
    fn still_open(&mut self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        let mut context = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        matches!(
            std::pin::Pin::new(&mut self.stream).poll_read(&mut context, &mut probe),
            Poll::Pending
        )
    }

    /// Reads more into the buffer; 0 at the end of the stream.
    async fn read_more(&mut self, at_least: usize) -> std::io::Result<usize> {
        self.buffer.reserve(at_least);
        self.stream.read_buf(&mut self.buffer).await
    }
}

/// How an exchange on one connection failed.
enum Exchange {
    /// A pooled connection had been closed by the host before it answered: try a new one.
    Closed,
    Failed(ClientError),
}

/// Writes the request on `conn` (`reused`: taken from the pool, and so perhaps closed by the
/// host since), reads the response head, and returns the response with the body reading from
/// `conn`.
async fn exchange(
    mut conn: Box<Conn>,
    reused: bool,
    parts: &http::request::Parts,
    mut body: RequestBody,
    host: &OriginUrl,
    pool: &Arc<IdlePool>,
) -> Result<Response<OriginBody>, Exchange> {
    // Before any byte of an answer, a pooled connection that breaks is one the host closed.
    let before_answer = |reason: String| match reused {
        true => Exchange::Closed,
        false => Exchange::Failed(ClientError::Protocol(reason)),
    };
    let chunked = !body.is_empty() && body.length().is_none();
    let mut head = Vec::with_capacity(512);
    write_request_head(&mut head, parts, &body, host);
    // Nothing is sent before the body's first piece is in, and what else of the body is
    // already there goes with it in one write: a body that turns out to be malformed (the
    // client's framing is checked as it is read) then never reaches the host.
    let mut finished = body.is_empty();
    if !finished {
        let mut piece = next_piece(&mut body).await;
        loop {
            match piece {
                Err(error) => return Err(Exchange::Failed(ClientError::RequestBody(error))),
                Ok(piece) => {
                    finished = piece.is_none();
                    frame_piece(&mut head, piece.as_ref(), chunked);
                }
            }
            if finished || head.len() >= GATHER_BODY {
                break;
            }
            match next_piece(&mut body).now_or_never() {
                Some(next) => piece = next,
                None => break,
            }
        }
    }
    conn.stream
        .write_all(&head)
        .await
        .map_err(|error| before_answer(error.to_string()))?;
    // A failure to send the rest: the host may have answered and closed without reading it
    // all, so its answer is read before the failure is reported.
    let mut unsent = None;
    if !finished {
        match send_body(&mut conn, &mut body, chunked, head).await {
            Ok(()) => {}
            Err(Sent::Body(error)) => {
                return Err(Exchange::Failed(ClientError::RequestBody(error)))
            }
            Err(Sent::Io(error)) => unsent = Some(error),
        }
    }
    let is_head = parts.method == Method::HEAD;
    let mut interim = 0;
    loop {
        let parsed = match parse_response_head(&mut conn.buffer) {
            Err(reason) => return Err(Exchange::Failed(ClientError::Protocol(reason))),
            Ok(parsed) => parsed,
        };
        let Some(response) = parsed else {
            let started = !conn.buffer.is_empty();
            if let (false, Some(error)) = (started, &unsent) {
                // The body could not be sent: only an answer already there counts.
                if !matches!(conn.read_more(8 * 1024).now_or_never(), Some(Ok(1..))) {
                    let reason = format!("sending the request body: {error}");
                    return Err(Exchange::Failed(ClientError::Protocol(reason)));
                }
                continue;
            }
            let reason = match conn.read_more(8 * 1024).await {
                Ok(0) => "the connection closed before a response".to_owned(),
                Ok(_) => continue,
                Err(error) => error.to_string(),
            };
            return Err(match started {
                false => before_answer(reason),
                true => Exchange::Failed(ClientError::Protocol(format!(
                    "inside the response head: {reason}"
                ))),
            });
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Never asked for (`Upgrade` is not forwarded): what follows is not HTTP.
            let reason = "101 Switching Protocols to a request without Upgrade".into();
            return Err(Exchange::Failed(ClientError::Protocol(reason)));
        }
        if response.status().is_informational() {
            // 100 Continue, 103 Early Hints: the real answer follows, after a few at most.
            interim += 1;
            if interim > MAX_INTERIM {
                let reason = "too many interim (1xx) responses".into();
                return Err(Exchange::Failed(ClientError::Protocol(reason)));
            }
            continue;
        }
        let framing = response_framing(&response, is_head).map_err(Exchange::Failed)?;
        // The same rule as for a client's request: HTTP/1.1 unless `close`, HTTP/1.0 only with
        // `keep-alive`.
        let keep_alive = keep_alive(response.headers(), response.version())
            && !matches!(framing, Framing::Close);
        let body = OriginBody(Source::Connection(ConnectionBody::new(
            conn,
            framing,
            keep_alive,
            Arc::clone(pool),
        )));
        let (parts, ()) = response.into_parts();
        return Ok(Response::from_parts(parts, body));
    }
}

/// The request head in origin form, with framing for `body`.
fn write_request_head(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    body: &RequestBody,
    host: &OriginUrl,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |target| target.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match (body.is_empty(), body.length()) {
        // Methods whose requests carry content say so even when it is empty.
        (true, _) if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) => {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        (true, _) => {}
        (false, Some(length)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        (false, None) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

enum Sent {
    /// The client's body failed.
    Body(RequestBodyError),
    /// The connection failed.
    Io(std::io::Error),
}

/// The body's next piece of data; `None` at its end.
async fn next_piece(body: &mut RequestBody) -> Result<Option<Bytes>, RequestBodyError> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
    Ok(None)
}

/// Appends `piece` (or, at the end, the last chunk) to `out`, framed.
fn frame_piece(out: &mut Vec<u8>, piece: Option<&Bytes>, chunked: bool) {
    match (piece, chunked) {
        (Some(data), true) => {
            chunk_size_line(data.len(), out);
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        (Some(data), false) => out.extend_from_slice(data),
        (None, true) => out.extend_from_slice(b"0\r\n\r\n"),
        (None, false) => {}
    }
}

/// Streams the rest of the request body to the host, as chunks when its length is unknown,
/// using `scratch` for framing.
async fn send_body(
    conn: &mut Conn,
    body: &mut RequestBody,
    chunked: bool,
    mut scratch: Vec<u8>,
) -> Result<(), Sent> {
    loop {
        let piece = next_piece(body).await.map_err(Sent::Body)?;
        scratch.clear();
        match (&piece, chunked) {
            // Unframed data goes out as it is, uncopied.
            (Some(data), false) => conn.stream.write_all(data).await.map_err(Sent::Io)?,
            _ => {
                frame_piece(&mut scratch, piece.as_ref(), chunked);
                conn.stream.write_all(&scratch).await.map_err(Sent::Io)?;
            }
        }
        if piece.is_none() {
            return Ok(());
        }
    }
}

/// Parses a response head from the front of `buffer`, consuming it; `None` when it is not all
/// there yet. Public for the `response_head` fuzz target.
pub fn parse_response_head(buffer: &mut BytesMut) -> Result<Option<Response<()>>, String> {
    if buffer.is_empty() {
        return Ok(None);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let length = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD_BYTES => length,
        Ok(httparse::Status::Partial) if buffer.len() <= MAX_HEAD_BYTES => return Ok(None),
        Ok(_) => return Err("response head too large".into()),
        Err(error) => return Err(format!("invalid response head: {error}")),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or("invalid response status")?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // The head's own copy, so that header values (slices of it) pin no read buffer.
    let head = Bytes::copy_from_slice(&buffer[..length]);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    let headers = response.headers_mut();
    headers.reserve(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| format!("invalid response header name {:?}", field.name))?;
        // The value's place in the buffer is its place in the copy.
        let start = field.value.as_ptr() as usize - buffer.as_ptr() as usize;
        let value = HeaderValue::from_maybe_shared(head.slice(start..start + field.value.len()))
            .map_err(|_| format!("invalid value of response header {:?}", field.name))?;
        headers.append(name, value);
    }
    buffer.advance(length);
    Ok(Some(response))
}

/// How a response's body is delimited (RFC 9112, section 6.3).
#[derive(Debug)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// The framing of `response`'s body, or why it cannot be relayed. A response whose length a
/// recipient could read two ways is refused rather than repaired (RFC 9112 §6.3, as nginx
/// does): `Transfer-Encoding` with `Content-Length`, in an HTTP/1.0 response, or with any
/// coding but a single `chunked`, which is all this proxy applies; a coding it passed on
/// undecoded would reach clients (and the cache) as if it were the content.
fn response_framing(response: &Response<()>, is_head: bool) -> Result<Framing, ClientError> {
    let status = response.status();
    if is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::None);
    }
    let headers = response.headers();
    if headers.contains_key(TRANSFER_ENCODING) {
        let refuse = |reason: &str| Err(ClientError::Protocol(reason.into()));
        if headers.contains_key(CONTENT_LENGTH) {
            return refuse("the response has both Transfer-Encoding and Content-Length");
        }
        if response.version() == Version::HTTP_10 {
            return refuse("Transfer-Encoding in an HTTP/1.0 response");
        }
        let mut codings = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|coding| !coding.is_empty());
        return match (codings.next(), codings.next()) {
            (Some(coding), None) if coding.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => refuse("a transfer coding other than a single chunked"),
        };
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&byte| byte == b',') {
            let item = item.trim_ascii();
            let parsed =
                (!item.is_empty() && item.len() <= 19 && item.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| ClientError::Protocol("invalid content-length".into()))?;
            if length.is_some_and(|length| length != parsed) {
                return Err(ClientError::Protocol("conflicting content-length".into()));
            }
            length = Some(parsed);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// The body of an upstream's answer: read from its connection, or (a `file:///` host's) from
/// a file.
pub struct OriginBody(Source);

enum Source {
    Connection(ConnectionBody),
    File(FileBody),
}

impl OriginBody {
    /// The file body, when the answer came from a file host.
    pub fn file_body(&mut self) -> Option<&mut FileBody> {
        match &mut self.0 {
            Source::File(body) => Some(body),
            Source::Connection(_) => None,
        }
    }
}

impl From<FileBody> for OriginBody {
    fn from(body: FileBody) -> OriginBody {
        OriginBody(Source::File(body))
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.0 {
            Source::Connection(body) => std::pin::Pin::new(body).poll_frame(cx),
            Source::File(body) => std::pin::Pin::new(body)
                .poll_frame(cx)
                .map_err(|error| BodyError(error.to_string())),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Source::Connection(body) => body.is_end_stream(),
            Source::File(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Source::Connection(body) => body.size_hint(),
            Source::File(body) => body.size_hint(),
        }
    }
}

/// A response body read from its connection as the reader asks for it; the connection goes
/// back to the pool when the body ends cleanly, and is closed when the body is dropped early.
struct ConnectionBody {
    conn: Option<Box<Conn>>,
    state: State,
    keep_alive: bool,
    pool: Arc<IdlePool>,
}

enum State {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

impl ConnectionBody {
    fn new(
        conn: Box<Conn>,
        framing: Framing,
        keep_alive: bool,
        pool: Arc<IdlePool>,
    ) -> ConnectionBody {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::Chunked(ChunkedDecoder::new(MAX_HEAD_BYTES)),
            Framing::Close => State::Close,
        };
        let mut body = ConnectionBody {
            conn: Some(conn),
            state,
            keep_alive,
            pool,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection is kept for another request if it can be.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take() {
            // Bytes after the end of a response nobody asked for: the connection is unusable.
            if self.keep_alive && conn.buffer.is_empty() {
                self.pool.checkin(conn);
            }
        }
    }

    /// The body is broken: the connection is closed, and the reader told why.
    fn fail(&mut self, reason: String) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(BodyError(reason))))
    }
}

impl Body for ConnectionBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let wanted = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) => {
                    if !conn.buffer.is_empty() {
                        let take = (*remaining).min(conn.buffer.len() as u64) as usize;
                        *remaining -= take as u64;
                        let data = conn.buffer.split_to(take).freeze();
                        if *remaining == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    (*remaining).min(BODY_READ as u64) as usize
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.buffer) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => BODY_READ,
                    Err(error) => {
                        return this.fail(format!("invalid chunked body: {}", error.reason))
                    }
                },
                State::Close => {
                    if !conn.buffer.is_empty() {
                        let data = conn.buffer.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    BODY_READ
                }
            };
            conn.buffer.reserve(wanted);
            let read = {
                let read = conn.stream.read_buf(&mut conn.buffer);
                futures_util::pin_mut!(read);
                std::task::ready!(std::future::Future::poll(read, cx))
            };
            match read {
                // The end of a body delimited by the close (never kept alive).
                Ok(0) if matches!(this.state, State::Close) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail("the connection closed before the end of the body".into())
                }
                Ok(_) => {}
                Err(error) => return this.fail(error.to_string()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(remaining) => SizeHint::with_exact(*remaining),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Response<()>>, String> {
        parse_response_head(&mut BytesMut::from(text))
    }

    fn framing(text: &str) -> Result<Framing, ClientError> {
        response_framing(&head(text).unwrap().unwrap(), false)
    }

    #[test]
    fn response_heads_are_parsed_strictly() {
        let response = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-a"], "b");
        assert!(head("HTTP/1.1 200 OK\r\nContent-Len").unwrap().is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\nX-A: b\r\n folded\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?} was accepted");
        }
        let huge = format!(
            "HTTP/1.1 200 OK\r\nX-A: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(head(&huge).is_err(), "a head over the limit was accepted");
        assert!(
            head(&huge[..MAX_HEAD_BYTES + 10]).is_err(),
            "an unfinished head over the limit"
        );
    }

    #[test]
    fn bodies_are_framed_as_rfc_9112_says() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", "Length(7)"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
                "Length(7)",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n",
                "Chunked",
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", "Close"),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
                "None",
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
                "None",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                format!("{:?}", framing(text).unwrap()),
                expected,
                "{text:?}"
            );
        }
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +7\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x7\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(framing(bad).is_err(), "{bad:?} was accepted");
        }
        let response = head("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(
            response_framing(&response, true),
            Ok(Framing::None)
        ));
    }

    /// An idle pooled connection is given out only while its host has neither closed it nor
    /// sent anything unasked (checked without waiting).
    #[tokio::test]
    async fn an_idle_connection_is_open_until_its_host_closes_it_or_speaks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let conn = |tcp| Conn {
            stream: OriginStream::Plain(tcp),
            buffer: BytesMut::new(),
            tls: false,
            authority: "test".into(),
        };
        let settle = || tokio::time::sleep(Duration::from_millis(50));
        let mut quiet = conn(TcpStream::connect(address).await.unwrap());
        let (_quiet_peer, _) = listener.accept().await.unwrap();
        let mut closed = conn(TcpStream::connect(address).await.unwrap());
        let (closed_peer, _) = listener.accept().await.unwrap();
        let mut talking = conn(TcpStream::connect(address).await.unwrap());
        let (mut talking_peer, _) = listener.accept().await.unwrap();
        drop(closed_peer);
        talking_peer
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .unwrap();
        settle().await;
        assert!(quiet.still_open());
        assert!(
            !closed.still_open(),
            "a connection its host closed was given out"
        );
        assert!(
            !talking.still_open(),
            "a connection with unasked bytes was given out"
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let cases = [
            ("HTTP/1.1 200 OK\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nConnection: foo, Close\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", true),
        ];
        for (text, expected) in cases {
            let response = head(text).unwrap().unwrap();
            let kept = keep_alive(response.headers(), response.version());
            assert_eq!(kept, expected, "{text:?}");
        }
    }
}
