//! HTTP/1.1 response serialization. A hit copies the stored, pre-serialized header block and
//! appends the few per-response fields (`Age`, cache status, `Via`, framing) without formatting.

use http::{HeaderName, HeaderValue, StatusCode};

use crate::proxy::{ProxyResponse, ResponseBody, ResponseHeaders};

/// How the body follows the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body bytes are written.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, unknown length).
    Close,
}

/// What the connection must know to write a response.
pub struct WriteContext<'a> {
    /// The client spoke HTTP/1.0.
    pub http10: bool,
    /// The connection stays open after this response.
    pub keep_alive: bool,
    /// Name of the cache status header, if enabled.
    pub status_header: Option<&'a HeaderName>,
    /// This node's `Via` element.
    pub via: &'a HeaderValue,
    /// `Strict-Transport-Security`, on TLS connections when configured.
    pub hsts: Option<&'a HeaderValue>,
}

/// Writes the status line and header section of `response` into `out` and says how the body
/// must be framed. `keep_alive` may be turned off when the framing requires it.
pub fn write_head(
    out: &mut Vec<u8>,
    response: &ProxyResponse,
    context: &mut WriteContext<'_>,
) -> BodyFraming {
    let status = response.status;
    let bodiless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let head_response = matches!(response.body, ResponseBody::Omitted(_));
    let framing = if bodiless_status || head_response {
        BodyFraming::None
    } else {
        match response.body.length() {
            Some(length) => BodyFraming::Length(length),
            None if context.http10 => BodyFraming::Close,
            None => BodyFraming::Chunked,
        }
    };
    if framing == BodyFraming::Close || response.close {
        context.keep_alive = false;
    }

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    match &response.headers {
        ResponseHeaders::Stored(meta) => out.extend_from_slice(meta.fields.as_bytes()),
        ResponseHeaders::Map(map) => {
            for (name, value) in map {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    if let Some(age) = response.age {
        out.extend_from_slice(b"Age: ");
        out.extend_from_slice(itoa::Buffer::new().format(age).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(name) = context.status_header {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(response.cache_status.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(context.via.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(hsts) = context.hsts {
        out.extend_from_slice(b"Strict-Transport-Security: ");
        out.extend_from_slice(hsts.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Length(length) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::None => {
            // HEAD: declare the length the GET would have.
            if let ResponseBody::Omitted(Some(length)) = response.body {
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        BodyFraming::Close => {}
    }
    if !context.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if context.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}
