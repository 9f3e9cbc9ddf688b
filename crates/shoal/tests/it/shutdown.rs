//! Graceful shutdown of the real binary: SIGTERM lets responses in flight finish, closes idle
//! connections, refuses new ones and exits.

use std::ffi::OsString;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{free_port, Load, Node};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_responses_in_flight_then_exits() {
    let origin = Origin::start(|seen| match seen.target.as_str() {
        "/slow" => Reply::ok("slow but whole").delay(Duration::from_millis(700)),
        _ => Reply::ok("quick"),
    })
    .await;
    let args: Vec<OsString> = vec!["--origin".into(), origin.url().into()];
    let listen = free_port();
    let mut node = Node::start(&args, listen, |_| true).await;

    // An idle keep-alive connection, and a request in flight.
    let mut idle = TcpStream::connect(listen).await.unwrap();
    idle.write_all(b"GET /quick HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 256];
    let read = idle.read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    let slow = tokio::spawn(async move {
        let response = client()
            .get(format!("http://{listen}/slow"))
            .send()
            .await
            .unwrap();
        let close = response.headers().get("connection").cloned();
        (response.status(), close, response.bytes().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.terminate();

    // The idle connection is closed at once, without an answer.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    // New connections are refused while the slow response finishes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(listen).await.is_err(),
        "no new connections"
    );
    let (status, close, body) = slow.await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"slow but whole"[..]));
    assert_eq!(close.unwrap(), "close");
    let status = node
        .exited(Duration::from_secs(5))
        .await
        .expect("the node exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_process_takes_over_without_a_failed_request() {
    let origin = Origin::start(|seen| {
        Reply::ok(format!("answer for {}", seen.target)).header("cache-control", "max-age=60")
    })
    .await;
    if !migrating_requests() {
        return;
    }
    let args: Vec<OsString> = vec!["--origin".into(), origin.url().into()];
    let listen = free_port();
    let mut old = Node::start(&args, listen, |_| true).await;

    let load = Load::start(listen, 4, |_, n| format!("/t/{}", n % 50));
    load.wait_for(300).await;
    // The new process binds the same address (SO_REUSEPORT) while the old one serves.
    let new = Node::start(&args, listen, |_| true).await;
    load.wait_for(300).await;
    old.terminate();
    assert!(old
        .exited(Duration::from_secs(10))
        .await
        .expect("the old node exits")
        .success());
    load.wait_for(300).await;
    let (ok, failed) = load.stop().await;
    eprintln!("{ok} requests answered across the takeover, {failed} failed");
    assert_eq!(failed, 0, "requests failed during the takeover");
    let served = new.endpoint.stats().await.unwrap()["counters"]["requests"]
        .as_u64()
        .unwrap();
    assert!(served >= 300, "the new process took over: {served}");
}

/// Whether the kernel moves connections waiting in a closing SO_REUSEPORT listener's queue to
/// another listener of the group (`net.ipv4.tcp_migrate_req`, Linux 5.14): without it, the
/// connections that reach the old process's queue in its last instant are reset. Enabled here
/// when it can be (as root); see docs/operations.md.
fn migrating_requests() -> bool {
    const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    if std::fs::read_to_string(SYSCTL).is_ok_and(|value| value.trim() == "1") {
        return true;
    }
    if std::fs::write(SYSCTL, "1").is_ok() {
        return true;
    }
    eprintln!("net.ipv4.tcp_migrate_req cannot be set to 1 here; takeover test not run");
    false
}
