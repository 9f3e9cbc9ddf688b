//! Nodes as real `shoal serve` processes, for tests that kill them, freeze their threads or run
//! several of them together.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::client;

/// A port on 127.0.0.1 that nothing in this test run has used or will use: for a node
/// process to bind, a test origin to listen on, or nobody (a dead address).
///
/// Ports come from a counter below the kernel's ephemeral range (32768 and up on Linux), not
/// from binding port 0: a port freed by one test and bound again by another at once ("bind to
/// port 0" hands it out again) made a test talk to another test's server, and two routers'
/// SO_REUSEPORT UDP sockets bound to port 0 could get the same port. Whether a port is free
/// is read from `/proc/net/{tcp,udp}*`, not tried with a socket: a socket made for the try
/// can be copied into a child process another test is starting, and then holds the port
/// until that child runs its program.
pub fn free_port() -> SocketAddr {
    const FIRST: u16 = 15_000;
    const COUNT: u16 = 17_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Another test binary running at the same time starts elsewhere in the range.
    let start = (std::process::id() % 17) as u16 * 1_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (start + n) % COUNT;
        if !in_use(port) {
            return SocketAddr::from(([127, 0, 0, 1], port));
        }
    }
}

/// Whether a TCP or UDP socket on this machine has `port` as its local port.
fn in_use(port: u16) -> bool {
    let local = format!(":{port:04X}");
    let tables = [
        "/proc/net/tcp",
        "/proc/net/tcp6",
        "/proc/net/udp",
        "/proc/net/udp6",
    ];
    tables.iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|table| {
            table.lines().skip(1).any(|line| {
                line.split_whitespace()
                    .nth(1)
                    .is_some_and(|address| address.ends_with(&local))
            })
        })
    })
}

/// A `shoal serve` process, killed (SIGKILL) when dropped.
pub struct Node {
    child: Child,
    pub endpoint: Endpoint,
}

/// Where a node listens.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl Node {
    /// Starts `shoal serve --listen LISTEN --admin (a free port) ARGS...` and waits until its
    /// `/stats` satisfy `ready`.
    pub async fn start(
        args: &[OsString],
        listen: SocketAddr,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> Node {
        let admin = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("serve")
            .args([
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let node = Node {
            child,
            endpoint: Endpoint { listen, admin },
        };
        for _ in 0..250 {
            if let Some(stats) = node.endpoint.stats().await {
                if ready(&stats) {
                    return node;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the node did not become ready");
    }

    /// The process's threads named `name` (as the kernel shows it: 15 bytes at most).
    pub fn threads(&self, name: &str) -> Vec<i32> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .filter_map(|task| {
                let task = task.ok()?;
                let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
                (comm.trim_end() == name).then(|| task.file_name().to_str()?.parse().ok())?
            })
            .collect()
    }
}

impl Node {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a service manager's stop).
    pub fn terminate(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits up to `limit` for the process to exit; its status, if it did.
    pub async fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Endpoint {
    /// The admin API's `/status`.
    pub async fn status(&self) -> Option<serde_json::Value> {
        self.admin_json("/status").await
    }

    /// The admin API's `/stats`.
    pub async fn stats(&self) -> Option<serde_json::Value> {
        self.admin_json("/stats").await
    }

    async fn admin_json(&self, path: &str) -> Option<serde_json::Value> {
        let response = client()
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .ok()?;
        serde_json::from_slice(&response.bytes().await.ok()?).ok()
    }

    /// GET `path` with `Host: host`: the cache status and the body (`None` if it failed).
    pub async fn get(&self, path: &str, host: &str) -> Option<(String, Vec<u8>)> {
        let response = client()
            .get(format!("http://{}{path}", self.listen))
            .header("host", host)
            .send()
            .await
            .ok()?;
        let status = crate::support::cache_status(response.headers()).to_owned();
        let body = response.bytes().await.ok()?;
        Some((status, body.to_vec()))
    }
}

/// Clients requesting from `listen` in a loop until stopped, half of them keeping their
/// connections alive and half opening one per request; an answer counts as good when it is a
/// 200 whose body is `answer for PATH`.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` clients; client `c` asks for `path(c, n)` on its `n`th request.
    pub fn start(
        listen: SocketAddr,
        clients: usize,
        path: impl Fn(usize, u64) -> String + Send + Sync + 'static,
    ) -> Load {
        let path = Arc::new(path);
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let clients = (0..clients)
            .map(|index| {
                let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
                let path = Arc::clone(&path);
                tokio::spawn(async move {
                    let keep_alive = reqwest::Client::new();
                    let fresh = client();
                    let http = if index % 2 == 0 { &keep_alive } else { &fresh };
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let path = path(index, n);
                        let expected = format!("answer for {path}");
                        let answer = match http.get(format!("http://{listen}{path}")).send().await {
                            Ok(response) if response.status() == 200 => {
                                match response.bytes().await {
                                    Ok(body) if body == expected => Ok(()),
                                    Ok(body) => Err(format!("wrong body {body:?}")),
                                    Err(error) => Err(format!("body: {error:?}")),
                                }
                            }
                            Ok(response) => Err(format!("status {}", response.status())),
                            Err(error) => Err(format!("{error:?}")),
                        };
                        // Why a request failed is printed: a rare failure must say what it was.
                        if let Err(reason) = answer {
                            eprintln!("{path}: {reason}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            clients,
        }
    }

    /// Waits until `more` requests more have been answered well.
    pub async fn wait_for(&self, more: usize) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        while self.ok.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the clients; the requests answered well and those that failed.
    pub async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// `shoal serve --cache-mem 64MiB` starts and serves (issue 27): the default largest object
/// follows the memory given instead of conflicting with it.
#[tokio::test]
async fn a_small_ram_cache_starts() {
    let origin = crate::support::Origin::fixed("small").await;
    let listen = free_port();
    let args: Vec<OsString> = ["--cache-mem", "64MiB", "--origin", &origin.url()]
        .iter()
        .map(OsString::from)
        .collect();
    let node = Node::start(&args, listen, |_| true).await;
    let body = crate::support::client()
        .get(format!("http://{}/", node.endpoint.listen))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "small");
}
