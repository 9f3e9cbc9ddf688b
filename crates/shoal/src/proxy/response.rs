//! The response the pipeline hands to a client connection, independent of HTTP version. A hit
//! carries the stored metadata itself (`ResponseHeaders::Stored`), so the HTTP/1 writer can copy
//! the precomputed header block instead of walking a header map.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Body;

use super::slices::{SliceReader, SlicedBody};
use crate::cache::range::ByteRange;
use crate::cache::CacheStatus;
use crate::store::{BodyReader, Object, ObjectMeta};
use crate::upstream::{OriginBody, Trace};

/// Where a cached body's bytes come from: one object, or the slices of a sliced object.
#[derive(Clone)]
pub enum Source {
    /// The body of this object.
    Object(Arc<Object>),
    /// The slices of this sliced object.
    Slices(Arc<SlicedBody>),
}

impl Source {
    /// A reader of bytes `[start, end)` (`end` = `None` for everything).
    pub fn reader(&self, start: u64, end: Option<u64>) -> Reader {
        match self {
            Source::Object(object) => Reader::of(object, None, start, end),
            Source::Slices(body) => Reader::of_slices(body, start, end),
        }
    }
}

/// Reads a range of a [`Source`].
pub enum Reader {
    /// From one object.
    Object(BodyReader),
    /// Slice after slice.
    Slices(Box<SliceReader>),
}

impl Reader {
    /// A reader of bytes `[start, end)` of `object`'s body, or of its slices when it is the
    /// head of a sliced object.
    pub fn of(
        object: &Arc<Object>,
        sliced: Option<&Arc<SlicedBody>>,
        start: u64,
        end: Option<u64>,
    ) -> Reader {
        match sliced {
            Some(body) => Reader::of_slices(body, start, end),
            None => Reader::Object(object.reader(start, end)),
        }
    }

    fn of_slices(body: &Arc<SlicedBody>, start: u64, end: Option<u64>) -> Reader {
        Reader::Slices(Box::new(body.reader(start, end)))
    }

    /// The next piece; `Ok(None)` at the end of the range.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        match self {
            Reader::Object(reader) => reader
                .next_chunk()
                .await
                .map_err(|error| BodyError::Origin(error.to_string())),
            Reader::Slices(reader) => reader.next_chunk().await,
        }
    }

    /// Appends what is ready now, up to about `budget` bytes, without waiting.
    pub fn ready_chunks(&mut self, out: &mut Vec<Bytes>, budget: u64) {
        match self {
            Reader::Object(reader) => reader.ready_chunks(out, budget),
            Reader::Slices(reader) => reader.ready_chunks(out, budget),
        }
    }
}

/// A response on its way to the client.
pub struct ProxyResponse {
    /// Status code.
    pub status: StatusCode,
    /// End-to-end header fields, without framing fields, `Age`, `Via` or the status header.
    pub headers: ResponseHeaders,
    /// `Age` in seconds, for responses from the cache.
    pub age: Option<u64>,
    /// How the cache answered.
    pub cache_status: CacheStatus,
    /// The body.
    pub body: ResponseBody,
    /// Close the connection after this response (errors, truncated framing).
    pub close: bool,
    /// The upstream host that answered this request's origin fetch, if there was one.
    pub origin: Option<Trace>,
}

/// Header fields of a response.
pub enum ResponseHeaders {
    /// Built for this response.
    Map(HeaderMap),
    /// Exactly the stored fields of an object.
    Stored(Arc<ObjectMeta>),
}

impl ResponseHeaders {
    /// The fields as a map (copied for stored metadata).
    pub fn to_map(&self) -> HeaderMap {
        match self {
            ResponseHeaders::Map(map) => map.clone(),
            ResponseHeaders::Stored(meta) => meta.fields.to_map(),
        }
    }
}

/// A body could not be delivered in full.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The origin stopped sending part-way.
    #[error("origin body cut short: {0}")]
    Origin(String),
    /// The origin stopped sending for longer than the body timeout.
    #[error("origin body stalled for {0:?}")]
    Stalled(Duration),
    /// The client took nothing of the body for the send timeout; it was let go.
    #[error("the client took nothing for {0:?}")]
    ClientStalled(Duration),
}

/// A response body.
pub enum ResponseBody {
    /// No body at all (204, 304, errors without text).
    Empty,
    /// A body that is not sent (HEAD) but whose length is declared.
    Omitted(Option<u64>),
    /// A body held in full.
    Full(Bytes),
    /// A range of a stored object, read as it fills.
    Object {
        /// Reads the range.
        reader: Reader,
        /// Its length, when known.
        length: Option<u64>,
    },
    /// Several ranges of a stored object as `multipart/byteranges`.
    Multipart(Multipart),
    /// Streamed from the origin without storing.
    Upstream {
        /// The origin's body.
        incoming: OriginBody,
        /// Longest wait for the next piece.
        timeout: Duration,
        /// Where the bytes received are counted.
        metrics: Arc<super::Metrics>,
    },
}

/// A `multipart/byteranges` body: part headers interleaved with ranges of an object.
pub struct Multipart {
    source: Source,
    parts: std::vec::IntoIter<Part>,
    current: Option<Reader>,
    length: u64,
}

enum Part {
    Text(Bytes),
    Range(ByteRange),
}

impl Multipart {
    /// The body for `ranges` of `source` (of `total` bytes) with `content_type` and `boundary`.
    pub fn new(
        source: Source,
        ranges: &[ByteRange],
        total: u64,
        content_type: Option<&[u8]>,
        boundary: &str,
    ) -> Multipart {
        let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
        let mut length = 0;
        for range in ranges {
            let mut head = format!("\r\n--{boundary}\r\n").into_bytes();
            if let Some(content_type) = content_type {
                head.extend_from_slice(b"Content-Type: ");
                head.extend_from_slice(content_type);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(
                format!(
                    "Content-Range: bytes {}-{}/{}\r\n\r\n",
                    range.start,
                    range.end - 1,
                    total
                )
                .as_bytes(),
            );
            length += head.len() as u64 + (range.end - range.start);
            parts.push(Part::Text(Bytes::from(head)));
            parts.push(Part::Range(*range));
        }
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        length += tail.len() as u64;
        parts.push(Part::Text(tail));
        Multipart {
            source,
            parts: parts.into_iter(),
            current: None,
            length,
        }
    }
}

impl ResponseBody {
    /// The exact length of the body as sent, when known in advance.
    pub fn length(&self) -> Option<u64> {
        match self {
            ResponseBody::Empty => Some(0),
            ResponseBody::Omitted(length) => *length,
            ResponseBody::Full(bytes) => Some(bytes.len() as u64),
            ResponseBody::Object { length, .. } => *length,
            ResponseBody::Multipart(multipart) => Some(multipart.length),
            ResponseBody::Upstream { incoming, .. } => incoming.size_hint().exact(),
        }
    }

    /// The next piece of the body; `Ok(None)` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        match self {
            ResponseBody::Empty | ResponseBody::Omitted(_) => Ok(None),
            ResponseBody::Full(bytes) => Ok((!bytes.is_empty()).then(|| std::mem::take(bytes))),
            ResponseBody::Object { reader, .. } => reader.next_chunk().await,
            ResponseBody::Multipart(multipart) => loop {
                if let Some(reader) = &mut multipart.current {
                    match reader.next_chunk().await? {
                        Some(chunk) => return Ok(Some(chunk)),
                        None => multipart.current = None,
                    }
                }
                match multipart.parts.next() {
                    None => return Ok(None),
                    Some(Part::Text(text)) => return Ok(Some(text)),
                    Some(Part::Range(range)) => {
                        multipart.current =
                            Some(multipart.source.reader(range.start, Some(range.end)));
                    }
                }
            },
            ResponseBody::Upstream {
                incoming,
                timeout,
                metrics,
            } => loop {
                let frame =
                    tokio::time::timeout(*timeout, http_body_util::BodyExt::frame(incoming))
                        .await
                        .map_err(|_| BodyError::Stalled(*timeout))?;
                match frame {
                    None => return Ok(None),
                    Some(Err(error)) => return Err(BodyError::Origin(error.to_string())),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            if !data.is_empty() {
                                metrics.add(super::Counter::OriginBytes, data.len() as u64);
                                return Ok(Some(data));
                            }
                        }
                    }
                }
            },
        }
    }

    /// Appends the pieces that are ready now, up to about `budget` bytes, without waiting.
    pub fn ready_chunks(&mut self, out: &mut Vec<Bytes>, budget: u64) {
        match self {
            ResponseBody::Full(bytes) if !bytes.is_empty() => out.push(std::mem::take(bytes)),
            ResponseBody::Object { reader, .. } => reader.ready_chunks(out, budget),
            // A file's text parts (a small file read with its opening, multipart heads) are in
            // memory already: sent with the head, not after it.
            ResponseBody::Upstream {
                incoming, metrics, ..
            } => {
                if let Some(file) = incoming.file_body() {
                    let before = out.len();
                    file.ready_text(out, budget);
                    let taken: usize = out[before..].iter().map(Bytes::len).sum();
                    metrics.add(super::Counter::OriginBytes, taken as u64);
                }
            }
            _ => {}
        }
    }

    /// Whether a body is written at all.
    pub fn is_sent(&self) -> bool {
        !matches!(self, ResponseBody::Empty | ResponseBody::Omitted(_))
    }
}
