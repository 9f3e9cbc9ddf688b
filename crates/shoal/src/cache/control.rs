//! `Cache-Control` directives (RFC 9111 §5.2), parsed once per message into plain fields.

use http::header::{CACHE_CONTROL, PRAGMA};
use http::HeaderMap;

/// RFC 9111 §1.2.2: delta-seconds too large to represent are taken as 2^31.
const DELTA_SECONDS_CAP: u64 = 1 << 31;

/// The directives Shoal acts on, from a request or a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (any form; a qualified one is treated as unqualified, which RFC 9111 allows).
    pub no_cache: bool,
    /// `private` without field names: a shared cache must not store the response.
    pub private: bool,
    /// `private="a, b"`: store, but without these fields (lowercase).
    pub private_fields: Vec<String>,
    /// `public`.
    pub public: bool,
    /// `max-age`; an invalid value becomes 0 (stale), the most restrictive reading.
    pub max_age: Option<u64>,
    /// `s-maxage`.
    pub s_maxage: Option<u64>,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `stale-while-revalidate` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861).
    pub stale_if_error: Option<u64>,
    /// Request `max-stale`: `Some(None)` accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    /// Request `min-fresh`.
    pub min_fresh: Option<u64>,
    /// Request `only-if-cached`.
    pub only_if_cached: bool,
}

impl CacheControl {
    /// Parses every `Cache-Control` field line of `headers`. Where there is none, a request's
    /// `Pragma: no-cache` counts as `no-cache` (RFC 9111 §5.4).
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut directives = CacheControl::default();
        let mut seen_any = false;
        for value in headers.get_all(CACHE_CONTROL) {
            seen_any = true;
            let Ok(text) = value.to_str() else {
                continue;
            };
            for (name, argument) in directives_of(text) {
                directives.apply(name, argument);
            }
        }
        if !seen_any {
            directives.no_cache = headers.get_all(PRAGMA).iter().any(|v| {
                v.to_str().is_ok_and(|t| {
                    t.split(',')
                        .any(|p| p.trim().eq_ignore_ascii_case("no-cache"))
                })
            });
        }
        directives
    }

    fn apply(&mut self, name: &str, argument: Option<&str>) {
        // Names are case-insensitive. Lowercased on the stack: the directives acted on are all
        // short, and a message's `Cache-Control` is parsed on every request and every miss.
        let mut lowercase = [0u8; 24];
        let Some(folded) = lowercase.get_mut(..name.len()) else {
            return;
        };
        folded.copy_from_slice(name.as_bytes());
        folded.make_ascii_lowercase();
        let name = std::str::from_utf8(folded).unwrap_or_default();
        let seconds = || {
            argument
                .map(parse_delta_seconds)
                .unwrap_or(Some(0))
                .unwrap_or(0)
        };
        // With duplicates, the first occurrence wins (RFC 9111 §4.2.1 allows either that or
        // treating the response as stale).
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => match argument {
                Some(fields) if !fields.trim().is_empty() => self.private_fields.extend(
                    fields
                        .split(',')
                        .map(|f| f.trim().to_ascii_lowercase())
                        .filter(|f| !f.is_empty()),
                ),
                _ => self.private = true,
            },
            "public" => self.public = true,
            "max-age" => {
                self.max_age.get_or_insert_with(seconds);
            }
            "s-maxage" => {
                self.s_maxage.get_or_insert_with(seconds);
            }
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "stale-while-revalidate" => {
                if let Some(value) = argument.and_then(parse_delta_seconds) {
                    self.stale_while_revalidate.get_or_insert(value);
                }
            }
            "stale-if-error" => {
                if let Some(value) = argument.and_then(parse_delta_seconds) {
                    self.stale_if_error.get_or_insert(value);
                }
            }
            "max-stale" if self.max_stale.is_none() => {
                self.max_stale = Some(argument.and_then(parse_delta_seconds));
            }
            "min-fresh" => {
                self.min_fresh.get_or_insert_with(seconds);
            }
            "only-if-cached" => self.only_if_cached = true,
            _ => {}
        }
    }

    /// Whether a stale response may never be served without revalidation by a shared cache
    /// (`must-revalidate`, `proxy-revalidate`, or `s-maxage`, which implies the latter).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

/// The directives of `a, B=1, c="x, y"`: names as written and unquoted arguments, without
/// allocating.
fn directives_of(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let (item, remainder) = next_item(rest);
        rest = remainder;
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        return Some(match item.split_once('=') {
            Some((name, argument)) => {
                let argument = argument.trim();
                let argument = argument
                    .strip_prefix('"')
                    .and_then(|a| a.strip_suffix('"'))
                    .unwrap_or(argument);
                (name.trim(), Some(argument))
            }
            None => (item, None),
        });
    })
}

/// The text up to the next comma that is not inside a quoted string, and the rest after it.
fn next_item(text: &str) -> (&str, &str) {
    let mut quoted = false;
    for (index, byte) in text.bytes().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b',' if !quoted => return (&text[..index], &text[index + 1..]),
            _ => {}
        }
    }
    (text, "")
}

/// Parses delta-seconds; values too large are capped (RFC 9111 §1.2.2); junk gives `None`.
pub fn parse_delta_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .unwrap_or(DELTA_SECONDS_CAP)
            .min(DELTA_SECONDS_CAP),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, line.parse().unwrap());
        }
        CacheControl::parse(&headers)
    }

    #[test]
    fn directives() {
        let cc = parse(&[
            "max-age=60, s-maxage=\"30\"",
            "Must-Revalidate, private=\"set-cookie, x-a\"",
        ]);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(30));
        assert!(cc.must_revalidate);
        assert!(!cc.private);
        assert_eq!(cc.private_fields, ["set-cookie", "x-a"]);
        assert!(cc.forbids_stale());
    }

    #[test]
    fn first_duplicate_wins_and_junk_is_stale() {
        assert_eq!(parse(&["max-age=10, max-age=100"]).max_age, Some(10));
        assert_eq!(parse(&["max-age=abc"]).max_age, Some(0));
        assert_eq!(
            parse(&["max-age=99999999999999999999"]).max_age,
            Some(1 << 31)
        );
    }

    #[test]
    fn unknown_and_overlong_names_are_skipped() {
        let cc = parse(&["x-an-extension-longer-than-any-known=1, PUBLIC, Max-Age=5"]);
        assert!(cc.public);
        assert_eq!(cc.max_age, Some(5));
        assert_eq!(cc, parse(&["public, max-age=5"]));
    }

    #[test]
    fn request_directives() {
        let cc = parse(&["max-stale, min-fresh=5, only-if-cached"]);
        assert_eq!(cc.max_stale, Some(None));
        assert_eq!(cc.min_fresh, Some(5));
        assert!(cc.only_if_cached);
        assert_eq!(parse(&["max-stale=7"]).max_stale, Some(Some(7)));
    }

    #[test]
    fn pragma_only_without_cache_control() {
        let mut headers = HeaderMap::new();
        headers.insert(PRAGMA, "no-cache".parse().unwrap());
        assert!(CacheControl::parse(&headers).no_cache);
        headers.insert(CACHE_CONTROL, "max-age=5".parse().unwrap());
        assert!(!CacheControl::parse(&headers).no_cache);
    }
}
