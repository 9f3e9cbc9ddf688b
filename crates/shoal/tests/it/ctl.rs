//! The admin API's token and new endpoints, and `shoal ctl` (the real binary) against a node.

use std::process::Output;

use crate::support::*;

const TOKEN: &str = "a-test-token-of-some-length";

/// Runs `shoal ctl ARGS` against `node`'s admin API.
async fn ctl(node: &shoal::Node, args: &[&str]) -> Output {
    let admin = format!("http://{}", node.admin.unwrap());
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["ctl", "--admin", &admin])
            .args(&args)
            .env_remove("SHOAL_ADMIN_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn ctl_shows_status_stats_upstreams_and_inspects_and_purges() {
    let origin = Origin::fixed("hello").await;
    let node = node(&origin).await;
    get(&node, "/page").await;
    get(&node, "/page").await;

    let status = ctl(&node, &["status"]).await;
    assert!(status.status.success());
    assert!(stdout(&status).contains("version"), "{}", stdout(&status));

    let top = stdout(&ctl(&node, &["top-urls", "--top", "3"]).await);
    assert!(top.starts_with("url "), "{top}");
    assert!(top.contains("/page  2 "), "{top}");

    let stats = ctl(&node, &["stats"]).await;
    assert!(stdout(&stats).contains("hit ratio"), "{}", stdout(&stats));
    let json = ctl(&node, &["--json", "stats"]).await;
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["counters"]["hits"], 1);

    let upstreams = ctl(&node, &["upstreams"]).await;
    assert!(stdout(&upstreams).contains(&origin.address.to_string()));
    let host = origin.address.to_string();
    let set = ctl(&node, &["upstream", "set", "origin", &host, "drain"]).await;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(stdout(&ctl(&node, &["upstreams"]).await).contains("drain"));

    let url = format!("http://{}/page", node.listen[0]);
    let inspect = ctl(&node, &["inspect", &url]).await;
    let text = stdout(&inspect);
    assert!(
        text.contains("200 in ram") && text.contains("cache-control: max-age=60"),
        "{text}"
    );
    let json = ctl(&node, &["--json", "inspect", &url]).await;
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["variants"][0]["bytes"], 5);
    assert_eq!(parsed["variants"][0]["tiers"][0], "ram");

    let purge = ctl(&node, &["purge", &url]).await;
    assert_eq!(stdout(&purge), format!("purged {url}\n"));
    assert!(stdout(&ctl(&node, &["inspect", &url]).await).contains("not cached"));
}

#[tokio::test]
async fn ctl_failures_exit_non_zero_with_one_line() {
    let origin = Origin::fixed("x").await;
    let node = node(&origin).await;
    let bad = ctl(&node, &["upstream", "set", "origin", "nowhere:1", "down"]).await;
    assert!(!bad.status.success());
    let error = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.starts_with("shoal ctl: 404"), "{error}");

    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["ctl", "--admin", "http://127.0.0.1:1", "status"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the admin API"));
}

#[tokio::test]
async fn a_token_guards_every_admin_endpoint() {
    let origin = Origin::fixed("x").await;
    let node = node_with(&origin, |config| config.admin.token = Some(TOKEN.into())).await;
    let admin = format!("http://{}", node.admin.unwrap());
    for path in ["/health", "/stats", "/status", "/upstreams"] {
        let response = client().get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert!(response.headers().contains_key("www-authenticate"));
        let wrong = client()
            .get(format!("{admin}{path}"))
            .bearer_auth("a-test-token-of-some-lengtX")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        let right = client()
            .get(format!("{admin}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200, "{path}");
    }
    let refused = ctl(&node, &["status"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unauthorized"));
    let allowed = ctl(&node, &["--token", TOKEN, "status"]).await;
    assert!(allowed.status.success());
}

#[tokio::test]
async fn fetches_in_flight_are_listed() {
    let (release, gate) = tokio::sync::mpsc::channel(1);
    let gate = std::sync::Mutex::new(Some(gate));
    let origin = Origin::start(move |_| {
        Reply::ok("")
            .header("cache-control", "max-age=60")
            .header("content-length", "4")
            .body(Body::Gated(gate.lock().unwrap().take().unwrap()))
    })
    .await;
    let node = node(&origin).await;
    let url = format!("{}/slow", base(&node));
    let pending =
        tokio::spawn(async move { client().get(url).send().await.unwrap().bytes().await });
    let admin = format!("http://{}", node.admin.unwrap());
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        let body = client()
            .get(format!("{admin}/fetches"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        listed = serde_json::from_slice(&body).unwrap();
        if listed.as_array().is_some_and(|keys| !keys.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    release
        .send(bytes::Bytes::from_static(b"done"))
        .await
        .unwrap();
    assert_eq!(&pending.await.unwrap().unwrap()[..], b"done");
}

#[tokio::test]
async fn bans_by_prefix_regex_and_tag_make_matching_objects_absent() {
    let origin = Origin::start(|seen| {
        let tags = match seen.target.as_str() {
            "/p/1" => "product-1 shop",
            "/p/2" => "shop, product-2",
            _ => "",
        };
        Reply::ok(format!("body of {}", seen.target))
            .header("cache-control", "max-age=600")
            .header("surrogate-key", tags)
    })
    .await;
    let node = node(&origin).await;
    let paths = [
        "/img/a.png",
        "/img/b.png",
        "/css/c.css",
        "/js/d.js",
        "/p/1",
        "/p/2",
    ];
    for path in paths {
        get(&node, path).await;
    }
    let status = |path: &'static str| {
        let node = &node;
        async move { cache_status(&get(node, path).await.1).to_owned() }
    };
    let prefix = format!("http://{}/img/", node.listen[0]);
    let banned = ctl(&node, &["ban", &prefix]).await;
    assert!(
        banned.status.success(),
        "{}",
        String::from_utf8_lossy(&banned.stderr)
    );
    assert_eq!(status("/img/a.png").await, "MISS");
    assert_eq!(status("/img/b.png").await, "MISS");
    assert_eq!(status("/css/c.css").await, "HIT");
    // Fetched again after the ban: not banned again.
    assert_eq!(status("/img/a.png").await, "HIT");

    ctl(&node, &["ban", "--regex", r"\.(css|js)$"]).await;
    assert_eq!(status("/css/c.css").await, "MISS");
    assert_eq!(status("/js/d.js").await, "MISS");

    ctl(&node, &["purge-tag", "product-1"]).await;
    assert_eq!(status("/p/1").await, "MISS");
    assert_eq!(status("/p/2").await, "HIT");
    ctl(&node, &["purge-tag", "shop"]).await;
    assert_eq!(status("/p/1").await, "MISS");
    assert_eq!(status("/p/2").await, "MISS");

    let bans = stdout(&ctl(&node, &["bans"]).await);
    assert!(
        bans.contains("prefix") && bans.contains("regex") && bans.contains("product-1"),
        "{bans}"
    );
    assert_eq!(origin.count("/img/a.png"), 2);
    let bad = ctl(&node, &["ban", "--regex", "("]).await;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad regex"));
}

#[tokio::test]
async fn metrics_have_latency_histograms_and_upstream_gauges() {
    let origin = Origin::fixed("x").await;
    let node = node(&origin).await;
    for _ in 0..3 {
        get(&node, "/m").await;
    }
    let text = client()
        .get(format!("http://{}/metrics", node.admin.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(text.contains("# TYPE shoal_request_duration_seconds histogram"));
    assert_eq!(
        line("shoal_request_duration_seconds_count{cache=\"HIT\"}"),
        "2"
    );
    assert_eq!(
        line("shoal_request_duration_seconds_bucket{cache=\"HIT\",le=\"+Inf\"}"),
        "2"
    );
    assert_eq!(
        line("shoal_request_duration_seconds_count{cache=\"MISS\"}"),
        "1"
    );
    assert_eq!(
        line("shoal_origin_first_byte_seconds_count{pool=\"origin\"}"),
        "1"
    );
    let host = origin.address.to_string();
    assert_eq!(
        line(&format!(
            "shoal_upstream_up{{pool=\"origin\",host=\"{host}\"}}"
        )),
        "1"
    );
    assert_eq!(line("shoal_collapsed_total"), "0");
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_and_reopens_after_rotation() {
    use shoal::config::LogFormat;
    let origin = Origin::fixed("logged").await;
    let dir = crate::disk::TempDir::new("log");
    let path = dir.0.join("access.log");
    let json = path.clone();
    let node = node_with(&origin, |config| config.log.access = Some(json)).await;
    get(&node, "/one").await;
    get_with(&node, "/one", &[("user-agent", "tester/1")]).await;
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        eventually(|| read(&path).lines().count() == 2).await,
        "{}",
        read(&path)
    );
    let lines: Vec<serde_json::Value> = read(&path)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["cache"], "MISS");
    assert_eq!(lines[1]["cache"], "HIT");
    assert_eq!(lines[1]["target"], "/one");
    assert_eq!(lines[1]["status"], 200);
    assert_eq!(lines[1]["bytes"], 6);
    assert_eq!(lines[1]["client"], "127.0.0.1");
    // The miss names the origin host that answered and its time; the hit has none.
    assert_eq!(lines[0]["upstream"], origin.address.to_string());
    let origin_ms = lines[0]["origin_ms"].as_f64().unwrap();
    assert!(origin_ms > 0.0 && origin_ms <= lines[0]["duration_ms"].as_f64().unwrap());
    assert!(lines[1]["upstream"].is_null() && lines[1]["origin_ms"].is_null());

    // Rotation: the file is moved away, the node told to reopen, and a new file starts.
    std::fs::rename(&path, dir.0.join("access.log.1")).unwrap();
    node.proxy.reopen_access_log();
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    get(&node, "/two").await;
    assert!(eventually(|| read(&path).contains("/two")).await);
    assert!(!read(&dir.0.join("access.log.1")).contains("/two"));

    let combined = dir.0.join("combined.log");
    let file = combined.clone();
    let node = node_with(&origin, move |config| {
        config.log.access = Some(file);
        config.log.format = LogFormat::Combined;
    })
    .await;
    get_with(&node, "/c", &[("user-agent", "tester/2")]).await;
    assert!(
        eventually(|| read(&combined).contains("\"GET /c HTTP/1.1\" 200 6 \"-\" \"tester/2\""))
            .await,
        "{}",
        read(&combined)
    );
    let line = read(&combined);
    assert!(
        line.contains(" cache=MISS total_ms=")
            && line.contains(&format!(" upstream={} origin_ms=", origin.address))
            && line.ends_with(" country=- asn=-\n"),
        "{line}"
    );
}

#[tokio::test]
async fn the_traffic_report_counts_clients_by_country_and_network() {
    let origin = Origin::fixed("12345").await;
    let geoip = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/geoip");
    let node = node_with(&origin, |config| {
        config.log.geoip_country = Some(geoip.join("country.mmdb"));
        config.log.geoip_asn = Some(geoip.join("asn.mmdb"));
    })
    .await;
    get(&node, "/a").await;
    get(&node, "/a").await;
    // Loopback clients are in no database.
    let mut text = String::new();
    for _ in 0..100 {
        text = stdout(&ctl(&node, &["report", "country"]).await);
        if text.contains("unknown  2") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(text.starts_with("country  requests  bytes"), "{text}");
    assert!(text.contains("unknown  2         10"), "{text}");
    let json = ctl(&node, &["--json", "report", "asn", "--top", "5"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[0]["key"], "unknown");
    assert_eq!(rows[0]["bytes"], 10);
}

#[tokio::test]
async fn the_config_in_force_is_shown_without_secrets() {
    let origin = Origin::fixed("x").await;
    let node = node_with(&origin, |config| config.admin.token = Some(TOKEN.into())).await;
    let shown = ctl(&node, &["--token", TOKEN, "config"]).await;
    assert!(shown.status.success());
    let config: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(config["admin"]["token"], "(set)");
    assert!(!stdout(&shown).contains(TOKEN));
    assert_eq!(config["cache"]["memory"], "256MiB");
    assert_eq!(config["server"]["keepalive_timeout"], "75s");
    assert_eq!(config["origin"]["urls"][0], origin.url());
    assert_eq!(config["cache"]["slice_size"], "1MiB");
}

#[tokio::test]
async fn http2_requests_are_logged_too() {
    let origin = Origin::fixed("h2 body").await;
    let dir = crate::disk::TempDir::new("h2log");
    let path = dir.0.join("access.log");
    let file = path.clone();
    let node = node_with(&origin, |config| config.log.access = Some(file)).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(format!("{}/h2", base(&node))).send().await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(&response.bytes().await.unwrap()[..], b"h2 body");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        eventually(|| read().contains("\"/h2\"")).await,
        "{}",
        read()
    );
    let line: serde_json::Value = serde_json::from_str(read().lines().next().unwrap()).unwrap();
    assert_eq!(line["protocol"], "HTTP/2.0");
    assert_eq!(line["bytes"], 7);
    assert_eq!(line["cache"], "MISS");
}

#[tokio::test]
async fn the_status_reports_the_load_a_router_reads() {
    let origin = Origin::fixed("x").await;
    let node = node(&origin).await;
    let status = || async {
        let response = client()
            .get(format!("http://{}/status", node.admin.unwrap()))
            .send()
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&response.bytes().await.unwrap()).unwrap()
    };
    status().await;
    for _ in 0..20 {
        get(&node, "/x").await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let load = status().await["load"].clone();
    assert!(load["requests_per_second"].as_u64().unwrap() > 0, "{load}");
    assert!(load["bytes_per_second"].as_u64().unwrap() > 0, "{load}");
    assert!(load["connections"].is_u64(), "{load}");
}

/// The smaller joints of issue 27: global flags after the subcommand, a closed stdout, the TLS
/// listeners in the status, the media types of `/metrics` and `/health`, and `https://` URLs
/// inspected as they were given, the worker count, and a stale variant's inspection.
#[tokio::test]
async fn ctl_and_admin_details_operators_rely_on() {
    let origin = Origin::start(|seen| match seen.target.as_str() {
        // Stored already 100 s old, for 10 s: stale for 90 s.
        "/stale" => Reply::ok("old")
            .header("cache-control", "max-age=10")
            .header("age", "100")
            .header("vary", "Accept-Encoding"),
        _ => Reply::ok("x").header("cache-control", "max-age=60"),
    })
    .await;
    let node = node_with(&origin, |config| {
        config.server.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
        config.admin.token = Some(TOKEN.into());
    })
    .await;
    let admin = format!("http://{}", node.admin.unwrap());

    // --admin and --token after the subcommand, as after `ctl`.
    let status = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
                .args(["ctl", "status", "--admin", &admin, "--token", TOKEN])
                .env_remove("SHOAL_ADMIN_TOKEN")
                .env_remove("SHOAL_ADMIN")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = stdout(&status);
    let tls_line = text
        .lines()
        .find(|line| line.starts_with("listen tls"))
        .unwrap_or_else(|| panic!("no TLS listeners in\n{text}"));
    assert!(
        tls_line.contains(&node.listen_tls[0].to_string()),
        "{tls_line}"
    );

    // A reader that goes away ends `stats --watch` quietly.
    let mut watching = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "ctl", "--admin", &admin, "--token", TOKEN, "stats", "--watch", "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let finished = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut first = [0u8; 64];
        let mut out = watching.stdout.take().unwrap();
        out.read_exact(&mut first).unwrap();
        drop(out); // as `| head` does once it has its lines
        let status = watching.wait().unwrap();
        let mut errors = String::new();
        watching
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut errors)
            .unwrap();
        (status, errors)
    })
    .await
    .unwrap();
    assert!(finished.0.success(), "{finished:?}");
    assert!(!finished.1.contains("panicked"), "{}", finished.1);

    let with_token = |path: &str| {
        client()
            .get(format!("{admin}{path}"))
            .bearer_auth(TOKEN)
            .send()
    };
    let metrics = with_token("/metrics").await.unwrap();
    assert_eq!(
        metrics.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let health = with_token("/health").await.unwrap();
    assert_eq!(
        health.headers()["content-type"],
        "text/plain; charset=utf-8"
    );

    let inspected = with_token("/cache/inspect?url=https://secure.test/page")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["url"], "https://secure.test/page");

    // The node's one worker, as the status counts it.
    let status = with_token("/status").await.unwrap().text().await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["workers"], 1, "{status}");

    // A stale variant reads as stale, with the request values it was stored for.
    let (status, _, _) = get_with(&node, "/stale", &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    let url = format!("{}/stale", base(&node));
    let inspect = ctl(&node, &["--token", TOKEN, "inspect", &url]).await;
    let text = stdout(&inspect);
    assert!(text.contains("stale for 9"), "{text}");
    assert!(!text.contains("fresh for -"), "{text}");
    assert!(text.contains("for accept-encoding: gzip"), "{text}");
}
