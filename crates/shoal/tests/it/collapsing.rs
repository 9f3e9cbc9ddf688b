//! Request collapsing and streaming: one origin fetch per key, the body streamed to every client
//! as it arrives, at each client's own pace, and nobody left hanging when things fail.

use std::time::Duration;

use bytes::Bytes;
use shoal::proxy::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn concurrent_misses_cause_one_origin_request() {
    let origin = Origin::start(|_| {
        Reply::ok("shared")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300))
    })
    .await;
    let node = node(&origin).await;
    let requests = (0..50).map(|_| {
        let url = format!("{}/cold", base(&node));
        tokio::spawn(async move {
            let response = client().get(url).send().await.unwrap();
            let status = cache_status(response.headers()).to_owned();
            (status, response.bytes().await.unwrap())
        })
    });
    let results: Vec<_> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(results.iter().all(|(_, body)| &body[..] == b"shared"));
    assert_eq!(
        results
            .iter()
            .filter(|(status, _)| status == "MISS")
            .count(),
        1
    );
    assert_eq!(origin.count("/cold"), 1);
}

#[tokio::test]
async fn the_body_streams_to_clients_before_the_origin_finishes() {
    let (release, gate) = tokio::sync::mpsc::channel(4);
    let gate = std::sync::Mutex::new(Some(gate));
    let origin = Origin::start(move |_| {
        let gate = gate.lock().unwrap().take().expect("one request only");
        Reply::ok("")
            .header("cache-control", "max-age=60")
            .body(Body::Gated(gate))
    })
    .await;
    let node = node(&origin).await;
    release
        .send(Bytes::from_static(b"first part;"))
        .await
        .unwrap();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let response = client()
            .get(format!("{}/stream", base(&node)))
            .send()
            .await
            .unwrap();
        readers.push(response);
    }
    // Every client gets the first part while the origin still holds the rest back.
    for response in &mut readers {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&chunk[..], b"first part;");
    }
    release
        .send(Bytes::from_static(b"second part"))
        .await
        .unwrap();
    drop(release);
    for mut response in readers {
        let mut rest = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            rest.extend_from_slice(&chunk);
        }
        assert_eq!(rest, b"second part");
    }
    assert_eq!(origin.count("/stream"), 1);
}

#[tokio::test]
async fn a_paused_slow_client_does_not_delay_a_fast_one() {
    let size = 8 << 20;
    let pieces: Vec<Bytes> = (0..64)
        .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; size / 64]))
        .collect();
    let expected: Vec<u8> = pieces.concat();
    let origin = Origin::start(move |_| {
        Reply::ok("")
            .header("cache-control", "max-age=60")
            .body(Body::Paced(pieces.clone(), Duration::from_millis(5)))
    })
    .await;
    let node = node(&origin).await;
    // The slow client asks first, reads the head and a little, then stops reading.
    let mut slow = TcpStream::connect(node.listen[0]).await.unwrap();
    let request = format!("GET /big HTTP/1.1\r\nHost: {}\r\n\r\n", node.listen[0]);
    slow.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 1024];
    let read = slow.read(&mut first).await.unwrap();
    assert!(read > 0);
    // The fast client gets everything while the slow one sleeps.
    let fast = tokio::time::timeout(Duration::from_secs(20), get(&node, "/big"))
        .await
        .expect("the fast client was held back");
    assert_eq!(fast.2.len(), size);
    assert!(fast.2 == expected);
    assert_eq!(origin.count("/big"), 1);
    // The object is complete and stored although the slow client still has most of it to read.
    assert_eq!(cache_status(&get(&node, "/big").await.1), "HIT");
    drop(slow);
}

#[tokio::test]
async fn a_client_that_leaves_does_not_abort_the_fetch() {
    let pieces: Vec<Bytes> = (0..20).map(|_| Bytes::from(vec![b'x'; 10_000])).collect();
    let origin = Origin::start(move |_| {
        Reply::ok("")
            .header("cache-control", "max-age=60")
            .body(Body::Paced(pieces.clone(), Duration::from_millis(20)))
    })
    .await;
    let node = node(&origin).await;
    let mut quitter = TcpStream::connect(node.listen[0]).await.unwrap();
    let request = format!("GET /left HTTP/1.1\r\nHost: {}\r\n\r\n", node.listen[0]);
    quitter.write_all(request.as_bytes()).await.unwrap();
    let mut some = [0u8; 100];
    let _ = quitter.read(&mut some).await.unwrap();
    drop(quitter);
    assert!(eventually(|| node.proxy.fetches_in_flight() == 0).await);
    let (status, headers, body) = get(&node, "/left").await;
    assert_eq!(
        (status, cache_status(&headers), body.len()),
        (200, "HIT", 200_000)
    );
    assert_eq!(origin.count("/left"), 1);
}

/// The leading client's task drives the fetch until the response head is in; a leader that
/// goes away before that (an HTTP/2 stream reset drops its request at once) hands the fetch to
/// a task of its own, and the clients waiting on it still get the object.
#[tokio::test]
async fn a_leader_that_leaves_before_the_answer_does_not_abort_the_fetch() {
    let origin = Origin::start(|_| {
        Reply::ok("awaited")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300))
    })
    .await;
    let node = node(&origin).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("{}/early", base(&node));
    let leader = tokio::spawn(h2.get(&url).send());
    assert!(eventually(|| origin.count("/early") == 1).await);
    let follower = tokio::spawn(client().get(&url).send());
    let collapsed = || node.proxy.metrics().get(Counter::Collapsed) == 1;
    assert!(eventually(collapsed).await);
    leader.abort();
    let response = follower.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), "awaited");
    let (status, headers, body) = get(&node, "/early").await;
    assert_eq!(
        (status, cache_status(&headers), &body[..]),
        (200, "HIT", &b"awaited"[..])
    );
    assert_eq!(origin.count("/early"), 1);
}

#[tokio::test]
async fn uncacheable_responses_release_waiters_at_once() {
    let origin = Origin::start(|_| {
        Reply::ok("personal")
            .header("cache-control", "private")
            .delay(Duration::from_millis(300))
    })
    .await;
    let node = node(&origin).await;
    let requests = (0..5).map(|_| {
        let url = format!("{}/private", base(&node));
        tokio::spawn(async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        })
    });
    for result in futures_util::future::join_all(requests).await {
        assert_eq!(&result.unwrap()[..], b"personal");
    }
    // Each waiter went to the origin itself rather than queueing behind one another.
    assert_eq!(origin.count("/private"), 5);
    assert!(origin.max_concurrent() >= 2, "the waiters were serialized");
    // Later requests for the URL skip collapsing altogether.
    let (_, headers, _) = get(&node, "/private").await;
    assert_eq!(cache_status(&headers), "PASS");
}

#[tokio::test]
async fn a_failed_fetch_releases_every_waiter_with_an_error() {
    let origin = Origin::start(|_| Reply::status(503).delay(Duration::from_millis(300))).await;
    let node = node(&origin).await;
    let requests = (0..10).map(|_| {
        let url = format!("{}/failing", base(&node));
        tokio::spawn(async move { client().get(url).send().await.unwrap().status().as_u16() })
    });
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(statuses.iter().all(|&status| status == 503), "{statuses:?}");
    assert_eq!(origin.count("/failing"), 1);
}

#[tokio::test]
async fn an_origin_dying_mid_body_truncates_the_response_and_stores_nothing() {
    let origin = Origin::start(|_| {
        Reply::ok("")
            .header("cache-control", "max-age=60")
            .body(Body::Truncated {
                length: 100_000,
                sent: 30_000,
            })
    })
    .await;
    let node = node(&origin).await;
    let response = client()
        .get(format!("{}/dies", base(&node)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-length"], "100000");
    assert!(
        response.bytes().await.is_err(),
        "the client must see the truncation"
    );
    // Raw view: the connection closes after fewer bytes than declared.
    let reply = raw(node.listen[0], b"GET /dies HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let body = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
    assert!(body.len() < 100_000);
    assert_eq!(origin.count("/dies"), 2, "nothing was stored");
}

#[tokio::test]
async fn a_chunked_response_cut_short_lacks_its_last_chunk() {
    let origin = Origin::start(|seen| {
        let reply = Reply::ok("").header("cache-control", "max-age=60");
        if seen.target == "/whole" {
            // Still arriving when the client's answer starts, so it is relayed chunked.
            reply.body(Body::Paced(
                vec![Bytes::from_static(b"all "), Bytes::from_static(b"of it")],
                Duration::from_millis(100),
            ))
        } else {
            reply.body(Body::TruncatedChunked { sent: 5000 })
        }
    })
    .await;
    let node = node(&origin).await;
    let reply = raw(
        node.listen[0],
        b"GET /whole HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.contains("Transfer-Encoding: chunked"), "{reply}");
    assert!(reply.ends_with("\r\nof it\r\n0\r\n\r\n"), "{reply}");
    let reply = raw(node.listen[0], b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(reply.contains("Transfer-Encoding: chunked"), "{reply}");
    assert!(
        !reply.ends_with("0\r\n\r\n"),
        "a cut body must not look complete"
    );
    raw(node.listen[0], b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(origin.count("/cut"), 2, "nothing was stored");
}
