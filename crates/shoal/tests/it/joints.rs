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
    let peers: Vec<_> = (0..3).map(|_| free_port()).collect();
    let mut args: Vec<std::ffi::OsString> = vec!["--origin".into(), origin.url().into()];
    for peer in &peers {
        args.push("--peer".into());
        args.push(format!("http://{peer}").into());
    }
    let mut nodes = Vec::new();
    for &listen in &peers {
        nodes.push(Node::start(&args, listen, |_| true).await);
    }
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
