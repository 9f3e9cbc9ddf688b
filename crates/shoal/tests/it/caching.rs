//! RFC 9111 semantics seen from outside: what is stored, for how long, variants, validation,
//! request directives, stale serving, negative caching and keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// An origin answering each path with the given response headers (and the path as body).
async fn origin_with(headers: &'static [(&'static str, &'static str)]) -> Origin {
    Origin::start(move |seen| {
        let mut reply = Reply::ok(format!("body {}", seen.target));
        for (name, value) in headers {
            reply = reply.header(name, value);
        }
        reply
    })
    .await
}

async fn statuses(node: &shoal::Node, path: &str, times: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..times {
        out.push(cache_status(&get(node, path).await.1).to_owned());
    }
    out
}

/// An origin answering with `headers`, a node in front of it, and the cache statuses of two
/// requests for `path` ("MISS HIT", "PASS PASS", ...).
async fn two_requests(
    headers: &[(&'static str, &'static str)],
    path: &str,
) -> (String, Origin, shoal::Node) {
    let headers = Box::leak(headers.to_vec().into_boxed_slice());
    let origin = origin_with(headers).await;
    let node = node(&origin).await;
    let statuses = statuses(&node, path, 2).await.join(" ");
    (statuses, origin, node)
}

#[tokio::test]
async fn storability_follows_the_response_directives() {
    let cases: [(&[(&str, &str)], &str); 8] = [
        (&[("cache-control", "no-store, max-age=60")], "PASS PASS"),
        (&[("cache-control", "private, max-age=60")], "PASS PASS"),
        (
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            "PASS PASS",
        ),
        (
            &[("cache-control", "max-age=60"), ("vary", "*")],
            "PASS PASS",
        ),
        (&[("cache-control", "max-age=60")], "MISS HIT"),
        (&[("cache-control", "s-maxage=60, max-age=0")], "MISS HIT"),
        (&[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")], "MISS HIT"),
        (
            &[
                ("cache-control", "private=\"x-user\", max-age=60"),
                ("x-user", "alice"),
            ],
            "MISS HIT",
        ),
    ];
    for (index, (headers, expected)) in cases.into_iter().enumerate() {
        // Not storable: both go to the origin; storable: a miss, then a hit.
        let (statuses, _, _) = two_requests(headers, "/s").await;
        assert_eq!(statuses, expected, "case {index}: {headers:?}");
    }
}

/// Fields targeted at this cache (RFC 9213 `CDN-Cache-Control`, `Surrogate-Control`) govern
/// it in place of `Cache-Control` and `Expires`, and reach the client unchanged; the origin is
/// told what the node understands.
#[tokio::test]
async fn targeted_fields_govern_this_cache_instead_of_cache_control() {
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[
                ("cache-control", "no-store"),
                ("surrogate-control", "max-age=60;shoal"),
            ],
            "MISS HIT",
        ),
        (
            &[
                ("cache-control", "max-age=60"),
                ("surrogate-control", "no-store"),
            ],
            "PASS PASS",
        ),
        (
            &[
                ("cache-control", "max-age=60"),
                ("surrogate-control", "no-store;another-cdn"),
            ],
            "MISS HIT",
        ),
        (
            &[
                ("cache-control", "private"),
                ("cdn-cache-control", "max-age=60"),
            ],
            "MISS HIT",
        ),
        (
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            "PASS PASS",
        ),
        // A lifetime of 0 from the targeted field: Expires, far ahead, does not count.
        (
            &[
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ("surrogate-control", "max-age=0"),
            ],
            "MISS MISS",
        ),
    ];
    for (index, (headers, expected)) in cases.into_iter().enumerate() {
        let (statuses, origin, node) = two_requests(headers, "/t").await;
        assert_eq!(statuses, expected, "case {index}: {headers:?}");
        let capability = origin.last("/t").headers["surrogate-capability"].clone();
        assert_eq!(capability, "shoal=\"Surrogate/1.0\"");
        let (_, forwarded, _) = get(&node, "/t").await;
        for (name, value) in headers {
            if name.ends_with("control") && *name != "cache-control" {
                assert_eq!(forwarded[*name], *value, "case {index}: {name} forwarded");
            }
        }
    }
    // Off, the fields are only forwarded: Cache-Control governs.
    let origin = origin_with(&[
        ("cache-control", "no-store"),
        ("surrogate-control", "max-age=60"),
        ("cdn-cache-control", "max-age=60"),
    ])
    .await;
    let node = node_with(&origin, |config| {
        config.cache.surrogate_control = false;
        config.cache.cdn_cache_control = false;
    })
    .await;
    assert_eq!(statuses(&node, "/t", 2).await.join(" "), "PASS PASS");
    assert!(!origin
        .last("/t")
        .headers
        .contains_key("surrogate-capability"));
}

#[tokio::test]
async fn a_request_no_store_affects_only_that_request() {
    let origin = origin_with(&[("cache-control", "max-age=60")]).await;
    let node = node(&origin).await;
    let (_, headers, _) = get_with(&node, "/ns", &[("cache-control", "no-store")]).await;
    assert_eq!(cache_status(&headers), "PASS");
    assert_eq!(statuses(&node, "/ns", 2).await, ["MISS", "HIT"]);
}

#[tokio::test]
async fn private_fields_are_not_stored() {
    let origin = origin_with(&[
        ("cache-control", "private=\"x-user\", max-age=60"),
        ("x-user", "alice"),
    ])
    .await;
    let node = node(&origin).await;
    get(&node, "/p").await;
    let (_, headers, _) = get(&node, "/p").await;
    assert_eq!(cache_status(&headers), "HIT");
    assert!(!headers.contains_key("x-user"));
}

#[tokio::test]
async fn set_cookie_responses_can_be_stored_when_configured() {
    let origin = origin_with(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]).await;
    let node = node_with(&origin, |config| config.cache.store_set_cookie = true).await;
    assert_eq!(statuses(&node, "/c", 2).await, ["MISS", "HIT"]);
}

#[tokio::test]
async fn status_codes_cacheable_by_default_and_others() {
    let origin = Origin::start(|seen| {
        let code: u16 = seen.target[1..].parse().unwrap();
        Reply::status(code).header("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT")
    })
    .await;
    let node = node(&origin).await;
    for code in [200, 203, 300, 301, 308, 404, 405, 410, 414, 501] {
        let path = format!("/{code}");
        get(&node, &path).await;
        let (status, headers, _) = get(&node, &path).await;
        assert_eq!((status, cache_status(&headers)), (code, "HIT"), "{code}");
    }
    for code in [302, 307, 400, 403, 500, 502, 503] {
        let path = format!("/{code}");
        get(&node, &path).await;
        get(&node, &path).await;
        assert_eq!(origin.count(&path), 2, "{code} must not be stored");
    }
}

#[tokio::test]
async fn freshness_expires_and_stale_objects_are_revalidated() {
    let origin = Origin::start(|seen| {
        if seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return Reply::status(304)
                .header("cache-control", "max-age=60")
                .header("x-refreshed", "yes");
        }
        Reply::ok("versioned")
            .header("cache-control", "max-age=1")
            .header("etag", "\"v1\"")
    })
    .await;
    let node = node_with(&origin, |config| {
        config.cache.stale_while_revalidate = shoal::config::Span(Duration::ZERO)
    })
    .await;
    assert_eq!(statuses(&node, "/v", 2).await, ["MISS", "HIT"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, headers, body) = get(&node, "/v").await;
    assert_eq!(
        (status, cache_status(&headers), &body[..]),
        (200, "REVALIDATED", &b"versioned"[..])
    );
    assert_eq!(
        headers["x-refreshed"], "yes",
        "the 304's fields update the stored response"
    );
    assert_eq!(origin.last("/v").headers["if-none-match"], "\"v1\"");
    // The 304 gave a new freshness lifetime of 60 s.
    assert_eq!(statuses(&node, "/v", 1).await, ["HIT"]);
    assert_eq!(origin.count("/v"), 2);
}

#[tokio::test]
async fn last_modified_validators_are_used_too() {
    let origin = Origin::start(|seen| {
        if seen.headers.contains_key("if-modified-since") {
            return Reply::status(304);
        }
        Reply::ok("dated")
            .header("cache-control", "no-cache")
            .header("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT")
    })
    .await;
    let node = node(&origin).await;
    // no-cache: stored, but every use is validated first.
    assert_eq!(
        statuses(&node, "/lm", 3).await,
        ["MISS", "REVALIDATED", "REVALIDATED"]
    );
    assert_eq!(
        origin.last("/lm").headers["if-modified-since"],
        "Thu, 01 Jan 2015 00:00:00 GMT"
    );
}

#[tokio::test]
async fn a_changed_object_replaces_the_stored_one() {
    let version = Arc::new(AtomicUsize::new(1));
    let current = Arc::clone(&version);
    let origin = Origin::start(move |_| {
        let v = current.load(Ordering::SeqCst);
        Reply::ok(format!("v{v}"))
            .header("cache-control", "max-age=0, must-revalidate")
            .header("etag", &format!("\"{v}\""))
    })
    .await;
    let node = node(&origin).await;
    assert_eq!(&get(&node, "/c").await.2[..], b"v1");
    version.store(2, Ordering::SeqCst);
    let (_, headers, body) = get(&node, "/c").await;
    assert_eq!((&body[..], cache_status(&headers)), (&b"v2"[..], "MISS"));
}

/// RFC 9111 §4.3.2: without `Last-Modified`, `If-Modified-Since` is held against `Date`.
#[tokio::test]
async fn if_modified_since_without_last_modified_uses_the_date() {
    // Fresh for 31 years: the Date is of 2015.
    let origin = origin_with(&[
        ("cache-control", "max-age=999999999"),
        ("date", "Thu, 01 Jan 2015 00:00:00 GMT"),
    ])
    .await;
    let node = node(&origin).await;
    get(&node, "/dated").await;
    let since = |date: &'static str| [("if-modified-since", date)];
    let (status, headers, _) =
        get_with(&node, "/dated", &since("Fri, 02 Jan 2015 00:00:00 GMT")).await;
    assert_eq!((status, cache_status(&headers)), (304, "HIT"));
    let (status, _, _) = get_with(&node, "/dated", &since("Wed, 31 Dec 2014 00:00:00 GMT")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn client_conditionals_are_answered_from_the_cache() {
    let origin = origin_with(&[
        ("cache-control", "max-age=60"),
        ("etag", "\"e1\""),
        ("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT"),
    ])
    .await;
    let node = node(&origin).await;
    get(&node, "/cond").await;
    let (status, headers, body) =
        get_with(&node, "/cond", &[("if-none-match", "\"e0\", \"e1\"")]).await;
    assert_eq!((status, cache_status(&headers)), (304, "HIT"));
    assert!(body.is_empty());
    assert_eq!(headers["etag"], "\"e1\"");
    assert_eq!(
        get_with(&node, "/cond", &[("if-none-match", "\"e2\"")])
            .await
            .0,
        200
    );
    assert_eq!(
        get_with(
            &node,
            "/cond",
            &[("if-modified-since", "Fri, 02 Jan 2015 00:00:00 GMT")]
        )
        .await
        .0,
        304
    );
    assert_eq!(
        get_with(
            &node,
            "/cond",
            &[("if-modified-since", "Wed, 31 Dec 2014 00:00:00 GMT")]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        get_with(&node, "/cond", &[("if-match", "\"e1\"")]).await.0,
        200
    );
    assert_eq!(
        get_with(&node, "/cond", &[("if-match", "\"e9\"")]).await.0,
        412
    );
    assert_eq!(
        get_with(
            &node,
            "/cond",
            &[("if-unmodified-since", "Wed, 31 Dec 2014 00:00:00 GMT")]
        )
        .await
        .0,
        412
    );
    assert_eq!(origin.count("/cond"), 1);
    // A conditional miss fetches the whole object for the cache and answers the condition.
    let (status, _, _) = get_with(&node, "/cond2", &[("if-none-match", "\"e1\"")]).await;
    assert_eq!(status, 304);
    assert!(!origin.last("/cond2").headers.contains_key("if-none-match"));
    assert_eq!(get(&node, "/cond2").await.0, 200);
}

#[tokio::test]
async fn vary_keeps_one_variant_per_request_value() {
    let origin = Origin::start(|seen| {
        let encoding = seen
            .headers
            .get("accept-encoding")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Reply::ok(format!("encoded for [{encoding}]"))
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Encoding")
    })
    .await;
    let node = node(&origin).await;
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];
    assert_eq!(
        &get_with(&node, "/v", &gzip).await.2[..],
        b"encoded for [gzip]"
    );
    assert_eq!(&get_with(&node, "/v", &br).await.2[..], b"encoded for [br]");
    let (_, headers, body) = get_with(&node, "/v", &[("accept-encoding", "GZIP")]).await;
    assert_eq!(
        (cache_status(&headers), &body[..]),
        ("HIT", &b"encoded for [gzip]"[..])
    );
    let (_, headers, body) = get_with(&node, "/v", &br).await;
    assert_eq!(
        (cache_status(&headers), &body[..]),
        ("HIT", &b"encoded for [br]"[..])
    );
    assert_eq!(origin.count("/v"), 2);
}

#[tokio::test]
async fn authorization_requests_are_stored_only_when_allowed() {
    let origin = Origin::start(|seen| {
        let reply = Reply::ok("secret");
        if seen.target == "/shared" {
            reply.header("cache-control", "public, max-age=60")
        } else {
            reply.header("cache-control", "max-age=60")
        }
    })
    .await;
    let node = node(&origin).await;
    let auth = [("authorization", "Bearer x")];
    get_with(&node, "/own", &auth).await;
    get_with(&node, "/own", &auth).await;
    assert_eq!(origin.count("/own"), 2);
    get_with(&node, "/shared", &auth).await;
    assert_eq!(
        cache_status(&get_with(&node, "/shared", &auth).await.1),
        "HIT"
    );
}

#[tokio::test]
async fn request_directives_are_honoured() {
    let origin = origin_with(&[("cache-control", "max-age=60"), ("etag", "\"x\"")]).await;
    let node = node(&origin).await;
    get(&node, "/r").await;
    assert_eq!(
        cache_status(
            &get_with(&node, "/r", &[("cache-control", "no-cache")])
                .await
                .1
        ),
        "MISS"
    );
    assert_eq!(origin.last("/r").headers["if-none-match"], "\"x\"");
    assert_eq!(
        cache_status(&get_with(&node, "/r", &[("pragma", "no-cache")]).await.1),
        "MISS"
    );
    assert_eq!(
        cache_status(
            &get_with(&node, "/r", &[("cache-control", "min-fresh=120")])
                .await
                .1
        ),
        "MISS"
    );
    assert_eq!(
        cache_status(
            &get_with(&node, "/r", &[("cache-control", "max-age=30")])
                .await
                .1
        ),
        "HIT"
    );
    let (status, headers, _) =
        get_with(&node, "/absent", &[("cache-control", "only-if-cached")]).await;
    assert_eq!((status, cache_status(&headers)), (504, "SYNTH"));
    assert_eq!(origin.count("/absent"), 0);
    assert_eq!(
        get_with(&node, "/r", &[("cache-control", "only-if-cached")])
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn max_stale_and_max_age_zero() {
    let origin = origin_with(&[("cache-control", "max-age=1")]).await;
    let node = node_with(&origin, |config| {
        config.cache.stale_while_revalidate = shoal::config::Span(Duration::ZERO)
    })
    .await;
    get(&node, "/ms").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, headers, _) = get_with(&node, "/ms", &[("cache-control", "max-stale=100")]).await;
    assert_eq!(cache_status(&headers), "STALE");
    assert_eq!(origin.count("/ms"), 1);
    assert_eq!(
        cache_status(
            &get_with(&node, "/ms", &[("cache-control", "max-age=0")])
                .await
                .1
        ),
        "MISS"
    );
}

#[tokio::test]
async fn age_accounts_for_the_origin_age_and_time_in_cache() {
    let origin = origin_with(&[("cache-control", "max-age=600"), ("age", "100")]).await;
    let node = node(&origin).await;
    let (_, headers, _) = get(&node, "/age").await;
    let first: u64 = headers["age"].to_str().unwrap().parse().unwrap();
    assert!((100..=101).contains(&first), "{first}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, headers, _) = get(&node, "/age").await;
    let later: u64 = headers["age"].to_str().unwrap().parse().unwrap();
    assert!(later > first, "{later} after {first}");
}

#[tokio::test]
async fn negative_answers_are_cached_briefly_and_errors_never() {
    let origin = Origin::start(|seen| match seen.target.as_str() {
        "/gone" => Reply::status(404),
        _ => Reply::status(503).header("cache-control", "max-age=60"),
    })
    .await;
    let node = node_with(&origin, |config| {
        config.cache.negative_ttl = shoal::config::Span(Duration::from_secs(1))
    })
    .await;
    assert_eq!(statuses(&node, "/gone", 2).await, ["MISS", "HIT"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    get(&node, "/gone").await;
    assert_eq!(origin.count("/gone"), 2, "the negative TTL ended");
    get(&node, "/down").await;
    get(&node, "/down").await;
    assert_eq!(origin.count("/down"), 2);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let counter = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&counter);
    let origin = Origin::start(move |_| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::ok(format!("generation {n}"))
            .header("cache-control", "max-age=2, stale-while-revalidate=30")
            .delay(Duration::from_millis(200))
    })
    .await;
    let node = node(&origin).await;
    get(&node, "/swr").await;
    // Dates have one-second resolution, so a response can look up to a second old on arrival.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut stale = Vec::new();
    for _ in 0..5 {
        let (_, headers, body) = get(&node, "/swr").await;
        stale.push((cache_status(&headers).to_owned(), body));
    }
    assert!(
        stale
            .iter()
            .all(|(status, body)| status == "STALE" && &body[..] == b"generation 1"),
        "{stale:?}"
    );
    assert!(eventually(|| origin.count("/swr") == 2).await);
    // The refresh answers after the origin's 200 ms delay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, headers, body) = get(&node, "/swr").await;
    assert_eq!(
        (cache_status(&headers), &body[..]),
        ("HIT", &b"generation 2"[..])
    );
    assert_eq!(origin.count("/swr"), 2, "exactly one background refresh");
}

#[tokio::test]
async fn stale_content_is_served_when_the_origin_is_down() {
    let origin = origin_with(&[("cache-control", "max-age=1")]).await;
    let node = node_with(&origin, |config| {
        config.cache.stale_while_revalidate = shoal::config::Span(Duration::ZERO)
    })
    .await;
    get(&node, "/keep").await;
    origin.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, headers, body) = get(&node, "/keep").await;
    assert_eq!(
        (status, cache_status(&headers), &body[..]),
        (200, "STALE", &b"body /keep"[..])
    );
}

#[tokio::test]
async fn stale_content_is_served_when_the_origin_errs_but_not_past_must_revalidate() {
    let failing = Arc::new(AtomicUsize::new(0));
    let fail = Arc::clone(&failing);
    let origin = Origin::start(move |seen| {
        if fail.load(Ordering::SeqCst) == 1 {
            return Reply::status(500);
        }
        let strict = match seen.target.as_str() {
            "/strict" => ", must-revalidate",
            "/no-cache" => ", no-cache",
            _ => "",
        };
        Reply::ok("good").header("cache-control", &format!("max-age=1{strict}"))
    })
    .await;
    let node = node_with(&origin, |config| {
        config.cache.stale_while_revalidate = shoal::config::Span(Duration::ZERO)
    })
    .await;
    get(&node, "/lenient").await;
    get(&node, "/strict").await;
    get(&node, "/no-cache").await;
    failing.store(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, headers, body) = get(&node, "/lenient").await;
    assert_eq!(
        (status, cache_status(&headers), &body[..]),
        (200, "STALE", &b"good"[..])
    );
    let (status, _, _) = get(&node, "/strict").await;
    assert_eq!(status, 500);
    // `no-cache` allows no use without a successful revalidation, even on an error.
    let (status, _, _) = get(&node, "/no-cache").await;
    assert_eq!(status, 500);
    // Nor when the origin cannot be reached at all.
    origin.stop();
    assert_eq!(get(&node, "/strict").await.0, 503);
    assert_eq!(get(&node, "/no-cache").await.0, 503);
    assert_eq!(get(&node, "/lenient").await.0, 200);
}

#[tokio::test]
async fn query_strings_in_the_key_can_be_sorted_or_filtered() {
    let origin = Origin::fixed("q").await;
    let node = node_with(&origin, |config| {
        config.cache.query = shoal::config::QueryKey::Sort;
        config.cache.ignore_query_params = vec!["utm_source".into()];
    })
    .await;
    get(&node, "/q?b=2&a=1").await;
    assert_eq!(cache_status(&get(&node, "/q?a=1&b=2").await.1), "HIT");
    assert_eq!(
        cache_status(&get(&node, "/q?a=1&utm_source=x&b=2").await.1),
        "HIT"
    );
    assert_eq!(cache_status(&get(&node, "/q?a=2&b=2").await.1), "MISS");
}

#[tokio::test]
async fn the_status_header_name_is_configurable() {
    let origin = Origin::fixed("x").await;
    let node = node_with(&origin, |config| {
        config.cache.status_header = Some(http::HeaderName::from_static("x-edge"))
    })
    .await;
    let (_, headers, _) = get(&node, "/n").await;
    assert_eq!(headers["x-edge"], "MISS");
    assert!(!headers.contains_key("x-cache"));
}

#[tokio::test]
async fn objects_over_the_size_limit_stream_through_unstored() {
    let big = vec![b'b'; 300_000];
    let origin =
        Origin::start(move |_| Reply::ok(big.clone()).header("cache-control", "max-age=60")).await;
    let node = node_with(&origin, |config| {
        config.cache.max_object_size = shoal::config::ByteSize(100_000)
    })
    .await;
    let (status, headers, body) = get(&node, "/big").await;
    assert_eq!(
        (status, cache_status(&headers), body.len()),
        (200, "PASS", 300_000)
    );
    get(&node, "/big").await;
    assert_eq!(origin.count("/big"), 2);
}

#[tokio::test]
async fn the_ram_store_stays_within_its_budget() {
    let origin =
        Origin::start(|_| Reply::ok(vec![b'z'; 100_000]).header("cache-control", "max-age=60"))
            .await;
    let node = node_with(&origin, |config| {
        config.cache.memory = shoal::config::ByteSize(1_000_000);
        config.cache.max_object_size = shoal::config::ByteSize(200_000);
    })
    .await;
    for index in 0..30 {
        get(&node, &format!("/fill/{index}")).await;
    }
    let stats = node.proxy.store().stats();
    assert!(stats.bytes <= 1_000_000, "{stats:?}");
    assert!(stats.evictions >= 20, "{stats:?}");
}

#[tokio::test]
async fn objects_of_unknown_length_over_the_limit_pass_through_whole() {
    let pieces: Vec<bytes::Bytes> = (0..40u8)
        .map(|i| bytes::Bytes::from(vec![b'a' + i % 26; 50_000]))
        .collect();
    let expected: Vec<u8> = pieces.concat();
    let origin = Origin::start(move |_| {
        Reply::ok("")
            .header("cache-control", "max-age=60")
            .body(Body::Paced(pieces.clone(), Duration::from_millis(1)))
    })
    .await;
    let node = node_with(&origin, |config| {
        config.cache.max_object_size = shoal::config::ByteSize(100_000)
    })
    .await;
    let (status, headers, body) = get(&node, "/chunked-big").await;
    assert_eq!((status, cache_status(&headers)), (200, "MISS"));
    assert!(body == expected, "the whole body arrives, in order");
    // Fetched again (hit-for-miss: the answer might be storable now), and again too large.
    let (_, headers, body) = get(&node, "/chunked-big").await;
    assert_eq!(cache_status(&headers), "MISS");
    assert_eq!(body.len(), expected.len());
    assert_eq!(origin.count("/chunked-big"), 2);
    let (_, headers, _) = get(&node, "/chunked-big").await;
    assert_eq!(cache_status(&headers), "MISS", "never stored");
    assert_eq!(origin.count("/chunked-big"), 3);
}
