//! Large objects in slices: range misses fetch only the slices they touch, full requests
//! assemble objects from slices, versions never mix, and huge objects stream through.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use shoal::config::ByteSize;

use crate::support::*;

pub const MIB: u64 = 1 << 20;

/// Byte `position` of version `version` of the test object: cheap to compute for any range of
/// a huge object, and different at every position and in every version.
pub fn content(start: u64, end: u64, version: u8) -> Vec<u8> {
    (start..end)
        .map(|position| {
            let word =
                (position / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(version) << 56;
            (word.rotate_left(29).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> ((position % 8) * 8)) as u8
        })
        .collect()
}

/// An origin for one object of `size` bytes that answers ranges (unless told not to) and
/// counts the body bytes it sends.
pub struct RangeOrigin {
    pub origin: Origin,
    sent: Arc<AtomicU64>,
    pub version: Arc<AtomicU8>,
    /// Milliseconds every answer waits before its head is sent.
    delay_ms: Arc<AtomicU64>,
}

impl RangeOrigin {
    pub async fn start(size: u64, honors_ranges: bool) -> RangeOrigin {
        let sent = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        let version = Arc::new(AtomicU8::new(1));
        let (counted, current) = (Arc::clone(&sent), Arc::clone(&version));
        let origin = Origin::start(move |seen| {
            let version = current.load(Ordering::SeqCst);
            let range = seen
                .headers
                .get("range")
                .filter(|_| honors_ranges)
                .and_then(|v| v.to_str().ok()?.strip_prefix("bytes=")?.split_once('-'))
                .map(|(first, last)| {
                    let first: u64 = first.parse().unwrap();
                    let last = last
                        .parse::<u64>()
                        .map_or(size - 1, |last| last.min(size - 1));
                    (first, last)
                });
            let reply = match range {
                Some((first, _)) if first >= size => {
                    Reply::status(416).header("content-range", &format!("bytes */{size}"))
                }
                Some((first, last)) => {
                    counted.fetch_add(last + 1 - first, Ordering::SeqCst);
                    Reply {
                        status: StatusCode::PARTIAL_CONTENT,
                        ..Reply::ok(content(first, last + 1, version))
                    }
                    .header("content-range", &format!("bytes {first}-{last}/{size}"))
                }
                None => {
                    counted.fetch_add(size, Ordering::SeqCst);
                    Reply::ok(content(0, size, version))
                }
            };
            reply
                .header("cache-control", "max-age=600")
                .header("etag", &format!("\"v{version}\""))
                .header("accept-ranges", "bytes")
                .delay(Duration::from_millis(delay.load(Ordering::SeqCst)))
        })
        .await;
        RangeOrigin {
            origin,
            sent,
            version,
            delay_ms,
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.origin.count("/big")
    }
}

async fn range(node: &shoal::Node, first: u64, last: u64) -> (u16, http::HeaderMap, Bytes) {
    get_with(node, "/big", &[("range", &format!("bytes={first}-{last}"))]).await
}

#[tokio::test]
async fn a_range_of_a_1_gib_object_fetches_only_the_slices_it_touches() {
    let size = 1 << 30;
    let origin = RangeOrigin::start(size, true).await;
    let node = node(&origin.origin).await;
    let (status, headers, body) = range(&node, 500_000_000, 500_000_999).await;
    assert_eq!((status, cache_status(&headers)), (206, "MISS"));
    assert_eq!(
        headers["content-range"],
        format!("bytes 500000000-500000999/{size}")
    );
    assert!(body == content(500_000_000, 500_001_000, 1));
    assert_eq!(origin.sent(), MIB, "one slice, not the object");
    assert_eq!(
        origin.origin.last("/big").headers["range"],
        "bytes=499122176-500170751"
    );

    let (status, headers, body) = range(&node, 500_000_000, 500_000_999).await;
    assert_eq!((status, cache_status(&headers)), (206, "HIT"));
    assert!(body == content(500_000_000, 500_001_000, 1));
    assert_eq!(origin.sent(), MIB, "nothing more from the origin");

    // A range across a slice boundary fetches the two slices it touches: a miss, though the
    // object's head was stored (issue 27).
    let (first, last) = (600 * MIB - 10, 600 * MIB + 9);
    let (status, headers, body) = range(&node, first, last).await;
    assert_eq!((status, cache_status(&headers)), (206, "MISS"));
    assert!(body == content(first, last + 1, 1));
    assert_eq!(origin.sent(), 3 * MIB);
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn a_full_request_assembles_the_object_fetching_only_missing_slices() {
    let size = 8 * MIB + 123;
    let origin = RangeOrigin::start(size, true).await;
    let node = node(&origin.origin).await;
    range(&node, 3 * MIB + 5, 3 * MIB + 10).await;
    assert_eq!(origin.requests(), 1);

    let (status, headers, body) = get(&node, "/big").await;
    assert_eq!(status, 200);
    assert_eq!(
        cache_status(&headers),
        "MISS",
        "assembled mostly from slices fetched now"
    );
    assert_eq!(headers["content-length"], size.to_string());
    assert!(body == content(0, size, 1));
    assert_eq!(origin.sent(), size, "every byte fetched once");
    assert_eq!(
        origin.requests(),
        9,
        "the eight missing slices, each with a Range request"
    );
    assert!(origin
        .origin
        .seen()
        .iter()
        .all(|seen| seen.headers.contains_key("range")));

    let (_, headers, body) = get(&node, "/big").await;
    assert_eq!(cache_status(&headers), "HIT");
    assert!(body == content(0, size, 1));
    assert_eq!(origin.requests(), 9);
}

#[tokio::test]
async fn a_full_miss_stores_the_object_in_slices() {
    let size = 5 * MIB + 7;
    let origin = RangeOrigin::start(size, true).await;
    let node = node(&origin.origin).await;
    let (status, headers, body) = get(&node, "/big").await;
    assert_eq!((status, cache_status(&headers)), (200, "MISS"));
    assert!(body == content(0, size, 1));
    assert!(!origin.origin.last("/big").headers.contains_key("range"));
    let (status, headers, body) = range(&node, 3_000_000, 3_000_010).await;
    assert_eq!((status, cache_status(&headers)), (206, "HIT"));
    assert!(body == content(3_000_000, 3_000_011, 1));
    let (_, headers, _) = get_with(&node, "/big", &[("range", "bytes=-100")]).await;
    assert_eq!(
        headers["content-range"],
        format!("bytes {}-{}/{size}", size - 100, size - 1)
    );
    assert_eq!(origin.requests(), 1);
    // The head and six slices.
    assert_eq!(node.proxy.store().stats().entries, 7);
}

#[tokio::test]
async fn an_origin_that_ignores_ranges_is_read_once_for_all_slices() {
    let size = 3 * MIB + 1;
    let origin = RangeOrigin::start(size, false).await;
    let node = node(&origin.origin).await;
    let (status, _, body) = range(&node, 2 * MIB, 2 * MIB + 99).await;
    assert_eq!(status, 206);
    assert!(body == content(2 * MIB, 2 * MIB + 100, 1));
    let (status, headers, body) = get(&node, "/big").await;
    assert_eq!((status, cache_status(&headers)), (200, "HIT"));
    assert!(body == content(0, size, 1));
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn slices_of_a_changed_object_are_never_mixed() {
    let size = 4 * MIB;
    let origin = RangeOrigin::start(size, true).await;
    let node = node(&origin.origin).await;
    let (_, _, body) = range(&node, 0, 9).await;
    assert!(body == content(0, 10, 1));
    // The origin's object changes; the cache still has the head and first slice of v1.
    origin.version.store(2, Ordering::SeqCst);
    let response = client()
        .get(format!("{}/big", base(&node)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let whole = response.bytes().await;
    assert!(
        whole.is_err(),
        "a response mixing two versions must be cut short, not completed"
    );
    // The head was dropped: the next request starts over with the new version.
    let (status, headers, body) = get(&node, "/big").await;
    assert_eq!((status, cache_status(&headers)), (200, "MISS"));
    assert!(body == content(0, size, 2));
}

#[tokio::test]
async fn concurrent_requests_for_a_missing_slice_make_one_origin_request() {
    let size = 4 * MIB;
    let origin = RangeOrigin::start(size, true).await;
    let node = node(&origin.origin).await;
    range(&node, 0, 0).await;
    assert_eq!(origin.requests(), 1);
    // A slow origin, so that all eight requests arrive while the slice is being fetched.
    origin.delay_ms.store(300, Ordering::SeqCst);
    let node = Arc::new(node);
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let node = Arc::clone(&node);
            tokio::spawn(async move { range(&node, 2 * MIB + 5, 2 * MIB + 50).await })
        })
        .collect();
    for request in requests {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, 206);
        assert!(body == content(2 * MIB + 5, 2 * MIB + 51, 1));
    }
    assert_eq!(
        origin.requests(),
        2,
        "one fetch of the missing slice for all eight"
    );
}

#[tokio::test]
async fn an_object_larger_than_ram_streams_through_in_bounded_memory() {
    let size = 48 * MIB + 3;
    let origin = RangeOrigin::start(size, true).await;
    let node = node_with(&origin.origin, |config| {
        config.cache.memory = ByteSize(8 * MIB);
        config.cache.max_object_size = ByteSize(4 * MIB);
    })
    .await;
    let mut response = client()
        .get(format!("{}/big", base(&node)))
        .send()
        .await
        .unwrap();
    let mut received = 0u64;
    let mut mismatch = None;
    let mut peak = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        if mismatch.is_none() && chunk != content(received, received + chunk.len() as u64, 1) {
            mismatch = Some(received);
        }
        received += chunk.len() as u64;
        peak = peak.max(node.proxy.store().stats().bytes);
        if received < 4 * MIB {
            // A slow start: the fetch runs ahead at the origin's speed meanwhile.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(received, size);
    assert_eq!(mismatch, None);
    let stats = node.proxy.store().stats();
    assert!(
        stats.evictions > 0,
        "slices were evicted to stay in the budget"
    );
    assert!(peak <= 8 * MIB + MIB, "RAM store peaked at {peak} bytes");
}

#[tokio::test]
async fn a_purge_drops_the_slices_with_the_head() {
    let size = 3 * MIB + 5;
    let origin = RangeOrigin::start(size, true).await;
    let node = node(&origin.origin).await;
    get(&node, "/big").await;
    let (_, headers, _) = range(&node, 2 * MIB, 2 * MIB + 1).await;
    assert_eq!(cache_status(&headers), "HIT");
    let purge = format!(
        "http://{}/purge?url=http://{}/big",
        node.admin.unwrap(),
        node.listen[0]
    );
    let purged: serde_json::Value = serde_json::from_slice(
        &client()
            .post(purge)
            .header("x-shoal-admin", "1")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(purged["purged"], true);
    let sent = origin.sent();
    // The next range request starts over: a new head, and its slice from the origin again,
    // although the old slices are still in RAM.
    let (status, headers, body) = range(&node, 2 * MIB, 2 * MIB + 1).await;
    assert_eq!((status, cache_status(&headers)), (206, "MISS"));
    assert!(body == content(2 * MIB, 2 * MIB + 2, 1));
    assert_eq!(origin.sent(), sent + MIB);
}

#[tokio::test]
async fn a_range_at_the_start_stores_only_the_first_slice() {
    let size = 3 * MIB + 5;
    let origin = RangeOrigin::start(size, true).await;
    let node = node(&origin.origin).await;
    let (status, _, body) = range(&node, 0, 9).await;
    assert_eq!(status, 206);
    assert!(body == content(0, 10, 1));
    assert_eq!(origin.sent(), MIB);
    let (status, _, body) = get(&node, "/big").await;
    assert_eq!(status, 200);
    assert!(body == content(0, size, 1));
    assert_eq!(origin.sent(), size);
    assert_eq!(origin.requests(), 4);
}

#[tokio::test]
async fn a_range_past_the_end_gets_416_and_the_url_stays_cacheable() {
    let size = 2 * MIB;
    let origin = RangeOrigin::start(size, true).await;
    let node = node(&origin.origin).await;
    let (status, _, _) = range(&node, 5 * MIB, 5 * MIB + 10).await;
    assert_eq!(status, 416);
    let (status, headers, body) = get(&node, "/big").await;
    assert_eq!((status, cache_status(&headers)), (200, "MISS"));
    assert!(body == content(0, size, 1));
    let (_, headers, _) = get(&node, "/big").await;
    assert_eq!(cache_status(&headers), "HIT");
}
