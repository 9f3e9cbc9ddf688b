//! RFC 9111 policy as pure functions over headers and times: what may be stored, how long it
//! stays fresh, how old it is, and whether a stored response may answer a request. Times are
//! milliseconds since the Unix epoch so that tests can pass any clock.

use http::header::{AUTHORIZATION, DATE, EXPIRES, LAST_MODIFIED, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode};

use super::control::{parse_delta_seconds, CacheControl};
use crate::config::CacheConfig;

/// Why a response was not stored; shown in logs and the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStorable {
    /// Only GET (and HEAD, fetched as GET) responses are stored.
    Method,
    /// The status is not cacheable by default and the response gives no explicit freshness.
    Status,
    /// A server error: never stored as the object (the stale copy, if any, is kept).
    ServerError,
    /// A partial response to a request that asked for the whole object.
    Partial,
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`: only a private cache may store it.
    Private,
    /// The request carried `Authorization` and the response did not allow sharing it.
    Authorization,
    /// The response sets a cookie and `cache.store_set_cookie` is off.
    SetCookie,
    /// `Vary: *` never matches a later request.
    VaryStar,
    /// Larger than `cache.max_object_size`.
    TooLarge,
    /// `must-understand` with a status code Shoal does not know.
    MustUnderstand,
    /// A file host's file larger than its pool's `cache_files_up_to`: sent from the file.
    FromFile,
    /// An application's instruction to send something else (`X-Accel-Redirect`,
    /// `X-Reproxy-URL`): followed for every request, never stored.
    Reproxy,
}

impl NotStorable {
    /// A short name for logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::ServerError => "server-error",
            NotStorable::Partial => "partial",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::VaryStar => "vary-star",
            NotStorable::TooLarge => "too-large",
            NotStorable::MustUnderstand => "must-understand",
            NotStorable::FromFile => "from-file",
            NotStorable::Reproxy => "reproxy",
        }
    }
}

/// Status codes a cache may store with heuristic freshness (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The status codes RFC 9110 defines, whose caching rules Shoal follows: what
/// `must-understand` asks a cache to know before it stores a response.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Client errors that get the short negative TTL when the origin says nothing: answers about
/// the URL. 405 and 501 are about the method, and a request can make them with fields the
/// cache key does not hold (a method override the origin honours), so that one client's 405
/// would be everyone's; they are stored only with the freshness the origin gives them.
fn negative(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 410 | 414)
}

/// Decides whether a response to `method` may be stored (RFC 9111 §3).
pub fn storability(
    method: &Method,
    request: &HeaderMap,
    request_cc: &CacheControl,
    status: StatusCode,
    response: &HeaderMap,
    response_cc: &CacheControl,
    config: &CacheConfig,
) -> Result<(), NotStorable> {
    if method != Method::GET && method != Method::HEAD {
        return Err(NotStorable::Method);
    }
    if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
        return Err(NotStorable::ServerError);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStorable::Partial);
    }
    // A response that says `must-understand` asks for `no-store` only from caches that do not
    // know its status code; Shoal knows the codes of RFC 9110 and nothing else.
    if response_cc.must_understand && !understood(status) {
        return Err(NotStorable::MustUnderstand);
    }
    if request_cc.no_store || (response_cc.no_store && !response_cc.must_understand) {
        return Err(NotStorable::NoStore);
    }
    if response_cc.private {
        return Err(NotStorable::Private);
    }
    if request.contains_key(AUTHORIZATION)
        && !(response_cc.must_revalidate || response_cc.public || response_cc.s_maxage.is_some())
    {
        return Err(NotStorable::Authorization);
    }
    if response.contains_key(SET_COOKIE)
        && !config.store_set_cookie
        && !response_cc.private_fields.iter().any(|f| f == "set-cookie")
    {
        return Err(NotStorable::SetCookie);
    }
    if vary_names(response).any(|name| name == "*") {
        return Err(NotStorable::VaryStar);
    }
    let explicit = response_cc.max_age.is_some()
        || response_cc.s_maxage.is_some()
        || (response.contains_key(EXPIRES) && !response_cc.targeted)
        || response_cc.public;
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStorable::Status);
    }
    Ok(())
}

/// The field names listed in `Vary`, lowercase.
pub fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
}

/// When and how a response was received, the inputs of the age calculation (RFC 9111 §4.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// When the request that produced it was sent.
    pub request_time: u64,
    /// When the response head arrived.
    pub response_time: u64,
    /// The response's `Date`, or `response_time` without one.
    pub date: u64,
    /// The response's `Age`, in milliseconds.
    pub age: u64,
}

impl Timing {
    /// Reads `Date` and `Age` from a response received at `response_time`.
    pub fn of_response(headers: &HeaderMap, request_time: u64, response_time: u64) -> Timing {
        let date = http_date(headers, DATE).unwrap_or(response_time);
        let age = headers
            .get(http::header::AGE)
            .map_or(0, |value| age_seconds(value) * 1000);
        Timing {
            request_time,
            response_time,
            date,
            age,
        }
    }

    /// The age of the response when it arrived, corrected for transit delay.
    pub fn corrected_initial_age(&self) -> u64 {
        let apparent_age = self.response_time.saturating_sub(self.date);
        let response_delay = self.response_time.saturating_sub(self.request_time);
        apparent_age.max(self.age + response_delay)
    }

    /// The age at `now`.
    pub fn current_age(&self, now: u64) -> u64 {
        self.corrected_initial_age() + now.saturating_sub(self.response_time)
    }
}

/// An `Age` value in seconds (RFC 9111 §5.1): of a list, its first member; when that is not a
/// delta-seconds (`abc`, `-7200`, `7200.0`, `7200;foo=bar`), an age that leaves the response
/// stale for good, rather than 0, which would take the broken value for a fresh one.
fn age_seconds(value: &http::HeaderValue) -> u64 {
    let first = value
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default();
    std::str::from_utf8(first)
        .ok()
        .and_then(parse_delta_seconds)
        .unwrap_or(super::control::DELTA_SECONDS_CAP)
}

/// Parses an HTTP date field as milliseconds since the epoch.
pub fn http_date(headers: &HeaderMap, name: http::HeaderName) -> Option<u64> {
    http_date_value(headers.get(name)?)
}

/// Parses an HTTP date value as milliseconds since the epoch.
pub fn http_date_value(value: &http::HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    let since_epoch = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}

/// How long a stored response stays fresh and what may be done once it is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime in milliseconds.
    pub lifetime: u64,
    /// Time past expiry it may be served while one background fetch refreshes it.
    pub stale_while_revalidate: u64,
    /// Time past expiry it may be served when the origin fails.
    pub stale_if_error: u64,
    /// Every use needs a successful validation first (`no-cache`).
    pub always_revalidate: bool,
    /// Never served stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    pub forbids_stale: bool,
}

/// Computes the freshness of a response to store (RFC 9111 §4.2.1, §4.2.2, RFC 5861).
pub fn freshness(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    timing: &Timing,
    config: &CacheConfig,
) -> Freshness {
    let explicit = if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        Some(seconds * 1000)
    } else if headers.contains_key(EXPIRES) && !cc.targeted {
        // An invalid Expires (such as "0") means already expired.
        Some(http_date(headers, EXPIRES).map_or(0, |expires| expires.saturating_sub(timing.date)))
    } else {
        None
    };
    let lifetime = explicit.unwrap_or_else(|| {
        if negative(status) {
            return config.negative_ttl.0.as_millis() as u64;
        }
        if !(heuristically_cacheable(status) || cc.public) {
            return 0;
        }
        match http_date(headers, LAST_MODIFIED) {
            Some(modified) if modified < timing.date => {
                let heuristic = (timing.date - modified) as f64 * config.heuristic_fraction;
                (heuristic as u64).min(config.heuristic_max.0.as_millis() as u64)
            }
            _ => 0,
        }
    });
    let forbids_stale = cc.forbids_stale();
    // The configured grace stands in for the origin's own stale-while-revalidate only for
    // responses the origin meant to be cached; stale-if-error grace applies to all.
    let default_swr = if lifetime > 0 {
        config.stale_while_revalidate.0.as_millis() as u64
    } else {
        0
    };
    Freshness {
        lifetime,
        stale_while_revalidate: if forbids_stale {
            0
        } else {
            cc.stale_while_revalidate.map_or(default_swr, |s| s * 1000)
        },
        stale_if_error: if forbids_stale {
            0
        } else {
            cc.stale_if_error
                .map_or(config.stale_if_error.0.as_millis() as u64, |s| s * 1000)
        },
        always_revalidate: cc.no_cache,
        forbids_stale,
    }
}

/// What a stored response may do for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it as it is.
    Fresh,
    /// Serve it stale and refresh it once in the background.
    StaleWhileRevalidate,
    /// Serve it stale: the client accepts that (`max-stale`).
    StaleAccepted,
    /// Validate with the origin first; `stale_if_error` says whether it may still be served if
    /// the origin fails.
    Revalidate {
        /// The stale copy may answer when the origin errs or is unreachable.
        stale_if_error: bool,
    },
}

/// Decides how a stored response of `age` may answer a request with directives `request`
/// (RFC 9111 §4, §5.2.1).
pub fn reuse(freshness: &Freshness, age: u64, request: &CacheControl) -> Reuse {
    let staleness = age.saturating_sub(freshness.lifetime);
    let stale_if_error = !freshness.forbids_stale && staleness <= freshness.stale_if_error;
    let revalidate = Reuse::Revalidate { stale_if_error };
    if freshness.always_revalidate || request.no_cache {
        return revalidate;
    }
    if request.max_age.is_some_and(|max_age| age > max_age * 1000) {
        return revalidate;
    }
    let remaining = freshness.lifetime.saturating_sub(age);
    let fresh = age < freshness.lifetime;
    if fresh {
        return match request.min_fresh {
            Some(min_fresh) if remaining < min_fresh * 1000 => revalidate,
            _ => Reuse::Fresh,
        };
    }
    if freshness.forbids_stale {
        return revalidate;
    }
    match request.max_stale {
        Some(None) => return Reuse::StaleAccepted,
        Some(Some(max_stale)) if staleness <= max_stale * 1000 => return Reuse::StaleAccepted,
        _ => {}
    }
    if staleness < freshness.stale_while_revalidate {
        return Reuse::StaleWhileRevalidate;
    }
    revalidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as headers;
    use http::header::CACHE_CONTROL;

    const NOW: u64 = 1_700_000_000_000;
    const DATE_NOW: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

    fn timing() -> Timing {
        Timing {
            request_time: NOW,
            response_time: NOW,
            date: NOW,
            age: 0,
        }
    }

    #[test]
    fn storability_table() {
        let config = CacheConfig::default();
        let check = |method: Method,
                     req: &[(&str, &str)],
                     status: u16,
                     resp: &[(&str, &str)],
                     expected: Result<(), NotStorable>| {
            let req = headers(req);
            let resp = headers(resp);
            let got = storability(
                &method,
                &req,
                &CacheControl::parse(&req),
                StatusCode::from_u16(status).unwrap(),
                &resp,
                &CacheControl::parse(&resp),
                &config,
            );
            assert_eq!(got, expected, "{method} {req:?} {status} {resp:?}");
        };
        use NotStorable::{
            Authorization, NoStore, Partial, Private, ServerError, SetCookie, Status, VaryStar,
        };
        check(Method::GET, &[], 200, &[], Ok(()));
        check(
            Method::POST,
            &[],
            200,
            &[("cache-control", "max-age=60")],
            Err(NotStorable::Method),
        );
        check(Method::GET, &[], 404, &[], Ok(()));
        check(
            Method::GET,
            &[],
            503,
            &[("cache-control", "max-age=60")],
            Err(ServerError),
        );
        check(Method::GET, &[], 501, &[], Ok(()));
        check(Method::GET, &[], 302, &[], Err(Status));
        check(
            Method::GET,
            &[],
            302,
            &[("cache-control", "max-age=60")],
            Ok(()),
        );
        check(Method::GET, &[], 302, &[("expires", DATE_NOW)], Ok(()));
        check(
            Method::GET,
            &[],
            307,
            &[("cache-control", "public")],
            Ok(()),
        );
        check(
            Method::GET,
            &[],
            200,
            &[("cache-control", "no-store")],
            Err(NoStore),
        );
        check(
            Method::GET,
            &[("cache-control", "no-store")],
            200,
            &[],
            Err(NoStore),
        );
        check(
            Method::GET,
            &[],
            200,
            &[("cache-control", "private")],
            Err(Private),
        );
        check(
            Method::GET,
            &[],
            200,
            &[("cache-control", "private=\"x-user\"")],
            Ok(()),
        );
        check(
            Method::GET,
            &[("authorization", "x")],
            200,
            &[("cache-control", "max-age=6")],
            Err(Authorization),
        );
        check(
            Method::GET,
            &[("authorization", "x")],
            200,
            &[("cache-control", "s-maxage=6")],
            Ok(()),
        );
        check(
            Method::GET,
            &[("authorization", "x")],
            200,
            &[("cache-control", "public")],
            Ok(()),
        );
        check(
            Method::GET,
            &[("authorization", "x")],
            200,
            &[("cache-control", "must-revalidate")],
            Ok(()),
        );
        check(
            Method::GET,
            &[],
            200,
            &[("set-cookie", "a=b")],
            Err(SetCookie),
        );
        check(
            Method::GET,
            &[],
            200,
            &[("vary", "accept, *")],
            Err(VaryStar),
        );
        check(Method::GET, &[], 206, &[], Err(Partial));
        // must-understand: a known status is stored despite the no-store meant for caches that
        // do not know it; an unknown one is not, whatever its freshness.
        let understood = [("cache-control", "max-age=60, must-understand, no-store")];
        check(Method::GET, &[], 200, &understood, Ok(()));
        check(Method::GET, &[], 308, &understood, Ok(()));
        check(
            Method::GET,
            &[],
            299,
            &[("cache-control", "max-age=60, must-understand")],
            Err(NotStorable::MustUnderstand),
        );
        check(
            Method::GET,
            &[("cache-control", "no-store")],
            200,
            &understood,
            Err(NoStore),
        );
    }

    #[test]
    fn freshness_table() {
        let config = CacheConfig::default();
        let check = |status: u16, resp: &[(&str, &str)], lifetime_s: u64| {
            let resp = headers(resp);
            let got = freshness(
                StatusCode::from_u16(status).unwrap(),
                &resp,
                &CacheControl::parse(&resp),
                &Timing::of_response(&resp, NOW, NOW),
                &config,
            );
            assert_eq!(got.lifetime, lifetime_s * 1000, "{status} {resp:?}");
        };
        check(200, &[("cache-control", "max-age=60")], 60);
        check(200, &[("cache-control", "max-age=60, s-maxage=5")], 5);
        check(
            200,
            &[
                ("date", DATE_NOW),
                ("expires", "Tue, 14 Nov 2023 22:14:20 GMT"),
            ],
            60,
        );
        check(200, &[("date", DATE_NOW), ("expires", "0")], 0);
        check(
            200,
            &[
                ("date", DATE_NOW),
                ("expires", "Tue, 14 Nov 2023 22:14:20 GMT"),
                ("cache-control", "max-age=1"),
            ],
            1,
        );
        // 10% of 1000 s since Last-Modified.
        check(
            200,
            &[
                ("date", DATE_NOW),
                ("last-modified", "Tue, 14 Nov 2023 21:56:40 GMT"),
            ],
            100,
        );
        check(200, &[], 0);
        check(404, &[], 30);
        check(410, &[("cache-control", "max-age=300")], 300);
        check(
            302,
            &[
                ("date", DATE_NOW),
                ("last-modified", "Tue, 14 Nov 2023 21:56:40 GMT"),
            ],
            0,
        );
    }

    #[test]
    fn age_calculation() {
        // Date 10 s before arrival, Age 3, 2 s in transit: apparent age 10 wins.
        let t = Timing {
            request_time: NOW - 2000,
            response_time: NOW,
            date: NOW - 10_000,
            age: 3000,
        };
        assert_eq!(t.corrected_initial_age(), 10_000);
        assert_eq!(t.current_age(NOW + 5000), 15_000);
        // Age 30 from upstream plus 2 s delay beats a recent Date.
        let t = Timing {
            age: 30_000,
            date: NOW,
            ..t
        };
        assert_eq!(t.corrected_initial_age(), 32_000);
        let from_headers = Timing::of_response(&headers(&[("age", "7")]), NOW, NOW);
        assert_eq!(from_headers.age, 7000);
    }

    /// RFC 9111 §5.1: the first member of a list counts; a value that is not a delta-seconds
    /// makes the response stale, whatever its freshness lifetime.
    #[test]
    fn an_age_is_its_first_member_and_a_broken_one_is_stale() {
        let age = |value: &str| Timing::of_response(&headers(&[("age", value)]), NOW, NOW).age;
        assert_eq!(age("0,7200"), 0);
        assert_eq!(age(" 30 , 0"), 30_000);
        assert_eq!(age("7200,0"), 7_200_000);
        let stale = super::super::control::DELTA_SECONDS_CAP * 1000;
        for broken in ["abc", "-7200", "7200.0", "7200;foo=bar", "", ",5"] {
            assert_eq!(age(broken), stale, "Age: {broken}");
        }
        let none = Timing::of_response(&HeaderMap::new(), NOW, NOW);
        assert_eq!(none.age, 0);
    }

    #[test]
    fn reuse_table() {
        // A grace configured for origins that give none (the default is none).
        let config = CacheConfig {
            stale_while_revalidate: crate::config::Span(std::time::Duration::from_secs(10)),
            ..CacheConfig::default()
        };
        let check = |resp_cc: &str, req_cc: &str, age_s: u64, expected: Reuse| {
            let resp = headers(&[(CACHE_CONTROL.as_str(), resp_cc)]);
            let f = freshness(
                StatusCode::OK,
                &resp,
                &CacheControl::parse(&resp),
                &timing(),
                &config,
            );
            let req = if req_cc.is_empty() {
                HeaderMap::new()
            } else {
                headers(&[("cache-control", req_cc)])
            };
            assert_eq!(
                reuse(&f, age_s * 1000, &CacheControl::parse(&req)),
                expected,
                "{resp_cc} / {req_cc} / {age_s}"
            );
        };
        let revalidate = Reuse::Revalidate {
            stale_if_error: true,
        };
        let strict = Reuse::Revalidate {
            stale_if_error: false,
        };
        check("max-age=60", "", 10, Reuse::Fresh);
        check("max-age=60", "", 65, Reuse::StaleWhileRevalidate); // the configured 10 s
        check("max-age=60", "", 75, revalidate);
        check(
            "max-age=60, stale-while-revalidate=100",
            "",
            150,
            Reuse::StaleWhileRevalidate,
        );
        check("max-age=60, must-revalidate", "", 61, strict);
        check("s-maxage=60", "", 61, strict);
        check(
            "max-age=60, stale-if-error=5",
            "",
            80,
            Reuse::Revalidate {
                stale_if_error: false,
            },
        );
        check("max-age=60, no-cache", "", 1, strict);
        check("max-age=60", "no-cache", 1, revalidate);
        check("max-age=60", "max-age=5", 10, revalidate);
        check("max-age=60", "min-fresh=55", 10, revalidate);
        check("max-age=60", "max-stale", 1000, Reuse::StaleAccepted);
        check("max-age=60", "max-stale=5", 64, Reuse::StaleAccepted);
        check("max-age=60, must-revalidate", "max-stale", 100, strict);
    }
}
