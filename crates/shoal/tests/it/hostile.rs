//! A hostile origin and a hostile client (issue 26): each test is an attack that once worked,
//! made on real sockets, with what the node must do instead.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use bytes::Bytes;

use crate::support::{
    admin_get, answer, cache_status, client, eventually, get, get_with, node, node_for, node_with,
    raw, Answer, Body, Origin, RawOrigin, Reply,
};

/// The bytes a pipelined client reads after the node's answer to its first request: with the
/// origin's framing copied through, they would be of the origin's choosing.
const INJECTED: &str = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Injected: yes\r\n\r\nsmuggled";

/// An origin's reply whose framing a proxy could read two ways, or whose coding it cannot
/// apply: 502, nothing stored, and the client's next request answered by the node itself.
#[tokio::test]
async fn origin_framing_that_could_be_read_two_ways_is_502_and_never_stored() {
    let chunk = format!("hello{INJECTED}");
    let chunked = format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len());
    let origin = RawOrigin::start(move |request, _| {
        let target = request.split(' ').nth(1).unwrap();
        let head = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n";
        let bytes = match target {
            "/length-and-chunked" => {
                format!("{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}")
            }
            "/chunked-and-length" => {
                format!("{head}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n{chunked}")
            }
            "/gzip" => format!("{head}Transfer-Encoding: gzip\r\n\r\n\x1f\x08\x00gzipped-bytes"),
            "/gzip-then-chunked" => {
                format!("{head}Transfer-Encoding: gzip, chunked\r\n\r\n{chunked}")
            }
            "/two-codings" => {
                format!("{head}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}")
            }
            "/http10-chunked" => format!(
                "HTTP/1.0 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"
            ),
            "/switching" => format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n{INJECTED}"),
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
        };
        Answer {
            bytes: bytes.into_bytes(),
            close: true,
        }
    })
    .await;
    let node = node_for(&origin.url, |config| {
        // 405 from the node itself, with this list: the answer to the second request.
        config.server.methods = vec!["GET".parse().unwrap(), "HEAD".parse().unwrap()];
    })
    .await;
    let paths = [
        "/length-and-chunked",
        "/chunked-and-length",
        "/gzip",
        "/gzip-then-chunked",
        "/two-codings",
        "/http10-chunked",
        "/switching",
    ];
    for path in paths {
        let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
        let pipelined = format!(
            "GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\nDELETE /next HTTP/1.1\r\nHost: a.test\r\n\r\n"
        );
        stream.write_all(pipelined.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
        let received = String::from_utf8_lossy(&received);
        assert!(
            received.starts_with("HTTP/1.1 502 "),
            "{path}: {received:?}"
        );
        assert!(!received.contains("X-Injected"), "{path}: {received:?}");
        // What follows the 502 is the node's own answer to the second request.
        let second = received.match_indices("HTTP/1.1 ").nth(1).map(|(at, _)| at);
        if let Some(at) = second {
            assert!(
                received[at..].starts_with("HTTP/1.1 405 "),
                "{path}: {received:?}"
            );
        }
        let (status, headers, _) = get(&node, path).await;
        assert_eq!((status, cache_status(&headers)), (502, "SYNTH"), "{path}");
    }
    for path in paths {
        assert!(
            origin.fetched(path) >= 2,
            "{path}: stored ({} fetches)",
            origin.fetched(path)
        );
    }
}

/// A body longer than the origin's `Content-Length` never reaches the client past that
/// length: the rest is the origin's next response on a connection that is then not reused.
#[tokio::test]
async fn an_origin_body_longer_than_its_length_is_cut_at_the_length() {
    let origin = RawOrigin::start(|_, _| {
        answer(&format!(
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nhello{INJECTED}"
        ))
    })
    .await;
    let node = node_for(&origin.url, |_| {}).await;
    for _ in 0..2 {
        let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
        stream
            .write_all(b"GET /long HTTP/1.1\r\nHost: a.test\r\n\r\nGET /long HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut received = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
        let received = String::from_utf8_lossy(&received);
        assert!(!received.contains("X-Injected"), "{received:?}");
        assert_eq!(received.matches("\r\n\r\nhello").count(), 2, "{received:?}");
    }
    assert_eq!(origin.fetched("/long"), 1);
    assert_eq!(
        origin.connections(),
        1,
        "one connection, whose extra bytes were never read as a response"
    );
}

/// Forwarding fields from a client are claims nobody checked: they never reach the origin,
/// whose answer would then be cached for everyone, unless the client is a trusted proxy.
#[tokio::test]
async fn client_forwarding_claims_never_reach_the_origin() {
    let origin = Origin::fixed("hello").await;
    let claims = [
        ("forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
    ];
    let node = node(&origin).await;
    get_with(&node, "/claims", &claims).await;
    let seen = origin.last("/claims").headers;
    let host = seen["host"].to_str().unwrap().to_owned();
    assert_eq!(
        seen.get_all("forwarded").iter().collect::<Vec<_>>(),
        [format!("for=127.0.0.1;proto=http;host=\"{host}\"").as_str()]
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert!(!seen.contains_key("x-real-ip"));

    let silent = node_with(&origin, |config| {
        config.origin.x_forwarded_for = false;
        config.origin.forwarded = false;
    })
    .await;
    get_with(&silent, "/silent", &claims).await;
    let seen = origin.last("/silent").headers;
    for (name, _) in claims {
        assert!(!seen.contains_key(name), "{name} reached the origin");
    }

    let behind_a_proxy = node_with(&origin, |config| {
        config.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    get_with(&behind_a_proxy, "/trusted", &claims).await;
    let seen = origin.last("/trusted").headers;
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-real-ip"], "6.6.6.6");
    assert_eq!(seen.get_all("forwarded").iter().count(), 2);
}

/// The cache key and the origin request name the same path: the path is normalized once
/// (unreserved escapes decoded, dot segments resolved) and the origin asked for that form.
#[tokio::test]
async fn the_origin_is_asked_for_the_path_the_key_was_made_of() {
    let origin =
        Origin::start(|seen| Reply::ok(seen.target.clone()).header("cache-control", "max-age=60"))
            .await;
    let node = node(&origin).await;
    let address = node.listen[0];
    let ask = move |target: &'static str| async move {
        let request = format!("GET {target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
        raw(address, request.as_bytes()).await
    };
    let reply = ask("/%78pk").await;
    assert!(reply.ends_with("\r\n\r\n/xpk"), "{reply}");
    let reply = ask("/xpk").await;
    assert!(
        reply.contains("x-cache: HIT") && reply.ends_with("/xpk"),
        "{reply}"
    );
    for (target, expected) in [
        ("/a/%2e%2e/b?q=1", "/b?q=1"),
        ("/../secret", "/secret"),
        ("/%2E%2E/secret", "/secret"),
        ("/d/./e/../f", "/d/f"),
    ] {
        let reply = ask(target).await;
        assert!(
            reply.ends_with(&format!("\r\n\r\n{expected}")),
            "{target}: {reply}"
        );
    }
    assert_eq!(origin.count("/xpk"), 1);
    assert_eq!(origin.count("/secret"), 1, "both spellings share one key");
    assert!(origin
        .seen()
        .iter()
        .all(|seen| !seen.target.contains('%') && !seen.target.contains("..")));
}

/// Fields that make an origin answer another method, path or host than the key holds are not
/// forwarded, and a 405 or 501 (about the method, not the URL) is not cached negatively.
#[tokio::test]
async fn unkeyed_override_fields_cannot_poison_the_cache() {
    let origin = Origin::start(|seen| {
        let overridden = [
            "x-http-method-override",
            "x-original-url",
            "x-forwarded-host",
            "x-host",
        ]
        .iter()
        .any(|name| seen.headers.contains_key(*name));
        match (overridden, seen.target.as_str()) {
            (true, _) => Reply::status(404),
            (false, "/method") => Reply::status(405),
            (false, "/not-implemented") => Reply::status(501),
            _ => Reply::ok("page").header("cache-control", "max-age=60"),
        }
    })
    .await;
    let node = node(&origin).await;
    for (name, value) in [
        ("x-http-method-override", "DELETE"),
        ("x-original-url", "/admin"),
        ("x-forwarded-host", "evil.example"),
        ("x-host", "evil.example"),
    ] {
        let path = format!("/page-{name}");
        let (status, _, body) = get_with(&node, &path, &[(name, value)]).await;
        assert_eq!((status, &body[..]), (200, &b"page"[..]), "{name}");
        let (status, headers, _) = get(&node, &path).await;
        assert_eq!((status, cache_status(&headers)), (200, "HIT"), "{name}");
    }
    for path in ["/method", "/not-implemented"] {
        get(&node, path).await;
        get(&node, path).await;
        assert_eq!(origin.count(path), 2, "{path} was cached negatively");
    }
}

/// Credentials in the request's host are refused, never forwarded as a `Host`.
#[tokio::test]
async fn userinfo_in_the_host_is_refused() {
    let origin = Origin::fixed("hello").await;
    let node = node(&origin).await;
    for request in [
        "GET http://user:pw@a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: user@a.test\r\n\r\n",
    ] {
        let reply = raw(node.listen[0], request.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400 "), "{request:?}: {reply}");
    }
    assert!(origin.seen().is_empty());
}

/// A node that is (through any path) its own origin answers 508 at once.
#[tokio::test]
async fn a_request_loop_is_answered_508_at_once() {
    let address = crate::process::free_port();
    let node = node_for(&format!("http://{address}"), |config| {
        config.server.listen = vec![address];
    })
    .await;
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let response = client()
            .request(method.clone(), format!("http://{address}/loop"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 508, "{method}");
    }
    assert_eq!(
        node.proxy
            .metrics()
            .get(shoal::proxy::Counter::OriginRequests),
        2
    );
}

/// A page elsewhere cannot drive the admin API through the operator's browser: not by a
/// cross-site form or fetch (Origin, and no custom header), not by DNS rebinding (Host). And
/// the bans it could add are capped.
#[tokio::test]
async fn the_admin_api_refuses_cross_site_and_rebound_requests() {
    let origin = Origin::fixed("hello").await;
    let node = node_with(&origin, |config| config.cache.max_bans = 2).await;
    let admin = node.admin.unwrap();
    let send = |method: reqwest::Method, path: &str, headers: &[(&str, &str)]| {
        let mut request = client().request(method, format!("http://{admin}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    use reqwest::Method;
    let form = ("content-type", "application/x-www-form-urlencoded");
    let marked = ("x-shoal-admin", "1");
    let foreign = ("origin", "http://evil.example");
    assert_eq!(send(Method::POST, "/ban?regex=.*", &[form]).await, 403);
    assert_eq!(send(Method::POST, "/reload", &[]).await, 403);
    assert_eq!(
        send(Method::POST, "/purge?url=http://a/x", &[marked, foreign]).await,
        403
    );
    assert_eq!(
        send(
            Method::POST,
            "/upstreams/state?pool=origin&host=x&state=down",
            &[foreign]
        )
        .await,
        403
    );
    for path in ["/config", "/cache", "/stats"] {
        assert_eq!(
            send(Method::GET, path, &[("host", "evil.example")]).await,
            421,
            "{path}"
        );
    }
    assert_eq!(
        send(
            Method::POST,
            "/ban?prefix=http://a/",
            &[marked, ("host", "evil.example:9090")]
        )
        .await,
        421
    );
    assert!(node.proxy.bans().is_empty(), "a refused request banned");
    // The admin's own page, and the command line, still work.
    let own = format!("http://{admin}");
    let from_the_dashboard = [marked, ("origin", own.as_str())];
    assert_eq!(
        send(Method::POST, "/ban?prefix=http://a/1", &from_the_dashboard).await,
        200
    );
    assert_eq!(
        send(
            Method::POST,
            "/ban?prefix=http://a/2",
            &[("content-type", "application/json")]
        )
        .await,
        200
    );
    assert_eq!(
        send(Method::GET, "/config", &[("host", "localhost")]).await,
        200
    );
    // The cap, with a clear answer.
    let response = client()
        .post(format!("http://{admin}/ban?prefix=http://a/3"))
        .header("x-shoal-admin", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 507);
    assert!(response.text().await.unwrap().contains("cache.max_bans"));
    assert_eq!(node.proxy.bans().len(), 2);
}

/// The token's scheme is case-insensitive, and a token of another length is just wrong.
#[tokio::test]
async fn the_admin_token_scheme_is_case_insensitive() {
    let origin = Origin::fixed("hello").await;
    let token = "the-admin-token-0123456789";
    let node = node_with(&origin, |config| config.admin.token = Some(token.into())).await;
    let status = |authorization: String| {
        let request = client()
            .get(format!("http://{}/stats", node.admin.unwrap()))
            .header("authorization", authorization);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("Bearer {token}")).await, 200);
    assert_eq!(status(format!("bearer {token}")).await, 200);
    assert_eq!(status(format!("Bearer {token}x")).await, 401);
    assert_eq!(status("Bearer short".into()).await, 401);
}

/// With the shipped retry settings, a host that hangs is timed out and the request goes on
/// to the healthy host beside it; the hung host's timeouts count against it until it is
/// ejected.
#[tokio::test]
async fn a_hung_host_is_timed_out_retried_elsewhere_and_ejected() {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_address = hung.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hung.accept().await {
            held.push(stream);
        }
    });
    let healthy = Origin::fixed("healthy").await;
    let node = node_for(&healthy.url(), |config| {
        // Shorter than shipped, to keep the test short; the deadline is left to follow it.
        config.origin.first_byte_timeout = shoal::config::Span(Duration::from_millis(300));
        assert!(
            config.retries.deadline.is_none(),
            "the shipped deadline is derived"
        );
        config.pools = vec![shoal::config::PoolConfig {
            name: "origin".into(),
            policy: shoal::config::Policy::Failover,
            parent: false,
            hosts: [format!("http://{hung_address}"), healthy.url()]
                .iter()
                .map(|url| shoal::config::HostConfig {
                    url: url.parse().unwrap(),
                    weight: 1,
                    max_connections: 0,
                })
                .collect(),
            health: None,
            tls_ca: None,
            danger_accept_invalid_certs_for_testing: false,
            ..shoal::config::PoolConfig::of_hosts("", Vec::new())
        }];
    })
    .await;
    for index in 0..4 {
        let (status, _, body) = get(&node, &format!("/hung-{index}")).await;
        assert_eq!(
            (status, &body[..]),
            (200, &b"healthy"[..]),
            "request {index}"
        );
    }
    let upstreams = admin_get(&node, "/upstreams", None).await;
    assert_eq!(upstreams[0]["hosts"][0]["state"], "ejected", "{upstreams}");
}

/// Requests the parser refuses are in the access log, so an operator sees an attack; a flood
/// of them is logged within a budget, not line for line.
#[tokio::test]
async fn refused_requests_are_in_the_access_log_within_a_budget() {
    let origin = Origin::fixed("hello").await;
    let dir = crate::disk::TempDir::new("refused-log");
    let path = dir.0.join("access.log");
    let log = path.clone();
    let node = node_with(&origin, |config| {
        config.log.access = Some(log);
        config.server.max_request_line = shoal::config::ByteSize(256);
        config.server.header_read_timeout = shoal::config::Span(Duration::from_millis(300));
    })
    .await;
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(400));
    let cases: [(&[u8], u16); 4] = [
        (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (long.as_bytes(), 414),
        (b"GET /slow HTTP/1.1\r\nHost: a\r\n", 408),
        (
            b"GET /big HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999\r\n\r\n",
            413,
        ),
    ];
    for (request, status) in cases {
        let reply = raw(node.listen[0], request).await;
        assert!(reply.starts_with(&format!("HTTP/1.1 {status} ")), "{reply}");
    }
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        eventually(|| read().lines().count() == 4).await,
        "{}",
        read()
    );
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let statuses: Vec<_> = lines
        .iter()
        .map(|line| line["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [400, 414, 408, 413]);
    assert_eq!(lines[2]["target"], "/slow");
    assert_eq!(lines[3]["target"], "/big");
    assert!(lines.iter().all(|line| line["cache"] == "SYNTH"));

    // A flood: far more refusals than lines.
    let garbage: &[u8] = b"\x16\x03\x01 not http\r\n\r\n";
    let before = read().lines().count();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        tasks.push(tokio::spawn(raw(node.listen[0], garbage)));
    }
    for task in tasks {
        task.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = read().lines().count() - before;
    assert!(logged > 0, "the flood left no trace");
    assert!(logged < 1000, "every one of 1,000 refusals was logged");
}

/// Any client's successful write invalidates the URL (RFC 9111 §4.4), as a mark that the
/// next request must revalidate, not as a removal: a flood of writes cannot empty the cache
/// of what the origin can confirm with a 304.
#[tokio::test]
async fn a_write_marks_the_stored_copy_stale_instead_of_removing_it() {
    let origin =
        Origin::start(
            |seen| match (seen.method.as_str(), seen.headers.get("if-none-match")) {
                ("GET", Some(etag)) if etag == "\"v1\"" => {
                    Reply::status(304).header("etag", "\"v1\"")
                }
                ("GET", _) => Reply::ok("hot object")
                    .header("cache-control", "max-age=600")
                    .header("etag", "\"v1\""),
                _ => Reply::status(204),
            },
        )
        .await;
    let node = node(&origin).await;
    get(&node, "/hot").await;
    assert_eq!(cache_status(&get(&node, "/hot").await.1), "HIT");
    for _ in 0..3 {
        let response = client()
            .post(format!("{}/hot", crate::support::base(&node)))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let (status, headers, body) = get(&node, "/hot").await;
        assert_eq!(
            (status, cache_status(&headers), &body[..]),
            (200, "REVALIDATED", &b"hot object"[..])
        );
        assert!(origin.last("/hot").headers.contains_key("if-none-match"));
        assert_eq!(cache_status(&get(&node, "/hot").await.1), "HIT");
    }
    let full_fetches = origin
        .seen()
        .iter()
        .filter(|seen| seen.method == "GET" && !seen.headers.contains_key("if-none-match"))
        .count();
    assert_eq!(full_fetches, 1, "the object was fetched whole only once");
}

/// Reads the first piece of `path` and goes away.
async fn read_a_little(node: &shoal::Node, path: &str) {
    let url = format!("{}{path}", crate::support::base(node));
    let mut response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.chunk().await.unwrap().is_some());
}

/// A client that reads a little of a large object and leaves does not make the node fetch
/// the rest for nobody; a small rest is still fetched, so the next request finds it stored.
#[tokio::test]
async fn a_fill_every_reader_left_is_abandoned_past_a_size() {
    const PIECE: usize = 256 << 10;
    let origin = Origin::start(|seen| {
        let pieces = if seen.target.starts_with("/small") {
            8
        } else {
            96
        };
        let body = Body::Paced(
            vec![Bytes::from(vec![b'x'; PIECE]); pieces],
            Duration::from_millis(5),
        );
        let reply = Reply::ok("")
            .header("cache-control", "max-age=60")
            .body(body);
        match seen.target.starts_with("/sliced") {
            true => reply
                .header("etag", "\"v1\"")
                .header("content-length", &(pieces * PIECE).to_string()),
            false => reply,
        }
    })
    .await;
    let node = node_with(&origin, |config| {
        config.cache.finish_without_readers = shoal::config::ByteSize(4 << 20);
    })
    .await;
    let counter = |counter| node.proxy.metrics().get(counter);
    use shoal::proxy::Counter;
    for (round, path) in ["/large", "/sliced"].iter().enumerate() {
        read_a_little(&node, path).await;
        assert!(
            eventually(|| counter(Counter::AbandonedFills) == round as u64 + 1).await,
            "{path}: the fill went on for nobody"
        );
        assert!(eventually(|| node.proxy.fetches_in_flight() == 0).await);
        let (_, headers, body) = get(&node, path).await;
        assert_eq!(body.len(), 96 * PIECE, "{path}");
        match *path {
            // The head and the slices filled stay; the rest is asked for again.
            "/sliced" => assert!(origin.count(path) > 1, "the rest of the slices"),
            _ => assert_ne!(
                cache_status(&headers),
                "HIT",
                "{path}: a partial fill was stored"
            ),
        }
    }
    // 2 MiB: the rest is within the limit, so the object is stored for the next request.
    read_a_little(&node, "/small").await;
    assert!(eventually(|| node.proxy.fetches_in_flight() == 0).await);
    let (_, headers, body) = get(&node, "/small").await;
    assert_eq!((cache_status(&headers), body.len()), ("HIT", 8 * PIECE));
    assert_eq!(counter(Counter::AbandonedFills), 2);
}
