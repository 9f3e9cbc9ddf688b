//! Range requests answered from cached and filling objects (RFC 9110 §14).

use std::time::Duration;

use bytes::Bytes;

use crate::support::*;

const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz";

async fn alphabet_origin() -> Origin {
    Origin::start(|_| {
        Reply::ok(ALPHABET)
            .header("cache-control", "max-age=60")
            .header("etag", "\"abc\"")
            .header("content-type", "text/plain")
            .header("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT")
    })
    .await
}

#[tokio::test]
async fn single_ranges_from_a_cached_object() {
    let origin = alphabet_origin().await;
    let node = node(&origin).await;
    get(&node, "/r").await;
    let check = |range: &'static str, content_range: &'static str, body: &'static str| {
        let node = &node;
        async move {
            let (status, headers, got) = get_with(node, "/r", &[("range", range)]).await;
            assert_eq!(status, 206, "{range}");
            assert_eq!(headers["content-range"], content_range, "{range}");
            assert_eq!(
                headers["content-length"],
                body.len().to_string().as_str(),
                "{range}"
            );
            assert_eq!(&got[..], body.as_bytes(), "{range}");
            assert_eq!(cache_status(&headers), "HIT");
        }
    };
    check("bytes=0-4", "bytes 0-4/26", "abcde").await;
    check("bytes=20-", "bytes 20-25/26", "uvwxyz").await;
    check("bytes=-3", "bytes 23-25/26", "xyz").await;
    check("bytes=24-100", "bytes 24-25/26", "yz").await;
    assert_eq!(origin.count("/r"), 1);
}

#[tokio::test]
async fn multiple_ranges_make_a_multipart_body() {
    let origin = alphabet_origin().await;
    let node = node(&origin).await;
    get(&node, "/m").await;
    let (status, headers, body) = get_with(&node, "/m", &[("range", "bytes=0-1,-2")]).await;
    assert_eq!(status, 206);
    let content_type = headers["content-type"].to_str().unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(content_type);
    let expected = format!(
        "\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/26\r\n\r\nab\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 24-25/26\r\n\r\nyz\r\n--{boundary}--\r\n"
    );
    assert_eq!(String::from_utf8_lossy(&body), expected);
    assert_eq!(
        headers["content-length"],
        expected.len().to_string().as_str()
    );
}

#[tokio::test]
async fn unsatisfiable_and_ignored_ranges() {
    let origin = alphabet_origin().await;
    let node = node(&origin).await;
    get(&node, "/u").await;
    let (status, headers, body) = get_with(&node, "/u", &[("range", "bytes=30-40")]).await;
    assert_eq!(
        (status, headers["content-range"].to_str().unwrap()),
        (416, "bytes */26")
    );
    assert!(body.is_empty());
    // Not a valid byte range set: the whole object.
    let (status, _, body) = get_with(&node, "/u", &[("range", "bytes=5-1")]).await;
    assert_eq!((status, &body[..]), (200, ALPHABET.as_bytes()));
    let (status, _, _) = get_with(&node, "/u", &[("range", "lines=1-2")]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn if_range_decides_between_part_and_whole() {
    let origin = alphabet_origin().await;
    let node = node(&origin).await;
    get(&node, "/ir").await;
    let (status, _, body) = get_with(
        &node,
        "/ir",
        &[("range", "bytes=0-2"), ("if-range", "\"abc\"")],
    )
    .await;
    assert_eq!((status, &body[..]), (206, &b"abc"[..]));
    let (status, _, body) = get_with(
        &node,
        "/ir",
        &[("range", "bytes=0-2"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!((status, &body[..]), (200, ALPHABET.as_bytes()));
    let (status, _, _) = get_with(
        &node,
        "/ir",
        &[
            ("range", "bytes=0-2"),
            ("if-range", "Thu, 01 Jan 2015 00:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(status, 206);
}

#[tokio::test]
async fn a_range_miss_on_a_small_object_stores_the_whole_object() {
    let origin = alphabet_origin().await;
    let node = node(&origin).await;
    let (status, headers, body) = get_with(&node, "/miss", &[("range", "bytes=2-4")]).await;
    assert_eq!(
        (status, cache_status(&headers), &body[..]),
        (206, "MISS", &b"cde"[..])
    );
    // The origin was asked for the first slice, which holds all of this small object (this
    // origin ignores ranges and sends it whole anyway).
    assert_eq!(origin.last("/miss").headers["range"], "bytes=0-1048575");
    let (_, headers, body) = get(&node, "/miss").await;
    assert_eq!(
        (cache_status(&headers), &body[..]),
        ("HIT", ALPHABET.as_bytes())
    );
    assert_eq!(origin.count("/miss"), 1);
}

#[tokio::test]
async fn ranges_of_large_objects_without_a_validator_are_passed_to_the_origin() {
    let origin = Origin::start(|seen| {
        let body = vec![b'L'; 5000];
        match seen.headers.get("range") {
            Some(_) => Reply {
                status: http::StatusCode::PARTIAL_CONTENT,
                ..Reply::ok(Bytes::from_static(b"LLLLL"))
            }
            .header("content-range", "bytes 0-4/5000")
            .header("cache-control", "max-age=60"),
            None => Reply::ok(body).header("cache-control", "max-age=60"),
        }
        .delay(Duration::ZERO)
    })
    .await;
    // Without ETag or Last-Modified, slices of this object could not be told from another
    // version's: it is not cached in slices, and the client's range goes to the origin (as a
    // pass, which caches nothing).
    let node = node_with(&origin, |config| {
        config.cache.slice_size = shoal::config::ByteSize(4096)
    })
    .await;
    let (_, _, body) = get_with(&node, "/large", &[("range", "bytes=0-4")]).await;
    assert_eq!(&body[..], b"LLLLL");
    assert_eq!(origin.last("/large").headers["range"], "bytes=0-4");
    get_with(&node, "/large", &[("range", "bytes=0-4")]).await;
    assert_eq!(origin.last("/large").headers["range"], "bytes=0-4");
    // The first range miss probed a slice, and the node remembers that it cannot slice this
    // object: the second went to the origin as the client's range alone.
    assert_eq!(origin.count("/large"), 3);
    // A whole request still fetches the object and stores it whole; ranges are then hits.
    let (status, headers, body) = get(&node, "/large").await;
    assert_eq!(
        (status, body.len(), cache_status(&headers)),
        (200, 5000, "MISS")
    );
    let (status, headers, body) = get_with(&node, "/large", &[("range", "bytes=0-4")]).await;
    assert_eq!(
        (status, &body[..], cache_status(&headers)),
        (206, &b"LLLLL"[..], "HIT")
    );
    assert_eq!(origin.count("/large"), 4);
}

/// An origin that answers every range with less than asked (here, always the first five bytes
/// of ten): the client gets the origin's answer to its own range, whole and on time. (That
/// such an answer is never stored as a slice is pinned by the unit test of `storable_part`:
/// here the node would fall back to the client's range either way.)
#[tokio::test]
async fn a_range_answered_with_less_than_asked_reaches_the_client_whole() {
    let origin = Origin::start(|_| {
        // In two pieces, as a slow origin sends them.
        let pieces = vec![Bytes::from_static(b"01"), Bytes::from_static(b"234")];
        Reply {
            status: http::StatusCode::PARTIAL_CONTENT,
            ..Reply::ok(Bytes::new())
        }
        .body(Body::Paced(pieces, Duration::from_millis(100)))
        .header("content-range", "bytes 0-4/10")
        .header("content-length", "5")
        .header("cache-control", "max-age=3600")
    })
    .await;
    let node = node(&origin).await;
    for _ in 0..2 {
        let answer = get_with(&node, "/short", &[("range", "bytes=-5")]);
        let (status, headers, body) = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("the response completes");
        let range = headers["content-range"].to_str().unwrap();
        assert_eq!(
            (status, range, &body[..]),
            (206, "bytes 0-4/10", &b"01234"[..])
        );
    }
    assert_eq!(origin.last("/short").headers["range"], "bytes=-5");
}

#[tokio::test]
async fn ranges_are_served_from_an_object_still_filling() {
    let (release, gate) = tokio::sync::mpsc::channel(4);
    let gate = std::sync::Mutex::new(Some(gate));
    let origin = Origin::start(move |_| {
        let gate = gate.lock().unwrap().take().expect("one origin request");
        Reply::ok("")
            .header("cache-control", "max-age=60")
            .header("content-length", "20")
            .body(Body::Gated(gate))
    })
    .await;
    let node = node(&origin).await;
    release
        .send(Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    let mut whole = client()
        .get(format!("{}/filling", base(&node)))
        .send()
        .await
        .unwrap();
    assert_eq!(&whole.chunk().await.unwrap().unwrap()[..], b"0123456789");
    // The first half is here; a range inside it is answered before the rest arrives.
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(5),
        get_with(&node, "/filling", &[("range", "bytes=2-5")]),
    )
    .await
    .expect("a range within the received bytes must not wait");
    assert_eq!((status, &body[..]), (206, &b"2345"[..]));
    release
        .send(Bytes::from_static(b"abcdefghij"))
        .await
        .unwrap();
    assert_eq!(&whole.chunk().await.unwrap().unwrap()[..], b"abcdefghij");
    let (_, _, body) = get_with(&node, "/filling", &[("range", "bytes=15-")]).await;
    assert_eq!(&body[..], b"fghij");
    assert_eq!(origin.count("/filling"), 1);
}
