//! The client side towards origins (`upstream::client`): connection reuse, origins that close
//! idle connections, every way a response body can be framed, and responses that are not
//! HTTP. The origin here is a raw TCP server answering with bytes each test writes out.

use std::time::Duration;

use crate::support::{answer, cache_status, client, get, node_for, Answer, RawOrigin};

const CACHEABLE: &str =
    "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nhello";

#[tokio::test]
async fn misses_in_a_row_share_one_origin_connection() {
    let origin = RawOrigin::start(|_, _| answer(CACHEABLE)).await;
    let node = node_for(&origin.url, |_| {}).await;
    for index in 0..20 {
        let (status, headers, body) = get(&node, &format!("/object-{index}")).await;
        assert_eq!((status, &body[..]), (200, &b"hello"[..]));
        assert_eq!(cache_status(&headers), "MISS");
    }
    assert_eq!(origin.requests().len(), 20);
    assert_eq!(
        origin.connections(),
        1,
        "every miss reused the first connection"
    );
}

#[tokio::test]
async fn a_connection_the_origin_closed_while_idle_is_replaced_without_an_error() {
    // Answers one request per connection, then closes it without `Connection: close`, as an
    // origin whose keep-alive timeout has passed does; the close is in before the next request.
    let origin = RawOrigin::start(|_, _| Answer {
        close: true,
        ..answer(CACHEABLE)
    })
    .await;
    let node = node_for(&origin.url, |_| {}).await;
    for index in 0..10 {
        let (status, _, body) = get(&node, &format!("/closing-{index}")).await;
        assert_eq!((status, &body[..]), (200, &b"hello"[..]), "request {index}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.connections(), 10);
    assert_eq!(
        origin.requests().len(),
        10,
        "no request went to a closed connection"
    );
}

#[tokio::test]
async fn a_request_the_origin_drops_on_a_reused_connection_is_sent_again_on_a_new_one() {
    // Keeps each connection open after its first answer, then reads the second request and
    // closes without answering: the race of a keep-alive timeout with a request on its way.
    let origin = RawOrigin::start(|_, earlier| match earlier {
        0 => answer(CACHEABLE),
        _ => Answer {
            bytes: Vec::new(),
            close: true,
        },
    })
    .await;
    let node = node_for(&origin.url, |_| {}).await;
    for index in 0..10 {
        let (status, _, body) = get(&node, &format!("/dropped-{index}")).await;
        assert_eq!((status, &body[..]), (200, &b"hello"[..]), "request {index}");
    }
    assert_eq!(origin.connections(), 10);
    // Every request after the first was dropped once on a reused connection, then answered.
    assert_eq!(origin.requests().len(), 19);
}

#[tokio::test]
async fn bodies_framed_every_way_are_relayed_and_stored_whole() {
    let origin = RawOrigin::start(|request, _| {
        let target = request.split(' ').nth(1).unwrap();
        match target {
            "/chunked" => answer(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            ),
            "/until-close" => Answer {
                close: true,
                ..answer("HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n\r\nhello world")
            },
            "/continue" => answer(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                 HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 11\r\n\r\nhello world",
            ),
            "/http10" => Answer {
                close: true,
                ..answer("HTTP/1.0 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 11\r\n\r\nhello world")
            },
            "/empty" => answer("HTTP/1.1 204 No Content\r\nCache-Control: max-age=60\r\n\r\n"),
            _ => answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        }
    })
    .await;
    let node = node_for(&origin.url, |_| {}).await;
    for path in ["/chunked", "/until-close", "/continue", "/http10"] {
        let (status, headers, body) = get(&node, path).await;
        assert_eq!((status, &body[..]), (200, &b"hello world"[..]), "{path}");
        assert_eq!(cache_status(&headers), "MISS", "{path}");
        let (status, headers, body) = get(&node, path).await;
        assert_eq!((status, &body[..]), (200, &b"hello world"[..]), "{path}");
        assert_eq!(cache_status(&headers), "HIT", "{path}");
    }
    let (status, _, body) = get(&node, "/empty").await;
    assert_eq!((status, body.len()), (204, 0));
    let (status, headers, _) = get(&node, "/empty").await;
    assert_eq!((status, cache_status(&headers)), (204, "HIT"));
    for path in ["/chunked", "/until-close", "/continue", "/http10", "/empty"] {
        assert_eq!(origin.fetched(path), 1, "{path} fetched once");
    }
}

#[tokio::test]
async fn responses_that_are_not_valid_http_are_502_and_never_stored() {
    let origin = RawOrigin::start(|request, _| {
        let target = request.split(' ').nth(1).unwrap();
        let huge = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok", "a".repeat(70_000));
        let bytes = match target {
            "/two-lengths" => "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk".to_owned(),
            "/bad-length" => "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok".to_owned(),
            "/folded" => "HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 2\r\n\r\nok".to_owned(),
            "/not-http" => "SSH-2.0-OpenSSH_9.2\r\n\r\n".to_owned(),
            "/huge-head" => huge,
            "/short" => "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 20\r\n\r\nonly ten b".to_owned(),
            "/bad-chunk" => "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n".to_owned(),
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
        };
        Answer {
            bytes: bytes.into_bytes(),
            close: true,
        }
    })
    .await;
    let node = node_for(&origin.url, |_| {}).await;
    for path in [
        "/two-lengths",
        "/bad-length",
        "/folded",
        "/not-http",
        "/huge-head",
    ] {
        let (status, headers, _) = get(&node, path).await;
        assert_eq!(status, 502, "{path}");
        assert_eq!(cache_status(&headers), "SYNTH", "{path}");
    }
    // A body shorter than its declared length, or with a broken chunk: the client sees the
    // cut, nothing is stored.
    for path in ["/short", "/short", "/bad-chunk", "/bad-chunk"] {
        let result = client()
            .get(format!("http://{}{path}", node.listen[0]))
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
        assert!(result.is_err(), "a cut body must not look complete");
    }
    assert_eq!(origin.fetched("/short"), 2, "the cut body was not stored");
    assert_eq!(
        origin.fetched("/bad-chunk"),
        2,
        "the broken body was not stored"
    );
    assert_eq!(origin.fetched("/two-lengths"), 1);
}

#[tokio::test]
async fn request_bodies_reach_the_origin_with_their_framing() {
    let origin =
        RawOrigin::start(|_, _| answer("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")).await;
    let node = node_for(&origin.url, |_| {}).await;
    let url = format!("http://{}/upload", node.listen[0]);
    let response = client()
        .post(&url)
        .body("twelve bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = client().put(&url).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let requests = origin.requests();
    let post = requests
        .iter()
        .find(|r| r.starts_with("POST"))
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        post.contains("\r\ncontent-length: 12\r\n") && post.ends_with("\r\n\r\ntwelve bytes"),
        "{post}"
    );
    let put = requests
        .iter()
        .find(|r| r.starts_with("PUT"))
        .unwrap()
        .to_ascii_lowercase();
    assert!(put.contains("\r\ncontent-length: 0\r\n"), "{put}");
    assert!(!put.contains("transfer-encoding"), "{put}");
}
