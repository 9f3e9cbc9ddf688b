//! The body of a request forwarded to an origin: nothing, chunks arriving from an HTTP/1
//! client connection through a small bounded channel (so a fast client waits for a slow origin
//! instead of filling memory), or an HTTP/2 stream. Until its first piece is taken, a body can
//! be handed to another origin when the connection to the first one fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// A request body could not be read from the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestBodyError {
    /// Longer than `server.max_request_body`.
    #[error("request body too large")]
    TooLarge,
    /// Malformed or cut short.
    #[error("request body: {0}")]
    Broken(String),
    /// The client sent nothing for this long (`server.body_read_timeout`).
    #[error("request body: nothing received for {0:?}")]
    TimedOut(std::time::Duration),
}

/// A request body on its way to an origin.
pub struct RequestBody {
    /// `None` for no body (most requests): no allocation.
    shared: Option<Arc<Mutex<Shared>>>,
    length: Option<u64>,
}

/// The body's source, shared with the handles made by [`RequestBody::retry`].
struct Shared {
    source: Source,
    /// Set once a piece has been taken: the body can then no longer be sent elsewhere.
    started: bool,
}

enum Source {
    Channel(mpsc::Receiver<Result<Bytes, RequestBodyError>>),
    /// An HTTP/2 stream, cut off once it exceeds `limit` bytes or sends nothing for
    /// `timeout` while it is read.
    Stream {
        incoming: hyper::body::Incoming,
        received: u64,
        limit: u64,
        timeout: std::time::Duration,
        /// Armed while a read waits for the client.
        stall: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

impl RequestBody {
    /// No body.
    pub fn empty() -> RequestBody {
        RequestBody {
            shared: None,
            length: Some(0),
        }
    }

    fn with(source: Source, length: Option<u64>) -> RequestBody {
        RequestBody {
            shared: Some(Arc::new(Mutex::new(Shared {
                source,
                started: false,
            }))),
            length,
        }
    }

    /// A body fed through a channel; `length` is the declared `Content-Length`, if any.
    pub fn channel(
        receiver: mpsc::Receiver<Result<Bytes, RequestBodyError>>,
        length: Option<u64>,
    ) -> RequestBody {
        RequestBody::with(Source::Channel(receiver), length)
    }

    /// An HTTP/2 request stream of at most `limit` bytes, with at most `timeout` between two
    /// pieces (`server.body_read_timeout`).
    pub fn stream(
        incoming: hyper::body::Incoming,
        limit: u64,
        timeout: std::time::Duration,
    ) -> RequestBody {
        let length = incoming.size_hint().exact();
        RequestBody::with(
            Source::Stream {
                incoming,
                received: 0,
                limit,
                timeout,
                stall: None,
            },
            length,
        )
    }

    /// Another handle on the same body, for sending the request to another origin after a
    /// failed attempt; `None` once the failed attempt has taken any of it.
    pub fn retry(&self) -> Option<RequestBody> {
        match &self.shared {
            None => Some(RequestBody::empty()),
            Some(shared) => (!lock(shared).started).then(|| RequestBody {
                shared: Some(Arc::clone(shared)),
                length: self.length,
            }),
        }
    }

    /// Whether there is no body at all.
    pub fn is_empty(&self) -> bool {
        self.shared.is_none()
    }

    /// The body's length, when it is declared.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// Whether the body declares a length over `limit`.
    pub fn declared_over(&self, limit: u64) -> bool {
        self.length.is_some_and(|length| length > limit)
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // Poisoning follows a panic while polling; the state is still consistent.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let Some(shared) = &self.shared else {
            return Poll::Ready(None);
        };
        let mut shared = lock(shared);
        let frame = match &mut shared.source {
            Source::Channel(receiver) => receiver
                .poll_recv(cx)
                .map(|item| item.map(|result| result.map(Frame::data))),
            Source::Stream {
                incoming,
                received,
                limit,
                timeout,
                stall,
            } => {
                let Poll::Ready(frame) = Pin::new(incoming).poll_frame(cx) else {
                    // Waiting for the client: for at most `timeout`.
                    let timeout = *timeout;
                    let stall = stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    return match stall.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            Poll::Ready(Some(Err(RequestBodyError::TimedOut(timeout))))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                };
                *stall = None;
                if let Some(Ok(frame)) = &frame {
                    if let Some(data) = frame.data_ref() {
                        *received += data.len() as u64;
                        if *received > *limit {
                            return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                        }
                    }
                }
                Poll::Ready(frame.map(|result| {
                    result.map_err(|error| RequestBodyError::Broken(error.to_string()))
                }))
            }
        };
        if frame.is_ready() {
            shared.started = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.shared.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}
