//! The body of a request forwarded to an origin: nothing, chunks arriving from an HTTP/1
//! client connection through a small bounded channel (so a fast client waits for a slow origin
//! instead of filling memory), or an HTTP/2 stream.

use std::pin::Pin;
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
    /// Malformed, cut short or stalled.
    #[error("request body: {0}")]
    Broken(String),
}

/// A request body on its way to an origin.
pub struct RequestBody {
    source: Source,
    length: Option<u64>,
}

enum Source {
    Empty,
    Channel(mpsc::Receiver<Result<Bytes, RequestBodyError>>),
    /// An HTTP/2 stream, cut off once it exceeds `limit` bytes.
    Stream {
        incoming: hyper::body::Incoming,
        received: u64,
        limit: u64,
    },
}

impl RequestBody {
    /// No body.
    pub fn empty() -> RequestBody {
        RequestBody {
            source: Source::Empty,
            length: Some(0),
        }
    }

    /// A body fed through a channel; `length` is the declared `Content-Length`, if any.
    pub fn channel(
        receiver: mpsc::Receiver<Result<Bytes, RequestBodyError>>,
        length: Option<u64>,
    ) -> RequestBody {
        RequestBody {
            source: Source::Channel(receiver),
            length,
        }
    }

    /// An HTTP/2 request stream of at most `limit` bytes.
    pub fn stream(incoming: hyper::body::Incoming, limit: u64) -> RequestBody {
        let length = incoming.size_hint().exact();
        RequestBody {
            source: Source::Stream {
                incoming,
                received: 0,
                limit,
            },
            length,
        }
    }

    /// Whether the body declares a length over `limit`.
    pub fn declared_over(&self, limit: u64) -> bool {
        self.length.is_some_and(|length| length > limit)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match &mut self.source {
            Source::Empty => Poll::Ready(None),
            Source::Channel(receiver) => receiver
                .poll_recv(cx)
                .map(|item| item.map(|result| result.map(Frame::data))),
            Source::Stream {
                incoming,
                received,
                limit,
            } => {
                let frame = std::task::ready!(Pin::new(incoming).poll_frame(cx));
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
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.source, Source::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}
