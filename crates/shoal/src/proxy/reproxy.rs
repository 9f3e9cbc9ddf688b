//! reproxy: an application behind a `reproxy` pool answers "send the client *that* instead",
//! and the node does, without a redirect the client would see. `X-Accel-Redirect: /path` (as
//! nginx) is routed again through the node's own routes, which may lead to `internal` pools;
//! `X-Reproxy-URL: URL…` (as Perlbal) names copies of the object on other servers, tried in
//! order. The target is looked up and stored under its own key, so many access-checked URLs
//! (each answered `private`) share one stored body, fetched once.

use std::sync::Arc;

use http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE,
    COOKIE, EXPIRES, HOST, SET_COOKIE,
};
use http::{HeaderMap, Method};

use super::{request_host, ClientRequest, Counter, Exchange, Proxy, ProxyError, ProxyResponse};
use crate::cache::CacheControl;
use crate::config::OriginUrl;
use crate::upstream::{RequestBody, Targets};

const X_ACCEL_REDIRECT: HeaderName = HeaderName::from_static("x-accel-redirect");
const X_REPROXY_URL: HeaderName = HeaderName::from_static("x-reproxy-url");
const X_REPROXY_EXPECTED_SIZE: HeaderName = HeaderName::from_static("x-reproxy-expected-size");

/// More URLs than this in one `X-Reproxy-URL` are not tried (a copy per storage node is a
/// handful).
const MAX_URLS: usize = 16;

/// The scheme of the cache keys of `X-Reproxy-URL` targets: no client request has it, so no
/// client can read a target by asking for its URL (it was meant for access-checked clients).
pub const TARGET_SCHEME: &str = "reproxy";

/// Log lines a second for unsafe `X-Accel-Redirect` paths.
static UNSAFE_LOG: crate::throttle::LogBudget = crate::throttle::LogBudget::new(10);

/// What an application asked the node to send instead of its answer, carried in the answer's
/// extensions from the upstream call to the phase that follows it.
#[derive(Clone, Debug)]
pub enum Instruction {
    /// `X-Accel-Redirect`: this path and query on the request's host, routed again.
    Internal(http::uri::PathAndQuery),
    /// `X-Reproxy-URL`: copies on these servers.
    Urls(Arc<Targets>),
    /// An instruction that cannot be followed (the client gets 502).
    Invalid(&'static str),
    /// An `X-Accel-Redirect` path with dot segments (the client gets 404, as from nginx): an
    /// application that builds the path from what a user typed must not be led elsewhere.
    Unsafe,
}

/// Marks a request made to follow an instruction: a target's own instruction is not followed
/// (one level, so an application cannot send the node round in circles).
#[derive(Clone, Copy, Debug)]
struct Following;

/// Removes the instruction fields from an upstream answer's `headers`; when `follow` (a
/// `reproxy` pool's answer), returns the instruction they held (an invalid one when `request`
/// was itself made to follow one).
pub fn take(
    headers: &mut HeaderMap,
    follow: bool,
    request: &http::request::Parts,
) -> Option<Instruction> {
    let names = [X_ACCEL_REDIRECT, X_REPROXY_URL, X_REPROXY_EXPECTED_SIZE];
    // Most answers have none: one pass over the names tells, without hashing any.
    if !headers.keys().any(|name| names.contains(name)) {
        return None;
    }
    let instruction = follow.then(|| match request.extensions.get::<Following>() {
        Some(_) => Instruction::Invalid("a target answered with another instruction"),
        None => parse(headers),
    });
    for name in names {
        headers.remove(name);
    }
    instruction
}

/// The instruction in `headers` (`X-Accel-Redirect` first, as nginx reads it).
fn parse(headers: &HeaderMap) -> Instruction {
    if let Some(path) = headers.get(X_ACCEL_REDIRECT) {
        return internal_target(path.as_bytes());
    }
    let mut urls = Vec::new();
    for value in headers.get_all(X_REPROXY_URL) {
        let Ok(text) = value.to_str() else {
            return Instruction::Invalid("X-Reproxy-URL is not text");
        };
        for url in text.split_ascii_whitespace() {
            if urls.len() == MAX_URLS {
                break;
            }
            match target_url(url) {
                Some(target) => urls.push(target),
                None => {
                    return Instruction::Invalid(
                        "X-Reproxy-URL holds a URL that is not absolute http(s)",
                    )
                }
            }
        }
    }
    if urls.is_empty() {
        return Instruction::Invalid("X-Reproxy-URL is empty");
    }
    let expected_size = match headers.get(X_REPROXY_EXPECTED_SIZE) {
        None => None,
        Some(value) => match std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|v| v.trim().parse().ok())
        {
            Some(size) => Some(size),
            None => return Instruction::Invalid("X-Reproxy-Expected-Size is not a number"),
        },
    };
    Instruction::Urls(Arc::new(Targets {
        urls,
        expected_size,
    }))
}

/// `X-Accel-Redirect`'s path (and query), in the normal form every request path is given.
/// Named locations (`@name`) are nginx's own and have no meaning here.
fn internal_target(value: &[u8]) -> Instruction {
    let text = match std::str::from_utf8(value) {
        Ok(text) if text.starts_with('/') => text.trim(),
        _ => return Instruction::Invalid("X-Accel-Redirect is not a path"),
    };
    let Ok(target) = text.parse::<http::uri::PathAndQuery>() else {
        return Instruction::Invalid("X-Accel-Redirect is not a path");
    };
    let decoded = percent_encoding::percent_decode_str(target.path()).decode_utf8_lossy();
    if decoded
        .split(['/', '\\'])
        .any(|segment| segment == "." || segment == "..")
    {
        return Instruction::Unsafe;
    }
    let Some(normal) = crate::cache::key::normalize_path(target.path()) else {
        return Instruction::Internal(target);
    };
    let normal = match target.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    match normal.parse() {
        Ok(target) => Instruction::Internal(target),
        Err(_) => Instruction::Invalid("X-Accel-Redirect is not a path"),
    }
}

/// One `X-Reproxy-URL` URL: the server (as an origin URL) and the path and query there.
fn target_url(text: &str) -> Option<(OriginUrl, http::uri::PathAndQuery)> {
    let uri: http::Uri = text.parse().ok()?;
    let path = uri.path_and_query()?.clone();
    let server = format!("{}://{}", uri.scheme_str()?, uri.authority()?);
    let origin: OriginUrl = server.parse().ok()?;
    (!origin.is_directory()).then_some((origin, path))
}

/// The first answer's fields the client gets in place of the target's, where the application
/// set them (the ones nginx keeps): what the application says about this client's copy.
const KEPT: [HeaderName; 5] = [
    CONTENT_TYPE,
    CONTENT_DISPOSITION,
    CACHE_CONTROL,
    EXPIRES,
    SET_COOKIE,
];

impl Proxy {
    /// Answers `request` with the target `instruction` names, through the cache under the
    /// target's own key, with the fields of `first` (the application's answer) that are kept.
    pub(super) async fn follow(
        self: &Arc<Self>,
        instruction: Instruction,
        first: &HeaderMap,
        request: ClientRequest,
    ) -> Result<ProxyResponse, ProxyError> {
        let (target, host, scheme) = match &instruction {
            Instruction::Invalid(reason) => {
                self.metrics.add(Counter::ReproxyFailures, 1);
                return Err(ProxyError::BadInstruction(reason));
            }
            Instruction::Unsafe => {
                self.metrics.add(Counter::ReproxyFailures, 1);
                if let Some(held_back) = UNSAFE_LOG.admit() {
                    tracing::warn!(
                        held_back,
                        "X-Accel-Redirect with a dot segment; answered 404"
                    );
                }
                return Err(ProxyError::Internal404);
            }
            Instruction::Internal(target) => {
                let host = request_host(&request.head).to_owned();
                (target.clone(), host, request.scheme())
            }
            // Keyed by the URL that sorts first, so that the application may list the copies
            // in any order (MogileFS shuffles them) and still name one object.
            Instruction::Urls(targets) => {
                let (url, path) = targets
                    .urls
                    .iter()
                    .min_by(|a, b| {
                        (&a.0.authority, a.1.as_str()).cmp(&(&b.0.authority, b.1.as_str()))
                    })
                    .ok_or(ProxyError::BadInstruction("X-Reproxy-URL is empty"))?;
                (path.clone(), url.authority.clone(), TARGET_SCHEME)
            }
        };
        self.metrics.add(Counter::Reproxied, 1);
        let mut head = request.head;
        // The target is shared by every client the application sends to it: it is fetched
        // without this client's credentials, and as a GET whatever the client's method was.
        if head.method != Method::HEAD {
            head.method = Method::GET;
        }
        head.headers.remove(AUTHORIZATION);
        head.headers.remove(COOKIE);
        // This node's own request now: it goes to the target's owner in a cluster even when
        // the application's answer was fetched for a peer, and the peer's `Via` would make
        // that owner see a loop. (A real loop still shows: this node's `Via` goes with it.)
        head.headers.remove(crate::upstream::cluster::PEER_HEADER);
        head.headers.remove(http::header::VIA);
        head.headers.remove(http::header::CONTENT_LENGTH);
        head.headers.remove(http::header::TRANSFER_ENCODING);
        if let Ok(value) = HeaderValue::from_str(&host) {
            head.headers.insert(HOST, value);
        }
        head.uri = http::Uri::from(target.clone());
        head.extensions.insert(Following);
        if let Instruction::Urls(targets) = instruction {
            head.extensions.insert(targets);
        }
        let key = self.key_of(scheme, &host, target.as_str());
        let exchange = Exchange {
            cache_control: CacheControl::parse(&head.headers),
            request: ClientRequest {
                head,
                body: RequestBody::empty(),
                has_body: false,
                tls: request.tls,
                client: request.client,
            },
            key,
        };
        let mut response = Box::pin(self.lookup(exchange)).await.inspect_err(|error| {
            if matches!(
                error,
                ProxyError::Upstream(crate::upstream::UpstreamError::NoTarget { .. })
            ) {
                self.metrics.add(Counter::ReproxyFailures, 1);
            }
        })?;
        let mut fields = response.headers.to_map();
        for name in KEPT {
            if first.contains_key(&name) {
                fields.remove(&name);
                for value in first.get_all(&name) {
                    fields.append(name.clone(), value.clone());
                }
            }
        }
        // The freshness is the application's word on this client's copy, never the target's:
        // the target's `max-age` on an access-checked URL would let the next cache (a peer, a
        // parent's edge, a browser's shared proxy) store it for everyone. Said nothing: private.
        if first.contains_key(CACHE_CONTROL) || first.contains_key(EXPIRES) {
            for name in [CACHE_CONTROL, EXPIRES] {
                if !first.contains_key(&name) {
                    fields.remove(&name);
                }
            }
        } else {
            fields.remove(EXPIRES);
            fields.insert(CACHE_CONTROL, HeaderValue::from_static("private"));
        }
        response.headers = super::ResponseHeaders::Map(fields);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruction(fields: &[(&str, &str)], follow: bool) -> (Option<Instruction>, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let (request, ()) = http::Request::new(()).into_parts();
        (take(&mut headers, follow, &request), headers)
    }

    #[test]
    fn instructions_are_removed_and_read_only_when_followed() {
        let fields = [
            ("x-accel-redirect", "/p/a.bin"),
            ("content-type", "text/plain"),
        ];
        let (none, left) = instruction(&fields, false);
        assert!(none.is_none());
        assert!(!left.contains_key("x-accel-redirect"));
        assert!(left.contains_key("content-type"));
        match instruction(&fields, true).0 {
            Some(Instruction::Internal(target)) => assert_eq!(target.as_str(), "/p/a.bin"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn internal_targets_are_normalized_and_named_locations_and_dot_segments_refused() {
        match instruction(&[("x-accel-redirect", "/p//q/%7e.bin?x=1")], true).0 {
            Some(Instruction::Internal(target)) => assert_eq!(target.as_str(), "/p//q/~.bin?x=1"),
            other => panic!("{other:?}"),
        }
        for unsafe_path in ["/p/../q", "/p/%2e%2E/q", "/p/./q", "/p/..\\q"] {
            let got = instruction(&[("x-accel-redirect", unsafe_path)], true).0;
            assert!(
                matches!(got, Some(Instruction::Unsafe)),
                "{unsafe_path}: {got:?}"
            );
        }
        for bad in ["@named", "relative", "http://a/b"] {
            let got = instruction(&[("x-accel-redirect", bad)], true).0;
            assert!(
                matches!(got, Some(Instruction::Invalid(_))),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn reproxy_urls_are_listed_in_order_with_the_expected_size() {
        let fields = [
            (
                "x-reproxy-url",
                "http://127.0.0.1:1/a.fid  http://127.0.0.1:2/dev2/a.fid",
            ),
            ("x-reproxy-url", "https://[::1]:3/b?x"),
            ("x-reproxy-expected-size", "42"),
        ];
        let Some(Instruction::Urls(targets)) = instruction(&fields, true).0 else {
            panic!("not read");
        };
        let listed: Vec<String> = targets
            .urls
            .iter()
            .map(|(url, path)| format!("{} {} {path}", url.tls, url.authority))
            .collect();
        assert_eq!(
            listed,
            [
                "false 127.0.0.1:1 /a.fid",
                "false 127.0.0.1:2 /dev2/a.fid",
                "true [::1]:3 /b?x"
            ]
        );
        assert_eq!(targets.expected_size, Some(42));
        for bad in [
            vec![("x-reproxy-url", "/relative")],
            vec![("x-reproxy-url", "file:///etc/passwd")],
            vec![("x-reproxy-url", "ftp://a/b")],
            vec![("x-reproxy-url", " ")],
            vec![
                ("x-reproxy-url", "http://a/b"),
                ("x-reproxy-expected-size", "-1"),
            ],
        ] {
            let got = instruction(&bad, true).0;
            assert!(
                matches!(got, Some(Instruction::Invalid(_))),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[test]
    fn an_oversized_or_conflicting_instruction_is_bounded() {
        // Twenty copies named: the first sixteen are tried.
        let many: Vec<String> = (0..20)
            .map(|n| format!("http://127.0.0.1:{}/x", 1000 + n))
            .collect();
        let fields = [("x-reproxy-url", many.join(" "))];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let Some(Instruction::Urls(targets)) = instruction(&fields, true).0 else {
            panic!("not read");
        };
        assert_eq!(targets.urls.len(), 16);
        assert_eq!(targets.urls[15].0.port, 1015);
        // Both forms at once: X-Accel-Redirect is read (as nginx does), both are removed.
        let (got, left) = instruction(
            &[
                ("x-accel-redirect", "/p/a"),
                ("x-reproxy-url", "http://127.0.0.1:1/b"),
            ],
            true,
        );
        assert!(matches!(got, Some(Instruction::Internal(_))), "{got:?}");
        assert!(left.is_empty(), "{left:?}");
        // Not text: refused, not cut.
        let mut headers = HeaderMap::new();
        headers.insert(
            X_REPROXY_URL,
            HeaderValue::from_bytes(b"http://a/\xff").unwrap(),
        );
        let (request, ()) = http::Request::new(()).into_parts();
        assert!(matches!(
            take(&mut headers, true, &request),
            Some(Instruction::Invalid(_))
        ));
    }

    #[test]
    fn a_targets_own_instruction_is_not_followed() {
        let mut headers = HeaderMap::new();
        headers.insert(X_ACCEL_REDIRECT, HeaderValue::from_static("/again"));
        let (mut request, ()) = http::Request::new(()).into_parts();
        request.extensions.insert(Following);
        let got = take(&mut headers, true, &request);
        assert!(matches!(got, Some(Instruction::Invalid(_))), "{got:?}");
    }
}
