//! The client side of HTTP/1.1: one task per connection that parses requests strictly, runs
//! each through [`Proxy::handle`] and writes the answers back in order (which also answers
//! pipelined requests in order).
//!
//! Written by hand on `httparse` rather than with hyper's server because of memory per idle
//! connection: an idle connection here holds no buffer at all (its buffers are released once
//! the socket has had nothing to read for a tick or two of `idle::IdleTicks`), where hyper
//! keeps two 8 KiB buffers per connection, which puts 10,000 idle keep-alive connections over
//! the 100 MiB budget. It also gives one place to enforce the anti-smuggling rules (`crate::wire::http1`).
//! Cleartext HTTP/2 connections are recognized by their preface and handed to hyper's HTTP/2
//! server (`super::h2`).

pub(crate) mod idle;
pub(crate) mod write;

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::stream::ClientStream;
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::idle::IdleTicks;
use self::write::{write_head, BodyFraming, WriteContext};
use super::logged::{refused_entry, LoggedRequest};
use super::{error_response, ClientRequest, Proxy, ProxyError, ProxyResponse, ResponseBody};
use crate::proxy::settings::{Settings, WRITE_BATCH};
use crate::throttle::LogBudget;
use crate::upstream::files::Part;
use crate::upstream::{RequestBody, RequestBodyError};
use crate::wire::http1::{
    chunk_size_line, ChunkedDecoder, Decoded, Framing, Head, ParseError, H2_PREFACE,
};
#[cfg(target_os = "linux")]
use crate::wire::sendfile::send_file;

/// Bodies smaller than this are copied behind the head and sent with one write.
const COALESCE_BELOW: usize = 16 * 1024;
/// How long, and how much, a lingering close reads and discards before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;
/// The log lines of request bodies refused or timed out.
static BODY_LOGGED: LogBudget = LogBudget::new(10);

/// How long an idle connection stays open once the node is shutting down.
const DRAIN_IDLE_LINGER: Duration = Duration::from_millis(1000);
/// How a body is cut into vectored writes: the first batch up to [`WRITE_BATCH`], the later
/// ones up to the steady batch; and when the writer gives the worker to other connections.
struct Batches {
    budget: u64,
    steady: u64,
    /// Whether the last batch taken filled the budget it was gathered under.
    previous_filled: bool,
}

impl Batches {
    fn new(steady: u64) -> Batches {
        Batches {
            budget: WRITE_BATCH,
            steady,
            previous_filled: false,
        }
    }

    /// Most bytes to gather for the next write.
    fn budget(&self) -> u64 {
        self.budget
    }

    /// Takes a gathered batch of `bytes` for writing; says whether to yield before writing
    /// it. A large body goes out in turns with the other connections of the worker, so that
    /// one big download does not hold up everyone's small responses: after each batch that
    /// filled its budget. (Yielding before a batch rather than after one spares the turn
    /// after the last.)
    fn take(&mut self, bytes: u64) -> bool {
        let turn = self.previous_filled;
        self.previous_filled = bytes >= self.budget;
        self.budget = self.steady;
        turn
    }
}

enum NextRequest {
    Request(Box<Head>),
    Closed,
    Http2,
}

#[derive(Debug)]
enum ConnectionError {
    Parse(ParseError),
    /// The head did not arrive in time; `started` when part of it had.
    Timeout {
        started: bool,
    },
    Io,
}

#[derive(Debug)]
enum BodyOutcome {
    Complete,
    TooLarge,
    Invalid(ParseError),
    /// The client stopped sending (closed, or the socket failed).
    Broken,
    /// The client sent nothing for `server.body_read_timeout`.
    Stalled,
    /// The origin side stopped taking the body; the rest was not read.
    Abandoned,
}

/// Serves one client connection until it closes.
pub async fn serve_connection(
    stream: ClientStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    idle_ticks: IdleTicks,
    settings: Settings,
) {
    let connection = Connection {
        stream,
        peer,
        proxy: Arc::clone(&proxy),
        idle_ticks,
        settings,
        input: BytesMut::new(),
        output: Vec::new(),
        batch: Vec::new(),
    };
    if let Some((stream, preface)) = connection.run().await {
        // The settings in force now (kept out of this future, which every connection holds).
        let settings = proxy.live().connection;
        // Boxed: HTTP/2's connection state is large and only the connections using it pay.
        Box::pin(super::h2::serve(
            stream,
            preface.freeze(),
            peer,
            proxy,
            settings,
        ))
        .await;
    }
}

struct Connection {
    stream: ClientStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    /// When to release the buffers of a connection waiting for its next request.
    idle_ticks: IdleTicks,
    settings: Settings,
    input: BytesMut,
    output: Vec<u8>,
    /// The body chunks of the write in progress (kept empty between writes, so that no object
    /// is pinned by a connection).
    batch: Vec<Bytes>,
}

impl Connection {
    /// Serves requests until the connection closes; returns the socket and what was read of it
    /// when the client turns out to speak HTTP/2.
    async fn run(mut self) -> Option<(ClientStream, BytesMut)> {
        let mut first = true;
        loop {
            let head = match self.next_request(first).await {
                Ok(NextRequest::Request(head)) => head,
                Ok(NextRequest::Closed) => return None,
                Ok(NextRequest::Http2) => return Some((self.stream, self.input)),
                Err(ConnectionError::Parse(error)) => {
                    self.proxy.metrics.add(super::Counter::ClientErrors, 1);
                    let reject = Box::pin(self.reject(error.status, error.reason, None));
                    reject.await;
                    return None;
                }
                Err(ConnectionError::Timeout { started: true }) => {
                    self.proxy.metrics.add(super::Counter::HeaderTimeouts, 1);
                    let timeout = StatusCode::REQUEST_TIMEOUT;
                    let reject = Box::pin(self.reject(timeout, "request head timed out", None));
                    reject.await;
                    return None;
                }
                Err(ConnectionError::Timeout { started: false }) => {
                    self.proxy.metrics.add(super::Counter::IdleTimeouts, 1);
                    return None;
                }
                Err(ConnectionError::Io) => return None,
            };
            first = false;
            // Boxed: the whole request pipeline's state lives on the heap only while a request is
            // in progress, so an idle connection's task stays small.
            let exchange = Box::pin(self.exchange(*head));
            match exchange.await {
                Ok(true) => {}
                Ok(false) => {
                    if !self.input.is_empty() {
                        // Pipelined requests we will not answer are waiting: close gently so
                        // that they do not turn our last response into a reset.
                        let linger = Box::pin(self.linger());
                        linger.await;
                    }
                    return None;
                }
                Err(error) => {
                    if error.kind() == std::io::ErrorKind::TimedOut {
                        self.proxy.metrics.add(super::Counter::SendTimeouts, 1);
                    }
                    return None;
                }
            }
        }
    }

    /// Reads until a whole request head is buffered. Waits with no buffer allocated while the
    /// connection is idle.
    async fn next_request(&mut self, first: bool) -> Result<NextRequest, ConnectionError> {
        let mut deadline = None;
        loop {
            if !self.input.is_empty() {
                if first
                    && self.input.len() <= H2_PREFACE.len()
                    && H2_PREFACE.starts_with(&self.input)
                {
                    if self.input.len() == H2_PREFACE.len() {
                        return Ok(NextRequest::Http2);
                    }
                } else if first && self.input.starts_with(H2_PREFACE) {
                    return Ok(NextRequest::Http2);
                } else if let Some(head) =
                    crate::wire::http1::parse_head(&mut self.input, &self.settings.limits)
                        .map_err(ConnectionError::Parse)?
                {
                    return Ok(NextRequest::Request(Box::new(head)));
                }
                deadline.get_or_insert_with(|| Instant::now() + self.settings.header_timeout);
            }
            if self.input.is_empty() {
                // Between requests: take what has already arrived; when nothing has, release the
                // buffers so that an idle connection holds no memory, and wait.
                // TLS may hold decrypted bytes that the socket will not signal again (a
                // request that came with the end of the handshake): read them first.
                if self.input.capacity() > 0 || self.stream.is_tls() {
                    self.input.reserve(4096);
                    match self.stream.try_read_buf(&mut self.input) {
                        Ok(0) => return Ok(NextRequest::Closed),
                        Ok(_) => continue,
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return Err(ConnectionError::Io),
                    }
                }
                // A busy connection's next request is usually moments away: wait for it a
                // little with the buffers kept, rather than free and allocate them again for
                // every request.
                if self.input.capacity() > 0 && !self.proxy.is_draining() {
                    tokio::select! {
                        biased;
                        readable = self.stream.readable() => match readable {
                            Ok(()) => continue,
                            Err(_) => return Err(ConnectionError::Io),
                        },
                        () = self.idle_ticks.two_ticks() => {}
                    }
                }
                self.input = BytesMut::new();
                self.output = Vec::new();
                self.batch = Vec::new();
                // Shutting down: an idle connection gets a moment for a request already on its
                // way (answered with `Connection: close`), then closes; closing it at once
                // would fail a request the client sent in that instant.
                let shutdown = self.proxy.drain_started();
                let draining = self.proxy.is_draining();
                let wait = match draining {
                    true => DRAIN_IDLE_LINGER,
                    false => self.settings.keepalive_timeout,
                };
                let idle = tokio::time::timeout(wait, self.stream.readable());
                let waited = tokio::select! {
                    waited = idle => waited,
                    () = shutdown, if !draining => continue,
                };
                match waited {
                    Err(_) if draining => return Ok(NextRequest::Closed),
                    Err(_) => return Err(ConnectionError::Timeout { started: false }),
                    Ok(Err(_)) => return Err(ConnectionError::Io),
                    Ok(Ok(())) => {}
                }
                self.input.reserve(4096);
                match self.stream.try_read_buf(&mut self.input) {
                    Ok(0) => return Ok(NextRequest::Closed),
                    Ok(_) => continue,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return Err(ConnectionError::Io),
                }
            }
            // Inside a request head: read more, within the head's deadline.
            if self.input.capacity() == self.input.len() {
                self.input.reserve(4096);
            }
            let deadline =
                deadline.unwrap_or_else(|| Instant::now() + self.settings.header_timeout);
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.input))
                .await
                .map_err(|_| ConnectionError::Timeout { started: true })?;
            match read {
                Ok(0) => {
                    return Err(ConnectionError::Parse(ParseError {
                        status: StatusCode::BAD_REQUEST,
                        reason: "connection closed inside a request head",
                    }))
                }
                Ok(_) => {}
                Err(_) => return Err(ConnectionError::Io),
            }
        }
    }

    /// One request and its response. Returns whether the connection can carry another.
    async fn exchange(&mut self, head: Head) -> std::io::Result<bool> {
        let Head {
            parts,
            framing,
            keep_alive,
            expect_continue,
        } = head;
        let http10 = parts.version == Version::HTTP_10;
        let is_head = parts.method == Method::HEAD;
        let proxy = Arc::clone(&self.proxy);
        let declared = match framing {
            Framing::Length(length) => Some(length),
            _ => None,
        };
        if declared.is_some_and(|length| length > self.settings.max_body) {
            let too_large = StatusCode::PAYLOAD_TOO_LARGE;
            self.reject(too_large, "request body too large", Some(&parts))
                .await;
            return Ok(false);
        }
        let mut keep_alive = keep_alive;
        let logged = proxy
            .live()
            .access_log()
            .is_some()
            .then(|| LoggedRequest::of(&parts));
        let response = if framing == Framing::None {
            let request = ClientRequest {
                head: parts,
                body: RequestBody::empty(),
                has_body: false,
                client: self.peer,
                tls: self.stream.is_tls(),
            };
            proxy.handle(request).await
        } else {
            if expect_continue {
                self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            let (sender, receiver) = mpsc::channel(4);
            let request = ClientRequest {
                head: parts,
                body: RequestBody::channel(receiver, declared),
                has_body: true,
                client: self.peer,
                tls: self.stream.is_tls(),
            };
            let settings = self.settings;
            let pump = pump_body(&mut self.stream, &mut self.input, framing, sender, settings);
            let handle = proxy.handle(request);
            tokio::pin!(pump, handle);
            let mut outcome = None;
            let response = loop {
                tokio::select! {
                    response = &mut handle => break response,
                    result = &mut pump, if outcome.is_none() => outcome = Some(result),
                }
            };
            match outcome {
                Some(BodyOutcome::Complete) => response,
                Some(BodyOutcome::TooLarge) => {
                    let error = ProxyError::BadRequest {
                        status: StatusCode::PAYLOAD_TOO_LARGE,
                        reason: "request body too large",
                    };
                    keep_alive = false;
                    error_response(&error)
                }
                Some(BodyOutcome::Invalid(error)) => {
                    self.proxy.metrics.add(super::Counter::ClientErrors, 1);
                    if let Some(held_back) = BODY_LOGGED.admit() {
                        tracing::info!(peer = %self.peer, reason = error.reason, held_back, "malformed request body");
                    }
                    keep_alive = false;
                    error_response(&ProxyError::BadRequest {
                        status: error.status,
                        reason: error.reason,
                    })
                }
                Some(BodyOutcome::Broken) => return Ok(false),
                Some(BodyOutcome::Stalled) => {
                    self.proxy.metrics.add(super::Counter::BodyTimeouts, 1);
                    if let Some(held_back) = BODY_LOGGED.admit() {
                        tracing::info!(peer = %self.peer, held_back, "request body timed out");
                    }
                    keep_alive = false;
                    error_response(&ProxyError::BadRequest {
                        status: StatusCode::REQUEST_TIMEOUT,
                        reason: "request body timed out",
                    })
                }
                // The body was not read to its end: the connection cannot be reused.
                Some(BodyOutcome::Abandoned) | None => {
                    keep_alive = false;
                    response
                }
            }
        };
        let mut response = response;
        if is_head {
            // Whatever the origin sent, a HEAD response has no body.
            if response.body.is_sent() {
                let length = response.body.length();
                response.body = super::ResponseBody::Omitted(length);
            }
        }
        // A node shutting down closes each connection after its current response.
        let keep_alive = keep_alive && !self.proxy.is_draining();
        let (status, cache) = (response.status.as_u16(), response.cache_status);
        let origin = response.origin.take();
        let (keep, sent) = self.respond(response, http10, keep_alive).await?;
        if let (Some(logged), Some(log)) = (logged, proxy.access_log()) {
            log.record(logged.entry(self.peer.ip(), status, sent, cache, origin));
        }
        Ok(keep)
    }

    /// Answers a request the parser refused (or whose head or body broke a limit) with
    /// `status` and closes the connection. The log line and the access log entry are kept
    /// within a budget: whoever sends these can send them as fast as they like, and an
    /// operator needs to see that they come, not every one.
    async fn reject(
        &mut self,
        status: StatusCode,
        reason: &'static str,
        head: Option<&http::request::Parts>,
    ) {
        static LOGGED: LogBudget = LogBudget::new(10);
        static RECORDED: LogBudget = LogBudget::new(100);
        if let Some(held_back) = LOGGED.admit() {
            tracing::info!(peer = %self.peer, status = status.as_u16(), reason, held_back, "request refused");
        }
        if let Some(log) = self.proxy.access_log() {
            if RECORDED.admit().is_some() {
                let client = self.peer.ip();
                let entry = match head {
                    Some(head) => LoggedRequest::of(head).entry(
                        client,
                        status.as_u16(),
                        0,
                        crate::cache::CacheStatus::Synthetic,
                        None,
                    ),
                    None => refused_entry(&self.input, client, status),
                };
                log.record(entry);
            }
        }
        let error = ProxyError::BadRequest { status, reason };
        self.reply_and_close(error_response(&error)).await;
    }

    async fn reply_and_close(&mut self, response: ProxyResponse) {
        if self.respond(response, false, false).await.is_ok() {
            self.linger().await;
        }
    }

    /// Lingering close: ends our side, then reads and discards what the client still sends,
    /// for a short while, before closing. Closing with unread input makes the kernel send a
    /// reset, which can destroy the response the client has not yet read (an error response
    /// to a request whose body or pipelined successors were never read, typically).
    async fn linger(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME;
        // The input buffer serves as scratch: a buffer here would make every connection's task
        // (which holds this future's state) bigger.
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            self.input.clear();
            self.input.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.input)).await {
                Ok(Ok(read)) if read > 0 => discarded += read,
                _ => return,
            }
        }
    }

    /// Writes a response. Returns whether the connection stays open.
    async fn respond(
        &mut self,
        mut response: ProxyResponse,
        http10: bool,
        keep_alive: bool,
    ) -> std::io::Result<(bool, u64)> {
        let live = self.proxy.live();
        let mut context = WriteContext {
            http10,
            keep_alive,
            status_header: live.status_header.as_ref(),
            via: &live.via,
            hsts: live.hsts.as_ref().filter(|_| self.stream.is_tls()),
        };
        self.output.clear();
        self.output.reserve(2048);
        let framing = write_head(&mut self.output, &response, &mut context);
        let keep_alive = context.keep_alive;
        drop(live);
        if framing == BodyFraming::None {
            self.flush_output().await?;
            return Ok((keep_alive, 0));
        }
        if let BodyFraming::Length(length) = framing {
            if self.sends_file(&mut response.body) {
                // Boxed: only file answers pay for its state in the connection's future.
                return Box::pin(self.send_file_body(response.body, length, keep_alive)).await;
            }
        }
        let mut sent: u64 = 0;
        let mut batch = std::mem::take(&mut self.batch);
        let mut batches = Batches::new(self.settings.write_batch);
        loop {
            batch.clear();
            response.body.ready_chunks(&mut batch, batches.budget());
            if batch.is_empty() {
                if !self.output.is_empty() {
                    // Let the client see the head while the body is on its way.
                    self.flush_output().await?;
                }
                match response.body.next_chunk().await {
                    Ok(Some(chunk)) => batch.push(chunk),
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(peer = %self.peer, %error, "response truncated");
                        return Ok((false, sent));
                    }
                }
            }
            let batch_bytes: usize = batch.iter().map(Bytes::len).sum();
            if let BodyFraming::Length(length) = framing {
                // The head promised `length` bytes: a byte more would be read by the client
                // as the start of its next response.
                let room = length - sent;
                if batch_bytes as u64 > room {
                    tracing::warn!(peer = %self.peer, length, "response body longer than its length; cut there, closing");
                    let kept = cut_to(&mut batch, room);
                    self.send_batch(&batch, kept, framing).await?;
                    self.batch = Vec::new();
                    return Ok((false, sent + kept as u64));
                }
            }
            if batches.take(batch_bytes as u64) {
                tokio::task::yield_now().await;
            }
            sent += batch_bytes as u64;
            self.send_batch(&batch, batch_bytes, framing).await?;
        }
        // Empty again: the loop ends only when no chunk came.
        self.batch = batch;
        if framing == BodyFraming::Chunked {
            self.output.extend_from_slice(b"0\r\n\r\n");
        }
        if !self.output.is_empty() {
            self.flush_output().await?;
        }
        self.proxy.metrics.add(super::Counter::BytesSent, sent);
        if let BodyFraming::Length(length) = framing {
            if sent != length {
                tracing::warn!(peer = %self.peer, sent, length, "response body ended early; closing");
                return Ok((false, sent));
            }
        }
        Ok((keep_alive && framing != BodyFraming::Close, sent))
    }

    /// Whether `body` is ranges of a file that can go to this connection with `sendfile`
    /// (cleartext only: TLS encrypts in user space).
    fn sends_file(&self, body: &mut ResponseBody) -> bool {
        let ResponseBody::Upstream { incoming, .. } = body else {
            return false;
        };
        cfg!(target_os = "linux")
            && !self.stream.is_tls()
            && incoming
                .file_body()
                .is_some_and(|file_body| file_body.file().is_some() && file_body.has_file_ranges())
    }

    /// Writes the head, then a file body part by part: text as it is, file ranges with
    /// `sendfile`. Returns whether the connection stays open, and the bytes sent.
    async fn send_file_body(
        &mut self,
        mut body: ResponseBody,
        length: u64,
        keep_alive: bool,
    ) -> std::io::Result<(bool, u64)> {
        let ResponseBody::Upstream { incoming, .. } = &mut body else {
            unreachable!("checked by sends_file")
        };
        let Some(file_body) = incoming.file_body() else {
            unreachable!("checked by sends_file")
        };
        let Some(file) = file_body.file().cloned() else {
            unreachable!("checked by sends_file")
        };
        let (mut sent, mut from_file) = (0, 0);
        while let Some(part) = file_body.next_part() {
            let result = match part {
                Part::Text(text) => {
                    self.output.extend_from_slice(&text);
                    sent += text.len() as u64;
                    Ok(())
                }
                Part::Range { start, end } => {
                    if !self.output.is_empty() {
                        self.flush_output().await?;
                    }
                    let ClientStream::Plain(socket) = &self.stream else {
                        unreachable!("checked by sends_file")
                    };
                    let result =
                        send_file(socket, &file, start, end, self.settings.send_timeout).await;
                    if result.is_ok() {
                        sent += end - start;
                        from_file += end - start;
                    }
                    result
                }
            };
            if let Err(error) = result {
                tracing::warn!(peer = %self.peer, %error, "file response cut short");
                self.proxy
                    .metrics
                    .add(super::Counter::SendfileBytes, from_file);
                return Ok((false, sent));
            }
        }
        if !self.output.is_empty() {
            self.flush_output().await?;
        }
        self.proxy
            .metrics
            .add(super::Counter::SendfileBytes, from_file);
        self.proxy.metrics.add(super::Counter::BytesSent, sent);
        self.proxy.metrics.add(super::Counter::OriginBytes, sent);
        Ok((keep_alive && sent == length, sent))
    }

    /// Writes buffered head bytes (if any) and a batch of body chunks, framed.
    async fn send_batch(
        &mut self,
        batch: &[Bytes],
        batch_bytes: usize,
        framing: BodyFraming,
    ) -> std::io::Result<()> {
        if framing == BodyFraming::Chunked {
            // One chunk per batch: size line, data, CRLF.
            chunk_size_line(batch_bytes, &mut self.output);
        }
        if self.output.len() + batch_bytes <= COALESCE_BELOW {
            for chunk in batch {
                self.output.extend_from_slice(chunk);
            }
            if framing == BodyFraming::Chunked {
                self.output.extend_from_slice(b"\r\n");
            }
            if batch_bytes > 0 && framing != BodyFraming::Chunked {
                self.flush_output().await?;
            }
            return Ok(());
        }
        let trailer: &[u8] = if framing == BodyFraming::Chunked {
            b"\r\n"
        } else {
            b""
        };
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len() + 2);
        let head = std::mem::take(&mut self.output);
        if !head.is_empty() {
            slices.push(IoSlice::new(&head));
        }
        slices.extend(batch.iter().map(|chunk| IoSlice::new(chunk)));
        if !trailer.is_empty() {
            slices.push(IoSlice::new(trailer));
        }
        let result =
            write_vectored_all(&mut self.stream, &mut slices, self.settings.send_timeout).await;
        drop(slices);
        self.output = head;
        self.output.clear();
        result
    }

    /// Writes out the pending output and empties it, keeping its allocation for the next one.
    async fn flush_output(&mut self) -> std::io::Result<()> {
        let pending = std::mem::take(&mut self.output);
        let result = self.write_all(&pending).await;
        self.output = pending;
        self.output.clear();
        result
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(self.settings.send_timeout, self.stream.write_all(bytes))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client did not accept data in time",
                )
            })?
    }
}

/// Shortens `batch` to its first `room` bytes; returns their count.
fn cut_to(batch: &mut Vec<Bytes>, room: u64) -> usize {
    let mut kept = 0;
    batch.retain_mut(|chunk| {
        let left = room as usize - kept;
        if left == 0 {
            return false;
        }
        chunk.truncate(left);
        kept += chunk.len();
        true
    });
    kept
}

async fn write_vectored_all(
    stream: &mut ClientStream,
    mut slices: &mut [IoSlice<'_>],
    timeout: Duration,
) -> std::io::Result<()> {
    while !slices.is_empty() {
        let written = tokio::time::timeout(timeout, stream.write_vectored(slices))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client did not accept data in time",
                )
            })??;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// Reads a request body from the connection into the channel to the origin request.
async fn pump_body(
    stream: &mut ClientStream,
    input: &mut BytesMut,
    framing: Framing,
    sender: mpsc::Sender<Result<Bytes, RequestBodyError>>,
    settings: Settings,
) -> BodyOutcome {
    let mut decoder = ChunkedDecoder::new(settings.limits.max_header_bytes);
    let mut remaining = match framing {
        Framing::Length(length) => length,
        _ => u64::MAX,
    };
    let mut total: u64 = 0;
    loop {
        // Hand over what is buffered.
        while !input.is_empty() && remaining > 0 {
            let data = match framing {
                Framing::Chunked => match decoder.decode(input) {
                    Ok(Decoded::Data(data)) => data,
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::Done) => return BodyOutcome::Complete,
                    Err(error) => {
                        let _ = sender
                            .send(Err(RequestBodyError::Broken(error.reason.into())))
                            .await;
                        return BodyOutcome::Invalid(error);
                    }
                },
                _ => {
                    let take = remaining.min(input.len() as u64) as usize;
                    remaining -= take as u64;
                    input.split_to(take).freeze()
                }
            };
            total += data.len() as u64;
            if total > settings.max_body {
                let _ = sender.send(Err(RequestBodyError::TooLarge)).await;
                return BodyOutcome::TooLarge;
            }
            if sender.send(Ok(data)).await.is_err() {
                return BodyOutcome::Abandoned;
            }
        }
        if remaining == 0 {
            return BodyOutcome::Complete;
        }
        if framing == Framing::Chunked {
            if let Ok(Decoded::Done) = decoder.decode(input) {
                return BodyOutcome::Complete;
            }
        }
        input.reserve(16 * 1024);
        match tokio::time::timeout(settings.body_timeout, stream.read_buf(input)).await {
            Ok(Ok(read)) if read > 0 => {}
            Err(_) => {
                let _ = sender
                    .send(Err(RequestBodyError::TimedOut(settings.body_timeout)))
                    .await;
                return BodyOutcome::Stalled;
            }
            Ok(_) => {
                let _ = sender
                    .send(Err(RequestBodyError::Broken(
                        "client stopped sending the body".into(),
                    )))
                    .await;
                return BodyOutcome::Broken;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first write of a body gathers up to WRITE_BATCH, every later one up to the steady
    /// batch; the writer yields after each batch that filled its budget, and only then.
    #[test]
    fn a_body_is_cut_into_a_first_batch_then_steady_ones() {
        let steady = 384 * 1024;
        let mut batches = Batches::new(steady);
        assert_eq!(batches.budget(), WRITE_BATCH);
        assert!(
            !batches.take(WRITE_BATCH + 65_536),
            "nothing was written before"
        );
        assert_eq!(batches.budget(), steady);
        assert!(
            batches.take(steady + 65_536),
            "the first batch filled its budget"
        );
        assert_eq!(batches.budget(), steady);
        assert!(batches.take(10_000), "the last batch filled its budget");
        assert!(
            !batches.take(10_000),
            "a short batch (the body was not ready) gives no turn"
        );
        // A first batch is measured against the first budget, not the steady one.
        let mut batches = Batches::new(steady);
        assert!(!batches.take(steady + 1));
        assert!(
            !batches.take(steady),
            "a first batch short of WRITE_BATCH gives no turn, though over the steady budget"
        );
    }

    /// A body that runs past the length its head declared is cut at that length, whatever
    /// its chunks.
    #[test]
    fn a_batch_is_cut_at_the_room_left() {
        let chunks = || {
            vec![
                Bytes::from_static(b"hello"),
                Bytes::from_static(b"HTTP/1.1 200"),
            ]
        };
        for (room, expected) in [(0, ""), (3, "hel"), (5, "hello"), (7, "helloHT")] {
            let mut batch = chunks();
            let kept = cut_to(&mut batch, room);
            assert_eq!(kept, expected.len());
            assert_eq!(batch.concat(), expected.as_bytes(), "room {room}");
        }
    }

    /// Every client connection's task holds this future while idle: keep it small (10,000 idle
    /// connections must fit in well under 100 MiB).
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let config = crate::config::Config::default();
        let settings = Settings::from_config(&config.server);
        let proxy = Proxy::new(Arc::new(config), 1).unwrap();
        let stream = ClientStream::Plain(stream);
        let ticks = IdleTicks::start();
        let size = std::mem::size_of_val(&serve_connection(stream, peer, proxy, ticks, settings));
        drop(client);
        // 1,128 bytes when this test was written; 1,304 since the connection keeps its vector
        // of chunks to write between responses (24 bytes, against an allocation per response).
        assert!(size <= 1344, "the connection future is {size} bytes");
    }
}
