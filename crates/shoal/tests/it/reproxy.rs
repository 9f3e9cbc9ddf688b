//! Reproxy: an application answers `X-Accel-Redirect` (routed again, to an internal pool) or
//! `X-Reproxy-URL` (copies tried in turn), and the client gets the target, stored once under
//! its own key whatever URL led to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use shoal::config::{Config, PoolConfig, RouteConfig};

use crate::support::*;

fn route(path_prefix: &str, pool: &str) -> RouteConfig {
    RouteConfig {
        host: None,
        path_prefix: Some(path_prefix.to_owned()),
        pool: pool.to_owned(),
        fallthrough_404: false,
        signing_keys: Vec::new(),
    }
}

/// An application pool `app` (reproxy on, unless `reproxy` is false) for every path, and
/// `/protected/` to an internal pool `store`.
fn app_and_store(config: &mut Config, app: &str, store: &str, reproxy: bool) {
    config.origin.urls.clear();
    let mut app = pool_of("app", app);
    app.reproxy = reproxy;
    let mut store = pool_of("store", store);
    store.internal = true;
    config.pools = vec![app, store];
    config.routes = vec![route("/protected/", "store"), route("/", "app")];
}

const FILE: &[u8] = b"0123456789 the stored file's bytes";

/// The application: `/dl/NAME` is allowed for every name but `nobody`, answered `private` with
/// the file to send.
async fn application(target: &'static str) -> Origin {
    Origin::start(move |seen| {
        if seen.target == "/dl/nobody" {
            return Reply::status(403).header("cache-control", "private");
        }
        let user = seen.target.trim_start_matches("/dl/").to_owned();
        Reply::ok("")
            .header("x-accel-redirect", target)
            .header("cache-control", "private, max-age=0")
            .header("content-disposition", "attachment; filename=\"a.bin\"")
            .header("set-cookie", &format!("seen={user}"))
    })
    .await
}

#[tokio::test]
async fn ten_access_checked_urls_share_one_stored_target() {
    let store = Origin::start(|_| {
        Reply::ok(FILE)
            .header("cache-control", "max-age=3600")
            .header("content-type", "application/octet-stream")
            .header("etag", "\"v1\"")
    })
    .await;
    let app = application("/protected/a.bin").await;
    let node = node_with(&app, |config| {
        app_and_store(config, &app.url(), &store.url(), true)
    })
    .await;

    for user in 0..10 {
        let path = format!("/dl/user{user}");
        let cookie = [("cookie", "session=secret"), ("authorization", "Bearer x")];
        let (status, headers, body) = get_with(&node, &path, &cookie).await;
        assert_eq!((status, &body[..]), (200, FILE), "{path}");
        // The application's word on this client's copy; the target's on the bytes.
        assert_eq!(headers["cache-control"], "private, max-age=0");
        assert_eq!(
            headers["content-disposition"],
            "attachment; filename=\"a.bin\""
        );
        assert_eq!(headers["set-cookie"], format!("seen=user{user}").as_str());
        assert_eq!(headers["content-type"], "application/octet-stream");
        assert_eq!(headers["etag"], "\"v1\"");
        assert!(!headers.contains_key("x-accel-redirect"), "{headers:?}");
        let expected = if user == 0 { "MISS" } else { "HIT" };
        assert_eq!(cache_status(&headers), expected, "{path}");
        assert_eq!(
            app.count(&path),
            1,
            "every client is checked by the application"
        );
    }
    assert_eq!(
        store.count("/protected/a.bin"),
        1,
        "one fetch for ten clients"
    );
    let fetched = store.last("/protected/a.bin");
    assert!(
        !fetched.headers.contains_key("cookie") && !fetched.headers.contains_key("authorization"),
        "a shared target is fetched without a client's credentials: {:?}",
        fetched.headers
    );

    // A range of it, and a HEAD, through the application.
    let (status, headers, body) = get_with(&node, "/dl/ranger", &[("range", "bytes=2-5")]).await;
    assert_eq!((status, &body[..]), (206, &FILE[2..6]));
    assert_eq!(
        headers["content-range"],
        format!("bytes 2-5/{}", FILE.len()).as_str()
    );
    let response = client()
        .head(format!("{}/dl/header", base(&node)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        FILE.len().to_string().as_str()
    );
    assert_eq!(store.count("/protected/a.bin"), 1);

    // The application's refusal is the answer; the internal pool is not reachable directly.
    let (status, _, _) = get(&node, "/dl/nobody").await;
    assert_eq!(status, 403);
    let (status, _, body) = get(&node, "/protected/a.bin").await;
    assert_eq!(status, 404, "{body:?}");
    assert_eq!(store.count("/protected/a.bin"), 1);

    let stats = admin_stats(&node).await;
    assert_eq!(stats["counters"]["reproxied"], 12, "{stats}");
}

#[tokio::test]
async fn reproxy_urls_are_tried_in_turn_and_the_copy_stored_once() {
    // A port nothing listens on any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let missing = Origin::start(|_| Reply::status(404)).await;
    let copy = Origin::start(|_| Reply::ok("copy").header("cache-control", "max-age=600")).await;
    let (missing_url, copy_url) = (missing.url(), copy.url());
    let app = Origin::start(move |seen| {
        let urls = match seen.target.as_str() {
            "/a" | "/b" => {
                format!("http://{dead}/dev1/x.fid {missing_url}/dev9/x.fid {copy_url}/dev2/x.fid")
            }
            // The same copies, listed in another order by the application.
            "/shuffled" => format!("{copy_url}/dev2/x.fid {missing_url}/dev9/x.fid"),
            "/wrong-size" => format!("{copy_url}/dev3/y.fid"),
            _ => format!("http://{dead}/dev1/z.fid"),
        };
        let size = if seen.target == "/wrong-size" {
            "99"
        } else {
            "4"
        };
        Reply::ok("")
            .header("x-reproxy-url", &urls)
            .header("x-reproxy-expected-size", size)
            .header("cache-control", "private")
    })
    .await;
    let node = node_with(&app, |config| config.pools = vec![reproxying(&app)]).await;

    for path in ["/a", "/b", "/shuffled"] {
        let (status, headers, body) = get(&node, path).await;
        assert_eq!((status, &body[..]), (200, &b"copy"[..]), "{path}");
        assert!(!headers.contains_key("x-reproxy-url"));
    }
    assert_eq!(
        copy.count("/dev2/x.fid"),
        1,
        "one copy fetched for three URLs"
    );
    assert_eq!(
        missing.count("/dev9/x.fid"),
        1,
        "its 404 moved on to the next URL"
    );

    // A copy of the wrong size, and no copy at all: 502.
    let (status, _, _) = get(&node, "/wrong-size").await;
    assert_eq!(status, 502);
    assert_eq!(copy.count("/dev3/y.fid"), 1);
    let (status, _, _) = get(&node, "/nowhere").await;
    assert_eq!(status, 502);
    let stats = admin_stats(&node).await;
    assert_eq!(stats["counters"]["reproxy_failures"], 2, "{stats}");
}

fn reproxying(app: &Origin) -> PoolConfig {
    let mut pool = pool_of("origin", &app.url());
    pool.reproxy = true;
    pool
}

#[tokio::test]
async fn a_pool_without_reproxy_removes_the_instructions() {
    let store = Origin::start(|_| Reply::ok("secret")).await;
    let target = format!("{}/secret", store.url());
    let app = Origin::start(move |_| {
        Reply::ok("the application's own answer")
            .header("x-accel-redirect", "/protected/secret")
            .header("x-reproxy-url", &target)
    })
    .await;
    let node = node_with(&app, |config| {
        app_and_store(config, &app.url(), &store.url(), false)
    })
    .await;
    let (status, headers, body) = get(&node, "/page").await;
    assert_eq!(
        (status, &body[..]),
        (200, &b"the application's own answer"[..])
    );
    assert!(!headers.contains_key("x-accel-redirect") && !headers.contains_key("x-reproxy-url"));
    assert!(store.seen().is_empty());
}

#[tokio::test]
async fn instructions_are_followed_for_posts_over_http2_to_an_internal_directory() {
    let dir = crate::disk::TempDir::new("reproxy-files");
    std::fs::create_dir_all(dir.0.join("protected")).unwrap();
    std::fs::write(dir.0.join("protected/report.pdf"), FILE).unwrap();
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&posts);
    let app = Origin::start(move |seen| {
        if seen.method == http::Method::POST {
            counted.fetch_add(1, Ordering::Relaxed);
        }
        // A target that answers with an instruction of its own is not followed again.
        let target = match seen.target.as_str() {
            "/loop" => "/loop",
            // Built from what a user typed: never out of the place it was meant for.
            "/typed" => "/protected/%2e%2e/secret.txt",
            _ => "/protected/report.pdf",
        };
        Reply::ok("").header("x-accel-redirect", target)
    })
    .await;
    let files = format!("file://{}", dir.0.display());
    let node = node_with(&app, |config| {
        app_and_store(config, &app.url(), &files, true)
    })
    .await;
    let mut h2 = h2_client(node.listen[0]).await;
    let request = http::Request::post(format!("{}/export", base(&node)))
        .body(())
        .unwrap();
    let (response, mut send) = h2.send_request(request, false).unwrap();
    send.send_data(bytes::Bytes::from_static(b"form=1"), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    // The application said nothing of freshness: the file's max-age is not for this URL.
    assert_eq!(response.headers()["cache-control"], "private");
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, FILE);
    assert_eq!(posts.load(Ordering::Relaxed), 1);

    let (status, _, _) = get(&node, "/loop").await;
    assert_eq!(status, 502, "a second instruction is not followed");
    std::fs::write(dir.0.join("secret.txt"), b"secret").unwrap();
    let (status, _, body) = get(&node, "/typed").await;
    assert_eq!(status, 404, "{body:?}");
}

#[tokio::test]
async fn in_a_cluster_the_target_is_fetched_once_through_its_owner() {
    let store = Origin::start(|_| Reply::ok(FILE).header("cache-control", "max-age=3600")).await;
    let app = application("/protected/a.bin").await;
    let listens = [crate::process::free_port(), crate::process::free_port()];
    let mut nodes = Vec::new();
    for listen in listens {
        nodes.push(
            node_with(&app, |config| {
                app_and_store(config, &app.url(), &store.url(), true);
                config.server.listen = vec![listen];
                config.cluster.peers = listens
                    .iter()
                    .map(|peer| format!("http://{peer}").parse().unwrap())
                    .collect();
                // Every client here is at a peer's address: only the secret tells them apart.
                config.cluster.secret = Some("a cluster secret of some length".into());
            })
            .await,
        );
    }
    for user in 0..10 {
        let node = &nodes[user % 2];
        let path = format!("/dl/user{user}");
        let (status, headers, body) = get_with(node, &path, &[("host", "cdn.test")]).await;
        assert_eq!((status, &body[..]), (200, FILE), "user {user}");
        assert_eq!(headers["cache-control"], "private, max-age=0");
    }
    assert_eq!(
        store.count("/protected/a.bin"),
        1,
        "one fetch for the cluster"
    );
    // Neither node lets a client reach the internal pool, even with a forged peer marker.
    for node in &nodes {
        let (status, _, _) =
            get_with(node, "/protected/a.bin", &[("x-shoal-peer", "forged")]).await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn a_target_that_varies_is_stored_per_variant_with_a_disk_tier() {
    let cache = crate::disk::TempDir::new("reproxy-disk");
    let store = Origin::start(|seen| {
        let gzip = seen
            .headers
            .get("accept-encoding")
            .is_some_and(|value| value.to_str().unwrap().contains("gzip"));
        let body = if gzip { "gzipped copy" } else { "plain copy" };
        let mut reply = Reply::ok(body)
            .header("cache-control", "max-age=3600")
            .header("vary", "Accept-Encoding");
        if gzip {
            reply = reply.header("content-encoding", "gzip");
        }
        reply
    })
    .await;
    let app = application("/protected/v.txt").await;
    let node = node_with(&app, |config| {
        app_and_store(config, &app.url(), &store.url(), true);
        config.disk.dirs = vec![shoal::config::DiskDir {
            path: cache.0.clone(),
            size: shoal::config::ByteSize(64 << 20),
        }];
    })
    .await;
    for user in 0..6 {
        let gzip = user % 2 == 0;
        let encoding: &[(&str, &str)] = if gzip {
            &[("accept-encoding", "gzip")]
        } else {
            &[]
        };
        let (status, headers, body) = get_with(&node, &format!("/dl/u{user}"), encoding).await;
        assert_eq!(status, 200);
        let expected: &[u8] = if gzip { b"gzipped copy" } else { b"plain copy" };
        assert_eq!(&body[..], expected, "user {user}");
        assert_eq!(headers["vary"], "Accept-Encoding");
        assert_eq!(headers["cache-control"], "private, max-age=0");
    }
    assert_eq!(store.count("/protected/v.txt"), 2, "one fetch per variant");
}
