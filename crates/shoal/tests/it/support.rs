//! Test harness: an in-process origin that records what it receives and answers from a script,
//! a node started on ephemeral ports in front of it, and a raw TCP client for byte-exact tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use shoal::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How the origin answers one request.
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Wait this long before sending the response head.
    pub delay: Duration,
}

/// The body of a scripted reply.
pub enum Body {
    Full(Bytes),
    /// These pieces, with a pause before each one after the first.
    Paced(Vec<Bytes>, Duration),
    /// Declares `length` in Content-Length, sends `sent` bytes, then breaks the connection.
    Truncated {
        length: usize,
        sent: usize,
    },
    /// No declared length: sends `sent` bytes (chunked), then breaks the connection.
    TruncatedChunked {
        sent: usize,
    },
    /// Pieces released one by one by the test through the channel.
    Gated(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Body::Full(body.into()),
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            ..Reply::ok("")
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn body(mut self, body: Body) -> Reply {
        self.body = body;
        self
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// An origin server on 127.0.0.1 that records requests.
pub struct Origin {
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    concurrency: Arc<Mutex<(usize, usize)>>,
}

impl Origin {
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Origin {
        // Never a port another test had: a stopped origin's address stays dead. A port that
        // something outside the tests took since `free_port` looked gives way to the next.
        let mut tries = 0..100;
        let listener = loop {
            match TcpListener::bind(crate::process::free_port()).await {
                Ok(listener) => break listener,
                Err(error) if tries.next().is_none() => panic!("no port for an origin: {error}"),
                Err(_) => {}
            }
        };
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = Arc::clone(&seen);
        let connections = Arc::new(Mutex::new(Vec::new()));
        let tracked = Arc::clone(&connections);
        let concurrency = Arc::new(Mutex::new((0, 0)));
        let counting = Arc::clone(&concurrency);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                let counting = Arc::clone(&counting);
                let connection = tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let handler = Arc::clone(&handler);
                            let recorded = Arc::clone(&recorded);
                            let counting = Arc::clone(&counting);
                            async move {
                                {
                                    let mut counts = counting.lock().unwrap();
                                    counts.0 += 1;
                                    counts.1 = counts.1.max(counts.0);
                                }
                                let (parts, body) = request.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let seen = Seen {
                                    method: parts.method,
                                    target: parts.uri.to_string(),
                                    headers: parts.headers,
                                    body,
                                };
                                recorded.lock().unwrap().push(seen.clone());
                                let reply = handler(&seen);
                                let response = respond(reply).await;
                                counting.lock().unwrap().0 -= 1;
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                tracked.lock().unwrap().push(connection.abort_handle());
            }
        });
        Origin {
            address,
            seen,
            task,
            connections,
            concurrency,
        }
    }

    /// An origin that answers every request with 200 and `body`, cacheable for a minute.
    pub async fn fixed(body: &'static str) -> Origin {
        Origin::start(move |_| Reply::ok(body).header("cache-control", "max-age=60")).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests received for `target`.
    pub fn count(&self, target: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target == target)
            .count()
    }

    /// The last request received for `target`.
    pub fn last(&self, target: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.target == target)
            .cloned()
            .expect("no such request")
    }

    /// Most requests the origin was working on at the same time (until each response head).
    pub fn max_concurrent(&self) -> usize {
        self.concurrency.lock().unwrap().1
    }

    /// Stops the origin: no new connections, and the open ones are cut.
    pub fn stop(&self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

async fn respond(reply: Reply) -> http::Response<BoxBody<Bytes, std::io::Error>> {
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut builder = http::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        builder = builder.header(name, value);
    }
    let body: BoxBody<Bytes, std::io::Error> = match reply.body {
        Body::Full(bytes) => Full::new(bytes).map_err(|never| match never {}).boxed(),
        Body::Paced(pieces, pause) => {
            let stream = futures_util::stream::unfold(
                (pieces.into_iter(), true),
                move |(mut pieces, first)| async move {
                    let piece = pieces.next()?;
                    if !first {
                        tokio::time::sleep(pause).await;
                    }
                    Some((Ok::<_, std::io::Error>(Frame::data(piece)), (pieces, false)))
                },
            );
            StreamBody::new(stream).boxed()
        }
        Body::Truncated { length, sent } => {
            builder = builder.header("content-length", length.to_string());
            dying_body(sent)
        }
        Body::TruncatedChunked { sent } => dying_body(sent),
        Body::Gated(receiver) => {
            let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                let piece = receiver.recv().await?;
                Some((Ok::<_, std::io::Error>(Frame::data(piece)), receiver))
            });
            StreamBody::new(stream).boxed()
        }
    };
    builder.body(body).unwrap()
}

/// `sent` bytes, then (after the head and those bytes are surely on the wire) an error that
/// makes the server drop the connection.
fn dying_body(sent: usize) -> BoxBody<Bytes, std::io::Error> {
    let stream = futures_util::stream::unfold(0, move |step| async move {
        match step {
            0 => Some((Ok(Frame::data(Bytes::from(vec![b'x'; sent]))), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Err(std::io::Error::other("origin died")), 2))
            }
            _ => None,
        }
    });
    StreamBody::new(stream).boxed()
}

/// A pool named `name` of the one host at `url`, every other key at its default.
pub fn pool_of(name: &str, url: &str) -> shoal::config::PoolConfig {
    let host = shoal::config::HostConfig {
        url: url.parse().unwrap(),
        weight: 1,
        max_connections: 0,
    };
    shoal::config::PoolConfig::of_hosts(name, vec![host])
}

/// A node in front of `origin`, on ephemeral ports, with `tweak` applied to its config.
pub async fn node_with(origin: &Origin, tweak: impl FnOnce(&mut Config)) -> shoal::Node {
    node_for(&origin.url(), tweak).await
}

/// A node in front of the origin at `url`, on ephemeral ports, with `tweak` applied.
pub async fn node_for(url: &str, tweak: impl FnOnce(&mut Config)) -> shoal::Node {
    // Logs show with `RUST_LOG=debug cargo test -- --nocapture`.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut config = Config::default();
    config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    config.origin.urls = vec![url.parse().unwrap()];
    tweak(&mut config);
    shoal::Node::start(config).await.unwrap()
}

pub async fn node(origin: &Origin) -> shoal::Node {
    node_with(origin, |_| {}).await
}

/// Base URL of a node.
pub fn base(node: &shoal::Node) -> String {
    format!("http://{}", node.listen[0])
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// GET `path` from the node; returns status, headers and body.
pub async fn get(node: &shoal::Node, path: &str) -> (u16, HeaderMap, Bytes) {
    get_with(node, path, &[]).await
}

pub async fn get_with(
    node: &shoal::Node,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Bytes) {
    let mut request = client().get(format!("{}{}", base(node), path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    (status, headers, body)
}

/// The node's `/stats`, from its admin API.
pub async fn admin_stats(node: &shoal::Node) -> serde_json::Value {
    admin_get(node, "/stats", None).await
}

/// The JSON the node's admin API answers `path` with, asked with the admin `token` if given.
pub async fn admin_get(node: &shoal::Node, path: &str, token: Option<&str>) -> serde_json::Value {
    let mut request = client().get(format!("http://{}{path}", node.admin.unwrap()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let text = request.send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn cache_status(headers: &HeaderMap) -> &str {
    headers
        .get("x-cache")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// Sends raw bytes on a new connection and returns everything the node sends back until it
/// closes the connection (or 5 s pass).
pub async fn raw(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_close(&mut stream).await
}

pub async fn read_until_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// An HTTP/2 client (prior knowledge) on a new connection to `address`, ready to send.
pub async fn h2_client(address: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(address).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.ready().await.unwrap()
}

/// Polls `condition` every 20 ms for up to 5 s (for effects of background tasks).
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// What the raw origin does with a request.
pub struct Answer {
    pub bytes: Vec<u8>,
    /// Close the connection after writing (without saying so in the response).
    pub close: bool,
}

pub fn answer(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: false,
    }
}

/// An origin that reads request heads (and `Content-Length` bodies) and writes what `reply`
/// returns for each (given the request and how many came before it on its connection); counts
/// connections and keeps the requests it read.
pub struct RawOrigin {
    pub url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RawOrigin {
    pub async fn start(reply: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(reply);
        let (counted, recorded) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (reply, recorded) = (Arc::clone(&reply), Arc::clone(&recorded));
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    for earlier in 0.. {
                        let Some(request) = read_request(&mut stream, &mut buffer).await else {
                            return;
                        };
                        recorded.lock().unwrap().push(request.clone());
                        let answer = reply(&request, earlier);
                        if stream.write_all(&answer.bytes).await.is_err() || answer.close {
                            return;
                        }
                    }
                });
            }
        });
        RawOrigin {
            url,
            connections,
            requests,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// How many GET requests for `path` it read.
    pub fn fetched(&self, path: &str) -> usize {
        let line = format!("GET {path} ");
        self.requests()
            .iter()
            .filter(|request| request.starts_with(&line))
            .count()
    }
}

/// One request (head and `Content-Length` body) as text; `None` when the connection closes.
async fn read_request(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end + 4]).into_owned();
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                let request = String::from_utf8_lossy(&buffer[..end + 4 + length]).into_owned();
                buffer.drain(..end + 4 + length);
                return Some(request);
            }
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}
