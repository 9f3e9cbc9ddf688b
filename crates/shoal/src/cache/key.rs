//! Cache keys: scheme, host and target normalized and hashed to 128 bits with XXH3, which is
//! specified bit for bit and so gives the same key on every node and platform. Hashing is
//! incremental, so computing a key allocates nothing unless the query string must be sorted or
//! filtered. Variant keys (for `Vary`) are the normalized values of the varying request headers.

use http::HeaderMap;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{CacheConfig, QueryKey};

/// A map keyed by cache keys. The keys are already hashes, so the default SipHash (about 160
/// instructions a lookup, several lookups per request) buys nothing; foldhash's seeded folded
/// multiply still keeps the buckets unpredictable to whoever picks the URLs.
pub type KeyMap<V> = std::collections::HashMap<CacheKey, V, KeyHasher>;

/// The hasher of [`KeyMap`], for other tables whose keys are hashes already.
pub type KeyHasher = foldhash::fast::RandomState;

/// The identity of a cached resource: a 128-bit hash of its normalized URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub u128);

impl CacheKey {
    /// Computes the key of `scheme://host/target`. `host` may carry a port; the default port is
    /// dropped and the name lowercased; percent-escapes in the path are normalized.
    pub fn new(scheme: &str, host: &str, target: &str, config: &CacheConfig) -> CacheKey {
        let mut hasher = Xxh3::new();
        hasher.update(scheme.as_bytes());
        hasher.update(b"://");
        let host = strip_default_port(host, scheme);
        for byte in host.bytes() {
            hasher.update(&[byte.to_ascii_lowercase()]);
        }
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        hash_path(&mut hasher, path);
        if let Some(query) = query {
            hash_query(&mut hasher, query, config);
        }
        CacheKey(hasher.digest128())
    }

    /// The key of slice `index` of the object stored under this key, for one variant (its
    /// hash) and one version of the object (the hash of its validator). Slices of different
    /// versions never share a key, so an object is never assembled from another version's
    /// slices; every node computes the same keys, so each slice has one owner in a cluster.
    pub fn slice(self, variant: u64, version: u64, index: u64) -> CacheKey {
        let mut hasher = Xxh3::new();
        hasher.update(b"slice\0");
        hasher.update(&self.0.to_le_bytes());
        hasher.update(&variant.to_le_bytes());
        hasher.update(&version.to_le_bytes());
        hasher.update(&index.to_le_bytes());
        CacheKey(hasher.digest128())
    }

    /// The key that places slice `index` of the object stored under this key in a cluster (its
    /// owner) and among a pool's hosts: known before the object's version and variant are,
    /// since a range miss must be sent to its slice's owner before its answer tells them.
    /// Slice 0's is the object's own, so a whole request and a range in the first slice go to
    /// the same owner.
    pub fn slice_route(self, index: u64) -> CacheKey {
        if index == 0 {
            return self;
        }
        let mut hasher = Xxh3::new();
        hasher.update(b"slice route\0");
        hasher.update(&self.0.to_le_bytes());
        hasher.update(&index.to_le_bytes());
        CacheKey(hasher.digest128())
    }

    /// The key of one variant's fetch: the request's normalized values of the fields `vary`
    /// names, under this key. Requests that want the same variant share it, so their misses
    /// collapse into one fetch per variant, not one for the whole URL.
    pub fn variant<'a>(
        self,
        vary: impl IntoIterator<Item = &'a str>,
        request: &HeaderMap,
    ) -> CacheKey {
        let mut hasher = Xxh3::new();
        hasher.update(b"variant\0");
        hasher.update(&self.0.to_le_bytes());
        for name in vary {
            hasher.update(name.as_bytes());
            match normalized_header(request, name) {
                Some(value) => {
                    hasher.update(b"=");
                    hasher.update(value.as_bytes());
                }
                None => hasher.update(b"!"),
            }
            hasher.update(b"\0");
        }
        CacheKey(hasher.digest128())
    }

    /// The key as 32 hex digits, for the admin API and logs.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

fn strip_default_port<'a>(host: &'a str, scheme: &str) -> &'a str {
    let default = if scheme == "https" { ":443" } else { ":80" };
    host.strip_suffix(default).unwrap_or(host)
}

/// Hashes the path in its normal form (see [`normalize_path`]).
fn hash_path(hasher: &mut Xxh3, path: &str) {
    match normalize_path(path) {
        Some(normal) => hasher.update(normal.as_bytes()),
        None => hasher.update(path.as_bytes()),
    }
}

/// The normal form of a request path (RFC 3986 §6.2.2), or `None` when `path` is in it
/// already (most are: the check allocates nothing). Escapes of unreserved characters are
/// decoded (`/%7Efoo` is `/~foo`), other escapes get uppercase hex digits (`%2f` is `%2F`, and
/// stays an escape), then dot segments are resolved (`/a/%2e%2e/b` is `/b`). The node keys the
/// cache and asks the origin with this one form, so that the two can never disagree on which
/// resource a path names.
pub fn normalize_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let escaped = bytes.contains(&b'%');
    if !escaped && !has_dot_segment(path) {
        return None;
    }
    let decoded = match escaped {
        false => path.to_owned(),
        true => {
            let mut out = Vec::with_capacity(bytes.len());
            let mut index = 0;
            while index < bytes.len() {
                let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
                if let (b'%', Some(high), Some(low)) =
                    (bytes[index], hex(index + 1), hex(index + 2))
                {
                    let decoded = (high * 16 + low) as u8;
                    if decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded) {
                        out.push(decoded);
                    } else {
                        out.push(b'%');
                        out.push(bytes[index + 1].to_ascii_uppercase());
                        out.push(bytes[index + 2].to_ascii_uppercase());
                    }
                    index += 3;
                } else {
                    out.push(bytes[index]);
                    index += 1;
                }
            }
            // Only ASCII was decoded, and every other byte was copied whole.
            String::from_utf8(out).ok()?
        }
    };
    let normal = match has_dot_segment(&decoded) {
        true => remove_dot_segments(&decoded),
        false => decoded,
    };
    (normal != path).then_some(normal)
}

/// Whether a `.` or `..` segment is in `path`.
fn has_dot_segment(path: &str) -> bool {
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
}

/// RFC 3986 §5.2.4 for a path that starts with `/` (others are returned as they are).
fn remove_dot_segments(path: &str) -> String {
    let Some(rest) = path.strip_prefix('/') else {
        return path.to_owned();
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            other => {
                kept.push(other);
                continue;
            }
        }
        // `/a/b/..` is the directory `/a/`.
        if last {
            kept.push("");
        }
    }
    let mut normal = String::with_capacity(path.len());
    for segment in kept {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    normal
}

fn hash_query(hasher: &mut Xxh3, query: &str, config: &CacheConfig) {
    if config.query == QueryKey::Ignore {
        return;
    }
    if config.query == QueryKey::Keep && config.ignore_query_params.is_empty() {
        hasher.update(b"?");
        hasher.update(query.as_bytes());
        return;
    }
    let mut parameters: Vec<&str> = query
        .split('&')
        .filter(|parameter| {
            let name = parameter
                .split_once('=')
                .map_or(*parameter, |(name, _)| name);
            !config
                .ignore_query_params
                .iter()
                .any(|ignored| ignored == name)
        })
        .collect();
    if config.query == QueryKey::Sort {
        parameters.sort_unstable();
    }
    if parameters.is_empty() {
        return;
    }
    hasher.update(b"?");
    for (index, parameter) in parameters.iter().enumerate() {
        if index > 0 {
            hasher.update(b"&");
        }
        hasher.update(parameter.as_bytes());
    }
}

/// Whether a variant stored for the request values `stored` (each field `Vary` named, and the
/// request's [`normalized_header`] value when it was stored) may answer a request with
/// `request`'s header fields.
pub fn variant_matches(stored: &[(String, Option<String>)], request: &HeaderMap) -> bool {
    stored
        .iter()
        .all(|(name, value)| normalized_header(request, name) == *value)
}

/// The normalized value of one request header for variant matching (RFC 9111 §4.1): all field
/// lines joined with commas, whitespace around list items removed, and case folded for the
/// content-negotiation fields whose values are case-insensitive.
pub fn normalized_header(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let fold_case = matches!(
        name,
        "accept" | "accept-encoding" | "accept-language" | "accept-charset"
    );
    let mut normalized = String::new();
    for value in values {
        for item in value.to_str().unwrap_or("").split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if !normalized.is_empty() {
                normalized.push(',');
            }
            for (index, part) in item.split(';').enumerate() {
                if index > 0 {
                    normalized.push(';');
                }
                normalized.push_str(part.trim());
            }
        }
    }
    if fold_case {
        normalized.make_ascii_lowercase();
    }
    Some(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, target: &str, config: &CacheConfig) -> CacheKey {
        CacheKey::new("http", host, target, config)
    }

    #[test]
    fn paths_are_normalized_once_as_rfc_3986_says() {
        let cases = [
            ("/plain/path.html", None),
            ("/%78pk", Some("/xpk")),
            ("/%7efoo", Some("/~foo")),
            ("/a%2fb", Some("/a%2Fb")),
            ("/a%2Fb", None),
            ("/%2e%2e/", Some("/")),
            ("/../", Some("/")),
            ("/..", Some("/")),
            ("/a/b/..", Some("/a/")),
            ("/a/b/../c", Some("/a/c")),
            ("/a/./b", Some("/a/b")),
            ("/a/.", Some("/a/")),
            ("/a//b/../c", Some("/a//c")),
            ("/../../etc/passwd", Some("/etc/passwd")),
            ("/a/%2E%2e/b", Some("/b")),
            ("/a/.b/..c", None),
            ("/50%", None),
            ("/%zz", None),
            ("/%c3%a9", Some("/%C3%A9")),
            ("*", None),
        ];
        for (path, expected) in cases {
            assert_eq!(normalize_path(path).as_deref(), expected, "{path}");
        }
    }

    #[test]
    fn normalization() {
        let config = CacheConfig::default();
        let same = |a: (&str, &str), b: (&str, &str)| {
            assert_eq!(
                key(a.0, a.1, &config),
                key(b.0, b.1, &config),
                "{a:?} vs {b:?}"
            );
        };
        same(("Example.COM", "/a"), ("example.com:80", "/a"));
        same(("h", "/%7efoo"), ("h", "/~foo"));
        same(("h", "/%78pk"), ("h", "/xpk"));
        same(("h", "/%2e%2e/secret"), ("h", "/../secret"));
        same(("h", "/a/./b/../c"), ("h", "/a/c"));
        same(("h", "/a%2fb"), ("h", "/a%2Fb"));
        same(("h", ""), ("h", "/"));
        assert_ne!(key("h", "/a?x=1", &config), key("h", "/a?x=2", &config));
        assert_ne!(key("h", "/a%2Fb", &config), key("h", "/a/b", &config));
        assert_ne!(key("h", "/a", &config), key("h2", "/a", &config));
    }

    #[test]
    fn query_options() {
        let sort = CacheConfig {
            query: QueryKey::Sort,
            ..CacheConfig::default()
        };
        assert_eq!(key("h", "/?b=2&a=1", &sort), key("h", "/?a=1&b=2", &sort));
        let keep = CacheConfig::default();
        assert_ne!(key("h", "/?b=2&a=1", &keep), key("h", "/?a=1&b=2", &keep));
        let ignore_some = CacheConfig {
            ignore_query_params: vec!["utm_source".into()],
            ..CacheConfig::default()
        };
        assert_eq!(
            key("h", "/p?utm_source=x&id=3", &ignore_some),
            key("h", "/p?id=3", &ignore_some)
        );
        assert_eq!(
            key("h", "/p?utm_source=x", &ignore_some),
            key("h", "/p", &ignore_some)
        );
        let ignore = CacheConfig {
            query: QueryKey::Ignore,
            ..CacheConfig::default()
        };
        assert_eq!(key("h", "/p?id=3", &ignore), key("h", "/p", &ignore));
    }

    #[test]
    fn keys_are_stable_across_builds() {
        // The key is part of the cluster's contract: it must never change silently.
        assert_eq!(
            key("example.com", "/index.html", &CacheConfig::default())
                .to_hex()
                .len(),
            32
        );
        assert_eq!(
            key("example.com", "/index.html", &CacheConfig::default()),
            key("EXAMPLE.com:80", "/index.html", &CacheConfig::default())
        );
    }

    #[test]
    fn header_normalization() {
        let mut headers = HeaderMap::new();
        headers.append("accept-encoding", "GZIP , br".parse().unwrap());
        headers.append("accept-encoding", "zstd".parse().unwrap());
        assert_eq!(
            normalized_header(&headers, "accept-encoding").unwrap(),
            "gzip,br,zstd"
        );
        assert_eq!(normalized_header(&headers, "accept-language"), None);
    }
}
