//! Signed URLs: a route with signing keys serves only URLs signed by one of them and not yet
//! expired; everything else gets 403 before the cache is looked at. `shoal ctl sign` makes
//! the URLs; the signature's parameters stay out of the cache key and away from the origin.

use shoal::config::RouteConfig;

use crate::support::*;

const OLD_KEY: &str = "the-old-key-0123456789";
const NEW_KEY: &str = "the-new-key-9876543210";

fn ctl_sign(url: &str, key: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["ctl", "sign", url, "--ttl", "1h", "--key", key])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn only_signed_urls_pass_and_share_one_cache_object() {
    let origin = Origin::start(|seen| {
        Reply::ok(format!("file {}", seen.target)).header("cache-control", "max-age=600")
    })
    .await;
    let node = node_with(&origin, |config| {
        config.routes = vec![RouteConfig {
            host: None,
            path_prefix: Some("/files/".into()),
            pool: "origin".into(),
            fallthrough_404: false,
            signing_keys: vec![OLD_KEY.into(), NEW_KEY.into()],
        }];
    })
    .await;
    let base = base(&node);

    // Unsigned: refused, and the origin is not asked.
    let (status, _, body) = get(&node, "/files/a.iso").await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("signature"));
    assert!(origin.seen().is_empty());

    // Signed with the new key (by `shoal ctl sign`): served, without the parameters upstream.
    let signed = ctl_sign(&format!("{base}/files/a.iso"), NEW_KEY);
    assert!(
        signed.contains("expires=") && signed.contains("signature="),
        "{signed}"
    );
    let target = signed.strip_prefix(&base).unwrap();
    let (status, headers, body) = get(&node, target).await;
    assert_eq!(status, 200);
    assert_eq!(cache_status(&headers), "MISS");
    assert_eq!(&body[..], b"file /files/a.iso");
    assert_eq!(origin.last("/files/a.iso").target, "/files/a.iso");

    // Signed with the old key (a rotation in progress): the same cache object.
    let signed = ctl_sign(&format!("{base}/files/a.iso"), OLD_KEY);
    let (status, headers, _) = get(&node, signed.strip_prefix(&base).unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(cache_status(&headers), "HIT");

    // Cached or not, an unsigned, tampered, foreign or expired URL is refused.
    assert_eq!(get(&node, "/files/a.iso").await.0, 403);
    let tampered = target.replace("a.iso", "b.iso");
    assert_eq!(get(&node, &tampered).await.0, 403);
    let foreign = ctl_sign(&format!("{base}/files/a.iso"), "some-other-key-000000");
    assert_eq!(
        get(&node, foreign.strip_prefix(&base).unwrap()).await.0,
        403
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = shoal::signed_url::sign("/files/a.iso", NEW_KEY.as_bytes(), now - 10);
    let (status, _, body) = get(&node, &expired).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("expired"));

    // Paths outside the route need no signature.
    assert_eq!(get(&node, "/public/x").await.0, 200);
    assert_eq!(origin.count("/files/a.iso"), 1);
}
