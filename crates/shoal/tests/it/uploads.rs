//! Uploads to a writable directory under hostile framing (bodies cut short, stalled, longer
//! than declared, declared huge), the preconditions of writes, the names uploads use, and the
//! cached URLs a write makes stale.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::disk::TempDir;
use crate::support::*;

const TOKEN: &str = "a-token-of-sixteen-chars";

/// A node serving `dir` writably (dotfiles shown, so that upload names are hidden by their own
/// rule), with a 1 s body timeout and a 1 MiB upload limit.
async fn writable_node(dir: &TempDir) -> shoal::Node {
    let url = format!("file://{}", dir.0.display());
    node_for(&url, |config| {
        let mut pool = pool_of("origin", &url);
        pool.writable = true;
        pool.dotfiles = true;
        pool.max_upload_size = shoal::config::ByteSize(1 << 20);
        config.pools = vec![pool];
        config.admin.token = Some(TOKEN.into());
        config.server.body_read_timeout = shoal::config::Span(Duration::from_secs(1));
    })
    .await
}

fn leftovers(dir: &TempDir) -> Vec<String> {
    let mut names = Vec::new();
    for entry in walk(&dir.0) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains("shoal-upload") {
            names.push(name);
        }
    }
    names
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// Sends `head` and `body`, then (with `close`) ends the sending side; the status line, or
/// what came back.
async fn send(node: &shoal::Node, head: &str, body: &[u8], close: bool) -> String {
    let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    if close {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn put_head(path: &str, length: u64) -> String {
    format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn a_broken_upload_leaves_the_old_file_and_nothing_else() {
    let dir = TempDir::new("uploads-hostile");
    std::fs::write(dir.0.join("a.txt"), b"old").unwrap();
    let node = writable_node(&dir).await;

    // Cut short: the client stops after 3 of 10 bytes.
    let answer = send(&node, &put_head("/a.txt", 10), b"abc", true).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    // Stalled: 3 bytes, then nothing for longer than the body timeout.
    let answer = send(&node, &put_head("/a.txt", 10), b"abc", false).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Declared far over the limit: refused before any of it is read.
    let answer = send(&node, &put_head("/a.txt", 10 << 30), b"", false).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(std::fs::read(dir.0.join("a.txt")).unwrap(), b"old");

    // Longer than declared, over HTTP/2 (where DATA has no length of its own to trust).
    let mut h2 = h2_client(node.listen[0]).await;
    let request = http::Request::put(format!("{}/a.txt", base(&node)))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-length", "3")
        .body(())
        .unwrap();
    let (response, mut body) = h2.send_request(request, false).unwrap();
    let _ = body.send_data(bytes::Bytes::from_static(b"0123456789"), true);
    match response.await {
        Ok(response) => assert!(response.status().is_client_error(), "{}", response.status()),
        Err(error) => assert!(error.is_reset() || error.is_io(), "{error}"),
    }
    assert_eq!(std::fs::read(dir.0.join("a.txt")).unwrap(), b"old");

    // Every broken upload took its temporary file with it.
    let mut left = leftovers(&dir);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = leftovers(&dir);
    }
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn an_upload_in_progress_cannot_be_read_even_with_dotfiles_shown() {
    let dir = TempDir::new("uploads-in-progress");
    let node = writable_node(&dir).await;
    let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
    stream
        .write_all(put_head("/b.bin", 1000).as_bytes())
        .await
        .unwrap();
    stream.write_all(&[7; 500]).await.unwrap();
    let mut temporary = Vec::new();
    for _ in 0..100 {
        temporary = leftovers(&dir);
        if !temporary.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let [name] = &temporary[..] else {
        panic!("one upload in progress: {temporary:?}");
    };
    let (status, _, _) = get(&node, &format!("/{name}")).await;
    assert_eq!(status, 404, "half a file is never served");
    stream.write_all(&[7; 500]).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 201"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(std::fs::read(dir.0.join("b.bin")).unwrap(), vec![7; 1000]);

    // A name as long as a name may be still fits beside its upload's suffix.
    let long = format!("/{}.txt", "n".repeat(250));
    let answer = send(&node, &put_head(&long, 2), b"ok", false).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[tokio::test]
async fn preconditions_of_writes_and_the_urls_a_write_makes_stale() {
    let dir = TempDir::new("uploads-conditions");
    std::fs::create_dir_all(dir.0.join("d")).unwrap();
    std::fs::write(dir.0.join("d/index.html"), b"old index").unwrap();
    std::fs::write(dir.0.join("app.css"), b"body{}").unwrap();
    let node = writable_node(&dir).await;
    let write =
        |method: reqwest::Method, path: &str, headers: &[(&str, &str)], body: &'static str| {
            let mut request = client()
                .request(method, format!("{}{path}", base(&node)))
                .bearer_auth(TOKEN)
                .body(body);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send()
        };
    let (_, headers, _) = get(&node, "/app.css").await;
    let tag = headers["etag"].to_str().unwrap().to_owned();
    let weak = format!("W/{tag}");

    // If-None-Match compares weakly; If-Unmodified-Since before the file's time fails.
    let put = reqwest::Method::PUT;
    let answer = write(put.clone(), "/app.css", &[("if-none-match", &weak)], "x")
        .await
        .unwrap();
    assert_eq!(answer.status(), 412);
    let past = [("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")];
    let answer = write(put.clone(), "/app.css", &past, "x").await.unwrap();
    assert_eq!(answer.status(), 412);
    let answer = write(reqwest::Method::DELETE, "/app.css", &past, "")
        .await
        .unwrap();
    assert_eq!(answer.status(), 412);
    let future = [("if-unmodified-since", "Fri, 01 Jan 2100 00:00:00 GMT")];
    let answer = write(put.clone(), "/app.css", &future, "body{color:red}")
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    // If-Match on several lines: any of them may match.
    let (_, headers, _) = get(&node, "/app.css").await;
    let current = headers["etag"].to_str().unwrap().to_owned();
    let request = client()
        .put(format!("{}/app.css", base(&node)))
        .bearer_auth(TOKEN)
        .header("if-match", "\"other\"")
        .header("if-match", current.as_str())
        .body("b{}");
    assert_eq!(request.send().await.unwrap().status(), 204);

    // A directory's index is its URL too; a sibling changes what the file's URL answers.
    let (_, _, body) = get(&node, "/d/").await;
    assert_eq!(&body[..], b"old index");
    let (_, headers, _) = get(&node, "/d/").await;
    assert_eq!(cache_status(&headers), "HIT");
    let answer = write(put.clone(), "/d/index.html", &[], "new index")
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    let (_, _, body) = get(&node, "/d/").await;
    assert_eq!(&body[..], b"new index", "the directory's URL was purged");
    let gzip = [("accept-encoding", "gzip")];
    let (_, headers, _) = get_with(&node, "/app.css", &gzip).await;
    assert_eq!(cache_status(&headers), "MISS");
    assert!(!headers.contains_key("content-encoding"));
    let answer = write(put, "/app.css.gz", &[], "not really gzip")
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let (_, headers, body) = get_with(&node, "/app.css", &gzip).await;
    assert_eq!(
        headers.get("content-encoding").map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    assert_eq!(
        &body[..],
        b"not really gzip",
        "the file's URL was purged for its sibling"
    );
}

#[tokio::test]
async fn a_url_signed_for_a_write_allows_that_write_and_nothing_else() {
    const KEY: &str = "an-upload-signing-key";
    let dir = TempDir::new("uploads-signed");
    let url = format!("file://{}", dir.0.display());
    let node = node_for(&url, |config| {
        let mut pool = pool_of("origin", &url);
        pool.writable = true;
        config.pools = vec![pool];
        config.admin.token = Some(TOKEN.into());
        config.routes = vec![shoal::config::RouteConfig {
            host: None,
            path_prefix: Some("/up/".into()),
            pool: "origin".into(),
            fallthrough_404: false,
            signing_keys: vec![KEY.into()],
        }];
    })
    .await;
    let sign = |method: Option<&str>| {
        let mut args = vec!["ctl", "sign", "--ttl", "1h", "--key", KEY];
        if let Some(method) = method {
            args.extend(["--method", method]);
        }
        let target = format!("{}/up/a.bin", base(&node));
        args.push(&target);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(&args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let (for_put, for_reading) = (sign(Some("put")), sign(None));
    assert!(for_put.contains("&method=PUT&"), "{for_put}");

    // A download link is not an upload link; the upload link uploads, with no token.
    let answer = client().put(&for_reading).body("x").send().await.unwrap();
    assert_eq!(answer.status(), 401);
    let answer = client()
        .put(&for_put)
        .body("signed bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    assert_eq!(
        std::fs::read(dir.0.join("up/a.bin")).unwrap(),
        b"signed bytes"
    );
    // Signed for PUT: neither a read nor a delete.
    assert_eq!(client().get(&for_put).send().await.unwrap().status(), 403);
    assert_eq!(
        client().delete(&for_put).send().await.unwrap().status(),
        403
    );
    let answer = client().get(&for_reading).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(&answer.bytes().await.unwrap()[..], b"signed bytes");
    let for_delete = sign(Some("DELETE"));
    assert_eq!(
        client().delete(&for_delete).send().await.unwrap().status(),
        204
    );
    assert!(!dir.0.join("up/a.bin").exists());
}
