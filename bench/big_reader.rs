//! Latency of large downloads measured by a client that reads the way a download client does:
//! large reads, every connection served as soon as it has data. wrk reads 8 KiB at a time and
//! drains one connection before the next, so for 64 MiB bodies the order in which it reaches
//! connections, not the server, sets its tail (bench/RESULTS.md).
//!
//!     cargo run --release --example big_reader -- ADDR PATH [CONNECTIONS] [SECONDS]
//!
//! Keeps CONNECTIONS keep-alive connections to ADDR (127.0.0.1 only) asking for PATH again and
//! again for SECONDS, each a task of a multi-threaded runtime reading 1 MiB at a time, and
//! prints one JSON line: requests, requests/s, MB/s, p50, p99 and max latency in ms.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: big_reader ADDR PATH [CONNECTIONS] [SECONDS]");
        std::process::exit(2);
    }
    let address: std::net::SocketAddr = args[1].parse().expect("ADDR is host:port");
    assert!(
        address.ip().is_loopback(),
        "only loopback addresses are targets"
    );
    let path = args[2].clone();
    let connections: usize = args.get(3).map_or(10, |n| n.parse().expect("CONNECTIONS"));
    let seconds: u64 = args.get(4).map_or(10, |n| n.parse().expect("SECONDS"));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(download_loop(address, path.clone(), deadline)))
        .collect();
    let mut latencies = Vec::new();
    let mut bytes = 0u64;
    for task in tasks {
        let (mut times, received) = task.await.expect("a download task panicked");
        latencies.append(&mut times);
        bytes += received;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"requests\": {}, \"rps\": {:.2}, \"mb_per_s\": {:.0}, \"p50\": {:.2}, \"p99\": {:.2}, \"max\": {:.2}}}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        percentile(0.5),
        percentile(0.99),
        percentile(1.0),
    );
}

/// Downloads `path` on one keep-alive connection until `deadline`; the latency of each
/// complete response and the body bytes received.
async fn download_loop(
    address: std::net::SocketAddr,
    path: String,
    deadline: Instant,
) -> (Vec<Duration>, u64) {
    let mut times = Vec::new();
    let mut received = 0u64;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let mut buffer = vec![0u8; 1 << 20];
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.set_nodelay(true).ok();
    while Instant::now() < deadline {
        let sent = Instant::now();
        if stream.write_all(request.as_bytes()).await.is_err() {
            break;
        }
        // The head, then exactly Content-Length bytes of body.
        let mut head = Vec::new();
        let head_end = loop {
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return (times, received),
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        };
        let text = String::from_utf8_lossy(&head[..head_end]).to_ascii_lowercase();
        let Some(length) = text
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<u64>().ok())
        else {
            eprintln!("a response without Content-Length");
            return (times, received);
        };
        let mut body = (head.len() - head_end) as u64;
        while body < length {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return (times, received),
                Ok(n) => body += n as u64,
            }
        }
        if body > length {
            // Nothing was asked for beyond this response.
            eprintln!("bytes after the end of a response");
            return (times, received);
        }
        received += length;
        times.push(sent.elapsed());
    }
    (times, received)
}
