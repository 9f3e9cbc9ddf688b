//! Strict HTTP/1.1 on the wire: every smuggling vector gets a 4xx and a closed connection, and
//! nothing reaches the origin; limits and timeouts keep clients from exhausting the node.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use shoal::proxy::Counter;

use crate::support::*;

/// Sends `request` and expects `status` followed by the node closing the connection.
async fn expect_rejected(node: &shoal::Node, request: &[u8], status: u16) {
    let reply = raw(node.listen[0], request).await;
    let expected = format!("HTTP/1.1 {status} ");
    assert!(
        reply.starts_with(&expected),
        "{}\n=> {reply}",
        String::from_utf8_lossy(request)
    );
    assert!(reply.contains("Connection: close"), "{reply}");
}

#[tokio::test]
async fn smuggling_vectors_are_rejected_and_never_forwarded() {
    let origin = Origin::fixed("x").await;
    let node = node(&origin).await;
    let cases: &[(&[u8], u16)] = &[
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n\tb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-\x7fName: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n[bad]: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", 505),
        // TE.TE: two Transfer-Encoding fields, one of them not chunked.
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        // TE.TE: obfuscated names and values.
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n", 400),
        // Header-name whitespace before the colon, on Content-Length too.
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello", 400),
        // Duplicate Content-Length, even equal ones, and a comma list of equal values.
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
        // Chunk-extension abuse: bare CR or LF inside, a quoted CRLF, a size with a sign.
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\rc\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\r\ny\"\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: a\r\n b\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        expect_rejected(&node, request, *status).await;
    }
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
}

#[tokio::test]
async fn a_smuggled_second_request_never_reaches_the_origin() {
    let origin = Origin::start(|_| Reply::status(200)).await;
    let node = node(&origin).await;
    // CL.TE: a front end trusting Content-Length would see one request; a back end trusting
    // Transfer-Encoding would see a second one, "GET /admin".
    let attack = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 36\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let reply = raw(node.listen[0], attack).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(reply.matches("HTTP/1.1").count(), 1);
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn http2_bodies_that_differ_from_their_content_length_are_refused() {
    let origin = Origin::start(|seen| Reply::ok(format!("{} bytes", seen.body.len()))).await;
    let node = node(&origin).await;
    for (declared, sent) in [(5usize, 10usize), (10, 5), (0, 3)] {
        let tcp = TcpStream::connect(node.listen[0]).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.unwrap();
        let request = http::Request::post(format!("http://a/upload-{declared}-{sent}"))
            .header("content-length", declared)
            .body(())
            .unwrap();
        let (response, mut stream) = client.send_request(request, false).unwrap();
        stream
            .send_data(bytes::Bytes::from(vec![b'x'; sent]), true)
            .unwrap();
        // A reset stream, or an error status: never the origin's answer to a body that is
        // not the one declared.
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), response).await {
            assert!(
                response.status().is_client_error() || response.status().is_server_error(),
                "declared {declared}, sent {sent}: {}",
                response.status()
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    // The same client with an honest length gets through.
    let tcp = TcpStream::connect(node.listen[0]).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post("http://a/upload-5-5")
        .header("content-length", 5)
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream
        .send_data(bytes::Bytes::from_static(b"hello"), true)
        .unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(origin.seen().len(), 1);
    assert_eq!(&origin.seen()[0].body[..], b"hello");
}

#[tokio::test]
async fn oversized_request_lines_and_heads_are_refused() {
    let origin = Origin::fixed("x").await;
    let node = node_with(&origin, |config| {
        config.server.max_request_line = shoal::config::ByteSize(1024);
        config.server.max_header_bytes = shoal::config::ByteSize(4096);
        config.server.max_headers = 20;
    })
    .await;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(2000));
    expect_rejected(&node, long_target.as_bytes(), 414).await;
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    expect_rejected(&node, big_head.as_bytes(), 431).await;
    let many: String = (0..30).map(|i| format!("X-{i}: v\r\n")).collect();
    expect_rejected(
        &node,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
        431,
    )
    .await;
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn a_request_head_that_trickles_in_times_out() {
    let origin = Origin::fixed("x").await;
    let node = node_with(&origin, |config| {
        config.server.header_read_timeout = shoal::config::Span(Duration::from_millis(500));
    })
    .await;
    let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let reply = read_until_close(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let origin = Origin::fixed("x").await;
    let node = node_with(&origin, |config| {
        config.server.keepalive_timeout = shoal::config::Span(Duration::from_millis(300));
    })
    .await;
    let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until_close(&mut stream).await;
    // One complete answer, then the node closed the idle connection by itself.
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with('x'), "{reply}");
    // Closed, not merely quiet: the read ends with end-of-stream (the 5 s bound only keeps a
    // broken node from hanging the test).
    let mut more = [0u8; 1];
    let next = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut more)).await;
    assert!(
        matches!(next, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection was not closed"
    );
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let origin = Origin::fixed("x").await;
    let node = node_with(&origin, |config| config.server.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 512];
        assert!(stream.read(&mut buffer).await.unwrap() > 0);
        held.push(stream);
    }
    let mut third = TcpStream::connect(node.listen[0]).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let reply = read_until_close(&mut third).await;
    assert!(reply.is_empty(), "{reply}");
    let metrics = node.proxy.metrics();
    assert_eq!(metrics.get(Counter::RefusedConnections), 1);
    drop(held);
    assert!(eventually(|| metrics.get(Counter::OpenConnections) == 0).await);
    assert_eq!(get(&node, "/").await.0, 200);
}

#[tokio::test]
async fn http10_clients_get_keep_alive_only_when_asked() {
    let origin = Origin::fixed("ten").await;
    let node = node(&origin).await;
    let reply = raw(node.listen[0], b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("Connection: close"), "{reply}");
    let via = origin.last("/").headers["via"].clone();
    assert!(via.to_str().unwrap().starts_with("1.0 shoal "), "{via:?}");
    let reply = raw(
        node.listen[0],
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 2, "{reply}");
    assert!(reply.contains("Connection: keep-alive"), "{reply}");
}

#[tokio::test]
async fn expect_continue_is_honoured() {
    let origin = Origin::start(|_| Reply::status(200)).await;
    let node = node(&origin).await;
    let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
    stream
        .write_all(b"PUT /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let reply = read_until_close(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(origin.last("/e").body, "hello");
}
