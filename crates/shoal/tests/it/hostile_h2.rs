//! Hostile HTTP/2 clients (issue 26): connections that stall at each stage, request bodies that
//! stop, and requests over the limits HTTP/1 enforces. The stalling clients write frames by
//! hand; the others use the `h2` crate's client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal::config::Span;
use shoal::proxy::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{base, client, eventually, node_with, Origin};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;

fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut bytes = vec![length[1], length[2], length[3], frame_type, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The types of the frames in `bytes`, in order.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = bytes.get(9 + length..).unwrap_or(&[]);
    }
    types
}

/// Writes `opening` on a new connection, then reads until the node closes it (at most 10 s);
/// returns the frame types received and whether it was closed.
async fn stall_after(address: std::net::SocketAddr, opening: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(opening).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received));
    let closed = read.await.is_ok();
    (frame_types(&received), closed)
}

/// Short timeouts, so that each stage's deadline passes within the test.
fn short_timeouts(config: &mut shoal::config::Config) {
    config.server.header_read_timeout = Span(Duration::from_millis(400));
    config.server.keepalive_timeout = Span(Duration::from_millis(600));
    config.server.body_read_timeout = Span(Duration::from_millis(400));
}

/// A connection that sent only the preface, went quiet after SETTINGS, or left a header block
/// unfinished is sent GOAWAY and closed; each kind is counted.
#[tokio::test]
async fn http2_connections_that_stall_are_sent_goaway_and_closed() {
    let origin = Origin::fixed("hello").await;
    let node = node_with(&origin, short_timeouts).await;
    let address = node.listen[0];
    let settings = frame(SETTINGS, 0, 0, &[]);
    let counter = |counter| node.proxy.metrics().get(counter);

    let (_, closed) = stall_after(address, PREFACE).await;
    assert!(
        closed,
        "a connection that sent only the preface stayed open"
    );
    assert_eq!(counter(Counter::HandshakeTimeouts), 1);

    let mut quiet = PREFACE.to_vec();
    quiet.extend(&settings);
    let (types, closed) = stall_after(address, &quiet).await;
    assert!(closed, "an idle connection stayed open");
    assert!(types.contains(&GOAWAY), "no GOAWAY: {types:?}");
    assert_eq!(counter(Counter::IdleTimeouts), 1);

    // HEADERS without END_HEADERS: CONTINUATION must follow, and never does.
    let mut unfinished = quiet.clone();
    unfinished.extend(frame(HEADERS, 0x1, 1, &[0x82, 0x86]));
    let (types, closed) = stall_after(address, &unfinished).await;
    assert!(closed, "an unfinished header block kept its connection");
    assert!(types.contains(&GOAWAY), "no GOAWAY: {types:?}");
    assert_eq!(counter(Counter::HeaderTimeouts), 1);

    // Half a frame header.
    let mut half = quiet.clone();
    half.extend(&frame(SETTINGS, 0, 0, &[])[..4]);
    let (_, closed) = stall_after(address, &half).await;
    assert!(closed, "half a frame kept its connection");
    assert_eq!(counter(Counter::HeaderTimeouts), 2);
    assert_eq!(node.proxy.metrics().get(Counter::OpenConnections), 0);
}

/// What the timeouts are for: idle HTTP/2 sockets holding every connection slot. Once they
/// expire, other clients are served again.
#[tokio::test]
async fn idle_http2_sockets_cannot_lock_other_clients_out() {
    let origin = Origin::fixed("hello").await;
    let node = node_with(&origin, |config| {
        short_timeouts(config);
        config.server.max_connections = 20;
    })
    .await;
    let mut holders = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
        stream.write_all(PREFACE).await.unwrap();
        holders.push(stream);
    }
    assert!(
        eventually(|| node.proxy.metrics().get(Counter::OpenConnections) == 20).await,
        "the sockets were not all accepted"
    );
    assert!(
        eventually(|| node.proxy.metrics().get(Counter::OpenConnections) == 0).await,
        "the idle sockets kept their slots"
    );
    let response = client().get(base(&node)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    drop(holders);
}

/// An origin that accepts connections, reads whatever comes and counts the connections that
/// the node closed (or reset) before sending a whole request.
async fn listening_origin() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let aborted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&aborted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut sink = vec![0u8; 8192];
                loop {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (url, aborted)
}

/// Opens `count` uploads on one HTTP/2 connection to `address`, each of which sends a first
/// part and then nothing more; the client and each stream's answer and sender are returned
/// (held open).
async fn stalled_uploads(
    address: std::net::SocketAddr,
    count: usize,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    Vec<(h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>)>,
) {
    let mut client = crate::support::h2_client(address).await;
    let mut streams = Vec::new();
    for index in 0..count {
        let request = http::Request::post(format!("http://a/upload-{index}"))
            .body(())
            .unwrap();
        let (response, mut stream) = client.send_request(request, false).unwrap();
        stream
            .send_data(bytes::Bytes::from_static(b"the first part"), false)
            .unwrap();
        streams.push((response, stream));
        client = client.ready().await.unwrap();
    }
    (client, streams)
}

/// An upload whose stream stops sending gets 408 once `body_read_timeout` has passed, and its
/// origin request is abandoned (the origin connection closed), as over HTTP/1.
#[tokio::test]
async fn a_stalled_http2_request_body_times_out_and_frees_its_origin_connection() {
    let (url, aborted) = listening_origin().await;
    let node = crate::support::node_for(&url, short_timeouts).await;
    let (_client, streams) = stalled_uploads(node.listen[0], 3).await;
    for (response, _stream) in streams {
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("no answer to a stalled upload")
            .unwrap();
        assert_eq!(response.status(), 408);
    }
    assert!(
        eventually(|| aborted.load(Ordering::SeqCst) == 3).await,
        "origin connections still held: {} of 3 closed",
        aborted.load(Ordering::SeqCst)
    );
    assert_eq!(node.proxy.metrics().get(Counter::BodyTimeouts), 3);
}

/// One connection's uploads reach origins a few at a time (`server.h2_max_uploads`), so a
/// client cannot hold an origin connection per stream.
#[tokio::test]
async fn one_http2_connection_holds_at_most_its_share_of_origin_connections() {
    let (url, _aborted) = listening_origin().await;
    let node = crate::support::node_for(&url, |config| {
        config.server.h2_max_uploads = 2;
        config.server.body_read_timeout = Span(Duration::from_secs(30));
    })
    .await;
    let (_client, _streams) = stalled_uploads(node.listen[0], 10).await;
    let requests = || node.proxy.metrics().get(Counter::OriginRequests);
    assert!(
        eventually(|| requests() == 2).await,
        "{} origin requests",
        requests()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        requests(),
        2,
        "more uploads than the share reached the origin"
    );
}

/// HTTP/2 requests meet the same head limits as HTTP/1 ones: 414 for a long target, 431 for
/// too many or too large fields, and none reaches the origin.
#[tokio::test]
async fn http2_requests_over_the_head_limits_are_refused_like_http1_ones() {
    let origin = Origin::fixed("hello").await;
    let node = node_with(&origin, |config| {
        config.server.max_headers = 20;
        config.server.max_request_line = shoal::config::ByteSize(1024);
        config.server.max_header_bytes = shoal::config::ByteSize(4096);
    })
    .await;
    let mut client = crate::support::h2_client(node.listen[0]).await;
    let long = format!("http://a/{}", "p".repeat(2000));
    let mut many = http::Request::get("http://a/many");
    for index in 0..30 {
        many = many.header(format!("x-field-{index}"), "1");
    }
    let large = http::Request::get("http://a/large").header("x-big", "b".repeat(5000));
    let cases = [
        (http::Request::get(long).body(()).unwrap(), 414),
        (many.body(()).unwrap(), 431),
        (large.body(()).unwrap(), 431),
        (http::Request::get("http://a/fine").body(()).unwrap(), 200),
    ];
    for (request, expected) in cases {
        let target = request.uri().path().chars().take(20).collect::<String>();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), expected, "{target}");
        client = client.ready().await.unwrap();
    }
    assert_eq!(
        origin.seen().len(),
        1,
        "only the request within the limits went on"
    );
}

/// A client that opens its flow-control windows wide, asks for a large object and then reads
/// nothing is dropped once a write has waited `send_timeout` for it, as over HTTP/1.
#[tokio::test]
async fn an_http2_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let origin = crate::support::Origin::start(|_| {
        crate::support::Reply::ok(vec![b'x'; 16 << 20]).header("cache-control", "max-age=60")
    })
    .await;
    let node = node_with(&origin, |config| {
        config.server.send_timeout = Span(Duration::from_millis(500));
    })
    .await;
    let mut opening = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE to the most, and the connection's window as wide.
    opening.extend(frame(SETTINGS, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
    opening.extend(frame(0x8, 0, 0, &[0x7f, 0xff, 0, 0]));
    // GET / on authority "a", END_STREAM | END_HEADERS.
    opening.extend(frame(
        HEADERS,
        0x5,
        1,
        &[0x82, 0x86, 0x84, 0x41, 0x01, b'a'],
    ));
    let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
    stream.write_all(&opening).await.unwrap();
    let counter = |counter| node.proxy.metrics().get(counter);
    assert!(
        eventually(|| counter(Counter::SendTimeouts) == 1).await,
        "a client that reads nothing kept its connection"
    );
    assert!(eventually(|| counter(Counter::OpenConnections) == 0).await);
    drop(stream);
}

/// A stream whose window the client keeps shut, while its connection stays open and reads, is
/// let go after `send_timeout`: its pass's origin connection is not held at the client's will.
#[tokio::test]
async fn a_stream_the_client_never_opens_its_window_for_is_let_go() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let closed = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&closed);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let _ = stream.read(&mut head).await;
                let mut reply = b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 10000000\r\n\r\n".to_vec();
                reply.extend(vec![b'x'; 64 << 10]);
                let _ = stream.write_all(&reply).await;
                while let Ok(1..) = stream.read(&mut head).await {}
                counted.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let node = crate::support::node_for(&url, |config| {
        config.server.send_timeout = Span(Duration::from_millis(500));
    })
    .await;
    let mut opening = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: no stream may be sent a byte until a WINDOW_UPDATE.
    opening.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]));
    let mut get = vec![0x82, 0x86, 0x04, 0x05];
    get.extend(b"/pass");
    get.extend([0x41, 0x01, b'a']);
    opening.extend(frame(HEADERS, 0x5, 1, &get));
    let mut stream = TcpStream::connect(node.listen[0]).await.unwrap();
    stream.write_all(&opening).await.unwrap();
    // The client reads everything the node sends (the connection is not stalled).
    let reader = tokio::spawn(async move {
        let mut sink = vec![0u8; 65536];
        while let Ok(1..) = stream.read(&mut sink).await {}
    });
    assert!(
        eventually(|| closed.load(Ordering::SeqCst) == 1).await,
        "the origin connection is still held"
    );
    assert_eq!(node.proxy.metrics().get(Counter::SendTimeouts), 1);
    assert_eq!(
        node.proxy.metrics().get(Counter::OpenConnections),
        1,
        "only the stream was let go, not the connection"
    );
    reader.abort();
}
