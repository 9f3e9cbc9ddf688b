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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_and_bans_reach_every_peer_and_name_the_ones_that_failed() {
    const TOKEN: &str = "a-cluster-wide-admin-token";
    let origin = origin().await;
    let listens: [SocketAddr; 4] = std::array::from_fn(|_| free_port());
    let admins: [SocketAddr; 4] = std::array::from_fn(|_| free_port());
    let urls = |addresses: &[SocketAddr]| -> Vec<shoal::config::OriginUrl> {
        addresses
            .iter()
            .map(|address| format!("http://{address}").parse().unwrap())
            .collect()
    };
    // Three nodes run; the fourth peer never starts, so its admin API cannot be reached.
    let mut nodes = Vec::new();
    for index in 0..3 {
        let mut config = shoal::config::Config::default();
        config.server.listen = vec![listens[index]];
        config.admin.listen = Some(admins[index]);
        config.admin.token = Some(TOKEN.into());
        config.origin.urls = vec![origin.url().parse().unwrap()];
        config.cluster.peers = urls(&listens);
        config.cluster.admin = urls(&admins);
        nodes.push(shoal::Node::start(config).await.unwrap());
    }
    let admin_get = move |index: usize, path: String| async move {
        let response = client()
            .get(format!("http://{}{path}", admins[index]))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&response.bytes().await.unwrap()).unwrap()
    };
    let cached_at =
        move |index: usize| admin_get(index, format!("/cache/inspect?url=http://{HOST}/p"));
    for node in &nodes {
        let endpoint = Endpoint {
            listen: node.listen[0],
            admin: node.admin.unwrap(),
        };
        endpoint.get("/p", HOST).await.unwrap();
    }
    for index in 0..3 {
        let inspection = cached_at(index).await;
        assert!(
            !inspection["variants"].as_array().unwrap().is_empty(),
            "{inspection}"
        );
    }

    let ctl = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
                .args([
                    "ctl",
                    "--admin",
                    &format!("http://{}", admins[0]),
                    "--token",
                    TOKEN,
                ])
                .args(&args)
                .output()
                .unwrap()
        })
    };
    let purge = ctl(vec![
        "purge".into(),
        "--all".into(),
        format!("http://{HOST}/p"),
    ])
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&purge.stdout),
        String::from_utf8_lossy(&purge.stderr),
    );
    assert!(!purge.status.success(), "a peer failed: {stdout}");
    assert!(
        stderr.contains("1 of 3 peers failed")
            && stderr.contains(&admins[3].to_string())
            && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(
        stdout.starts_with(&format!("this node: purged http://{HOST}/p\n")),
        "{stdout}"
    );
    assert_eq!(stdout.matches(": purged").count(), 3, "{stdout}");
    for index in 0..3 {
        let inspection = cached_at(index).await;
        assert!(
            inspection["variants"].as_array().unwrap().is_empty(),
            "{inspection}"
        );
    }

    let ban = ctl(vec![
        "--json".into(),
        "ban".into(),
        "--all".into(),
        format!("http://{HOST}/b/"),
    ])
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&ban.stdout).unwrap();
    assert_eq!(answer["failed"], 1, "{answer}");
    for index in 0..3 {
        let bans = admin_get(index, "/bans".into()).await;
        assert_eq!(bans[0]["value"], format!("http://{HOST}/b/"), "{bans}");
    }

    // Without --all, a ban stays on the node it was sent to.
    let local = ctl(vec!["purge-tag".into(), "t1".into()]).await.unwrap();
    assert!(local.status.success());
    assert_eq!(
        admin_get(0, "/bans".into()).await.as_array().unwrap().len(),
        2
    );
    assert_eq!(
        admin_get(1, "/bans".into()).await.as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_cluster_wide_purge_needs_the_peers_admin_addresses() {
    let origin = origin().await;
    let node = node(&origin).await;
    let response = client()
        .post(format!(
            "http://{}/purge?url=http://{HOST}/p&cluster=1",
            node.admin.unwrap()
        ))
        .header("x-shoal-admin", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("cluster"));
}
