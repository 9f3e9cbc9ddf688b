//! How long the disk tier takes to rebuild its index at start, for a million cached objects.
//!
//! Fills a cache directory through the disk tier's own writer (small objects: the index, not
//! the bytes, is what a restart has to rebuild), shuts it down cleanly, reopens it and times
//! the rebuild; then again after a simulated crash (no clean shutdown: the segment being
//! written has no summary and is scanned). Also reports the index's memory per object.
//!
//!     cargo run --release --example disk_rebuild -- [objects] [dir]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use shoal::cache::policy::{Freshness, Timing};
use shoal::cache::CacheKey;
use shoal::config::{ByteSize, DiskConfig, DiskDir};
use shoal::store::{DiskStore, Fields, Object, ObjectMeta};

fn main() {
    let mut args = std::env::args().skip(1);
    let objects: u64 = args
        .next()
        .map_or(1_000_000, |n| n.parse().expect("a number of objects"));
    let dir = args.next().map_or_else(
        || std::env::temp_dir().join("shoal-disk-rebuild"),
        Into::into,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let config = DiskConfig {
        dirs: vec![DiskDir {
            path: dir.clone(),
            size: ByteSize(1 << 30),
        }],
        ..DiskConfig::default()
    };

    let rss_before = rss_kib();
    let store = DiskStore::open(&config);
    wait_ready(&store);
    let started = Instant::now();
    let body = Bytes::from(vec![b'x'; 100]);
    for n in 0..objects {
        let object = object(n, body.clone());
        while !store.write(key(n), &object) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    store.shutdown();
    let fill = started.elapsed();
    let stats = store.stats();
    println!(
        "wrote {} objects ({} MB) in {:.2} s: {:.0} objects/s; index holds {}",
        stats.objects_written,
        stats.bytes_written / 1_000_000,
        fill.as_secs_f64(),
        stats.objects_written as f64 / fill.as_secs_f64(),
        stats.entries
    );
    println!(
        "index memory: about {} bytes per object (process RSS growth / objects)",
        (rss_kib() - rss_before) * 1024 / objects.max(1)
    );
    drop(store);

    for round in 1..=3 {
        let started = Instant::now();
        let store = DiskStore::open(&config);
        wait_ready(&store);
        let stats = store.stats();
        println!(
            "clean restart {round}: {} objects indexed in {} ms (measured {:.0} ms)",
            stats.entries,
            stats.dirs[0].rebuild_millis,
            started.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(stats.entries, objects, "every object comes back");
        store.shutdown();
    }

    // A crash: writes stop without the final sync and summary. The process stays, so the page
    // cache holds what was written, as after kill -9.
    let store = Arc::new(DiskStore::open(&config));
    wait_ready(&store);
    for n in objects..objects + 50_000 {
        let object = object(n, body.clone());
        while !store.write(key(n), &object) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let written = store.stats().entries;
    std::mem::forget(store); // no shutdown: the directory lock is held, so copy it
    let copy = dir.with_extension("crashed");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    for file in std::fs::read_dir(&dir).unwrap() {
        let file = file.unwrap();
        if file.file_name() != "lock" {
            std::fs::copy(file.path(), copy.join(file.file_name())).unwrap();
        }
    }
    let crashed = DiskConfig {
        dirs: vec![DiskDir {
            path: copy.clone(),
            size: ByteSize(1 << 30),
        }],
        ..DiskConfig::default()
    };
    let started = Instant::now();
    let store = DiskStore::open(&crashed);
    wait_ready(&store);
    let stats = store.stats();
    println!(
        "restart after a crash: {} of {} objects indexed in {} ms (measured {:.0} ms)",
        stats.entries,
        written,
        stats.dirs[0].rebuild_millis,
        started.elapsed().as_secs_f64() * 1000.0
    );
    store.shutdown();
    let _ = std::fs::remove_dir_all(&copy);
    let _ = std::fs::remove_dir_all(&dir);
}

fn wait_ready(store: &DiskStore) {
    while !store.is_ready() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn key(n: u64) -> CacheKey {
    CacheKey(xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes()))
}

fn object(n: u64, body: Bytes) -> Arc<Object> {
    let mut headers = HeaderMap::new();
    headers.insert("cache-control", HeaderValue::from_static("max-age=86400"));
    headers.insert(
        "etag",
        HeaderValue::from_str(&format!("\"{n:x}\"")).unwrap(),
    );
    let meta = ObjectMeta {
        url: format!("http://bench.test/object/{n}"),
        status: StatusCode::OK,
        fields: Fields::new(&headers),
        variant: Vec::new(),
        timing: Timing {
            request_time: 0,
            response_time: 0,
            date: 0,
            age: 0,
        },
        freshness: Freshness {
            lifetime: 86_400_000,
            stale_while_revalidate: 0,
            stale_if_error: 0,
            always_revalidate: false,
            forbids_stale: false,
        },
        content_length: Some(body.len() as u64),
        slice_size: 0,
        slices_since: 0,
    };
    Object::complete(meta, body)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}
