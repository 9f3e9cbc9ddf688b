//! Whatever an origin answers, the framing a client gets from the node is the node's own and
//! holds: the input is an origin's whole reply (head and body, then the connection closes),
//! served by a raw origin on loopback to a real node, which a pipelined client asks for a
//! fresh URL and then sends a second request the node answers itself (405). The client reads
//! the first response by its framing; whatever follows must be that 405, never bytes of the
//! origin's choosing.
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

struct Harness {
    runtime: tokio::runtime::Runtime,
    node: SocketAddr,
    reply: Arc<Mutex<Vec<u8>>>,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(0);

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let reply = Arc::new(Mutex::new(Vec::new()));
        let origin = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = origin.local_addr().unwrap();
        let answer = Arc::clone(&reply);
        // The origin: a thread that reads one request head per connection, writes the current
        // input and closes.
        std::thread::spawn(move || {
            for stream in origin.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(0) | Err(_) => break,
                        Ok(read) => head.extend_from_slice(&byte[..read]),
                    }
                }
                let bytes = answer.lock().unwrap().clone();
                let _ = stream.write_all(&bytes);
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let node = runtime.block_on(async {
            let mut config = shoal::config::Config::default();
            config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
            config.server.methods = vec!["GET".parse().unwrap(), "HEAD".parse().unwrap()];
            config.admin.listen = None;
            config.origin.urls = vec![format!("http://{address}").parse().unwrap()];
            config.origin.first_byte_timeout = shoal::config::Span(Duration::from_millis(500));
            config.origin.body_timeout = shoal::config::Span(Duration::from_millis(500));
            config.retries.tries = 1;
            config.cache.memory = shoal::config::ByteSize(64 << 20);
            config.cache.max_object_size = shoal::config::ByteSize(16 << 20);
            shoal::Node::start(config).await.unwrap().listen[0]
        });
        Harness {
            runtime,
            node,
            reply,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    *harness.reply.lock().unwrap() = data.to_vec();
    let path = format!("/f{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let received = harness.runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(harness.node).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: fuzz.test\r\n\r\nDELETE /next HTTP/1.1\r\nHost: fuzz.test\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let read = stream.read_to_end(&mut received);
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        received
    });
    check(&received);
});

/// The first response is well framed, and anything after it is the node's 405.
fn check(received: &[u8]) {
    let rest = read_response(received).unwrap_or_else(|why| {
        panic!("first response: {why}: {:?}", String::from_utf8_lossy(received))
    });
    if rest.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(rest);
    assert!(
        text.starts_with("HTTP/1.1 405 ") && text.contains("\r\nallow: GET, HEAD\r\n"),
        "after the first response: {text:?}"
    );
}

/// Reads one response by its framing; returns what follows it (nothing when the framing is
/// "until close" or the body was cut short).
fn read_response(bytes: &[u8]) -> Result<&[u8], String> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut fields);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Err("incomplete head".into()),
        Err(error) => return Err(format!("invalid head: {error}")),
    };
    let status = response.code.unwrap_or(0);
    let named = |name: &str| {
        response
            .headers
            .iter()
            .filter(|field| field.name.eq_ignore_ascii_case(name))
            .map(|field| String::from_utf8_lossy(field.value).into_owned())
            .collect::<Vec<_>>()
    };
    let lengths = named("content-length");
    let codings = named("transfer-encoding");
    if lengths.len() > 1 || codings.len() > 1 || (!lengths.is_empty() && !codings.is_empty()) {
        return Err("framing fields that disagree".into());
    }
    let body = &bytes[head..];
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(body);
    }
    if let Some(length) = lengths.first() {
        let length: usize = length.parse().map_err(|_| "a bad Content-Length")?;
        return Ok(body.get(length..).unwrap_or(&[]));
    }
    if let Some(coding) = codings.first() {
        if coding != "chunked" {
            return Err(format!("transfer coding {coding:?}"));
        }
        return Ok(after_chunks(body));
    }
    if !named("connection").iter().any(|value| value == "close") {
        return Err("no framing on a connection kept open".into());
    }
    Ok(&[])
}

/// What follows a chunked body (nothing if it is cut short).
fn after_chunks(mut body: &[u8]) -> &[u8] {
    loop {
        let Some(line) = body.windows(2).position(|w| w == b"\r\n") else {
            return &[];
        };
        let Ok(size) = usize::from_str_radix(&String::from_utf8_lossy(&body[..line]), 16) else {
            panic!("a chunk size line the node wrote: {:?}", &body[..line]);
        };
        body = &body[line + 2..];
        if size == 0 {
            return body.strip_prefix(b"\r\n").unwrap_or(&[]);
        }
        match body.get(size + 2..) {
            Some(rest) => body = rest,
            None => return &[],
        }
    }
}
