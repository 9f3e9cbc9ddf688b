//! The proxy as a whole: hits and misses, methods, proxy headers, HTTP/2, origin failures.

use std::time::Duration;

use shoal::proxy::Counter;

use crate::support::*;

#[tokio::test]
async fn a_miss_then_a_hit_with_one_origin_request() {
    let origin = Origin::fixed("hello").await;
    let node = node(&origin).await;
    let (status, headers, body) = get(&node, "/a").await;
    assert_eq!(
        (status, cache_status(&headers), &body[..]),
        (200, "MISS", &b"hello"[..])
    );
    let (status, headers, body) = get(&node, "/a").await;
    assert_eq!(
        (status, cache_status(&headers), &body[..]),
        (200, "HIT", &b"hello"[..])
    );
    let via = headers["via"].to_str().unwrap();
    assert!(via.starts_with("1.1 shoal (shoal-"), "{via}");
    assert!(headers.contains_key("age"));
    assert_eq!(origin.count("/a"), 1);
}

#[tokio::test]
async fn the_origin_date_is_kept_and_a_missing_one_added() {
    let origin = Origin::start(|seen| {
        let reply = Reply::ok("x").header("cache-control", "max-age=60");
        if seen.target == "/dated" {
            reply.header("date", "Tue, 14 Nov 2023 22:13:20 GMT")
        } else {
            reply
        }
    })
    .await;
    let node = node(&origin).await;
    let (_, headers, _) = get(&node, "/dated").await;
    assert_eq!(headers["date"], "Tue, 14 Nov 2023 22:13:20 GMT");
    let (_, headers, _) = get(&node, "/undated").await;
    assert!(httpdate::parse_http_date(headers["date"].to_str().unwrap()).is_ok());
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get_and_a_head_miss_fetches_get() {
    let origin = Origin::fixed("0123456789").await;
    let node = node(&origin).await;
    let response = client()
        .head(format!("{}/h", base(&node)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-length"], "10");
    assert_eq!(origin.last("/h").method, http::Method::GET);
    let response = client()
        .head(format!("{}/h", base(&node)))
        .send()
        .await
        .unwrap();
    assert_eq!(cache_status(response.headers()), "HIT");
    assert_eq!(response.headers()["content-length"], "10");
    assert!(response.bytes().await.unwrap().is_empty());
    let (_, headers, body) = get(&node, "/h").await;
    assert_eq!(
        (cache_status(&headers), &body[..]),
        ("HIT", &b"0123456789"[..])
    );
    assert_eq!(origin.count("/h"), 1);
}

#[tokio::test]
async fn unsafe_methods_are_forwarded_with_their_body_and_invalidate() {
    let origin = Origin::start(|seen| match seen.method {
        http::Method::GET => {
            Reply::ok(format!("get {}", seen.target)).header("cache-control", "max-age=60")
        }
        _ => Reply::status(201).header("location", "/other"),
    })
    .await;
    let node = node(&origin).await;
    get(&node, "/doc").await;
    get(&node, "/other").await;
    assert_eq!(cache_status(&get(&node, "/doc").await.1), "HIT");
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client()
            .request(method.clone(), format!("{}/doc", base(&node)))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(cache_status(response.headers()), "PASS");
        let seen = origin.last("/doc");
        assert_eq!(
            (seen.method.as_str(), &seen.body[..]),
            (method.as_str(), &b"payload"[..])
        );
        // Both the target and the Location were invalidated.
        assert_eq!(cache_status(&get(&node, "/doc").await.1), "MISS");
        assert_eq!(cache_status(&get(&node, "/other").await.1), "MISS");
    }
}

#[tokio::test]
async fn connect_and_trace_are_refused() {
    let origin = Origin::fixed("x").await;
    let node = node(&origin).await;
    let reply = raw(node.listen[0], b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert!(reply.contains("allow: GET"), "{reply}");
    let reply = raw(
        node.listen[0],
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn only_the_configured_methods_are_served() {
    let origin = Origin::fixed("x").await;
    let node = node_with(&origin, |config| {
        config.server.methods = ["GET", "HEAD", "PURGE"]
            .map(|m| m.parse().unwrap())
            .to_vec();
    })
    .await;
    let reply = raw(
        node.listen[0],
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert!(reply.contains("allow: GET, HEAD, PURGE"), "{reply}");
    // An extension method that is listed goes to the origin.
    let reply = raw(node.listen[0], b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(origin.seen().len(), 1);
    assert_eq!(origin.seen()[0].method.as_str(), "PURGE");
    // CONNECT cannot be listed.
    let error = shoal::config::Config::parse(
        "[server]\nmethods = [\"GET\", \"CONNECT\"]\n",
        std::path::Path::new("s.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("server.methods") && error.contains("CONNECT"),
        "{error}"
    );
}

#[tokio::test]
async fn proxy_headers_are_rewritten_both_ways() {
    let origin = Origin::start(|_| {
        Reply::ok("x")
            .header("cache-control", "max-age=60")
            .header("connection", "x-hop")
            .header("x-hop", "secret")
            .header("keep-alive", "timeout=5")
    })
    .await;
    let node = node(&origin).await;
    let reply = raw(
        node.listen[0],
        b"GET /p HTTP/1.1\r\nHost: www.example\r\nConnection: close, X-Private\r\nX-Private: 1\r\nX-Forwarded-For: 10.1.1.1\r\nTE: trailers\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(!reply.to_ascii_lowercase().contains("x-hop"), "{reply}");
    assert!(
        !reply.to_ascii_lowercase().contains("keep-alive"),
        "{reply}"
    );
    let seen = origin.last("/p");
    assert_eq!(seen.headers["host"], "www.example");
    assert!(!seen.headers.contains_key("x-private"));
    assert!(!seen.headers.contains_key("te"));
    // The client is no trusted proxy: its X-Forwarded-For is dropped, not extended.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;proto=http;host=\"www.example\""
    );
    let via = seen.headers["via"].to_str().unwrap();
    assert!(via.starts_with("1.1 shoal (shoal-"), "{via}");
}

#[tokio::test]
async fn the_host_can_be_rewritten_to_the_origin() {
    let origin = Origin::fixed("x").await;
    let authority = origin.address.to_string();
    let node = node_with(&origin, |config| {
        config.origin.host_header = shoal::config::HostHeader::Origin
    })
    .await;
    get(&node, "/h").await;
    assert_eq!(origin.last("/h").headers["host"], authority.as_str());
}

#[tokio::test]
async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let origin = Origin::start(|seen| {
        Reply::ok(format!("body of {}", seen.target)).header("cache-control", "max-age=60")
    })
    .await;
    let node = node(&origin).await;
    let reply = raw(
        node.listen[0],
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let first = reply.find("body of /1").unwrap();
    let second = reply.find("body of /2").unwrap();
    let third = reply.rfind("body of /1").unwrap();
    assert!(first < second && second < third, "{reply}");
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 3);
    assert_eq!(origin.count("/1"), 1);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let origin = Origin::fixed("over h2").await;
    let node = node(&origin).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for expected in ["MISS", "HIT"] {
        let response = client
            .get(format!("{}/h2", base(&node)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(
            cache_status(response.headers()),
            expected,
            "{:?}",
            response.headers()
        );
        assert_eq!(response.bytes().await.unwrap(), "over h2");
    }
    let via = origin.last("/h2").headers["via"].clone();
    assert!(
        via.to_str().unwrap().starts_with("2 shoal "),
        "Via names the protocol received: {via:?}"
    );
    let response = client
        .post(format!("{}/h2post", base(&node)))
        .body("sent over h2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(origin.last("/h2post").body, "sent over h2");
}

#[tokio::test]
async fn an_unreachable_origin_gives_503_and_a_slow_one_504() {
    let origin = Origin::fixed("x").await;
    let dead = crate::process::free_port();
    let node = node_with(&origin, |config| {
        config.origin.urls = vec![format!("http://{dead}").parse().unwrap()]
    })
    .await;
    // Every host of the pool (here its only one) refused: 503.
    let (status, headers, body) = get(&node, "/x").await;
    assert_eq!(status, 503);
    assert_eq!(cache_status(&headers), "SYNTH");
    assert!(httpdate::parse_http_date(headers["date"].to_str().unwrap()).is_ok());
    assert_eq!(
        &body[..],
        b"503 Service Unavailable: no origin server is reachable\n"
    );
    let metrics = node.proxy.metrics();
    assert_eq!(metrics.get(Counter::OriginErrors), 1);
    assert_eq!(metrics.get(Counter::OriginConnectErrors), 1);

    let slow = Origin::start(|_| Reply::ok("late").delay(Duration::from_secs(3))).await;
    let node = node_with(&slow, |config| {
        config.origin.first_byte_timeout = shoal::config::Span(Duration::from_millis(300))
    })
    .await;
    let (status, _, body) = get(&node, "/slow").await;
    assert_eq!(status, 504);
    assert_eq!(&body[..], b"504 Gateway Timeout: origin timed out\n");
    let metrics = node.proxy.metrics();
    assert_eq!(metrics.get(Counter::OriginTimeouts), 1);
    assert_eq!(metrics.get(Counter::OriginConnectErrors), 0);
}

#[tokio::test]
async fn a_second_origin_is_used_when_the_first_is_down() {
    let dead = TcpListenerGuard::closed_port().await;
    let origin = Origin::fixed("from the second").await;
    let second = origin.url();
    let node = node_with(&origin, |config| {
        config.origin.urls = vec![
            format!("http://{dead}").parse().unwrap(),
            second.parse().unwrap(),
        ];
    })
    .await;
    for path in ["/f1", "/f2"] {
        let (status, _, body) = get(&node, path).await;
        assert_eq!((status, &body[..]), (200, &b"from the second"[..]));
    }
    // Request bodies fail over too: the refused connection took none of them. Two requests,
    // so that one of them tries the dead origin first whatever the rotation.
    for path in ["/p1", "/p2"] {
        let response = client()
            .post(format!("{}{path}", base(&node)))
            .body("posted")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(origin.last(path).body, "posted");
    }
    let chunked = "PUT /p3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\nstream\r\n0\r\n\r\n";
    for _ in 0..2 {
        let reply = raw(node.listen[0], chunked.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert_eq!(origin.last("/p3").body, "stream");
    }
}

#[tokio::test]
async fn request_bodies_over_the_limit_get_413() {
    let origin = Origin::fixed("x").await;
    let node = node_with(&origin, |config| {
        config.server.max_request_body = shoal::config::ByteSize(1000)
    })
    .await;
    let reply = raw(
        node.listen[0],
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let mut chunked =
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"258\r\n");
        chunked.extend_from_slice(&[b'a'; 600]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = raw(node.listen[0], &chunked).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(origin.seen().iter().all(|seen| seen.body.len() <= 1000));
}

#[tokio::test]
async fn http2_request_bodies_over_the_limit_get_413() {
    let origin = Origin::start(|_| Reply::status(200)).await;
    let node = node_with(&origin, |config| {
        config.server.max_request_body = shoal::config::ByteSize(1000)
    })
    .await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let declared = client
        .post(format!("{}/up", base(&node)))
        .body(vec![b'a'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    // Without a declared length the body is cut off as it crosses the limit.
    let chunks =
        futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b'b'; 500])));
    let streamed = client
        .post(format!("{}/up", base(&node)))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);
    assert!(origin.seen().iter().all(|seen| seen.body.len() <= 1000));
}

#[tokio::test]
async fn chunked_request_bodies_are_streamed_to_the_origin() {
    let origin = Origin::start(|_| Reply::status(200)).await;
    let node = node(&origin).await;
    let reply = raw(
        node.listen[0],
        b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(origin.last("/c").body, "hello world");
}

/// Sends `method path` to the node's admin API and returns the body.
async fn admin(node: &shoal::Node, method: reqwest::Method, path: &str) -> String {
    let url = format!("http://{}{path}", node.admin.unwrap());
    client()
        .request(method, url)
        .header("x-shoal-admin", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_admin_api_reports_counters_and_purges() {
    let origin = Origin::fixed("x").await;
    let node = node(&origin).await;
    get(&node, "/adm").await;
    get(&node, "/adm").await;
    let stats: serde_json::Value =
        serde_json::from_str(&admin(&node, reqwest::Method::GET, "/stats").await).unwrap();
    assert_eq!(stats["counters"]["hits"], 1);
    assert_eq!(stats["counters"]["misses"], 1);
    assert_eq!(stats["store"]["entries"], 1);
    let metrics = admin(&node, reqwest::Method::GET, "/metrics").await;
    assert!(
        metrics.contains("# TYPE shoal_hits_total counter\nshoal_hits_total 1\n"),
        "{metrics}"
    );
    let listing: serde_json::Value =
        serde_json::from_str(&admin(&node, reqwest::Method::GET, "/cache").await).unwrap();
    assert!(listing[0]["url"].as_str().unwrap().ends_with("/adm"));
    let purge = format!("/purge?url=http://{}/adm", node.listen[0]);
    let purged: serde_json::Value =
        serde_json::from_str(&admin(&node, reqwest::Method::POST, &purge).await).unwrap();
    assert_eq!(purged["purged"], true);
    assert_eq!(cache_status(&get(&node, "/adm").await.1), "MISS");
}

/// A port on 127.0.0.1 where nothing listens.
pub struct TcpListenerGuard;

impl TcpListenerGuard {
    pub async fn closed_port() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        address
    }
}

#[test]
fn a_bad_config_stops_the_binary_with_file_line_and_key() {
    let directory = std::env::temp_dir().join(format!("shoal-bad-config-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let file = directory.join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[cache]\nmemory = \"lots\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:5: key `cache.memory`: `lots` is not a size",
        file.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    std::fs::write(&file, "[cache]\nmemroy = \"1GiB\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(":2: key `cache.memroy`: unknown field `memroy`"),
        "{stderr}"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["serve", "--cache-mem", "12XB", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cache-mem"));
    std::fs::remove_dir_all(&directory).unwrap();
}

/// The node turns transparent huge pages off for itself (src/main.rs says why: a worker stalls
/// while the kernel fills a new huge page), whatever the system setting.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_node_process_runs_without_transparent_huge_pages() {
    let origin = Origin::fixed("hello").await;
    let args: Vec<std::ffi::OsString> = vec!["--origin".into(), origin.url().into()];
    let node = crate::process::Node::start(&args, crate::process::free_port(), |_| true).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
    let thp = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .map(str::trim);
    assert_eq!(thp, Some("0"), "{status}");
}
