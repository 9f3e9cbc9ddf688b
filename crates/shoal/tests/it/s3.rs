//! A private bucket of a real S3-compatible server as a pool's origin: moto's server (from the
//! Python package index) in its access-control mode, which checks every request's Signature V4,
//! started on 127.0.0.1 by `tests/helpers/s3_store.py`. Needs a Python with `moto[server]`
//! (`SHOAL_TEST_PYTHON`, default `python3`); skipped with a note where there is none, unless
//! `SHOAL_REQUIRE_MOTO` is set (CI sets it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use shoal::config::S3Config;

use crate::disk::TempDir;
use crate::support::*;

const TOKEN: &str = "a-token-of-sixteen-chars";

/// The store, until dropped.
struct Store {
    child: Child,
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Exits 0 where moto's server and boto3 are there, moto at 5.2.6 or later.
const MOTO_CHECK: &str = "import moto.server, boto3, sys; \
    sys.exit(tuple(int(n) for n in moto.__version__.split('.')[:3]) < (5, 2, 6))";

fn python() -> String {
    std::env::var("SHOAL_TEST_PYTHON").unwrap_or_else(|_| String::from("python3"))
}

/// A store with bucket `media` holding `objects` (key, bytes), or `None` where moto is missing.
fn store(objects: &[(&str, &[u8])]) -> Option<Store> {
    // Older moto (5.2.1 with a newer botocore) rejects valid signatures of keys with `+` or
    // `(` in them: the version is checked, not just the import.
    let has_moto = Command::new(python())
        .args(["-c", MOTO_CHECK])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_moto {
        assert!(
            std::env::var_os("SHOAL_REQUIRE_MOTO").is_none(),
            "SHOAL_REQUIRE_MOTO is set but {} has no moto[server] 5.2.6 or later",
            python()
        );
        eprintln!(
            "skipped: no moto[server] 5.2.6 or later for {} (pip install 'moto[server]>=5.2.6')",
            python()
        );
        return None;
    }
    let seeds = TempDir::new("s3-seeds");
    let mut args = vec![
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helpers/s3_store.py").to_owned(),
        "media".to_owned(),
    ];
    for (n, (key, bytes)) in objects.iter().enumerate() {
        let path = seeds.0.join(n.to_string());
        std::fs::write(&path, bytes).unwrap();
        args.push((*key).to_owned());
        args.push(path.display().to_string());
    }
    let mut child = Command::new(python())
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map(Result::unwrap)
        .find(|line| line.starts_with('{'))
        .expect("the store says where it is");
    let said: serde_json::Value = serde_json::from_str(&line).unwrap();
    let text = |name: &str| said[name].as_str().unwrap().to_owned();
    Some(Store {
        endpoint: text("endpoint"),
        access_key_id: text("access_key_id"),
        secret_access_key: text("secret_access_key"),
        child,
    })
}

/// A node whose only pool is the bucket, writable with the admin token, signing with
/// `secret`.
async fn bucket_node(store: &Store, secret: &str) -> shoal::Node {
    node_for(&store.endpoint, |config| {
        let mut pool = pool_of("origin", &store.endpoint);
        let mut s3: S3Config = toml::from_str("bucket = \"media\"").unwrap();
        s3.access_key_id = Some(store.access_key_id.clone());
        s3.secret_access_key = Some(secret.to_owned());
        pool.s3 = Some(s3);
        pool.writable = true;
        config.pools = vec![pool];
        config.admin.token = Some(TOKEN.into());
        config.cache.slice_size = shoal::config::ByteSize(1 << 20);
    })
    .await
}

fn pattern(length: usize) -> Vec<u8> {
    (0..length).map(|n| (n % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_bucket_is_read_and_written_through_the_node_signed() {
    let big = pattern(3 << 20);
    let objects: [(&str, &[u8]); 2] = [
        ("docs/a b+c(1).txt", b"hello from the bucket"),
        ("big.bin", &big),
    ];
    let Some(store) = store(&objects) else {
        return;
    };
    let node = bucket_node(&store, &store.secret_access_key).await;

    // The store refuses what is not signed with the key, and a node with a wrong secret.
    let unsigned = client()
        .get(format!("{}/media/big.bin", store.endpoint))
        .send()
        .await
        .unwrap();
    assert!(
        unsigned.status().as_u16() >= 400,
        "unsigned: {}",
        unsigned.status()
    );
    let wrong = bucket_node(&store, "not-the-secret").await;
    let (status, _, body) = get(&wrong, "/big.bin").await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));

    // Reads: the key as the path (escaped as S3 wants), stored and revalidated like any object.
    let (status, headers, body) = get(&node, "/docs/a%20b+c(1).txt").await;
    assert_eq!((status, &body[..]), (200, &b"hello from the bucket"[..]));
    assert_eq!(cache_status(&headers), "MISS");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, headers, _) = get(&node, "/docs/a%20b+c(1).txt").await;
    assert_eq!((status, cache_status(&headers)), (200, "HIT"));
    let (status, _, _) = get_with(&node, "/docs/a%20b+c(1).txt", &[("if-none-match", &etag)]).await;
    assert_eq!(status, 304);

    // Ranges of a big object, in slices fetched with signed range requests.
    let (status, headers, body) =
        get_with(&node, "/big.bin", &[("range", "bytes=1048570-1048585")]).await;
    assert_eq!((status, &body[..]), (206, &big[1_048_570..1_048_586]));
    assert_eq!(headers["content-range"], "bytes 1048570-1048585/3145728");
    let (status, headers, body) = get(&node, "/big.bin").await;
    assert!(
        status == 200 && body == big,
        "{status}, {} bytes",
        body.len()
    );
    assert!(
        !headers
            .keys()
            .any(|name| name.as_str().starts_with("x-amz-")),
        "the store's own fields stay with the node: {headers:?}"
    );
    // The store never sees a query, so the key has none either: one object, one fetch.
    let (status, headers, _) = get(&node, "/docs/a%20b+c(1).txt?v=2").await;
    assert_eq!((status, cache_status(&headers)), (200, "HIT"));

    // Over HTTP/2 too, a range from the slices stored from the bucket.
    let mut h2 = h2_client(node.listen[0]).await;
    let request = http::Request::get(format!("{}/big.bin", base(&node)))
        .header("range", "bytes=2097152-2097161")
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 206);
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, &big[2_097_152..2_097_162]);

    // No listing of the bucket, whatever the query; methods a bucket is not used with: 405.
    for path in ["/", "/?list-type=2"] {
        let (status, _, body) = get(&node, path).await;
        assert_eq!(status, 404, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let post = client()
        .post(format!("{}/big.bin", base(&node)))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);

    // Writes: the token, then the bucket has the new bytes and the cached copy is gone.
    let put = |token: Option<&str>, body: &'static str| {
        let mut request = client()
            .put(format!("{}/docs/a%20b+c(1).txt", base(&node)))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(put(None, "anyone").await.unwrap().status(), 401);
    let written = put(Some(TOKEN), "new bytes").await.unwrap();
    assert!(written.status().is_success(), "{}", written.status());
    let (status, headers, body) = get(&node, "/docs/a%20b+c(1).txt").await;
    assert_eq!((status, &body[..]), (200, &b"new bytes"[..]));
    assert_eq!(
        cache_status(&headers),
        "MISS",
        "the write removed the cached copy"
    );
    let direct = client()
        .get(format!(
            "{}/media/docs/a%20b%2Bc%281%29.txt",
            store.endpoint
        ))
        .send()
        .await
        .unwrap();
    assert!(
        direct.status().as_u16() >= 400,
        "still private: {}",
        direct.status()
    );

    let deleted = client()
        .delete(format!("{}/docs/a%20b+c(1).txt", base(&node)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, _, _) = get(&node, "/docs/a%20b+c(1).txt").await;
    assert_eq!(status, 404);
}
