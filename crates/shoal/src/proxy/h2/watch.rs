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
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::frames::{FrameTracker, Waiting};
use crate::proxy::settings::Settings;
use crate::proxy::{BodyError, Counter, Proxy, ResponseBody};
use crate::throttle::LogBudget;
use crate::wire::stream::ClientStream;

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
        let (dropped, look_again) = activity.drop_stalled();
        if dropped > 0 {
            proxy.metrics().add(Counter::SendTimeouts, dropped as u64);
            tracing::debug!(%peer, streams = dropped, "HTTP/2 streams the client took nothing of; let go");
        }
        let next = match closing {
            Some(at) => Some((at, None)),
            None if draining => None,
            None => activity
                .deadline(settings)
                .map(|(at, expiry)| (at, Some(expiry))),
        };
        let wake = match (next.map(|(at, _)| at), look_again) {
            (Some(at), Some(look)) => Some(at.min(look)),
            (at, look) => at.or(look),
        };
        let Some(wake) = wake else {
            return Poll::Pending;
        };
        let expired = next.filter(|(at, _)| *at <= now);
        if let Some((_, expiry)) = expired {
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
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
    })
    .await
}

/// A response body on its way to the client, with what it holds (its stream's place among the
/// open streams, an upload's turn), kept here between two of its chunks, where the watch can
/// reach it: a stream whose window the client keeps shut while the connection reads on is
/// never polled again, so its body (and a pass's origin connection) would be held for as long
/// as the client likes. The watch drops it once the client has taken nothing for
/// `send_timeout`, as HTTP/1 drops a client that does not accept a write.
pub(super) struct Outgoing<H> {
    sending: Mutex<Option<(ResponseBody, H)>>,
    started: Instant,
    /// When the last chunk was handed to hyper, in ms since the connection started.
    last_taken: AtomicU64,
    timeout: Duration,
}

impl<H> Outgoing<H> {
    /// The next chunk of the body; an error once the watch has let it go.
    pub(super) async fn next_chunk(&self) -> Result<Option<Bytes>, BodyError> {
        let Some((mut body, held)) = lock(&self.sending).take() else {
            return Err(BodyError::ClientStalled(self.timeout));
        };
        let chunk = body.next_chunk().await;
        if let Ok(Some(_)) = chunk {
            let taken = self.started.elapsed().as_millis() as u64;
            self.last_taken.store(taken, Ordering::Relaxed);
            *lock(&self.sending) = Some((body, held));
        }
        chunk
    }
}

/// What the watch sees of an [`Outgoing`], whatever it holds.
trait Stallable: Send + Sync {
    /// Drops the body if it has waited for the client since before `deadline` (ms); else
    /// when it will have waited too long, if it is waiting.
    fn drop_if_waited(&self, now: u64) -> Result<bool, Option<u64>>;
}

impl<H: Send> Stallable for Outgoing<H> {
    fn drop_if_waited(&self, now: u64) -> Result<bool, Option<u64>> {
        // Locked: being read right now, so not waiting for the client.
        let Ok(mut sending) = self.sending.try_lock() else {
            return Err(None);
        };
        if sending.is_none() {
            return Err(None);
        }
        let due = self.last_taken.load(Ordering::Relaxed) + self.timeout.as_millis() as u64;
        if now < due {
            return Err(Some(due));
        }
        sending.take();
        Ok(true)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    /// The bodies being sent, for [`Activity::drop_stalled`].
    outgoing: Mutex<Vec<Weak<dyn Stallable>>>,
    /// When to look at them next (ms).
    next_look: AtomicU64,
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
            outgoing: Mutex::new(Vec::new()),
            next_look: AtomicU64::new(0),
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

    /// Keeps `body` (with what it holds) where the watch can let it go if the client stops
    /// taking it for `timeout`.
    pub(super) fn sending<H: Send + 'static>(
        &self,
        body: ResponseBody,
        held: H,
        timeout: Duration,
    ) -> Arc<Outgoing<H>> {
        let outgoing = Arc::new(Outgoing {
            sending: Mutex::new(Some((body, held))),
            started: self.started,
            last_taken: AtomicU64::new(self.now()),
            timeout,
        });
        let weak: Weak<dyn Stallable> = Arc::downgrade(&outgoing) as Weak<dyn Stallable>;
        let mut list = lock(&self.outgoing);
        list.retain(|body| body.strong_count() > 0);
        list.push(weak);
        outgoing
    }

    /// Lets go of the bodies the client has taken nothing of for the send timeout, at most
    /// every so often; returns how many, and when to look again (none while nothing is sent).
    pub(super) fn drop_stalled(&self) -> (usize, Option<Instant>) {
        let now = self.now();
        let next = self.next_look.load(Ordering::Relaxed);
        if now < next {
            return (0, Some(self.at(next, Duration::ZERO)));
        }
        let mut dropped = 0;
        let mut earliest: Option<u64> = None;
        let list = lock(&self.outgoing);
        for body in list.iter().filter_map(Weak::upgrade) {
            match body.drop_if_waited(now) {
                Ok(_) => dropped += 1,
                Err(Some(due)) => earliest = Some(earliest.map_or(due, |e| e.min(due))),
                // Being read, or done: looked at again after a while.
                Err(None) if earliest.is_none() => earliest = Some(now + 1000),
                Err(None) => {}
            }
        }
        let sending = list.iter().any(|body| body.strong_count() > 0);
        drop(list);
        match (sending, earliest) {
            (true, Some(due)) => {
                // Not more often than every 100 ms, however many bodies there are.
                let due = due.max(now + 100);
                self.next_look.store(due, Ordering::Relaxed);
                (dropped, Some(self.at(due, Duration::ZERO)))
            }
            _ => (dropped, None),
        }
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
