//! The body of a file host's answer: text (error pages, the parts of `multipart/byteranges`)
//! and ranges of an open file. Read on the blocking pool a chunk at a time, so a slow disk never
//! stalls a network thread; or taken part by part by a writer that sends file ranges itself
//! (`sendfile`, in `wire::sendfile`).

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

/// The most read from a file at once.
const CHUNK: u64 = 256 * 1024;

/// A piece of a file answer's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Bytes made by the node.
    Text(Bytes),
    /// Bytes `[start, end)` of the file.
    Range {
        /// First byte.
        start: u64,
        /// One past the last.
        end: u64,
    },
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Text(text) => text.len() as u64,
            Part::Range { start, end } => end - start,
        }
    }
}

/// A file answer's body: its parts, in order.
pub struct FileBody {
    file: Option<Arc<File>>,
    parts: VecDeque<Part>,
    reading: Option<JoinHandle<std::io::Result<Bytes>>>,
    /// The length of the chunk being read.
    reading_length: u64,
}

impl FileBody {
    /// No body.
    pub fn empty() -> FileBody {
        FileBody::text(Bytes::new())
    }

    /// A body of text made by the node.
    pub fn text(text: Bytes) -> FileBody {
        let parts = match text.is_empty() {
            true => VecDeque::new(),
            false => VecDeque::from([Part::Text(text)]),
        };
        FileBody {
            file: None,
            parts,
            reading: None,
            reading_length: 0,
        }
    }

    /// `parts` of `file` (ranges of it, and text between them).
    pub fn of_file(file: Arc<File>, parts: Vec<Part>) -> FileBody {
        FileBody {
            file: Some(file),
            parts: parts.into_iter().filter(|part| part.len() > 0).collect(),
            reading: None,
            reading_length: 0,
        }
    }

    /// The bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.reading_length + self.parts.iter().map(Part::len).sum::<u64>()
    }

    /// The file its ranges are of, when a writer is to send them itself and no chunk has been
    /// read through [`Body`] yet.
    pub fn file(&self) -> Option<&Arc<File>> {
        self.file.as_ref().filter(|_| self.reading.is_none())
    }

    /// Whether some of it is still to be read from the file.
    pub fn has_file_ranges(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Range { .. }))
    }

    /// Moves the text parts at its front (in memory already) to `out`, up to about `budget`
    /// bytes.
    pub fn ready_text(&mut self, out: &mut Vec<Bytes>, budget: u64) {
        let mut taken = 0;
        while taken < budget && self.reading.is_none() {
            let Some(Part::Text(_)) = self.parts.front() else {
                return;
            };
            let Some(Part::Text(text)) = self.parts.pop_front() else {
                return;
            };
            taken += text.len() as u64;
            out.push(text);
        }
    }

    /// Takes the next part, for a writer that sends file ranges itself.
    pub fn next_part(&mut self) -> Option<Part> {
        self.parts.pop_front()
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if let Some(reading) = &mut this.reading {
            let read = std::task::ready!(Pin::new(reading).poll(cx));
            this.reading = None;
            this.reading_length = 0;
            return Poll::Ready(Some(match read {
                Ok(Ok(chunk)) => Ok(Frame::data(chunk)),
                Ok(Err(error)) => Err(error),
                Err(error) => Err(std::io::Error::other(error)),
            }));
        }
        let (start, length) = match this.parts.front_mut() {
            None => return Poll::Ready(None),
            Some(Part::Text(_)) => {
                let Some(Part::Text(text)) = this.parts.pop_front() else {
                    unreachable!("the front part is text")
                };
                return Poll::Ready(Some(Ok(Frame::data(text))));
            }
            Some(Part::Range { start, end }) => {
                let length = (*end - *start).min(CHUNK);
                let first = *start;
                *start += length;
                if *start == *end {
                    this.parts.pop_front();
                }
                (first, length)
            }
        };
        let Some(file) = this.file.clone() else {
            return Poll::Ready(Some(Err(std::io::Error::other(
                "a file range without a file",
            ))));
        };
        this.reading_length = length;
        this.reading = Some(tokio::task::spawn_blocking(move || {
            read_exactly(&file, start, length)
        }));
        // Polled once now, so the task's waker is registered with the read.
        self.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty() && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

/// `length` bytes of `file` from `start`; an error if the file is shorter now than when it
/// was opened (it was truncated while being read).
fn read_exactly(file: &File, start: u64, length: u64) -> std::io::Result<Bytes> {
    let mut buffer = vec![0; length as usize];
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], start + filled as u64) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file became shorter while it was read",
                ))
            }
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Bytes::from(buffer))
}
