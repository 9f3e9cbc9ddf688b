//! The access log's record of a request: what is taken of it before it is handed over
//! (`LoggedRequest`), completed into an entry once it is answered, and the entry of a request
//! refused before it could be parsed. Both client protocols use it.

use http::{Method, StatusCode, Version};

/// What the access log needs of a request, taken before the request is handed over.
pub(crate) struct LoggedRequest {
    time: u64,
    started: std::time::Instant,
    method: Method,
    host: String,
    target: String,
    version: Version,
    user_agent: Option<String>,
    referer: Option<String>,
}

impl LoggedRequest {
    pub(crate) fn of(parts: &http::request::Parts) -> LoggedRequest {
        let header = |name: http::header::HeaderName| {
            parts
                .headers
                .get(name)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        LoggedRequest {
            time: super::now_millis(),
            started: std::time::Instant::now(),
            method: parts.method.clone(),
            host: super::request_host(parts).to_owned(),
            target: super::target(parts).to_owned(),
            version: parts.version,
            user_agent: header(http::header::USER_AGENT),
            referer: header(http::header::REFERER),
        }
    }

    pub(crate) fn entry(
        self,
        client: std::net::IpAddr,
        status: u16,
        bytes: u64,
        cache: crate::cache::CacheStatus,
        origin: Option<crate::upstream::Trace>,
    ) -> crate::accesslog::Entry {
        let (upstream, origin_micros) = match origin {
            Some(trace) => (Some(trace.host), Some(trace.first_byte.as_micros() as u64)),
            None => (None, None),
        };
        crate::accesslog::Entry {
            time: self.time,
            client,
            method: self.method,
            host: self.host,
            target: self.target,
            version: self.version,
            status,
            bytes,
            cache,
            micros: self.started.elapsed().as_micros() as u64,
            upstream,
            origin_micros,
            user_agent: self.user_agent,
            referer: self.referer,
            country: None,
            asn: None,
        }
    }
}

/// The access log entry of a request refused before it was parsed: what its request line
/// gives of the method and target (as far as it is there and printable), from `input`.
pub(crate) fn refused_entry(
    input: &[u8],
    client: std::net::IpAddr,
    status: StatusCode,
) -> crate::accesslog::Entry {
    let line = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.trim_ascii().splitn(3, |&b| b == b' ');
    let method = words
        .next()
        .and_then(|word| Method::from_bytes(word).ok())
        .unwrap_or_else(|| Method::from_bytes(b"-").unwrap_or_default());
    let target: String = words
        .next()
        .map(|word| String::from_utf8_lossy(word).chars().take(512).collect())
        .filter(|target: &String| target.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned());
    let version = match words.next() {
        Some(b"HTTP/1.0") => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    crate::accesslog::Entry {
        time: super::now_millis(),
        client,
        method,
        host: String::new(),
        target,
        version,
        status: status.as_u16(),
        bytes: 0,
        cache: crate::cache::CacheStatus::Synthetic,
        micros: 0,
        upstream: None,
        origin_micros: None,
        user_agent: None,
        referer: None,
        country: None,
        asn: None,
    }
}
