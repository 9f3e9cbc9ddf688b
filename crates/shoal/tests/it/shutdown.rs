//! Graceful shutdown of the real binary: SIGTERM lets responses in flight finish, closes idle
//! connections, refuses new ones and exits.

use std::ffi::OsString;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{free_port, Node};
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
