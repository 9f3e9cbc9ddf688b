//! Pools, routes, retries, 404 fallthrough, health checks, operator states and parent tiers,
//! with several in-process origins (and nodes) on loopback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal::config::{Config, HealthConfig, HostConfig, Policy, PoolConfig, RouteConfig, Span};

use crate::support::*;

fn pool(name: &str, policy: Policy, origins: &[&Origin]) -> PoolConfig {
    PoolConfig {
        name: name.to_owned(),
        policy,
        parent: false,
        hosts: origins
            .iter()
            .map(|origin| HostConfig {
                url: origin.url().parse().unwrap(),
                weight: 1,
                max_connections: 0,
            })
            .collect(),
        health: None,
        tls_ca: None,
        danger_accept_invalid_certs_for_testing: false,
        ..shoal::config::PoolConfig::of_hosts("", Vec::new())
    }
}

fn only(config: &mut Config, pool: PoolConfig) {
    config.origin.urls.clear();
    config.routes = vec![RouteConfig {
        host: None,
        path_prefix: None,
        pool: pool.name.clone(),
        fallthrough_404: false,
        signing_keys: Vec::new(),
    }];
    config.pools = vec![pool];
}

/// An origin that answers every request itself, uncacheable, so each request reaches a host.
async fn counting_origin(name: &'static str) -> Origin {
    Origin::start(move |_| Reply::ok(name).header("cache-control", "no-store")).await
}

async fn admin(node: &shoal::Node, method: reqwest::Method, path: &str) -> serde_json::Value {
    let response = client()
        .request(method, format!("http://{}{path}", node.admin.unwrap()))
        .header("x-shoal-admin", "1")
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn a_404_falls_through_to_the_origin_that_has_the_file() {
    let first = Origin::start(
        |seen| match seen.target.trim_start_matches("/f/").parse::<u32>() {
            Ok(n) if n % 2 == 0 => Reply::ok(format!("file {n} from the first")),
            _ => Reply::status(404),
        },
    )
    .await;
    let second = Origin::start(|seen| match seen.target.as_str() {
        "/missing" => Reply::status(404),
        target => Reply::ok(format!("{target} from the second")),
    })
    .await;
    let node = node_with(&first, |config| {
        only(
            config,
            pool("scattered", Policy::Failover, &[&first, &second]),
        );
        config.routes[0].fallthrough_404 = true;
    })
    .await;
    for n in 0..10 {
        let (status, _, body) = get(&node, &format!("/f/{n}")).await;
        assert_eq!(status, 200, "/f/{n}");
        let expected = match n % 2 {
            0 => format!("file {n} from the first"),
            _ => format!("/f/{n} from the second"),
        };
        assert_eq!(body, expected);
    }
    // Missing everywhere: the last 404 is returned and cached like any 404.
    let (status, _, _) = get(&node, "/missing").await;
    assert_eq!(status, 404);
    let (status, headers, _) = get(&node, "/missing").await;
    assert_eq!((status, cache_status(&headers)), (404, "HIT"));
    assert_eq!(second.count("/missing"), 1);

    // Without fallthrough, the first 404 is the answer.
    let plain = node_with(&first, |config| {
        only(
            config,
            pool("scattered", Policy::Failover, &[&first, &second]),
        )
    })
    .await;
    let (status, _, _) = get(&plain, "/f/1").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_503_is_retried_on_the_next_host_for_idempotent_requests_only() {
    let failing = Origin::start(|_| Reply::status(503)).await;
    let working = counting_origin("working").await;
    let node = node_with(&failing, |config| {
        only(
            config,
            pool("retried", Policy::Failover, &[&failing, &working]),
        )
    })
    .await;
    let (status, _, body) = get(&node, "/r").await;
    assert_eq!((status, &body[..]), (200, &b"working"[..]));
    assert_eq!(failing.count("/r"), 1);
    let response = client()
        .post(format!("{}/r", base(&node)))
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "a POST is not sent twice");
    assert_eq!(
        working.seen().iter().filter(|s| s.method == "POST").count(),
        0
    );
}

#[tokio::test]
async fn a_drained_host_gets_no_new_requests_and_an_operator_brings_it_back() {
    let (a, b) = (counting_origin("a").await, counting_origin("b").await);
    let node = node_with(&a, |config| {
        only(config, pool("pair", Policy::RoundRobin, &[&a, &b]))
    })
    .await;
    let host = a.address.to_string();
    let set = admin(
        &node,
        reqwest::Method::POST,
        &format!("/upstreams/state?pool=pair&host={host}&state=drain"),
    )
    .await;
    assert_eq!(set["previous"], "auto");
    for n in 0..10 {
        let (_, _, body) = get(&node, &format!("/d/{n}")).await;
        assert_eq!(body, "b");
    }
    assert_eq!(a.seen().len(), 0);
    let view = admin(&node, reqwest::Method::GET, "/upstreams").await;
    assert_eq!(view[0]["hosts"][0]["state"], "drain");
    assert_eq!(view[0]["hosts"][1]["state"], "up");
    admin(
        &node,
        reqwest::Method::POST,
        &format!("/upstreams/state?pool=pair&host={host}&state=auto"),
    )
    .await;
    for n in 0..10 {
        get(&node, &format!("/e/{n}")).await;
    }
    assert_eq!(a.seen().len(), 5, "round-robin again");
}

#[tokio::test]
async fn health_checks_take_a_host_out_and_back_and_traffic_follows() {
    let healthy = Arc::new(AtomicBool::new(true));
    let state = Arc::clone(&healthy);
    let a = Origin::start(move |seen| match seen.target.as_str() {
        "/health" if state.load(Ordering::SeqCst) => Reply::ok("ok"),
        "/health" => Reply::status(500),
        _ => Reply::ok("a").header("cache-control", "no-store"),
    })
    .await;
    let b = Origin::start(|_| Reply::ok("b").header("cache-control", "no-store")).await;
    let node = node_with(&a, |config| {
        let mut checked = pool("checked", Policy::RoundRobin, &[&a, &b]);
        checked.health = Some(HealthConfig {
            path: "/health".into(),
            interval: Span(Duration::from_millis(50)),
            rise: 2,
            fall: 2,
            ..HealthConfig::default()
        });
        only(config, checked);
    })
    .await;
    let state_of_a = |view: &serde_json::Value| view[0]["hosts"][0]["state"].clone();
    healthy.store(false, Ordering::SeqCst);
    let mut view = serde_json::Value::Null;
    for _ in 0..100 {
        view = admin(&node, reqwest::Method::GET, "/upstreams").await;
        if state_of_a(&view) == "unhealthy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state_of_a(&view), "unhealthy", "{view}");
    assert_eq!(view[0]["hosts"][0]["last_check"]["detail"], "status 500");
    let before = a.seen().iter().filter(|s| s.target != "/health").count();
    for n in 0..10 {
        let (_, _, body) = get(&node, &format!("/h/{n}")).await;
        assert_eq!(body, "b");
    }
    assert_eq!(
        a.seen().iter().filter(|s| s.target != "/health").count(),
        before
    );

    healthy.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        view = admin(&node, reqwest::Method::GET, "/upstreams").await;
        if state_of_a(&view) == "up" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state_of_a(&view), "up");
    let answers: Vec<_> = get_many(&node, 10).await;
    assert!(
        answers.iter().any(|body| body == "a"),
        "traffic returns to a: {answers:?}"
    );
}

/// The bodies of `count` requests for new URLs, one after the other.
async fn get_many(node: &shoal::Node, count: usize) -> Vec<String> {
    let mut answers = Vec::new();
    for n in 0..count {
        let (_, _, body) = get(node, &format!("/back/{n}")).await;
        answers.push(String::from_utf8_lossy(&body).into_owned());
    }
    answers
}

#[tokio::test]
async fn edges_behind_a_shield_fetch_each_object_from_the_origin_once() {
    let origin = Origin::start(|seen| {
        Reply::ok(format!("{} from the origin", seen.target)).header("cache-control", "max-age=60")
    })
    .await;
    let shield = node(&origin).await;
    let shield_url = format!("http://{}", shield.listen[0]);
    let edge = |_: usize| {
        let shield_url = shield_url.clone();
        move |config: &mut Config| {
            let mut parent = PoolConfig {
                parent: true,
                ..pool("shield", Policy::Hash, &[])
            };
            parent.hosts.push(HostConfig {
                url: shield_url.parse().unwrap(),
                weight: 1,
                max_connections: 0,
            });
            only(config, parent);
        }
    };
    let edges = [
        node_with(&origin, edge(0)).await,
        node_with(&origin, edge(1)).await,
    ];
    for n in 0..20 {
        for edge in &edges {
            let (status, _, body) =
                get_with(edge, &format!("/s/{n}"), &[("host", "site.test")]).await;
            assert_eq!(status, 200);
            assert_eq!(body, format!("/s/{n} from the origin"));
        }
    }
    for n in 0..20 {
        assert_eq!(
            origin.count(&format!("/s/{n}")),
            1,
            "the shield collapses the edges"
        );
    }
}
