//! A file host's answers: the fields every file answer carries, then the conditionals
//! (RFC 9110 §13: 412, 304), the ranges (206, `multipart/byteranges`, 416) or the whole file.

use std::path::Path;

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    DATE, ETAG, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::{FileBody, Opened, Part, Settings, StraightFromFile};
use crate::cache::conditional;
use crate::cache::range::{self, ByteRange, RangeRequest};

/// A short answer made by the node, never stored (`no-store`: a file host answers again at
/// the cost of a `stat`).
pub fn text(status: StatusCode, text: &'static str) -> Response<FileBody> {
    let mut response = Response::new(FileBody::text(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    if !text.is_empty() {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The `Content-Type` of `path`, by its extension; `application/octet-stream` when unknown.
/// Text types say UTF-8, as sites mostly are and browsers otherwise guess.
pub fn content_type(path: &Path) -> HeaderValue {
    let guessed = mime_guess::from_path(path).first_or_octet_stream();
    let text =
        match guessed.type_() == mime_guess::mime::TEXT && guessed.get_param("charset").is_none() {
            true => format!("{guessed}; charset=utf-8"),
            false => guessed.to_string(),
        };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// The answer to a GET or HEAD for `opened`.
pub fn file(
    settings: &Settings,
    head: &http::request::Parts,
    opened: Opened,
) -> Response<FileBody> {
    let length = opened.metadata.len();
    let modified = opened
        .metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok());
    // Validators compare at the second a date can say.
    let last_modified = modified.map(|since| since.as_secs() * 1000);
    let mut fields = HeaderMap::with_capacity(10);
    if let Some(tag) = &opened.tag {
        fields.insert(ETAG, tag.clone());
    }
    if let Some(since) = modified {
        let date = std::time::UNIX_EPOCH + std::time::Duration::from_secs(since.as_secs());
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(date)) {
            fields.insert(LAST_MODIFIED, value);
        }
    }
    // Without its tag yet (a big file being hashed), an answer may be kept downstream only to
    // be revalidated: its next answer will have the tag.
    let cache_control = match &opened.tag {
        Some(_) => settings.cache_control.clone(),
        None => HeaderValue::from_static("no-cache"),
    };
    fields.insert(CACHE_CONTROL, cache_control);
    if opened.vary {
        fields.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    fields.insert(DATE, crate::clock::http_date_now());
    let request = &head.headers;
    let tag = opened.tag.as_ref();
    if conditional::precondition_failed(request, tag, last_modified) {
        let mut response = text(StatusCode::PRECONDITION_FAILED, "precondition failed\n");
        if let Some(tag) = tag {
            response.headers_mut().insert(ETAG, tag.clone());
        }
        return response;
    }
    if conditional::not_modified(request, tag, last_modified) {
        let mut response = Response::new(FileBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = fields;
        return response;
    }
    if let Some(encoding) = opened.encoding {
        fields.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
    }
    fields.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let wanted = match head.method == Method::GET
        && conditional::range_applies(request, tag, last_modified)
    {
        true => range::resolve(request.get(RANGE).and_then(|v| v.to_str().ok()), length),
        false => RangeRequest::Whole,
    };
    let (status, pieces) = match wanted {
        RangeRequest::Whole => {
            fields.insert(CONTENT_TYPE, opened.content_type.clone());
            (
                StatusCode::OK,
                vec![Piece::File(ByteRange {
                    start: 0,
                    end: length,
                })],
            )
        }
        RangeRequest::Parts(ranges) if ranges.len() == 1 => {
            let range = ranges[0];
            fields.insert(CONTENT_TYPE, opened.content_type.clone());
            fields.insert(CONTENT_RANGE, content_range(range, length));
            (StatusCode::PARTIAL_CONTENT, vec![Piece::File(range)])
        }
        RangeRequest::Parts(ranges) => {
            let boundary = boundary(&opened.content_type);
            let content_type = format!("multipart/byteranges; boundary={boundary}");
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                fields.insert(CONTENT_TYPE, value);
            }
            (
                StatusCode::PARTIAL_CONTENT,
                multipart(&ranges, length, &opened.content_type, &boundary),
            )
        }
        RangeRequest::Unsatisfiable => {
            let mut response = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                response.headers_mut().insert(CONTENT_RANGE, value);
            }
            if let Some(tag) = tag {
                response.headers_mut().insert(ETAG, tag.clone());
            }
            return response;
        }
    };
    let parts: Vec<Part> = pieces
        .into_iter()
        .map(|piece| match (piece, &opened.content) {
            (Piece::Text(text), _) => Part::Text(text),
            (Piece::File(range), Some(content)) => {
                Part::Text(content.slice(range.start as usize..range.end as usize))
            }
            (Piece::File(range), None) => Part::Range {
                start: range.start,
                end: range.end,
            },
        })
        .collect();
    let body = FileBody::of_file(opened.file, parts);
    fields.insert(CONTENT_LENGTH, HeaderValue::from(body.remaining()));
    let body = match head.method == Method::HEAD {
        true => FileBody::empty(),
        false => body,
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = fields;
    if length > settings.cache_up_to {
        response.extensions_mut().insert(StraightFromFile);
    }
    response
}

enum Piece {
    Text(Bytes),
    File(ByteRange),
}

fn content_range(range: ByteRange, length: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {}-{}/{length}", range.start, range.end - 1))
        .expect("digits are a valid field value")
}

/// A boundary that the parts' bytes are unlikely to hold: from the file's type and the time.
fn boundary(content_type: &HeaderValue) -> String {
    let seed =
        xxhash_rust::xxh3::xxh3_64_with_seed(content_type.as_bytes(), crate::clock::now_millis());
    format!("shoal-{seed:016x}")
}

/// The pieces of a `multipart/byteranges` body (RFC 9110 §14.6).
fn multipart(
    ranges: &[ByteRange],
    length: u64,
    content_type: &HeaderValue,
    boundary: &str,
) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(ranges.len() * 2 + 1);
    for &range in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {}-{}/{length}\r\n\r\n",
            content_type.to_str().unwrap_or("application/octet-stream"),
            range.start,
            range.end - 1
        );
        pieces.push(Piece::Text(Bytes::from(head)));
        pieces.push(Piece::File(range));
    }
    pieces.push(Piece::Text(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    pieces
}
