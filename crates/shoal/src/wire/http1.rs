//! Strict HTTP/1.1 request parsing (RFC 9112). `httparse` tokenizes the head; the rules it
//! leaves to the caller (line endings, obs-fold, framing conflicts, `Host`) are enforced here,
//! because every leniency between a proxy and its origin is a request-smuggling vector. Anything
//! ambiguous is rejected with a precise status and the connection is closed.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

/// Size limits for request heads.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest request line.
    pub max_request_line: usize,
    /// Largest head (request line and fields).
    pub max_header_bytes: usize,
    /// Most fields.
    pub max_headers: usize,
}

/// A request the connection must refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct ParseError {
    /// 400, 414, 417, 431 or 501.
    pub status: StatusCode,
    /// What was wrong.
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> ParseError {
    ParseError {
        status: StatusCode::BAD_REQUEST,
        reason,
    }
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    /// Method, target, version, fields.
    pub parts: http::request::Parts,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// The cleartext HTTP/2 connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Parses one request head from the front of `buffer`; on success the head's bytes are removed
/// from it. `Ok(None)` means more bytes are needed.
pub fn parse_head(buffer: &mut BytesMut, limits: &Limits) -> Result<Option<Head>, ParseError> {
    // RFC 9112 §2.2: ignore empty lines before a request line.
    while buffer.starts_with(b"\r\n") {
        buffer.advance(2);
    }
    let Some(end) = find_head_end(buffer) else {
        check_incomplete(buffer, limits)?;
        return Ok(None);
    };
    let head_length = end + 4;
    if head_length > limits.max_header_bytes {
        return Err(too_large());
    }
    check_line_endings(&buffer[..head_length])?;
    let request_line_length = buffer[..head_length]
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head_length);
    if request_line_length > limits.max_request_line {
        return Err(ParseError {
            status: StatusCode::URI_TOO_LONG,
            reason: "request line too long",
        });
    }

    // The head becomes shared bytes: the target and field values are slices of it, not copies.
    let head = buffer.split_to(head_length).freeze();
    let head_bytes = &head[..];
    // Field slots on the stack for the usual limit; the heap only for larger configured limits.
    let mut stack_storage = [httparse::EMPTY_HEADER; 128];
    let mut heap_storage = Vec::new();
    let field_storage: &mut [httparse::Header<'_>] = if limits.max_headers <= stack_storage.len() {
        &mut stack_storage[..limits.max_headers]
    } else {
        heap_storage.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut heap_storage
    };
    let mut request = httparse::Request::new(field_storage);
    match request.parse(head_bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ParseError {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason: "too many header fields",
            })
        }
        Err(httparse::Error::HeaderName) => return Err(bad("invalid header field name")),
        Err(httparse::Error::HeaderValue) => return Err(bad("invalid header field value")),
        Err(httparse::Error::Version) => {
            return Err(if well_formed_version(&head_bytes[..request_line_length]) {
                ParseError {
                    status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                    reason: "unsupported HTTP version",
                }
            } else {
                bad("malformed request line")
            })
        }
        Err(httparse::Error::Token) => return Err(bad("invalid method")),
        Err(_) => return Err(bad("malformed request line")),
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(bad("unsupported HTTP version")),
    };
    let method = Method::from_bytes(request.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let target = request.path.unwrap_or("");
    let uri = parse_target(&method, head.slice_ref(target.as_bytes()))?;

    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| bad("invalid header field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(trim_ows(field.value)))
            .map_err(|_| bad("invalid header field value"))?;
        headers.append(name, value);
    }

    let framing = body_framing(&headers, version)?;
    check_host(&headers, &uri, version)?;
    let keep_alive = keep_alive(&headers, version);
    let expect_continue = match headers.get(EXPECT) {
        None => false,
        Some(value) if value.as_bytes().eq_ignore_ascii_case(b"100-continue") => true,
        Some(_) => {
            return Err(ParseError {
                status: StatusCode::EXPECTATION_FAILED,
                reason: "unsupported expectation",
            })
        }
    };

    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri)
        .version(version);
    if let Some(map) = builder.headers_mut() {
        *map = headers;
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|_| bad("invalid request"))?
        .into_parts();
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
        expect_continue,
    }))
}

/// Whether a request line ends in a well-formed `HTTP/x.y` (so an unknown version gets 505,
/// and garbage 400).
fn well_formed_version(line: &[u8]) -> bool {
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    matches!(parts.as_slice(), [_, _, version]
        if version.len() == 8
            && version.starts_with(b"HTTP/")
            && version[5].is_ascii_digit()
            && version[6] == b'.'
            && version[7].is_ascii_digit())
}

fn too_large() -> ParseError {
    ParseError {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        reason: "request head too large",
    }
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Rejects early what can already be seen to be wrong in an unfinished head, so that a client
/// cannot make the node buffer garbage up to the size limit.
fn check_incomplete(buffer: &[u8], limits: &Limits) -> Result<(), ParseError> {
    match buffer.iter().position(|&b| b == b'\n') {
        None if buffer.len() > limits.max_request_line => Err(ParseError {
            status: StatusCode::URI_TOO_LONG,
            reason: "request line too long",
        }),
        _ if buffer.len() >= limits.max_header_bytes => Err(too_large()),
        _ => {
            // Only complete lines can be judged; the last byte may be a CR awaiting its LF.
            let judged = buffer.len().saturating_sub(1);
            check_line_endings(&buffer[..judged])
        }
    }
}

/// Every line ends in CRLF: no bare CR, no bare LF, no NUL, no obs-fold.
fn check_line_endings(head: &[u8]) -> Result<(), ParseError> {
    for (index, &byte) in head.iter().enumerate() {
        match byte {
            b'\n' if index == 0 || head[index - 1] != b'\r' => {
                return Err(bad("bare LF in request head"))
            }
            b'\r' if head.get(index + 1).is_some_and(|&next| next != b'\n') => {
                return Err(bad("bare CR in request head"))
            }
            b'\n' if matches!(head.get(index + 1), Some(b' ' | b'\t')) => {
                return Err(bad("obsolete line folding in request head"))
            }
            0 => return Err(bad("NUL in request head")),
            _ => {}
        }
    }
    Ok(())
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

fn parse_target(method: &Method, target: Bytes) -> Result<Uri, ParseError> {
    let uri = Uri::from_maybe_shared(target.clone()).map_err(|_| bad("invalid request target"))?;
    let target = std::str::from_utf8(&target).map_err(|_| bad("invalid request target"))?;
    if target.starts_with('/') {
        return Ok(uri);
    }
    if target == "*" {
        return if method == Method::OPTIONS {
            Ok(uri)
        } else {
            Err(bad("asterisk-form target is only valid for OPTIONS"))
        };
    }
    if method == Method::CONNECT {
        // authority-form; CONNECT itself is refused later with 405.
        return Ok(uri);
    }
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.authority().is_some() => Ok(uri),
        _ => Err(bad("invalid request target")),
    }
}

fn body_framing(headers: &HeaderMap, version: Version) -> Result<Framing, ParseError> {
    // Some servers (CGI-style ones among them) read `_` as `-`: to them these would frame the
    // body, while here they are ordinary fields. Ambiguous framing is refused.
    if headers.contains_key("transfer_encoding") || headers.contains_key("content_length") {
        return Err(bad("framing header name spelled with an underscore"));
    }
    let has_length = headers.contains_key(CONTENT_LENGTH);
    if headers.contains_key(TRANSFER_ENCODING) {
        if has_length {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let mut codings = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(trim_ows);
        let first = codings.next().unwrap_or(b"");
        if codings.next().is_some() {
            return Err(ParseError {
                status: StatusCode::NOT_IMPLEMENTED,
                reason: "unsupported transfer coding",
            });
        }
        if first.eq_ignore_ascii_case(b"chunked") {
            return Ok(Framing::Chunked);
        }
        return Err(if !first.is_empty() && first.iter().all(|&b| is_token(b)) {
            ParseError {
                status: StatusCode::NOT_IMPLEMENTED,
                reason: "unsupported transfer coding",
            }
        } else {
            bad("invalid Transfer-Encoding")
        });
    }
    if !has_length {
        return Ok(Framing::None);
    }
    let mut length = None;
    // One Content-Length, with one value: RFC 9112 §6.3 lets a recipient accept a list of
    // equal values, but a proxy that passes them on leaves the next hop to guess; refused.
    if headers.get_all(CONTENT_LENGTH).iter().count() > 1 {
        return Err(bad("more than one Content-Length"));
    }
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = trim_ows(item);
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(bad("invalid Content-Length"));
            }
            let parsed: u64 = std::str::from_utf8(item)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or(bad("invalid Content-Length"))?;
            if length.is_some() {
                return Err(bad("more than one Content-Length value"));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) | None => Framing::None,
        Some(length) => Framing::Length(length),
    })
}

fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn check_host(headers: &HeaderMap, uri: &Uri, version: Version) -> Result<(), ParseError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host field"));
    }
    match host {
        None if version == Version::HTTP_11 && uri.authority().is_none() => {
            Err(bad("missing Host field"))
        }
        Some(host)
            if !host
                .as_bytes()
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b)) =>
        {
            Err(bad("invalid Host field"))
        }
        _ => Ok(()),
    }
}

/// Whether a connection carries another message after this one (a client's request, or an
/// origin's response): HTTP/1.1 unless `Connection` says `close`, HTTP/1.0 only with
/// `keep-alive`.
pub(crate) fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let mut close = false;
    let mut keep = false;
    for value in headers.get_all(CONNECTION) {
        for option in value.as_bytes().split(|&b| b == b',') {
            let option = trim_ows(option);
            close |= option.eq_ignore_ascii_case(b"close");
            keep |= option.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep)
}

/// Decodes a chunked body incrementally (RFC 9112 §7.1), strictly: hex sizes without
/// whitespace or overflow, CRLF after every size line and chunk, trailers parsed and dropped.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What the decoder produced from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Some body bytes.
    Data(Bytes),
    /// The buffer holds no complete unit; read more.
    NeedMore,
    /// The body (and its trailers) ended.
    Done,
}

impl ChunkedDecoder {
    /// A decoder whose trailer section may be at most `max_trailer_bytes`.
    pub fn new(max_trailer_bytes: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size,
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Consumes what it can from the front of `buffer`.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Decoded, ParseError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::Done),
                ChunkState::Size => {
                    let Some(line_end) = find_crlf(buffer, 1024)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let line = &buffer[..line_end];
                    let digits_end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
                    let digits = &line[..digits_end];
                    if digits.is_empty()
                        || digits.len() > 15
                        || !digits.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err(bad("invalid chunk size"));
                    }
                    if line[digits_end..].iter().any(|&b| b < 0x20 && b != b'\t') {
                        return Err(bad("invalid chunk extension"));
                    }
                    let size = u64::from_str_radix(std::str::from_utf8(digits).unwrap_or("x"), 16)
                        .map_err(|_| bad("invalid chunk size"))?;
                    buffer.advance(line_end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    if buffer.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = remaining.min(buffer.len() as u64) as usize;
                    let data = buffer.split_to(take).freeze();
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buffer.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buffer[..2] != b"\r\n" {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    buffer.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line_end) = find_crlf(buffer, self.max_trailer_bytes)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.trailer_bytes += line_end + 2;
                    if self.trailer_bytes > self.max_trailer_bytes {
                        return Err(too_large());
                    }
                    let line = &buffer[..line_end];
                    if !line.is_empty() {
                        let colon = line.iter().position(|&b| b == b':');
                        let valid =
                            colon.is_some_and(|c| c > 0 && line[..c].iter().all(|&b| is_token(b)));
                        if !valid || line.iter().any(|&b| b < 0x20 && b != b'\t') {
                            return Err(bad("invalid trailer field"));
                        }
                    }
                    buffer.advance(line_end + 2);
                    if line_end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// Position of the CRLF ending the first line, rejecting bare CR/LF and lines over `limit`.
fn find_crlf(buffer: &[u8], limit: usize) -> Result<Option<usize>, ParseError> {
    for (index, &byte) in buffer.iter().enumerate() {
        if byte == b'\n' {
            return Err(bad("bare LF in chunked body"));
        }
        if byte == b'\r' {
            return match buffer.get(index + 1) {
                Some(b'\n') => Ok(Some(index)),
                Some(_) => Err(bad("bare CR in chunked body")),
                None => Ok(None),
            };
        }
        if index >= limit {
            return Err(bad("chunk line too long"));
        }
    }
    Ok(None)
}

/// The size line that starts a chunk of `length` bytes.
pub fn chunk_size_line(length: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut value = length;
    let mut index = digits.len();
    loop {
        index -= 1;
        digits[index] = b"0123456789abcdef"[value & 15];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[index..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_request_line: 8192,
        max_header_bytes: 65536,
        max_headers: 100,
    };

    fn parse(text: &[u8]) -> Result<Option<Head>, ParseError> {
        parse_head(&mut BytesMut::from(text), &LIMITS)
    }

    fn status_of(text: &[u8]) -> u16 {
        match parse(text) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(error) => error.status.as_u16(),
        }
    }

    #[test]
    fn valid_requests() {
        let head = parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.parts.uri, "/a?b");
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let head = parse(b"\r\nPOST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.keep_alive);
        let head = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive);
        let head = parse(b"GET http://h.example/p HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.parts.uri.host(), Some("h.example"));
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(parse(b"GET / HTTP/1.1\r").unwrap().is_none());
    }

    #[test]
    fn smuggling_vectors_are_rejected() {
        let check = |text: &[u8], status: u16| {
            assert_eq!(status_of(text), status, "{}", String::from_utf8_lossy(text));
        };
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
            400,
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            400,
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            400,
        );
        check(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            501,
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        );
        check(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
            400,
        );
        check(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        );
        check(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n b\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01: y\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nX: a\x00b\r\nHost: x\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
        check(b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
        check(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
        check(b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n", 400);
        check(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417);
    }

    #[test]
    fn size_limits() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
        assert_eq!(status_of(long_target.as_bytes()), 414);
        let unfinished_line = format!("GET /{}", "a".repeat(9000));
        assert_eq!(status_of(unfinished_line.as_bytes()), 414);
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(70_000)
        );
        assert_eq!(status_of(big_head.as_bytes()), 431);
        let many: String = (0..150).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            status_of(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()),
            431
        );
    }

    fn decode_all(input: &[u8]) -> Result<Vec<u8>, ParseError> {
        let mut decoder = ChunkedDecoder::new(1024);
        let mut buffer = BytesMut::new();
        let mut body = Vec::new();
        // Feed one byte at a time to exercise every partial state.
        for &byte in input {
            buffer.extend_from_slice(&[byte]);
            loop {
                match decoder.decode(&mut buffer)? {
                    Decoded::Data(data) => body.extend_from_slice(&data),
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok(body),
                }
            }
        }
        Err(bad("unfinished"))
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            decode_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert_eq!(
            decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            b"0123456789"
        );
        for bad_body in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"-1\r\n",
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(
                decode_all(bad_body).is_err(),
                "{}",
                String::from_utf8_lossy(bad_body)
            );
        }
    }

    #[test]
    fn chunk_sizes_are_hex() {
        for (length, text) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (255, "ff\r\n"),
        ] {
            let mut out = Vec::new();
            chunk_size_line(length, &mut out);
            assert_eq!(out, text.as_bytes());
        }
    }
}
