//! Header rewriting at the proxy's two edges (RFC 9110 §7.6): hop-by-hop fields removed
//! (including those named in `Connection`), `Via`, `X-Forwarded-For` and `Forwarded` appended,
//! `Host` chosen, and the fields a stored response keeps.

use std::net::SocketAddr;

use http::header::{
    HeaderName, HeaderValue, AGE, CONNECTION, CONTENT_LENGTH, DATE, FORWARDED, HOST,
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::HeaderMap;
use smallvec::SmallVec;

use crate::config::{FieldName, HostHeader, OriginConfig};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static PROXY_AUTHENTICATION_INFO: HeaderName = HeaderName::from_static("proxy-authentication-info");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The fields that apply to one connection only (with the proxy authentication fields, which
/// are between a client and the proxy next to it, and which RFC 9111 §3.1 keeps out of a
/// stored response).
static HOP_BY_HOP: [&HeaderName; 10] = [
    &CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &TE,
    &TRAILER,
    &TRANSFER_ENCODING,
    &UPGRADE,
    &PROXY_AUTHORIZATION,
    &PROXY_AUTHENTICATE,
    &PROXY_AUTHENTICATION_INFO,
];

/// Removes the fields that apply to one connection only, and those `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds the few there are (most messages have none, or only
    // `Connection`); only those are looked up again to be removed.
    let mut found: u16 = 0;
    for name in headers.keys() {
        if let Some(index) = HOP_BY_HOP.iter().position(|hop| *hop == name) {
            found |= 1 << index;
        }
    }
    if found == 0 {
        return;
    }
    // The options named in `Connection` (cloning a value is a reference count).
    let named: SmallVec<[HeaderValue; 2]> = headers.get_all(CONNECTION).iter().cloned().collect();
    for value in &named {
        for option in value.as_bytes().split(|&byte| byte == b',') {
            if let Ok(option) = std::str::from_utf8(option.trim_ascii()) {
                headers.remove(option);
            }
        }
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if found & (1 << index) != 0 {
            headers.remove(*name);
        }
    }
}

/// Appends the text of `ip` to `out` (IPv4 without the formatting machinery: this runs for
/// every request that goes to an origin).
fn push_ip(out: &mut FieldText, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().iter().enumerate() {
                if index > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(*octet).as_bytes());
            }
        }
        std::net::IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// The text of a field value being built: on the stack unless it is unusually long.
type FieldText = SmallVec<[u8; 128]>;

/// Who sent a request to this node, as far as its forwarding fields go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A proxy of `server.trusted_proxies`: its forwarding fields say who its client was.
    TrustedProxy,
    /// Anyone else: forwarding fields it sent are claims nobody checked.
    Client,
}

/// The fields in which proxies say who the client was and how it connected.
static FORWARDING: [&HeaderName; 4] =
    [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &FORWARDED, &X_REAL_IP];

/// Removes the fields named in `unkeyed` (`origin.strip_request_headers`) and, from a client
/// that is not a trusted proxy, the forwarding fields: one pass over the names finds which are
/// there (usually none), and only those are removed.
fn remove_claims(headers: &mut HeaderMap, sender: Sender, unkeyed: &[FieldName]) {
    let mut found: SmallVec<[HeaderName; 4]> = SmallVec::new();
    for name in headers.keys() {
        let forwarding = sender == Sender::Client && FORWARDING.contains(&name);
        if forwarding || unkeyed.iter().any(|field| field.0 == name) {
            found.push(name.clone());
        }
    }
    for name in found {
        headers.remove(name);
    }
}

/// Rewrites a client's request headers for the origin.
pub fn forward_request(
    headers: &mut HeaderMap,
    client: SocketAddr,
    sender: Sender,
    host: Option<&str>,
    via: &HeaderValue,
    scheme: &str,
    config: &OriginConfig,
) {
    remove_hop_by_hop(headers);
    remove_claims(headers, sender, &config.strip_request_headers);
    // Room for the fields added below at once, rather than growing the map for each.
    headers.reserve(5);
    match &config.host_header {
        HostHeader::Preserve => {
            let present = headers
                .get(HOST)
                .is_some_and(|value| Some(value.as_bytes()) == host.map(str::as_bytes));
            if !present {
                if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
                    headers.insert(HOST, host);
                }
            }
        }
        // Set per attempt by `Upstream::send`, which knows the origin it contacts.
        HostHeader::Origin => {}
        HostHeader::Fixed(name) => {
            if let Ok(value) = HeaderValue::from_str(name) {
                headers.insert(HOST, value);
            }
        }
    }
    headers.append(VIA, via.clone());
    let ip = client.ip();
    let mut text = FieldText::new();
    if config.x_forwarded_for {
        if let Some(previous) = headers.get(&X_FORWARDED_FOR) {
            text.extend_from_slice(previous.as_bytes());
            text.extend_from_slice(b", ");
        }
        push_ip(&mut text, ip);
        if let Ok(value) = HeaderValue::from_bytes(&text) {
            headers.insert(&X_FORWARDED_FOR, value);
        }
        // The de facto companion of X-Forwarded-For: origins that redirect HTTP to HTTPS
        // read it to tell the two apart behind a proxy. A trusted proxy's says how its own
        // client came.
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(
                &X_FORWARDED_PROTO,
                HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
            );
        }
    }
    if config.forwarded {
        text.clear();
        text.extend_from_slice(b"for=");
        if ip.is_ipv6() {
            text.extend_from_slice(b"\"[");
            push_ip(&mut text, ip);
            text.extend_from_slice(b"]\"");
        } else {
            push_ip(&mut text, ip);
        }
        text.extend_from_slice(b";proto=");
        text.extend_from_slice(scheme.as_bytes());
        if let Some(host) = host.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"')) {
            text.extend_from_slice(b";host=\"");
            text.extend_from_slice(host.as_bytes());
            text.push(b'"');
        }
        if let Ok(value) = HeaderValue::from_bytes(&text) {
            headers.append(FORWARDED, value);
        }
    }
}

/// Rewrites an origin's response headers for the client and for storage: hop-by-hop and
/// framing fields go (the client side sets its own framing), `Age` goes (it is recomputed), and
/// a missing `Date` is added with the time the response arrived (RFC 9110 §6.6.1).
pub fn forward_response(headers: &mut HeaderMap, received_at: u64) {
    remove_hop_by_hop(headers);
    headers.remove(CONTENT_LENGTH);
    headers.remove(AGE);
    if !headers.contains_key(DATE) {
        headers.insert(DATE, crate::clock::http_date(received_at / 1000));
    }
}

/// Fields a `304 Not Modified` from the origin may update in a stored response: all of them
/// except framing and the fields that describe the stored body itself (RFC 9111 §3.2): its
/// length, coding, range and digest, and its `ETag`, which must keep naming the bytes kept.
pub fn merge_not_modified(stored: &mut HeaderMap, update: &HeaderMap) {
    const ABOUT_THE_BODY: [&str; 5] = [
        "content-length",
        "content-encoding",
        "content-range",
        "content-md5",
        "etag",
    ];
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in update {
        if ABOUT_THE_BODY.contains(&name.as_str()) {
            continue;
        }
        if !replaced.contains(&name) {
            stored.remove(name);
            replaced.push(name);
        }
        stored.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as map;

    #[test]
    fn hop_by_hop_fields_and_connection_options_are_removed() {
        let mut headers = map(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authentication-info", "nextnonce=x"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("accept"));
    }

    #[test]
    fn forwarding_headers_are_appended() {
        let mut headers = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("via", "1.0 other"),
            ("host", "a.example"),
        ]);
        let config = OriginConfig::default();
        let client: SocketAddr = "127.0.0.9:5555".parse().unwrap();
        forward_request(
            &mut headers,
            client,
            Sender::TrustedProxy,
            Some("a.example"),
            &HeaderValue::from_static("1.1 shoal"),
            "http",
            &config,
        );
        // A trusted proxy's word on its own client is kept.
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        let via: Vec<_> = headers.get_all("via").iter().collect();
        assert_eq!(via, ["1.0 other", "1.1 shoal"]);
        assert_eq!(
            headers["forwarded"],
            "for=127.0.0.9;proto=http;host=\"a.example\""
        );
        assert_eq!(headers["host"], "a.example");

        let config = OriginConfig {
            host_header: HostHeader::Origin,
            ..OriginConfig::default()
        };
        let mut headers = map(&[
            ("host", "a.example"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4;proto=http;host=evil.example"),
            ("x-real-ip", "1.2.3.4"),
            ("x-original-url", "/admin"),
            ("x-http-method-override", "DELETE"),
        ]);
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        forward_request(
            &mut headers,
            v6,
            Sender::Client,
            Some("a.example"),
            &HeaderValue::from_static("2 shoal"),
            "https",
            &config,
        );
        // Only what the node saw: the client's claims are gone.
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers.get_all("forwarded").iter().count(), 1);
        for gone in ["x-real-ip", "x-original-url", "x-http-method-override"] {
            assert!(!headers.contains_key(gone), "{gone} was forwarded");
        }
        // The origin's own host is set by `Upstream::send`, per attempt.
        assert_eq!(headers["host"], "a.example");
        assert_eq!(headers["via"], "2 shoal");
        assert!(headers["forwarded"]
            .to_str()
            .unwrap()
            .starts_with("for=\"[::1]\";proto=https"));
    }

    #[test]
    fn not_modified_updates_stored_fields() {
        let mut stored = map(&[
            ("etag", "\"1\""),
            ("cache-control", "max-age=1"),
            ("content-type", "text/plain"),
            ("x-a", "1"),
            ("x-a", "2"),
        ]);
        let update = map(&[
            ("cache-control", "max-age=60"),
            ("content-length", "0"),
            ("etag", "\"2\""),
            ("content-md5", "N7UdGUp1E+RbVvZSTy1R8g=="),
            ("x-a", "3"),
        ]);
        merge_not_modified(&mut stored, &update);
        assert_eq!(stored["etag"], "\"1\"");
        assert!(!stored.contains_key("content-md5"));
        assert_eq!(stored["cache-control"], "max-age=60");
        assert_eq!(stored["content-type"], "text/plain");
        assert_eq!(stored.get_all("x-a").iter().count(), 1);
        assert!(!stored.contains_key("content-length"));
    }
}
