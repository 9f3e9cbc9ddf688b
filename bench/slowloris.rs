//! Resource exhaustion: how much of its normal rate a node keeps serving while 10,000 slow
//! connections hold it (slowloris: request heads sent a byte at a time; and request bodies sent
//! a byte per second), and what it costs in memory.
//!
//!     cargo build --release && cargo run --release --example slowloris
//!
//! Starts `target/release/shoal serve` in front of an origin of its own (which reads whole
//! request bodies), measures the cache-hit rate of 50 keep-alive clients with wrk for 10 s, then
//! opens the slow connections from 40 loopback source addresses (127.0.0.2 to 127.0.0.41, 250
//! each: the per-IP limit is not what stops them), measures again while they trickle, and
//! prints both rates, their ratio, the node's RSS before and during the attack, and how many
//! slow connections the node still held at the end. Only ever talks to 127.0.0.0/8.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const SLOW_HEADS: usize = 5_000;
const SLOW_BODIES: usize = 5_000;
const SOURCES: u8 = 40;

#[tokio::main]
async fn main() {
    let origin = start_origin().await;
    let listen: SocketAddr = "127.0.0.1:18481".parse().unwrap();
    let admin: SocketAddr = "127.0.0.1:18482".parse().unwrap();
    let binary = std::env::current_dir()
        .unwrap()
        .join("target/release/shoal");
    let mut node = Command::new(&binary)
        .args([
            "serve",
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .args(["--origin", &format!("http://{origin}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "{}: {error} (cargo build --release first)",
                binary.display()
            )
        });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Warm the object the clients ask for.
    let _ = wrk(listen, 1).await;

    let quiet_rate = wrk(listen, 10).await;
    let quiet_rss = rss_mib(node.id());

    let held = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for index in 0..(SLOW_HEADS + SLOW_BODIES) {
        let source = [127, 0, 0, 2 + (index % usize::from(SOURCES)) as u8];
        let body = index >= SLOW_HEADS;
        attackers.push(tokio::spawn(slow_client(
            source,
            listen,
            body,
            Arc::clone(&held),
        )));
        if index % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let opened = held.load(Ordering::Relaxed);
    let attacked_rate = wrk(listen, 10).await;
    let attacked_rss = rss_mib(node.id());
    let still_held = held.load(Ordering::Relaxed);

    for attacker in attackers {
        attacker.abort();
    }
    // Quiet again, to bracket the attack: this machine's speed drifts between runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_rate = wrk(listen, 10).await;
    let quiet = (quiet_rate + after_rate) / 2.0;

    println!("slow connections opened: {opened} of {} ({SLOW_HEADS} trickling heads, {SLOW_BODIES} one-byte-per-second bodies, from {SOURCES} addresses)", SLOW_HEADS + SLOW_BODIES);
    println!("hits/s, 50 keep-alive clients, quiet before:    {quiet_rate:>10.0}");
    println!("hits/s, 50 keep-alive clients, under attack:    {attacked_rate:>10.0}");
    println!("hits/s, 50 keep-alive clients, quiet after:     {after_rate:>10.0}");
    println!(
        "ratio to the quiet mean:                        {:>10.2}",
        attacked_rate / quiet
    );
    println!("node RSS quiet / under attack (MiB):            {quiet_rss:>6} / {attacked_rss}");
    println!("slow connections open at the end of the attack: {still_held:>10}");
    let _ = node.kill();
    let _ = node.wait();
}

/// A connection that sends a request head one byte every second (or, `body`, a whole head and
/// then a body a byte per second), reconnecting when the node closes it.
async fn slow_client(source: [u8; 4], node: SocketAddr, body: bool, held: Arc<AtomicUsize>) {
    loop {
        let socket = TcpSocket::new_v4().unwrap();
        if socket.bind(SocketAddr::from((source, 0))).is_err() {
            return;
        }
        let Ok(mut stream) = socket.connect(node).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        held.fetch_add(1, Ordering::Relaxed);
        let (prefix, trickle): (&[u8], u8) = match body {
            true => (
                b"POST /upload HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 100000\r\n\r\n",
                b'x',
            ),
            false => (b"GET / HTTP/1.1\r\nHost: slow.test\r\nX-Slow: ", b'a'),
        };
        let mut open = stream.write_all(prefix).await.is_ok();
        let mut scratch = [0u8; 1024];
        while open {
            tokio::time::sleep(Duration::from_secs(1)).await;
            open = stream.write_all(&[trickle]).await.is_ok();
            // A node that answered (408, 413) or closed: read it out.
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut scratch)).await
            {
                open = false;
            }
        }
        held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests per second of `wrk -t2 -c50` for `seconds` against the cached object.
async fn wrk(node: SocketAddr, seconds: u64) -> f64 {
    let output = tokio::task::spawn_blocking(move || {
        Command::new("wrk")
            .args([
                "-t2",
                "-c50",
                &format!("-d{seconds}s"),
                &format!("http://{node}/hit"),
            ])
            .output()
            .expect("wrk (apt install wrk)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .unwrap_or(0.0)
}

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib / 1024)
}

/// An origin on 127.0.0.1 that reads whole request bodies and answers a cacheable 1 KiB.
async fn start_origin() -> SocketAddr {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        let response = http::Response::builder()
                            .header("cache-control", "max-age=3600")
                            .body(Full::new(bytes::Bytes::from(vec![b'x'; 1024])))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}
