//! Per-client limits: open connections per client IP and requests per second per client IP.
//! Clients use different loopback addresses (127.0.0.1, 127.0.0.2) to be different clients.

use std::net::SocketAddr;
use std::time::Duration;

use shoal::proxy::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

/// A connection to `node` from the loopback address `from`.
async fn connect_from(from: [u8; 4], node: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(node).await.unwrap()
}

/// Sends one GET on `stream` and returns the response head (after reading the body), or
/// `None` if the node closed the connection.
async fn request(stream: &mut TcpStream, path: &str) -> Option<String> {
    let sent = stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: limits.test\r\n\r\n").as_bytes())
        .await;
    if sent.is_err() {
        return None;
    }
    let mut buffer = vec![0u8; 16384];
    let mut head = Vec::new();
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).into_owned();
            let length: usize = text
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = head.len() - (end + 4);
            while body < length {
                let read = stream.read(&mut buffer).await.ok()?;
                if read == 0 {
                    return None;
                }
                body += read;
            }
            return Some(text);
        }
    }
}

#[tokio::test]
async fn a_client_ip_may_hold_only_so_many_connections() {
    let origin = Origin::fixed("ok").await;
    let node = node_with(&origin, |config| config.server.max_connections_per_ip = 2).await;
    let address = node.listen[0];
    let mut first = connect_from([127, 0, 0, 1], address).await;
    let mut second = connect_from([127, 0, 0, 1], address).await;
    assert!(request(&mut first, "/a")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    assert!(request(&mut second, "/a")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    // The third from the same address is closed at once; another address is not affected.
    let mut third = connect_from([127, 0, 0, 1], address).await;
    assert_eq!(request(&mut third, "/a").await, None);
    let mut other = connect_from([127, 0, 0, 2], address).await;
    assert!(request(&mut other, "/a")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    // Closing one frees its place.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        let mut stream = connect_from([127, 0, 0, 1], address).await;
        if let Some(head) = request(&mut stream, "/a").await {
            again = Some(head);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.unwrap().starts_with("HTTP/1.1 200"));
    let refused = node.proxy.metrics().get(Counter::RefusedPerClient);
    assert!(refused >= 1, "{refused}");
}

#[tokio::test]
async fn a_client_over_its_request_rate_gets_429_with_retry_after() {
    let origin = Origin::fixed("ok").await;
    let node = node_with(&origin, |config| {
        config.server.rate_limit_per_ip = 2;
        config.server.rate_limit_burst = 5;
    })
    .await;
    let address = node.listen[0];
    let mut stream = connect_from([127, 0, 0, 1], address).await;
    for n in 0..5 {
        let head = request(&mut stream, "/a").await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "request {n}: {head}");
    }
    // The burst is spent: told to wait, on the same (kept) connection.
    let head = request(&mut stream, "/a").await.unwrap();
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let head = request(&mut stream, "/a").await.unwrap();
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    // Another client is not affected.
    let mut other = connect_from([127, 0, 0, 2], address).await;
    assert!(request(&mut other, "/a")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    // After a pause, tokens are back at the configured rate.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(request(&mut stream, "/a")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    assert_eq!(
        origin.count("/a"),
        1,
        "429s never reach the origin (and the rest are hits)"
    );
}

#[tokio::test]
async fn new_misses_are_shed_while_too_much_body_data_is_in_flight() {
    let (release, gate) = tokio::sync::mpsc::channel(8);
    let gate = std::sync::Mutex::new(Some(gate));
    let origin = Origin::start(move |seen| match seen.target.as_str() {
        "/big" => Reply::ok("")
            .header("cache-control", "max-age=60")
            .header("content-length", "300000")
            .body(Body::Gated(gate.lock().unwrap().take().unwrap())),
        _ => Reply::ok("small").header("cache-control", "max-age=60"),
    })
    .await;
    let node = node_with(&origin, |config| {
        config.server.max_inflight_memory = shoal::config::ByteSize(100_000);
    })
    .await;
    assert_eq!(get(&node, "/cached").await.0, 200);

    // A fetch holds 200,000 bytes of a 300,000-byte body: over the cap.
    let big = tokio::spawn({
        let url = format!("{}/big", base(&node));
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .len()
        }
    });
    release
        .send(bytes::Bytes::from(vec![b'x'; 200_000]))
        .await
        .unwrap();
    assert!(eventually(|| node.proxy.inflight_bytes() >= 200_000).await);

    // A new miss is shed, with a time to come back; hits go on.
    let (status, headers, _) = get(&node, "/new").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(get(&node, "/cached").await.0, 200);
    assert_eq!(origin.count("/new"), 0);

    // Once the big body is complete (and in the store), misses are fetched again.
    release
        .send(bytes::Bytes::from(vec![b'x'; 100_000]))
        .await
        .unwrap();
    assert_eq!(big.await.unwrap(), 300_000);
    assert!(eventually(|| node.proxy.inflight_bytes() == 0).await);
    assert_eq!(get(&node, "/new").await.0, 200);
    assert_eq!(node.proxy.metrics().get(Counter::Shed), 1);
}
