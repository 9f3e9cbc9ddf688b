//! A cluster of peer caches, as real processes on loopback: each object is fetched from the
//! origin once per cluster, and a dead peer's objects move to the next peer.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::process::{free_port, Endpoint, Node};
use crate::support::*;

const HOST: &str = "cluster.test";

fn body_of(path: &str) -> Vec<u8> {
    format!("the object at {path}\n").repeat(50).into_bytes()
}

async fn origin() -> Origin {
    Origin::start(|seen| Reply::ok(body_of(&seen.target)).header("cache-control", "max-age=600"))
        .await
}

/// The arguments of a member of the cluster of `peers` in front of `origin`.
fn member_args(origin: &Origin, peers: &[SocketAddr]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--origin".into(), origin.url().into()];
    for peer in peers {
        args.push("--peer".into());
        args.push(format!("http://{peer}").into());
    }
    args
}

async fn start_cluster(origin: &Origin, size: usize) -> (Vec<SocketAddr>, Vec<Node>) {
    let peers: Vec<SocketAddr> = (0..size).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for &listen in &peers {
        nodes.push(Node::start(&member_args(origin, &peers), listen, |_| true).await);
    }
    (peers, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_peers_fetch_each_object_from_the_origin_once() {
    let origin = origin().await;
    let (_, nodes) = start_cluster(&origin, 3).await;
    let endpoints: Vec<Endpoint> = nodes.iter().map(|node| node.endpoint).collect();
    // 100 URLs, each requested once at every node, all at the same time.
    let mut requests = Vec::new();
    for url in 0..100 {
        for endpoint in &endpoints {
            let endpoint = *endpoint;
            requests.push(tokio::spawn(async move {
                let path = format!("/o/{url}");
                let answer = endpoint.get(&path, HOST).await;
                (path, answer)
            }));
        }
    }
    for request in requests {
        let (path, answer) = request.await.unwrap();
        let (_, body) = answer.expect("every request is answered");
        assert!(body == body_of(&path), "{path}");
    }
    for url in 0..100 {
        let path = format!("/o/{url}");
        assert_eq!(origin.count(&path), 1, "{path} reached the origin once");
    }
    // Each node owns about a third of the objects: each fetched its share from the origin.
    for endpoint in &endpoints {
        let stats = endpoint.stats().await.unwrap();
        let fetched = stats["counters"]["origin_requests"].as_u64().unwrap();
        assert!(fetched > 0, "every node does its share: {stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_peer_costs_only_the_requests_in_flight_to_it() {
    let origin = origin().await;
    let (peers, mut nodes) = start_cluster(&origin, 3).await;
    let clients: Vec<Endpoint> = nodes[..2].iter().map(|node| node.endpoint).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for worker in 0..8 {
        let endpoint = clients[worker % 2];
        let (stop, answered, failed) = (
            Arc::clone(&stop),
            Arc::clone(&answered),
            Arc::clone(&failed),
        );
        load.push(tokio::spawn(async move {
            let mut n = worker * 13;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/load/{}", n % 300);
                match endpoint.get(&path, HOST).await {
                    Some((_, body)) if body == body_of(&path) => {
                        answered.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                n += 7;
            }
        }));
    }
    while answered.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(nodes.pop()); // SIGKILL the third peer mid-run
    let at_kill = answered.load(Ordering::Relaxed);
    while answered.load(Ordering::Relaxed) < at_kill + 600 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    // At most the requests the eight clients had in flight through the dead peer fail.
    assert!(
        failed.load(Ordering::Relaxed) <= 8,
        "{} requests failed",
        failed.load(Ordering::Relaxed)
    );
    // Every object is served by the two that are left.
    for n in 0..300 {
        let path = format!("/load/{n}");
        let (_, body) = clients[n % 2].get(&path, HOST).await.expect("answered");
        assert!(body == body_of(&path), "{path}");
    }

    // The peer comes back: once its ejection is over, it owns its objects again.
    let back = Node::start(&member_args(&origin, &peers), peers[2], |_| true).await;
    let mut served_by_it = 0;
    for round in 0..40 {
        for n in 0..30 {
            clients[n % 2]
                .get(&format!("/again/{round}/{n}"), HOST)
                .await;
        }
        served_by_it = back.endpoint.stats().await.unwrap()["counters"]["requests"]
            .as_u64()
            .unwrap();
        if served_by_it > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served_by_it > 0,
        "traffic returns to the peer once it is back"
    );
}
