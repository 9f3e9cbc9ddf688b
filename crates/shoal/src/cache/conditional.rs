//! Conditional requests answered from a stored response (RFC 9110 §13): `If-Match`,
//! `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since` and `If-Range`.

use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Whether the request's preconditions fail against the stored response, which calls for
/// `412 Precondition Failed` (RFC 9110 §13.2.2, steps 1 and 2): `If-Match` needs a strong match
/// (or `*`); without it, `If-Unmodified-Since` needs the response not modified since.
pub fn precondition_failed(
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<u64>,
) -> bool {
    if request.contains_key(IF_MATCH) {
        let etag = etag.and_then(|e| e.to_str().ok());
        return !any_tag(request, IF_MATCH, |tag| {
            etag.is_some_and(|etag| strong_match(tag, etag))
        });
    }
    match (request_date(request, IF_UNMODIFIED_SINCE), last_modified) {
        (Some(since), Some(modified)) => modified > since,
        _ => false,
    }
}

/// Whether a GET or HEAD with these headers should get `304 Not Modified` for a stored response
/// with `etag` and `last_modified` (milliseconds since the epoch).
pub fn not_modified(
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<u64>,
) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        // If-None-Match takes precedence; If-Modified-Since is then ignored (§13.2.2).
        let etag = etag.and_then(|e| e.to_str().ok());
        return any_tag(request, IF_NONE_MATCH, |tag| {
            etag.is_some_and(|etag| weak_match(tag, etag))
        });
    }
    match (request_date(request, IF_MODIFIED_SINCE), last_modified) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// Whether a `Range` request may be answered with a part: true without `If-Range`, otherwise
/// only when its validator matches strongly (§13.1.5).
pub fn range_applies(
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<u64>,
) -> bool {
    let Some(condition) = request.get(IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let condition = condition.trim();
    if condition.starts_with('"') || condition.starts_with("W/") {
        return etag
            .and_then(|e| e.to_str().ok())
            .is_some_and(|etag| strong_match(condition, etag));
    }
    match (httpdate::parse_http_date(condition), last_modified) {
        (Ok(date), Some(modified)) => millis(date) == Some(modified),
        _ => false,
    }
}

/// Whether `*` or any entity tag listed in the request's `name` fields satisfies `matches`.
fn any_tag(request: &HeaderMap, name: HeaderName, matches: impl Fn(&str) -> bool) -> bool {
    request
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || matches(tag))
}

fn request_date(request: &HeaderMap, name: http::HeaderName) -> Option<u64> {
    let text = request.get(name)?.to_str().ok()?;
    millis(httpdate::parse_http_date(text.trim()).ok()?)
}

fn millis(time: std::time::SystemTime) -> Option<u64> {
    u64::try_from(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// Weak comparison: the opaque tags match, weak or not.
pub fn weak_match(a: &str, b: &str) -> bool {
    opaque(a) == opaque(b)
}

/// Strong comparison: both strong and identical.
pub fn strong_match(a: &str, b: &str) -> bool {
    !a.starts_with("W/") && !b.starts_with("W/") && a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as request;

    const LM: u64 = 1_700_000_000_000; // Tue, 14 Nov 2023 22:13:20 GMT

    #[test]
    fn not_modified_table() {
        let etag = HeaderValue::from_static("\"v1\"");
        let check = |pairs: &[(&str, &str)], expected: bool| {
            assert_eq!(
                not_modified(&request(pairs), Some(&etag), Some(LM)),
                expected,
                "{pairs:?}"
            );
        };
        check(&[("if-none-match", "\"v1\"")], true);
        check(&[("if-none-match", "W/\"v1\"")], true);
        check(&[("if-none-match", "\"v0\", \"v1\"")], true);
        check(&[("if-none-match", "*")], true);
        check(&[("if-none-match", "\"v2\"")], false);
        check(
            &[("if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT")],
            true,
        );
        check(
            &[("if-modified-since", "Tue, 14 Nov 2023 22:13:19 GMT")],
            false,
        );
        check(&[("if-modified-since", "garbage")], false);
        // If-None-Match wins over If-Modified-Since.
        check(
            &[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT"),
            ],
            false,
        );
        check(&[], false);
    }

    #[test]
    fn precondition_table() {
        let etag = HeaderValue::from_static("\"v1\"");
        let check = |pairs: &[(&str, &str)], expected: bool| {
            assert_eq!(
                precondition_failed(&request(pairs), Some(&etag), Some(LM)),
                expected,
                "{pairs:?}"
            );
        };
        check(&[("if-match", "\"v1\"")], false);
        check(&[("if-match", "*")], false);
        check(&[("if-match", "\"v2\"")], true);
        check(&[("if-match", "W/\"v1\"")], true);
        check(
            &[("if-unmodified-since", "Tue, 14 Nov 2023 22:13:20 GMT")],
            false,
        );
        check(
            &[("if-unmodified-since", "Tue, 14 Nov 2023 22:13:19 GMT")],
            true,
        );
        check(&[], false);
        // `*` matches any stored representation, with or without an entity tag.
        assert!(not_modified(
            &request(&[("if-none-match", "*")]),
            None,
            None
        ));
        assert!(!precondition_failed(
            &request(&[("if-match", "*")]),
            None,
            None
        ));
    }

    #[test]
    fn if_range_table() {
        let strong = HeaderValue::from_static("\"v1\"");
        let weak = HeaderValue::from_static("W/\"v1\"");
        assert!(range_applies(&request(&[]), None, None));
        assert!(range_applies(
            &request(&[("if-range", "\"v1\"")]),
            Some(&strong),
            None
        ));
        assert!(!range_applies(
            &request(&[("if-range", "\"v2\"")]),
            Some(&strong),
            None
        ));
        assert!(!range_applies(
            &request(&[("if-range", "W/\"v1\"")]),
            Some(&weak),
            None
        ));
        assert!(range_applies(
            &request(&[("if-range", "Tue, 14 Nov 2023 22:13:20 GMT")]),
            None,
            Some(LM)
        ));
        assert!(!range_applies(
            &request(&[("if-range", "Tue, 14 Nov 2023 22:13:21 GMT")]),
            None,
            Some(LM)
        ));
    }
}
