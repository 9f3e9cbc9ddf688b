//! `Cache-Control` directives (RFC 9111 §5.2), parsed once per message into plain fields, and
//! the fields that stand in for them when a response targets CDN caches (RFC 9213
//! `CDN-Cache-Control`, `Surrogate-Control`).

use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, PRAGMA};
use http::HeaderMap;

use crate::config::CacheConfig;

/// RFC 9213's field for CDN caches: when present, it governs this cache instead of
/// `Cache-Control`.
static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// The Edge Architecture 1.0 field for surrogates (reverse proxies such as this one).
static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// The field by which a surrogate tells origins what it understands.
static SURROGATE_CAPABILITY: HeaderName = HeaderName::from_static("surrogate-capability");

/// The name this node answers to in `Surrogate-Control` targets (`max-age=60;shoal`), as it
/// announces itself in `Surrogate-Capability`.
pub const SURROGATE_ID: &str = "shoal";

/// Adds this node's `Surrogate-Capability` to a request for an origin, so that the origin may
/// target it (`cache.surrogate_control`).
pub fn announce_surrogate(request: &mut HeaderMap) {
    request.append(
        &SURROGATE_CAPABILITY,
        HeaderValue::from_static("shoal=\"Surrogate/1.0\""),
    );
}

/// RFC 9111 §1.2.2: delta-seconds too large to represent are taken as 2^31.
pub(super) const DELTA_SECONDS_CAP: u64 = 1 << 31;

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
    /// `must-understand` (RFC 9111 §5.2.2.3): store only a status whose caching rules the cache
    /// knows, and then despite `no-store`.
    pub must_understand: bool,
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
    /// Read from a field targeted at this cache (`CDN-Cache-Control`, `Surrogate-Control`):
    /// `Cache-Control` and `Expires` do not apply (RFC 9213 §2.2).
    pub targeted: bool,
}

impl CacheControl {
    /// Parses every `Cache-Control` field line of `headers`. Where there is none, a request's
    /// `Pragma: no-cache` counts as `no-cache` (RFC 9111 §5.4).
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let (mut directives, present, _) = CacheControl::of_field(headers, &CACHE_CONTROL);
        if !present {
            directives.no_cache = headers.get_all(PRAGMA).iter().any(|v| {
                v.to_str().is_ok_and(|t| {
                    t.split(',')
                        .any(|p| p.trim().eq_ignore_ascii_case("no-cache"))
                })
            });
        }
        directives
    }

    /// The directives that govern this cache for a response: those of `CDN-Cache-Control`
    /// when it has any (RFC 9213), else the `Surrogate-Control` directives meant for this
    /// node, else `Cache-Control`'s, as `config` has the node honour the first two. A
    /// response's own fields only: a request's are read with [`CacheControl::parse`].
    pub fn of_response(headers: &HeaderMap, config: &CacheConfig) -> CacheControl {
        if config.cdn_cache_control {
            let (mut directives, _, any) = CacheControl::of_field(headers, &CDN_CACHE_CONTROL);
            if any {
                directives.targeted = true;
                return directives;
            }
        }
        if config.surrogate_control {
            if let Some(directives) = surrogate_directives(headers) {
                return directives;
            }
        }
        CacheControl::parse(headers)
    }

    /// The directives of every line of field `name`, whether the field is there at all, and
    /// whether it had any directive.
    fn of_field(headers: &HeaderMap, name: &HeaderName) -> (CacheControl, bool, bool) {
        let mut directives = CacheControl::default();
        let (mut present, mut any) = (false, false);
        for value in headers.get_all(name) {
            present = true;
            let Ok(text) = value.to_str() else {
                continue;
            };
            for (name, argument) in directives_of(text) {
                directives.apply(name, argument);
                any = true;
            }
        }
        (directives, present, any)
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
            "must-understand" => self.must_understand = true,
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

    /// Whether a response may never be served by a shared cache without a successful
    /// revalidation, not even when the origin fails (RFC 9111 §4.2.4): `must-revalidate`,
    /// `proxy-revalidate`, `s-maxage` (which implies the latter) or `no-cache`.
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// `Surrogate-Control` read for this node (Edge Architecture Specification 1.0): `max-age`
/// (with `+grace`, taken as `stale-while-revalidate`) and `no-store`, each untargeted or
/// targeted at [`SURROGATE_ID`] (`no-store;shoal`). Directives targeted at this node win over
/// untargeted ones; those targeted at others are not this node's. `None` when nothing applies.
fn surrogate_directives(headers: &HeaderMap) -> Option<CacheControl> {
    let mut untargeted = CacheControl::default();
    let mut ours = CacheControl::default();
    for value in headers.get_all(&SURROGATE_CONTROL) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for (name, argument) in directives_of(text) {
            let (name, argument, target) = split_target(name, argument);
            let directives = match target {
                None => &mut untargeted,
                Some(target) if target.eq_ignore_ascii_case(SURROGATE_ID) => &mut ours,
                Some(_) => continue,
            };
            if name.eq_ignore_ascii_case("max-age") {
                let (fresh, grace) = match argument.and_then(|a| a.split_once('+')) {
                    Some((fresh, grace)) => (Some(fresh), Some(grace)),
                    None => (argument, None),
                };
                directives.apply(name, fresh);
                if let Some(grace) = grace {
                    directives.apply("stale-while-revalidate", Some(grace));
                }
            } else if name.eq_ignore_ascii_case("no-store") {
                directives.apply(name, None);
            }
        }
    }
    // Only `max-age` and `no-store` are read, so these two say whether anything applies.
    let applies = |directives: &CacheControl| directives.max_age.is_some() || directives.no_store;
    let mut directives = [ours, untargeted].into_iter().find(applies)?;
    directives.targeted = true;
    Some(directives)
}

/// A `Surrogate-Control` directive without its target: `max-age=60;shoal` is `max-age`, `60`
/// and `shoal`; `no-store;shoal` is `no-store` and `shoal`.
fn split_target<'a>(
    name: &'a str,
    argument: Option<&'a str>,
) -> (&'a str, Option<&'a str>, Option<&'a str>) {
    match argument {
        Some(argument) => match argument.rsplit_once(';') {
            Some((argument, target)) => (name, Some(argument), Some(target.trim())),
            None => (name, Some(argument), None),
        },
        None => match name.split_once(';') {
            Some((name, target)) => (name.trim_end(), None, Some(target.trim())),
            None => (name, None, None),
        },
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
        assert!(parse(&["max-age=60, no-cache"]).forbids_stale());
        assert!(!parse(&["max-age=60, public"]).forbids_stale());
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

    fn of_response(fields: &[(&str, &str)], config: &CacheConfig) -> CacheControl {
        CacheControl::of_response(&crate::test_support::header_map(fields), config)
    }

    /// RFC 9213: `CDN-Cache-Control` governs this cache when it has directives, and
    /// `Cache-Control` is then ignored; off, or empty, it changes nothing.
    #[test]
    fn cdn_cache_control_replaces_cache_control() {
        let fields = [
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600, stale-if-error=60"),
        ];
        let cc = of_response(&fields, &CacheConfig::default());
        assert_eq!(
            (cc.max_age, cc.no_store, cc.targeted),
            (Some(600), false, true)
        );
        assert_eq!(cc.stale_if_error, Some(60));
        let off = CacheConfig {
            cdn_cache_control: false,
            ..CacheConfig::default()
        };
        assert!(of_response(&fields, &off).no_store);
        let empty = [("cache-control", "max-age=5"), ("cdn-cache-control", " ")];
        assert_eq!(
            of_response(&empty, &CacheConfig::default()),
            parse(&["max-age=5"])
        );
    }

    /// Edge Architecture 1.0: untargeted directives and those targeted at this node apply,
    /// the latter first; those for other surrogates do not.
    #[test]
    fn surrogate_control_directives_for_this_node() {
        let cc = |value: &str| {
            of_response(
                &[("cache-control", "max-age=1"), ("surrogate-control", value)],
                &CacheConfig::default(),
            )
        };
        let fresh = cc("max-age=3600");
        assert_eq!((fresh.max_age, fresh.targeted), (Some(3600), true));
        assert_eq!(cc("MaX-aGe=3600, foobar").max_age, Some(3600));
        assert_eq!(cc("max-age=3600;shoal").max_age, Some(3600));
        assert_eq!(cc("max-age=60, max-age=3600;shoal").max_age, Some(3600));
        assert!(cc("max-age=60, no-store;shoal").no_store);
        assert_eq!(cc("max-age=60, no-store;shoal").max_age, None);
        let plus = cc("max-age=30+90");
        assert_eq!(
            (plus.max_age, plus.stale_while_revalidate),
            (Some(30), Some(90))
        );
        assert_eq!(cc("max-age=99999999999").max_age, Some(DELTA_SECONDS_CAP));
        // Nothing for this node: Cache-Control governs.
        assert_eq!(cc("max-age=3600;not-for-you"), parse(&["max-age=1"]));
        assert_eq!(cc("content=\"ESI/1.0\""), parse(&["max-age=1"]));
        // Cache-Control's no-store is not this node's once Surrogate-Control speaks.
        let over = of_response(
            &[
                ("cache-control", "no-store"),
                ("surrogate-control", "max-age=10000;shoal"),
            ],
            &CacheConfig::default(),
        );
        assert_eq!((over.no_store, over.max_age), (false, Some(10000)));
        let off = CacheConfig {
            surrogate_control: false,
            ..CacheConfig::default()
        };
        let ignored = of_response(&[("surrogate-control", "no-store")], &off);
        assert!(!ignored.no_store && !ignored.targeted);
    }
}
