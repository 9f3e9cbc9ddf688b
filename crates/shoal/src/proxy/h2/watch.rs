//! The timeouts of an HTTP/2 connection, which hyper's server does not enforce: the preface
//! and first SETTINGS within `header_read_timeout` of the connection's start, a header block
//! or any frame other than DATA finished within `header_read_timeout` of its first byte, no
//! pause longer than `body_read_timeout` inside a DATA frame, no more than
//! `keepalive_timeout` without an open stream, and no write left waiting on the client for
//! longer than `send_timeout`. A connection past one of them is sent GOAWAY
//! (hyper's graceful shutdown) and dropped if it has not closed a moment later. Without them
//! a few hundred sockets that sent only the preface held every connection slot.
//!
//! The socket is read through [`Watched`], which notes where the input stands
//! (`frames::FrameTracker`) and when it last moved; the streams in progress are counted by
//! [`StreamGuard`]s, which live as long as a response body.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::frames::{FrameTracker, Waiting};
use crate::proxy::http1::Settings;
use crate::proxy::stream::ClientStream;
use crate::proxy::{Counter, Proxy};
use crate::throttle::LogBudget;

/// How long a connection sent GOAWAY for a missed deadline has to close before it is dropped:
/// hyper waits for the client's answer to a PING first, which a stalled client never sends.
const GOAWAY_GRACE: Duration = Duration::from_secs(2);

/// No time recorded.
const NONE: u64 = u64::MAX;

/// Drives `connection` (a hyper HTTP/2 connection; `shutdown` is its graceful shutdown) while
/// keeping it to its deadlines, and to the node's drain; `None` when it was dropped for not
/// closing after GOAWAY.
pub(super) async fn enforce<C: Future>(
    connection: C,
    shutdown: impl Fn(Pin<&mut C>),
    activity: &Activity,
    settings: &Settings,
    proxy: &Proxy,
    peer: SocketAddr,
) -> Option<C::Output> {
    let mut connection = pin!(connection);
    let mut drained = pin!(proxy.drained());
    let mut draining = false;
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    let mut closing: Option<Instant> = None;
    std::future::poll_fn(|cx| loop {
        if let Poll::Ready(output) = connection.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if !draining && drained.as_mut().poll(cx).is_ready() {
            // The node is shutting down: GOAWAY, and the streams in progress may finish.
            draining = true;
            shutdown(connection.as_mut());
            continue;
        }
        let now = Instant::now();
        let next = match closing {
            Some(at) => Some((at, None)),
            None if draining => None,
            None => activity
                .deadline(settings)
                .map(|(at, expiry)| (at, Some(expiry))),
        };
        let Some((at, expiry)) = next else {
            return Poll::Pending;
        };
        if at <= now {
            let Some(expiry) = expiry else {
                tracing::debug!(%peer, "HTTP/2 connection did not close after GOAWAY; dropped");
                return Poll::Ready(None);
            };
            proxy.metrics().add(expiry.counter(), 1);
            if expiry == Expiry::Send {
                tracing::debug!(%peer, reason = expiry.as_str(), "dropped");
                return Poll::Ready(None);
            }
            static LOGGED: LogBudget = LogBudget::new(10);
            match expiry {
                Expiry::Idle => tracing::debug!(%peer, reason = expiry.as_str(), "closing"),
                _ => {
                    if let Some(held_back) = LOGGED.admit() {
                        tracing::info!(%peer, reason = expiry.as_str(), held_back, "closing");
                    }
                }
            }
            shutdown(connection.as_mut());
            closing = Some(now + GOAWAY_GRACE);
            // Polled again at once, so that the GOAWAY goes out now.
            continue;
        }
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
    })
    .await
}

/// What the connection's watch reads, written as the socket is read and streams come and go.
/// Times are in milliseconds since the connection started.
pub(super) struct Activity {
    started: Instant,
    /// When the last bytes arrived.
    last_read: AtomicU64,
    /// Since when a head (preface, frame header, non-DATA frame, header block) is unfinished.
    head_since: AtomicU64,
    /// Inside a DATA frame.
    in_data: AtomicBool,
    handshake_complete: AtomicBool,
    open_streams: AtomicUsize,
    /// When the last open stream ended (or the connection started).
    idle_since: AtomicU64,
    /// Since when the socket has not taken what the connection has to write.
    write_blocked_since: AtomicU64,
}

/// Why a connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    Handshake,
    Header,
    Body,
    Idle,
    /// The client has not read for `send_timeout`: nothing can be written to it, not even
    /// GOAWAY, so the connection is dropped at once.
    Send,
}

impl Expiry {
    pub(super) fn counter(self) -> Counter {
        match self {
            Expiry::Handshake => Counter::HandshakeTimeouts,
            Expiry::Header => Counter::HeaderTimeouts,
            Expiry::Body => Counter::BodyTimeouts,
            Expiry::Idle => Counter::IdleTimeouts,
            Expiry::Send => Counter::SendTimeouts,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Expiry::Handshake => "HTTP/2 preface and SETTINGS not received in time",
            Expiry::Header => "HTTP/2 header block or frame left unfinished",
            Expiry::Body => "HTTP/2 DATA frame stalled",
            Expiry::Idle => "HTTP/2 connection idle",
            Expiry::Send => "HTTP/2 client did not read for the send timeout",
        }
    }
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            last_read: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            in_data: AtomicBool::new(false),
            handshake_complete: AtomicBool::new(false),
            open_streams: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(NONE),
        })
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn at(&self, millis: u64, after: Duration) -> Instant {
        self.started + Duration::from_millis(millis) + after
    }

    /// The next deadline the connection must meet, and what it is for; `None` while streams
    /// are open and nothing is half-received (their own timeouts apply).
    pub(super) fn deadline(&self, settings: &Settings) -> Option<(Instant, Expiry)> {
        let mut next: Option<(Instant, Expiry)> = None;
        let mut consider = |at: Instant, expiry: Expiry| {
            if next.is_none_or(|(earliest, _)| at < earliest) {
                next = Some((at, expiry));
            }
        };
        let head_since = self.head_since.load(Ordering::Relaxed);
        let in_data = self.in_data.load(Ordering::Relaxed);
        if !self.handshake_complete.load(Ordering::Relaxed) {
            consider(self.at(0, settings.header_timeout), Expiry::Handshake);
        }
        if head_since != NONE {
            consider(self.at(head_since, settings.header_timeout), Expiry::Header);
        }
        if in_data {
            let last_read = self.last_read.load(Ordering::Relaxed);
            consider(self.at(last_read, settings.body_timeout), Expiry::Body);
        }
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked != NONE {
            consider(self.at(blocked, settings.send_timeout), Expiry::Send);
        }
        if head_since == NONE && !in_data && self.open_streams.load(Ordering::Relaxed) == 0 {
            let idle_since = self.idle_since.load(Ordering::Relaxed);
            consider(
                self.at(idle_since, settings.keepalive_timeout),
                Expiry::Idle,
            );
        }
        next
    }

    /// Notes whether a write was taken (`Ready`) or had to wait for the client (`Pending`).
    fn wrote<T>(&self, poll: &Poll<T>) {
        match poll {
            Poll::Pending => {
                let _ = self.write_blocked_since.compare_exchange(
                    NONE,
                    self.now(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => self.write_blocked_since.store(NONE, Ordering::Relaxed),
        }
    }

    /// A stream has started; it is open until the guard is dropped.
    pub(super) fn open_stream(self: &Arc<Self>) -> StreamGuard {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(Arc::clone(self))
    }

    fn read(&self, tracker: &FrameTracker) {
        let now = self.now();
        self.last_read.store(now, Ordering::Relaxed);
        let waiting = tracker.waiting();
        match waiting {
            Waiting::Head => {
                // Kept from the head's first byte, across reads.
                let _ = self.head_since.compare_exchange(
                    NONE,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            _ => self.head_since.store(NONE, Ordering::Relaxed),
        }
        self.in_data
            .store(waiting == Waiting::Data, Ordering::Relaxed);
        self.handshake_complete
            .store(tracker.handshake_complete(), Ordering::Relaxed);
    }
}

/// An open stream of the connection: the request, and its response until the body is sent.
pub(super) struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.open_streams.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        }
    }
}

/// The connection's socket, with the bytes read before HTTP/2 was recognized (`prefix`)
/// replayed first, and every byte read noted in the connection's [`Activity`].
pub(super) struct Watched {
    prefix: Bytes,
    stream: ClientStream,
    tracker: FrameTracker,
    activity: Arc<Activity>,
}

impl Watched {
    pub(super) fn new(stream: ClientStream, prefix: Bytes, activity: Arc<Activity>) -> Watched {
        Watched {
            prefix,
            stream,
            tracker: FrameTracker::new(),
            activity,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if !this.prefix.is_empty() {
            let count = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..count]);
            this.prefix.advance(count);
        } else {
            std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        }
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.tracker.feed(read);
            this.activity.read(&this.tracker);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, data);
        self.activity.wrote(&poll);
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.activity.wrote(&poll);
        poll
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.activity.wrote(&poll);
        poll
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
