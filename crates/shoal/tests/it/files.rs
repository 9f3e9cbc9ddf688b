//! A directory as the origin (`file:///`): content-hash ETags that agree across nodes, ranges
//! and conditionals from files, paths that try to leave the directory, precompressed siblings,
//! big files sent straight from the file, and uploads.

use std::time::{Duration, SystemTime};

use crate::disk::TempDir;
use crate::support::*;

/// A node serving `dir` as its origin, with `tweak` applied to its pool.
async fn file_node(
    dir: &TempDir,
    tweak: impl FnOnce(&mut shoal::config::PoolConfig),
) -> shoal::Node {
    let url = format!("file://{}", dir.0.display());
    node_for(&url, |config| {
        let mut pool = pool_of("origin", &url);
        tweak(&mut pool);
        config.pools = vec![pool];
        config.admin.token = Some("a-token-of-sixteen-chars".into());
    })
    .await
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) {
    let path = dir.0.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn copies_of_one_file_on_two_nodes_have_one_etag() {
    let (a, b) = (TempDir::new("files-a"), TempDir::new("files-b"));
    write(&a, "app.js", b"console.log(1)");
    write(&b, "app.js", b"console.log(1)");
    // Copied at different times: other mtimes, other inodes.
    let old = SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(a.0.join("app.js"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (first, second) = (file_node(&a, |_| {}).await, file_node(&b, |_| {}).await);
    let (status, one, body) = get(&first, "/app.js").await;
    assert_eq!((status, &body[..]), (200, &b"console.log(1)"[..]));
    let (_, two, _) = get(&second, "/app.js").await;
    assert_eq!(one["etag"], two["etag"], "two copies, two tags");
    assert_ne!(one["last-modified"], two["last-modified"]);
    assert!(
        one["content-type"].to_str().unwrap().contains("javascript"),
        "{:?}",
        one["content-type"]
    );
    assert_eq!(one["cache-control"], "max-age=60");
    let (_, again, _) = get(&first, "/app.js").await;
    assert_eq!(cache_status(&again), "HIT");
    // The tag of one node is good at the other.
    let etag = one["etag"].to_str().unwrap();
    let (status, _, body) = get_with(&second, "/app.js", &[("if-none-match", etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
    // A changed file gets a new tag once revalidated.
    write(&b, "app.js", b"console.log(2)");
    let fresh = file_node(&b, |pool| {
        pool.max_age = shoal::config::Span(Duration::ZERO)
    })
    .await;
    let (_, changed, body) = get(&fresh, "/app.js").await;
    assert_eq!(&body[..], b"console.log(2)");
    assert_ne!(changed["etag"], one["etag"]);
    // An .etag sidecar overrides the hash.
    write(&a, "app.js.etag", b"build-77\n");
    let sidecar = file_node(&a, |_| {}).await;
    let (_, tagged, _) = get(&sidecar, "/app.js").await;
    assert_eq!(tagged["etag"], "\"build-77\"");
}

#[tokio::test]
async fn ranges_conditionals_and_indexes_come_from_files() {
    let dir = TempDir::new("files-ranges");
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    write(&dir, "data.bin", &content);
    write(&dir, "docs/index.html", b"<h1>docs</h1>");
    let node = file_node(&dir, |_| {}).await;
    let (status, headers, body) = get_with(&node, "/data.bin", &[("range", "bytes=100-199")]).await;
    assert_eq!(status, 206);
    assert_eq!(&body[..], &content[100..200]);
    assert_eq!(headers["content-range"], "bytes 100-199/10000");
    let (status, headers, body) = get_with(&node, "/data.bin", &[("range", "bytes=0-9,-10")]).await;
    assert_eq!(status, 206);
    let content_type = headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("multipart/byteranges"),
        "{content_type}"
    );
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("Content-Range: bytes 0-9/10000")
            && text.contains("Content-Range: bytes 9990-9999/10000"),
        "{text}"
    );
    let (status, headers, _) = get_with(&node, "/data.bin", &[("range", "bytes=20000-")]).await;
    assert_eq!(
        (status, headers["content-range"].to_str().unwrap()),
        (416, "bytes */10000")
    );
    let (_, whole, _) = get(&node, "/data.bin").await;
    let etag = whole["etag"].to_str().unwrap().to_owned();
    let (status, _, body) = get_with(
        &node,
        "/data.bin",
        &[("range", "bytes=0-0"), ("if-range", "\"other\"")],
    )
    .await;
    assert_eq!(
        (status, body.len()),
        (200, 10_000),
        "a stale If-Range gets the whole"
    );
    let (status, _, body) = get_with(
        &node,
        "/data.bin",
        &[("range", "bytes=0-0"), ("if-range", &etag)],
    )
    .await;
    assert_eq!((status, &body[..]), (206, &content[..1]));
    let modified = whole["last-modified"].to_str().unwrap();
    let (status, _, _) = get_with(&node, "/data.bin", &[("if-modified-since", modified)]).await;
    assert_eq!(status, 304);
    let (status, _, body) = get(&node, "/docs/").await;
    assert_eq!((status, &body[..]), (200, &b"<h1>docs</h1>"[..]));
    let response = client()
        .get(format!("{}/docs?x=1", base(&node)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.url().path(),
        "/docs/",
        "a directory without its slash is redirected"
    );
    // Never to another site: `//docs` is the directory `docs`, not the host `docs`.
    let answer = raw(
        node.listen[0],
        b"GET //docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 301"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nlocation: /docs/\r\n"),
        "{answer}"
    );
    let (status, _, _) = get(&node, "/").await;
    assert_eq!(status, 404, "no index, no listing");
    let (status, _, _) = get(&node, "/missing.txt").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn paths_out_of_the_directory_are_refused() {
    let dir = TempDir::new("files-escape");
    let outside = TempDir::new("files-outside");
    write(&outside, "secret.txt", b"secret");
    write(&dir, "ok.txt", b"ok");
    write(&dir, ".env", b"PASSWORD=1");
    write(&dir, ".git/config", b"[core]");
    std::os::unix::fs::symlink(outside.0.join("secret.txt"), dir.0.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(outside.0.clone(), dir.0.join("linkdir")).unwrap();
    std::os::unix::fs::symlink(dir.0.join("ok.txt"), dir.0.join("inside.txt")).unwrap();
    let node = file_node(&dir, |_| {}).await;
    let address = node.listen[0];
    for target in [
        "/../files-outside/secret.txt",
        "/%2e%2e/etc/passwd",
        "/a/%2E%2E/%2E%2E/etc/passwd",
        "/ok.txt%2f..",
        "/ok%00.txt",
    ] {
        let response = raw(
            address,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let status = response.split(' ').nth(1).unwrap_or("");
        assert!(status.starts_with('4'), "{target}: {response}");
        assert!(
            !response.contains("secret") && !response.contains("root:"),
            "{target}: {response}"
        );
    }
    for target in ["/link.txt", "/linkdir/secret.txt", "/.env", "/.git/config"] {
        let (status, _, body) = get(&node, target).await;
        assert_eq!(status, 404, "{target} was served: {body:?}");
    }
    let (status, _, body) = get(&node, "/inside.txt").await;
    assert_eq!(
        (status, &body[..]),
        (200, &b"ok"[..]),
        "a link within the directory"
    );
    let allowing = file_node(&dir, |pool| {
        pool.symlinks = true;
        pool.dotfiles = true;
    })
    .await;
    assert_eq!(get(&allowing, "/link.txt").await.2, "secret");
    assert_eq!(get(&allowing, "/.env").await.2, "PASSWORD=1");
}

#[tokio::test]
async fn precompressed_siblings_are_served_to_clients_that_accept_them() {
    let dir = TempDir::new("files-encodings");
    write(&dir, "site.css", b"body { color: red }");
    write(&dir, "site.css.gz", b"pretend-gzip");
    write(&dir, "site.css.br", b"pretend-brotli");
    let node = file_node(&dir, |_| {}).await;
    let (_, plain, body) = get(&node, "/site.css").await;
    assert_eq!(&body[..], b"body { color: red }");
    assert_eq!(plain["vary"], "Accept-Encoding");
    assert!(plain.get("content-encoding").is_none());
    let (_, gzip, body) = get_with(&node, "/site.css", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (&body[..], gzip["content-encoding"].to_str().unwrap()),
        (&b"pretend-gzip"[..], "gzip")
    );
    assert!(gzip["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let (_, brotli, body) = get_with(&node, "/site.css", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(
        (&body[..], brotli["content-encoding"].to_str().unwrap()),
        (&b"pretend-brotli"[..], "br")
    );
    let (_, weighed, _) =
        get_with(&node, "/site.css", &[("accept-encoding", "gzip, br;q=0.5")]).await;
    assert_eq!(weighed["content-encoding"], "gzip");
    let tags = [&plain, &gzip, &brotli].map(|headers| headers["etag"].clone());
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    let (_, again, body) = get_with(&node, "/site.css", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (cache_status(&again), &body[..]),
        ("HIT", &b"pretend-gzip"[..])
    );
}

#[tokio::test]
async fn big_files_go_straight_from_the_file() {
    let dir = TempDir::new("files-big");
    let content: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    write(&dir, "big.bin", &content);
    let node = file_node(&dir, |pool| {
        pool.cache_files_up_to = shoal::config::ByteSize(1 << 20)
    })
    .await;
    for _ in 0..2 {
        let (status, headers, body) = get(&node, "/big.bin").await;
        assert_eq!(status, 200);
        assert!(body[..] == content[..], "the bytes differ");
        assert_eq!(cache_status(&headers), "PASS", "a big file is not stored");
    }
    let stats = admin_get(&node, "/stats", Some("a-token-of-sixteen-chars")).await;
    assert_eq!(
        stats["counters"]["sendfile_bytes"], 6_000_000,
        "both went with sendfile: {stats}"
    );
    let (status, _, body) =
        get_with(&node, "/big.bin", &[("range", "bytes=2000000-2000999")]).await;
    assert_eq!((status, &body[..]), (206, &content[2_000_000..2_001_000]));
    let (status, _, body) = get_with(&node, "/big.bin", &[("range", "bytes=10-19,2999990-")]).await;
    assert_eq!(status, 206);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("Content-Range: bytes 2999990-2999999/3000000"),
        "{text}"
    );
    // HEAD: the length, no body.
    let response = client()
        .head(format!("{}/big.bin", base(&node)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap()),
        Some("3000000"),
        "{:?} {:?}",
        response.status(),
        response.headers()
    );
    // Many at once, each read at its own pace.
    let reads = (0..8).map(|_| get(&node, "/big.bin"));
    for (status, _, body) in futures_util::future::join_all(reads).await {
        assert!(status == 200 && body[..] == content[..]);
    }
}

#[tokio::test]
async fn uploads_are_refused_unless_the_pool_is_writable() {
    let dir = TempDir::new("files-readonly");
    write(&dir, "a.txt", b"old");
    let node = file_node(&dir, |_| {}).await;
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        let response = client()
            .request(method.clone(), format!("{}/a.txt", base(&node)))
            .body("new")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "GET, HEAD, OPTIONS");
    }
    assert_eq!(std::fs::read(dir.0.join("a.txt")).unwrap(), b"old");
}

#[tokio::test]
async fn a_writable_pool_writes_atomically_with_the_token() {
    let dir = TempDir::new("files-writable");
    write(&dir, "a.txt", b"old");
    let node = file_node(&dir, |pool| pool.writable = true).await;
    let url = |path: &str| format!("{}{path}", base(&node));
    let token = "Bearer a-token-of-sixteen-chars";
    let (_, _, body) = get(&node, "/a.txt").await;
    assert_eq!(&body[..], b"old");
    let unauthorized = client()
        .put(url("/a.txt"))
        .body("new")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert!(unauthorized.headers().contains_key("www-authenticate"));
    let wrong = client()
        .put(url("/a.txt"))
        .header("authorization", "Bearer wrong-token-wrong-token")
        .body("new")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let replaced = client()
        .put(url("/a.txt"))
        .header("authorization", token)
        .body("new")
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 204);
    let new_tag = replaced.headers()["etag"].clone();
    assert_eq!(std::fs::read(dir.0.join("a.txt")).unwrap(), b"new");
    let (_, headers, body) = get(&node, "/a.txt").await;
    assert_eq!(&body[..], b"new", "the cached copy was replaced");
    assert_eq!(headers["etag"], new_tag);
    let created = client()
        .put(url("/deep/er/b.txt"))
        .header("authorization", token)
        .body("bee")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(std::fs::read(dir.0.join("deep/er/b.txt")).unwrap(), b"bee");
    let exists = client()
        .put(url("/a.txt"))
        .header("authorization", token)
        .header("if-none-match", "*")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(exists.status(), 412);
    let stale = client()
        .put(url("/a.txt"))
        .header("authorization", token)
        .header("if-match", "\"not-it\"")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let matching = client()
        .put(url("/a.txt"))
        .header("authorization", token)
        .header("if-match", new_tag.to_str().unwrap())
        .body("newer")
        .send()
        .await
        .unwrap();
    assert_eq!(matching.status(), 204);
    // `..` is resolved before routing (`/%2e%2e/x` is `/x`): the file lands inside.
    let escape = raw(node.listen[0], b"PUT /a/%2e%2e/%2e%2e/escaped.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a-token-of-sixteen-chars\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx").await;
    assert!(escape.starts_with("HTTP/1.1 201"), "{escape}");
    assert!(dir.0.join("escaped.txt").exists());
    assert!(!dir.0.parent().unwrap().join("escaped.txt").exists());
    let chunked = raw(node.listen[0], b"PUT /c.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a-token-of-sixteen-chars\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n").await;
    assert!(chunked.starts_with("HTTP/1.1 411"), "{chunked}");
    let deleted = client()
        .delete(url("/a.txt"))
        .header("authorization", token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(!dir.0.join("a.txt").exists());
    let (status, _, _) = get(&node, "/a.txt").await;
    assert_eq!(status, 404, "the cached copy went with the file");
    // Nothing is left of the uploads but the files.
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().contains("shoal-upload"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Over HTTP/2 a big file is read in chunks on the blocking pool (no `sendfile` there), with a
/// disk tier beside it: the same bytes, and small files still cached.
#[tokio::test]
async fn files_over_http2_with_a_disk_tier() {
    let dir = TempDir::new("files-h2");
    let cache = TempDir::new("files-h2-cache");
    let content: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    write(&dir, "big.bin", &content);
    write(&dir, "small.txt", b"small");
    let url = format!("file://{}", dir.0.display());
    let node = node_for(&url, |config| {
        config.disk.dirs = vec![shoal::config::DiskDir {
            path: cache.0.clone(),
            size: shoal::config::ByteSize(64 << 20),
        }];
    })
    .await;
    let mut client = h2_client(node.listen[0]).await;
    let mut statuses = Vec::new();
    for (path, expected) in [
        ("/big.bin", &content[..]),
        ("/small.txt", &b"small"[..]),
        ("/small.txt", &b"small"[..]),
    ] {
        let request = http::Request::get(format!("http://x{path}"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        statuses.push(cache_status(response.headers()).to_owned());
        let mut body = response.into_body();
        let mut received = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            received.extend_from_slice(&chunk);
        }
        assert!(received == expected, "{path}: {} bytes", received.len());
    }
    assert_eq!(statuses, ["PASS", "MISS", "HIT"]);
}

fn tag_text(tag: &http::HeaderValue) -> String {
    tag.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_huge_new_file_is_answered_at_once_and_tagged_once_hashed() {
    let dir = TempDir::new("files-huge");
    // Sparse: 65 MiB of zeros on disk for nothing, above what is hashed before answering.
    let file = std::fs::File::create(dir.0.join("huge.iso")).unwrap();
    file.set_len(65 << 20).unwrap();
    let node = file_node(&dir, |_| {}).await;
    let head = || async {
        let response = client()
            .head(format!("{}/huge.iso", base(&node)))
            .send()
            .await
            .unwrap();
        (response.status(), response.headers().clone())
    };
    let (status, first) = head().await;
    assert_eq!(status, 200);
    assert!(first.contains_key("last-modified"));
    assert!(
        !first.contains_key("etag"),
        "the first answer does not wait for the hash"
    );
    assert_eq!(
        first["cache-control"], "no-cache",
        "kept downstream only to revalidate"
    );
    let mut tagged = None;
    for _ in 0..200 {
        let (_, headers) = head().await;
        if let Some(tag) = headers.get("etag") {
            tagged = Some(tag.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let tag = tagged.expect("tagged once hashed");
    // A request comparing tags waits for the hash of a new big file: a copy made now.
    std::fs::copy(dir.0.join("huge.iso"), dir.0.join("copy.iso")).unwrap();
    let (status, headers, _) = get_with(
        &node,
        "/copy.iso",
        &[("range", "bytes=0-0"), ("if-range", &tag_text(&tag))],
    )
    .await;
    assert_eq!(
        (status, &headers["etag"]),
        (206, &tag),
        "one content, one tag, at once"
    );
    // The tag is the content's: XXH3-128 of 65 MiB of zeros, as another node would say.
    let zeros = vec![0u8; 65 << 20];
    let expected = format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(&zeros));
    assert_eq!(tag, expected.as_str());

    // Overlapping ranges cost the file once: merged into one part.
    let (status, headers, body) =
        get_with(&node, "/huge.iso", &[("range", "bytes=0-99,50-149,0-9")]).await;
    assert_eq!((status, body.len()), (206, 150));
    assert_eq!(
        headers["content-range"],
        format!("bytes 0-149/{}", 65 << 20).as_str()
    );
}

#[tokio::test]
async fn a_directory_behind_a_parent_tier_over_tls() {
    let dir = TempDir::new("files-shielded");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    write(&dir, "big.bin", &big);
    write(&dir, "app.css", b"body{}");
    let parent = file_node(&dir, |_| {}).await;
    let parent_url = format!("http://{}", parent.listen[0]);
    let (direct_status, direct, _) = get(&parent, "/app.css").await;
    assert_eq!(direct_status, 200);
    let certificates = TempDir::new("files-shielded-tls");
    let authority = crate::tls::Authority::new();
    let certificate = authority.issue(&certificates.0, "edge", &["cdn.test"]);
    let edge = node_for(&parent_url, |config| {
        let mut shield = pool_of("shield", &parent_url);
        shield.parent = true;
        config.pools = vec![shield];
        config.server.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
        config.tls.certificates = vec![certificate];
    })
    .await;
    let address = edge.listen_tls[0];
    for http1_only in [false, true] {
        let https = authority.http_client(address, &["cdn.test"], http1_only);
        let url = |path: &str| format!("https://cdn.test:{}{path}", address.port());
        let response = https.get(url("/app.css")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["etag"],
            direct["etag"],
            "the tag is the file's"
        );
        let etag = response.headers()["etag"].clone();
        assert_eq!(&response.bytes().await.unwrap()[..], b"body{}");
        let response = https
            .get(url("/app.css"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 304);
        let response = https
            .get(url("/big.bin"))
            .header("range", "bytes=2500000-2500099")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(
            &response.bytes().await.unwrap()[..],
            &big[2_500_000..2_500_100]
        );
        let response = https.get(url("/big.bin")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.unwrap()[..] == big[..]);
    }
}

#[tokio::test]
async fn a_cluster_of_file_nodes_behind_one_hostname_agrees_on_every_tag() {
    let copies = [
        TempDir::new("files-cluster-a"),
        TempDir::new("files-cluster-b"),
    ];
    for (n, copy) in copies.iter().enumerate() {
        for file in 0..10 {
            write(
                copy,
                &format!("f/{file}.txt"),
                format!("file {file}").as_bytes(),
            );
        }
        // Copied at other times on each node.
        let when = SystemTime::now() - Duration::from_secs(1000 * (n as u64 + 1));
        for file in 0..10 {
            std::fs::File::options()
                .write(true)
                .open(copy.0.join(format!("f/{file}.txt")))
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }
    let listens = [crate::process::free_port(), crate::process::free_port()];
    let mut nodes = Vec::new();
    for copy in &copies {
        let url = format!("file://{}", copy.0.display());
        nodes.push(
            node_for(&url, |config| {
                config.server.listen = vec![listens[nodes.len()]];
                config.cluster.peers = listens
                    .iter()
                    .map(|peer| format!("http://{peer}").parse().unwrap())
                    .collect();
            })
            .await,
        );
    }
    let host = [("host", "files.test")];
    for file in 0..10 {
        let path = format!("/f/{file}.txt");
        let (a_status, a, a_body) = get_with(&nodes[0], &path, &host).await;
        let (b_status, b, b_body) = get_with(&nodes[1], &path, &host).await;
        assert_eq!((a_status, b_status), (200, 200));
        assert_eq!(a_body, format!("file {file}"));
        assert_eq!(a_body, b_body);
        assert_eq!(a["etag"], b["etag"], "{path}: one tag in the cluster");
        // Each owner read its own copy (other mtimes, other inodes): the tag is the bytes'.
        let content = format!("file {file}");
        let expected = format!(
            "\"{:032x}\"",
            xxhash_rust::xxh3::xxh3_128(content.as_bytes())
        );
        assert_eq!(a["etag"], expected.as_str(), "{path}");
    }
    for node in &nodes {
        for file in 0..10 {
            let (_, headers, _) = get_with(node, &format!("/f/{file}.txt"), &host).await;
            assert_eq!(cache_status(&headers), "HIT");
        }
    }
}
