//! The disk tier's failures, with the real binary: write under load, `kill -9`, restart, and
//! compare every object's SHA-256 with the origin's; stall the disk's reader thread and check
//! that only disk hits notice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::disk::TempDir;
use crate::process::{free_port, Endpoint, Node};
use crate::support::*;

const OBJECTS: usize = 300;

/// The bytes of object `n`: 1 KiB to about 600 KiB, distinct everywhere.
fn object(n: usize) -> Vec<u8> {
    let words = 128 + (n * 7919) % 75_000;
    (0..words as u64)
        .flat_map(|word| {
            let mut input = [0u8; 16];
            input[..8].copy_from_slice(&(n as u64).to_le_bytes());
            input[8..].copy_from_slice(&word.to_le_bytes());
            xxhash_rust::xxh3::xxh3_64(&input).to_le_bytes()
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A node with a disk tier in `dir`, configured by `config`, in front of `origin`.
async fn start(origin: &Origin, config: &std::path::Path, dir: &std::path::Path) -> Node {
    let mut args: Vec<std::ffi::OsString> = vec!["--config".into(), config.into()];
    for arg in [
        "--origin",
        &origin.url(),
        "--cache-disk",
        "64MiB",
        "--cache-dir",
    ] {
        args.push(arg.into());
    }
    args.push(dir.into());
    Node::start(&args, free_port(), |stats| {
        stats["disk"]["dirs"][0]["state"] == "ready"
    })
    .await
}

/// GET object `n` (the same `Host` as every request of these tests).
async fn get(endpoint: &Endpoint, n: usize) -> Option<(String, Vec<u8>)> {
    endpoint.get(&format!("/object/{n}"), "crash.test").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_nothing_that_is_served_later() {
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..OBJECTS).map(object).collect());
    let served = Arc::clone(&bodies);
    let origin = Origin::start(move |seen| {
        let n: usize = seen.target.rsplit('/').next().unwrap().parse().unwrap();
        Reply::ok(served[n].clone())
            .header("cache-control", "max-age=3600")
            .header("etag", &format!("\"{n}\""))
    })
    .await;
    let dir = TempDir::new("crash");
    let config = dir.0.join("shoal.toml");
    // Small segments, so that the load fills several and seals them with summaries.
    std::fs::write(
        &config,
        "[disk]\nsegment_size = \"8MiB\"\nmax_object_size = \"1MiB\"\n",
    )
    .unwrap();
    let cache = dir.0.join("cache");

    let node = start(&origin, &config, &cache).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client_number in 0..8 {
        let (node, stop) = (node.endpoint, Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let mut n = client_number * 37;
            while !stop.load(Ordering::Relaxed) {
                // Each object twice, so that it is admitted to disk.
                let _ = get(&node, n % OBJECTS).await;
                let _ = get(&node, n % OBJECTS).await;
                n += 11;
            }
        }));
    }
    // Kill in the middle of heavy writing: once a good part, but not all, is on disk.
    let mut written = 0;
    for _ in 0..500 {
        written = node
            .endpoint
            .stats()
            .await
            .and_then(|stats| stats["disk"]["objects_written"].as_u64())
            .unwrap_or(0);
        if written >= 120 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(written >= 120, "the load wrote only {written} objects");
    drop(node); // SIGKILL
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }

    let node = start(&origin, &config, &cache).await;
    let (_process, node) = (&node, node.endpoint);
    let recovered = node.stats().await.unwrap()["disk"]["entries"]
        .as_u64()
        .unwrap();
    let before = origin.seen().len();
    let mut mismatches = Vec::new();
    let mut hits = 0;
    for (n, expected) in bodies.iter().enumerate() {
        let (status, body) = get(&node, n).await.expect("the restarted node answers");
        if sha256(&body) != sha256(expected) {
            mismatches.push(n);
        }
        hits += usize::from(status == "HIT");
    }
    eprintln!("recovered {recovered} objects of {OBJECTS}; {hits} served from disk");
    assert!(
        mismatches.is_empty(),
        "objects with the wrong bytes: {mismatches:?}"
    );
    assert!(
        recovered >= 100,
        "only {recovered} objects came back from disk"
    );
    assert_eq!(
        hits as u64, recovered,
        "every recovered object is served from disk"
    );
    assert_eq!(origin.seen().len() - before, OBJECTS - hits);
}

/// `future`, or a failed test instead of a hung one.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("no answer within 10 s")
}

/// One thread of another process, stopped where it is, as a disk that never answers would
/// leave it: attached with ptrace and interrupted. Dropping it lets the thread go (a process
/// with a traced thread could not be reaped).
struct Frozen(nix::unistd::Pid);

impl Frozen {
    /// `None` where ptrace is not allowed (some sandboxes forbid it).
    fn thread(thread: i32) -> Option<Frozen> {
        use nix::sys::ptrace;
        let thread = nix::unistd::Pid::from_raw(thread);
        if let Err(error) = ptrace::seize(thread, ptrace::Options::empty()) {
            eprintln!("cannot stall a thread here (ptrace: {error}); stall test not run");
            return None;
        }
        ptrace::interrupt(thread).expect("ptrace interrupt");
        Some(Frozen(thread))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        // Collect the stop, then detach.
        let _ = waitpid(self.0, Some(WaitPidFlag::__WALL));
        let _ = nix::sys::ptrace::detach(self.0, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_disk_delays_only_disk_hits_and_is_then_dropped() {
    let origin = Origin::start(|seen| {
        Reply::ok(format!("body of {}", seen.target).repeat(100))
            .header("cache-control", "max-age=3600")
    })
    .await;
    let dir = TempDir::new("stall");
    let config = dir.0.join("shoal.toml");
    std::fs::write(
        &config,
        "[disk]\nio_threads = 1\nread_timeout = \"300ms\"\nadmission = \"always\"\n",
    )
    .unwrap();
    let cache = dir.0.join("cache");
    let node = start(&origin, &config, &cache).await;
    for n in 0..4 {
        get(&node.endpoint, n).await.unwrap();
    }
    for _ in 0..250 {
        let stats = node.endpoint.stats().await.unwrap();
        if stats["disk"]["objects_written"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(node);
    // After a restart the four objects are only on disk.
    let node = start(&origin, &config, &cache).await;
    let readers = node.threads("shoal-disk0-rea");
    assert_eq!(readers.len(), 1, "one reader thread");
    let Some(frozen) = Frozen::thread(readers[0]) else {
        return;
    };

    let endpoint = node.endpoint;
    let disk_hit = tokio::spawn(async move { get(&endpoint, 0).await });
    // While that read hangs, a miss is served (and then a RAM hit).
    let (status, body) = within(get(&node.endpoint, 100)).await.unwrap();
    assert!(body.starts_with(b"body of /object/100"), "{status}");
    let (status, _) = within(get(&node.endpoint, 100)).await.unwrap();
    assert_eq!(status, "HIT");
    assert!(
        !disk_hit.is_finished(),
        "the disk hit waits for the stalled read meanwhile"
    );
    // The stalled read is abandoned and the object fetched from the origin.
    let (status, body) = within(disk_hit).await.unwrap().unwrap();
    assert_eq!(status, "MISS");
    assert!(body.starts_with(b"body of /object/0"));
    for n in 1..3 {
        within(get(&node.endpoint, n)).await.unwrap();
    }
    let stats = node.endpoint.stats().await.unwrap();
    assert_eq!(stats["disk"]["read_timeouts"], 3);
    let dir = &stats["disk"]["dirs"][0];
    assert_eq!(dir["state"], "failed");
    assert!(
        dir["failure"].as_str().unwrap().contains("stalled"),
        "{dir}"
    );
    // The directory is no longer used: the last object comes from the origin at once.
    let (status, _) = get(&node.endpoint, 3).await.unwrap();
    assert_eq!(status, "MISS");
    drop(frozen);
}
