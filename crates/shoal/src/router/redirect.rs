//! The HTTP redirect mode: a request for a CDN URL is answered `302 Found` to the same path on
//! the node chosen for the client, with the ordered fallbacks as RFC 6249 `Link: <...>;
//! rel=duplicate; pri=N` fields so that a client can fail over without asking again.
//! `?explain` (or `X-Shoal-Explain: 1`) answers with why instead, as JSON.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LINK, LOCATION};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::map::Matched;
use super::Router;
use crate::admin::text;

/// Answers one request: the redirect, or with `?explain` why.
pub(super) fn answer(
    router: &Router,
    request: &http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let http = router.http_config();
    let client = match http.trust_x_forwarded_for {
        true => request
            .headers()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(|last| last.trim().parse::<IpAddr>().ok())
            .unwrap_or(peer.ip()),
        false => peer.ip(),
    };
    let path = request.uri().path();
    let query: Vec<&str> = request
        .uri()
        .query()
        .map(|query| {
            query
                .split('&')
                .filter(|pair| *pair != "explain" && !pair.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let explain = request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "explain"))
        || request
            .headers()
            .get("x-shoal-explain")
            .is_some_and(|value| value == "1");
    let target = match query.is_empty() {
        true => path.to_owned(),
        false => format!("{path}?{}", query.join("&")),
    };
    let hash = http
        .hash_paths
        .then(|| xxhash_rust::xxh3::xxh3_64(path.as_bytes()));
    let map = router.zone.map.load();
    let (nodes, matched, group) = map.ranked(client, 1 + http.fallbacks, hash);
    let urls: Vec<String> = nodes
        .iter()
        .map(|node| format!("{}{target}", node.url.trim_end_matches('/')))
        .collect();
    if explain {
        let why = match matched {
            Matched::Prefix(length) => format!("operator prefix /{length}"),
            Matched::Asn(asn) => format!("AS{asn}"),
            Matched::Country(code) => format!("country {}", String::from_utf8_lossy(&code)),
            Matched::Continent(code) => format!("continent {}", String::from_utf8_lossy(&code)),
            Matched::Default => "default rule".to_owned(),
        };
        let body = serde_json::json!({
            "client": client.to_string(),
            "rule": why,
            "group": group,
            "nodes": nodes.iter().map(|node| serde_json::json!({
                "name": node.name, "url": format!("{}{target}", node.url.trim_end_matches('/')), "up": node.is_up(),
            })).collect::<Vec<_>>(),
            "hashed_path": hash.is_some(),
        });
        return Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .header(CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_default();
    }
    let Some(first) = urls.first() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no node to send you to\n".into(),
        );
    };
    let mut response = Response::builder()
        .status(StatusCode::FOUND)
        .header(LOCATION, first.as_str())
        // The answer depends on the client and on the nodes' health: not for caches.
        .header(CACHE_CONTROL, "no-store");
    for (priority, url) in urls.iter().enumerate().skip(1) {
        response = response.header(LINK, format!("<{url}>; rel=duplicate; pri={priority}"));
    }
    response.body(Full::new(Bytes::new())).unwrap_or_else(|_| {
        text(
            StatusCode::BAD_REQUEST,
            "the path cannot be redirected\n".into(),
        )
    })
}
