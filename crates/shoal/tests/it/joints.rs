//! Where features meet (issue 27): tiers, clusters, pools and limits in the combinations
//! users run, each test a joint that once broke.

use std::time::Duration;

use crate::process::{free_port, Node};
use crate::support::*;

/// An edge in front of a parent tier shows its own cache status only: the parent's (or any
/// upstream's) status header is neither stored with the object nor served.
#[tokio::test]
async fn an_edge_behind_a_parent_shows_only_its_own_cache_status() {
    let origin = Origin::start(|_| {
        Reply::ok("shielded")
            .header("cache-control", "max-age=60")
            // As an origin that is itself behind a CDN would answer.
            .header("x-cache", "HIT from elsewhere")
    })
    .await;
    let parent = node(&origin).await;
    let edge = node_for(&base(&parent), |config| {
        config.pools = vec![shoal::config::PoolConfig {
            name: "origin".into(),
            policy: shoal::config::Policy::RoundRobin,
            parent: true,
            hosts: vec![shoal::config::HostConfig {
                url: base(&parent).parse().unwrap(),
                weight: 1,
                max_connections: 0,
            }],
            health: None,
            tls_ca: None,
            danger_accept_invalid_certs_for_testing: false,
            ..shoal::config::PoolConfig::of_hosts("", Vec::new())
        }];
    })
    .await;
    for expected in ["MISS", "HIT", "HIT"] {
        let (status, headers, body) = get(&edge, "/shielded").await;
        assert_eq!((status, &body[..]), (200, &b"shielded"[..]));
        let statuses: Vec<_> = headers.get_all("x-cache").iter().collect();
        assert_eq!(statuses, [expected], "the edge's answer carries one status");
    }
    let (_, headers, _) = get(&parent, "/shielded").await;
    assert_eq!(
        headers.get_all("x-cache").iter().count(),
        1,
        "nor does the parent pass on its origin's"
    );
    // Once through the edge, once for the parent's own host (the key holds the host).
    assert_eq!(origin.count("/shielded"), 2);
}

/// When no host can take a request (every one set down by the operator, or every attempt
/// refused), the answer is 503 with `Retry-After`, as docs/upstreams.md says.
#[tokio::test]
async fn no_host_to_take_a_request_is_503_with_retry_after() {
    let origin = Origin::fixed("up").await;
    let node = node(&origin).await;
    let host = origin.address.to_string();
    let set = client()
        .post(format!(
            "http://{}/upstreams/state?pool=origin&host={host}&state=down",
            node.admin.unwrap()
        ))
        .header("x-shoal-admin", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let (status, headers, _) = get(&node, "/down").await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"), "{headers:?}");

    // Two hosts that refuse connections, and one try each: every attempt was refused.
    let refusing = [free_port(), free_port()];
    let node = node_for(&format!("http://{}", refusing[0]), |config| {
        config
            .origin
            .urls
            .push(format!("http://{}", refusing[1]).parse().unwrap());
        config.retries.tries = 1;
    })
    .await;
    let (status, headers, _) = get(&node, "/refused").await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
}

/// A client cannot claim to be a peer: a forged `X-Shoal-Peer` from an address that is not
/// one of the cluster's is dropped, so each object is still fetched from the origin once for
/// the whole cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_peer_marker_does_not_bypass_cluster_ownership() {
    let origin = Origin::fixed("owned").await;
    let (_, nodes) = cluster_of_three(&origin, Vec::new()).await;
    // From 127.0.0.2: not a peer's address (the peers are on 127.0.0.1).
    let forger = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for node in &nodes {
        let response = forger
            .get(format!("http://{}/owned", node.endpoint.listen))
            .header("host", "cluster.test")
            .header("x-shoal-peer", "127.0.0.1:1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "owned");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(origin.count("/owned"), 1, "one fetch for the cluster");
}

/// An origin whose answers vary on Accept-Encoding ("variant for VALUE"), each after `delay`.
pub async fn varying_origin(delay: Duration) -> Origin {
    Origin::start(move |seen| {
        let encoding = seen
            .headers
            .get("accept-encoding")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Reply::ok(format!("variant for {encoding}"))
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Encoding")
            .delay(delay)
    })
    .await
}

/// Concurrent misses for a URL that varies on Accept-Encoding collapse per variant: six
/// requests over two variants make one origin fetch each, and both variants are stored.
#[tokio::test]
async fn concurrent_misses_collapse_per_variant() {
    let origin = varying_origin(Duration::from_millis(300)).await;
    let node = node(&origin).await;
    let encodings = ["gzip", "br", "gzip", "br", "gzip", "br"];
    let requests = encodings.map(|encoding| {
        let base = base(&node);
        tokio::spawn(async move {
            let response = client()
                .get(format!("{base}/varies"))
                .header("accept-encoding", encoding)
                .send()
                .await
                .unwrap();
            (encoding, response.text().await.unwrap())
        })
    });
    for request in requests {
        let (encoding, body) = request.await.unwrap();
        assert_eq!(body, format!("variant for {encoding}"));
    }
    assert_eq!(origin.count("/varies"), 2, "one fetch per variant");
    for encoding in ["gzip", "br"] {
        let (status, headers, body) =
            get_with(&node, "/varies", &[("accept-encoding", encoding)]).await;
        assert_eq!(status, 200);
        assert_eq!(body, format!("variant for {encoding}"));
        assert_eq!(cache_status(&headers), "HIT", "{encoding} was stored");
    }
    assert_eq!(origin.count("/varies"), 2);
}

/// A request that arrives after one variant is stored, while another variant's fetch is under
/// way (it started when the first was stored), joins that fetch: on one node (over HTTP/1.1
/// and HTTP/2), and across a cluster behind one hostname, where the requests reach the owner
/// through different nodes.
#[tokio::test]
async fn a_late_request_joins_the_fetch_of_its_variant() {
    let origin = varying_origin(Duration::from_millis(400)).await;
    let single = node(&origin).await;
    let (_, nodes) = cluster_of_three(&origin, Vec::new()).await;
    // One node over HTTP/1.1, the cluster, and the one node over HTTP/2.
    let rounds = [
        (vec![base(&single); 3], false),
        (
            nodes
                .iter()
                .map(|node| format!("http://{}", node.endpoint.listen))
                .collect(),
            false,
        ),
        (vec![base(&single); 3], true),
    ];
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (round, (bases, http2)) in rounds.iter().enumerate() {
        let (path, http2) = (format!("/late-{round}"), *http2);
        let ask = |base: &str, encoding: &'static str| {
            let request = match http2 {
                // HTTP/2 names the host in :authority, from the URL.
                true => h2.get(format!("{base}{path}")),
                false => client()
                    .get(format!("{base}{path}"))
                    .header("host", "variants.test"),
            }
            .header("accept-encoding", encoding);
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.version() == http::Version::HTTP_2, http2);
                let status = response.headers()["x-cache"].to_str().unwrap().to_owned();
                (status, response.text().await.unwrap())
            }
        };
        // gzip leads; br waits for it, then fetches its own variant; a br request that
        // arrives once gzip is stored, while br is being fetched, waits for that fetch.
        let gzip = tokio::spawn(ask(&bases[0], "gzip"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let br = tokio::spawn(ask(&bases[1], "br"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let late = tokio::spawn(ask(&bases[2], "br"));
        assert_eq!(gzip.await.unwrap().1, "variant for gzip");
        for answer in [br, late] {
            assert_eq!(answer.await.unwrap().1, "variant for br");
        }
        assert_eq!(origin.count(&path), 2, "one fetch per variant ({round})");
        // Each variant is now stored (a node of the cluster that had not asked for one gets
        // it from its owner, a miss of its own, then has it too).
        for base in bases {
            for encoding in ["gzip", "br"] {
                ask(base, encoding).await;
                let (status, body) = ask(base, encoding).await;
                assert_eq!(body, format!("variant for {encoding}"));
                assert_eq!(status, "HIT", "{encoding} from {base} ({round})");
            }
        }
        assert_eq!(origin.count(&path), 2, "no more fetches ({round})");
    }
}

/// Hit-for-miss, not hit-for-pass: after a `no-store` answer the URL's requests go to the
/// origin without queueing behind one another, and the first cacheable answer is stored.
#[tokio::test]
async fn an_uncacheable_mark_lets_a_cacheable_answer_be_stored() {
    let answers = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = Origin::start(move |_| {
        let n = answers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // The first four answers are uncacheable, the rest cacheable.
        let cache_control = if n < 4 { "no-store" } else { "max-age=60" };
        Reply::ok(format!("answer {n}"))
            .header("cache-control", cache_control)
            .delay(Duration::from_millis(200))
    })
    .await;
    let node = node(&origin).await;
    let (_, headers, _) = get(&node, "/changes").await;
    assert_eq!(cache_status(&headers), "PASS");
    // Marked uncacheable: three at once do not wait for each other.
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let base = base(&node);
            tokio::spawn(async move { client().get(format!("{base}/changes")).send().await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(origin.max_concurrent(), 3, "not queued behind one fetch");
    // The origin now says the URL is cacheable: that answer is stored at once, within the
    // mark's 10 s.
    let (_, headers, body) = get(&node, "/changes").await;
    assert_eq!(&body[..], b"answer 4");
    assert_eq!(cache_status(&headers), "MISS");
    let (_, headers, body) = get(&node, "/changes").await;
    assert_eq!(&body[..], b"answer 4");
    assert_eq!(cache_status(&headers), "HIT");
    assert_eq!(origin.count("/changes"), 5);
    let stats = admin_stats(&node).await;
    assert_eq!(stats["counters"]["hit_for_miss"], 4, "{stats}");
}

/// With `cluster.secret`, the peer marker is believed only when signed with it for the
/// request, recently: a marker from a peer's own address (loopback here, as every peer) that
/// is unsigned, signed for another URL or host or too old is dropped; a good one is believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_cluster_secret_only_signed_peer_markers_are_believed() {
    use hmac::Mac;
    const SECRET: &str = "a-cluster-secret-of-some-length";
    let origin = Origin::fixed("owned").await;
    let dir = crate::disk::TempDir::new("secret");
    let config = dir.0.join("shoal.toml");
    std::fs::write(&config, format!("[cluster]\nsecret = \"{SECRET}\"\n")).unwrap();
    let (peers, nodes) = cluster_of_three(&origin, vec!["--config".into(), config.into()]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed_for = |host: &str, target: &str, time: u64| {
        let id = peers[0].to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        for part in [id.as_str(), &time.to_string(), "GET", host, target] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        let signature: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("{id}; t={time}; sig={signature}")
    };
    let signed = |target: &str, time: u64| signed_for("cluster.test", target, time);
    let ask = |node: usize, marker: Option<String>| {
        let mut request = client()
            .get(format!("http://{}/owned", nodes[node].endpoint.listen))
            .header("host", "cluster.test");
        if let Some(marker) = marker {
            request = request.header("x-shoal-peer", marker);
        }
        request.send()
    };
    // The cluster works with signed markers: one fetch for all three nodes.
    for node in 0..3 {
        assert_eq!(
            ask(node, None).await.unwrap().text().await.unwrap(),
            "owned"
        );
    }
    assert_eq!(origin.count("/owned"), 1);
    // Forged markers: unsigned, for another target or host, too old, a bad signature.
    let forged = [
        peers[0].to_string(),
        signed("/other", now),
        signed_for("other.test", "/owned", now),
        signed("/owned", now - 120),
        signed("/owned", now).replace("sig=", "sig=00"),
    ];
    for marker in forged {
        for node in 0..3 {
            let response = ask(node, Some(marker.clone())).await.unwrap();
            assert_eq!(response.text().await.unwrap(), "owned");
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(origin.count("/owned"), 1, "no forged marker was believed");
    // A good marker is believed: each node then fetches the URL from the origin itself, as
    // a peer's request asks (unbelieved, two of them would ask its owner instead).
    for node in &nodes {
        let purge = client()
            .post(format!(
                "http://{}/purge?url=http://cluster.test/owned",
                node.endpoint.admin
            ))
            .header("x-shoal-admin", "1")
            .send()
            .await
            .unwrap();
        assert!(purge.status().is_success(), "{}", purge.status());
    }
    for node in 0..3 {
        ask(node, Some(signed("/owned", now))).await.unwrap();
    }
    assert_eq!(origin.count("/owned"), 4, "each node fetched it itself");
}

/// Three nodes (real processes) in one cluster in front of `origin`, started with `args`
/// besides; their addresses, and the nodes.
async fn cluster_of_three(
    origin: &Origin,
    mut args: Vec<std::ffi::OsString>,
) -> (Vec<std::net::SocketAddr>, Vec<Node>) {
    let peers: Vec<_> = (0..3).map(|_| free_port()).collect();
    args.extend(["--origin".into(), origin.url().into()]);
    for peer in &peers {
        args.push("--peer".into());
        args.push(format!("http://{peer}").into());
    }
    let mut nodes = Vec::new();
    for &listen in &peers {
        nodes.push(Node::start(&args, listen, |_| true).await);
    }
    (peers, nodes)
}

/// A sliced object in a cluster behind one hostname: every node computes the same key for
/// each slice, so each slice has one owner in the cluster and reaches the origin once, however
/// many nodes the object is read through, whole or in ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sliced_object_reaches_the_origin_once_per_slice_across_a_cluster() {
    use crate::slices::{content, RangeOrigin, MIB};
    let size = 4 * MIB;
    let origin = RangeOrigin::start(size, true).await;
    let (_, nodes) = cluster_of_three(&origin.origin, Vec::new()).await;
    let get_from = |node: usize, path: &str, range: Option<(u64, u64)>| {
        let mut request = client()
            .get(format!("http://{}{path}", nodes[node].endpoint.listen))
            .header("host", "cluster.test");
        if let Some((first, last)) = range {
            request = request.header("range", format!("bytes={first}-{last}"));
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.bytes().await.unwrap())
        }
    };
    let get = |node: usize, range: Option<(u64, u64)>| get_from(node, "/big", range);
    // Ranges first, each slice's through another node, then the whole object and ranges of
    // every slice through every node.
    for slice in 0..4 {
        let (first, last) = (slice * MIB + 10, slice * MIB + 99);
        let (status, body) = get(slice as usize % 3, Some((first, last))).await;
        assert_eq!(status, 206);
        assert!(body == content(first, last + 1, 1));
    }
    assert_eq!(origin.sent(), size, "each slice once");
    for node in 0..3 {
        let (status, body) = get(node, None).await;
        assert_eq!(status, 200);
        assert!(body == content(0, size, 1), "whole from node {node}");
        for slice in 0..4 {
            let (first, last) = (slice * MIB + 10, slice * MIB + 99);
            let (status, body) = get(node, Some((first, last))).await;
            assert_eq!(status, 206);
            assert!(
                body == content(first, last + 1, 1),
                "range from node {node}"
            );
        }
    }
    assert_eq!(
        origin.sent(),
        size,
        "no slice was fetched from the origin twice"
    );
    // The whole object first, then ranges and the whole through the other nodes.
    let (status, body) = get_from(1, "/whole", None).await;
    assert_eq!(status, 200);
    assert!(body == content(0, size, 1));
    for node in [2, 0] {
        for slice in 0..4 {
            let (first, last) = (slice * MIB, slice * MIB + 99);
            let (status, body) = get_from(node, "/whole", Some((first, last))).await;
            assert_eq!(status, 206);
            assert!(body == content(first, last + 1, 1));
        }
        let (status, body) = get_from(node, "/whole", None).await;
        assert!(status == 200 && body == content(0, size, 1));
    }
    assert_eq!(origin.sent(), 2 * size, "each slice of /whole once");
}

/// A large object without a validator cannot be sliced (its slices could not be told from
/// another version's): in a cluster, where a whole miss asks for its first slice, the node
/// then fetches it whole, stores it, and serves it whole.
#[tokio::test]
async fn a_large_object_without_a_validator_is_stored_whole_in_a_cluster() {
    const SIZE: usize = 3 << 20;
    let origin = Origin::start(|seen| {
        let body = vec![b'x'; SIZE];
        match seen.headers.get("range") {
            // Honours the first slice's range, but says nothing that versions the object.
            Some(_) => Reply {
                status: http::StatusCode::PARTIAL_CONTENT,
                ..Reply::ok(body[..1 << 20].to_vec())
            }
            .header(
                "content-range",
                &format!("bytes 0-{}/{SIZE}", (1 << 20) - 1),
            )
            .header("cache-control", "max-age=60"),
            None => Reply::ok(body).header("cache-control", "max-age=60"),
        }
    })
    .await;
    let (_, nodes) = cluster_of_three(&origin, Vec::new()).await;
    for (node, expected) in [(0, "MISS"), (0, "HIT")] {
        let response = client()
            .get(format!("http://{}/plain", nodes[node].endpoint.listen))
            .header("host", "cluster.test")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-cache"], expected);
        assert_eq!(response.bytes().await.unwrap().len(), SIZE);
    }
    let whole = origin
        .seen()
        .iter()
        .filter(|seen| seen.headers.get("range").is_none())
        .count();
    assert_eq!(whole, 1, "fetched whole once");
}

/// The object changes at the origin while the cluster holds the old version in slices, and
/// one node loses its copy (a purge there only): a read through a node that then meets the
/// new version in a slice may be cut short once, but the cluster converges (the peer holding
/// the old version revalidates when asked with `no-cache`), so reads through every node are
/// whole again afterwards, and no response mixes versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_object_in_slices_heals_across_a_cluster() {
    use crate::slices::{content, RangeOrigin, MIB};
    use std::sync::atomic::Ordering;
    let size = 4 * MIB;
    let origin = RangeOrigin::start(size, true).await;
    let (_, nodes) = cluster_of_three(&origin.origin, Vec::new()).await;
    let read = |node: usize, path: String| {
        let request = client()
            .get(format!("http://{}{path}", nodes[node].endpoint.listen))
            .header("host", "cluster.test")
            .send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.ok()
        }
    };
    let versions = [content(0, size, 1), content(0, size, 2)];
    // Whichever node loses its copy (the URL's owner, or one owning only slices).
    for (purged, purging) in nodes.iter().enumerate() {
        let path = format!("/changing-{purged}");
        origin.version.store(1, Ordering::SeqCst);
        assert!(read(0, path.clone()).await.unwrap() == versions[0]);
        origin.version.store(2, Ordering::SeqCst);
        let purge = client()
            .post(format!(
                "http://{}/purge?url=http://cluster.test{path}",
                purging.endpoint.admin
            ))
            .header("x-shoal-admin", "1")
            .send()
            .await
            .unwrap();
        assert!(purge.status().is_success());
        let mut cut = [0; 3];
        for round in 0..3 {
            for (node, cuts) in cut.iter_mut().enumerate() {
                match read(node, path.clone()).await {
                    Some(body) => assert!(
                        versions.iter().any(|version| body == *version),
                        "a whole body of one version through node {node} ({purged})"
                    ),
                    None if round == 0 => *cuts += 1,
                    None => panic!("read {round} through node {node} cut short ({purged})"),
                }
            }
        }
        assert!(cut.iter().all(|&count| count <= 1), "{cut:?} ({purged})");
    }
}
