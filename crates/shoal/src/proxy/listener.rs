//! Listening sockets and the accept loops: each accepted connection becomes a task running the
//! HTTP/1 connection (which hands over to HTTP/2 when it sees the preface). Connections beyond
//! `server.max_connections` are closed at once, so a flood cannot exhaust the node.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::http1::{self, Settings};
use super::{Counter, Proxy};

/// Bound listening sockets, ready to serve.
pub struct Listeners {
    listeners: Vec<TcpListener>,
}

impl Listeners {
    /// Binds every address; fails with the address that could not be bound. With `shared`, the
    /// sockets use SO_REUSEPORT so that every worker thread can bind its own and the kernel
    /// spreads connections across them.
    pub fn bind(addresses: &[SocketAddr], shared: bool) -> Result<Listeners, std::io::Error> {
        let listeners = addresses
            .iter()
            .map(|address| {
                bind_one(*address, shared).map_err(|error| {
                    std::io::Error::new(
                        error.kind(),
                        format!("cannot listen on {address}: {error}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Listeners { listeners })
    }

    /// The bound addresses (with the real ports when port 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }
}

fn bind_one(address: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Accepts and serves connections on every listener until the node shuts down, then keeps
/// serving the connections that are open until the process ends.
pub async fn serve(listeners: Listeners, proxy: Arc<Proxy>) {
    let mut tasks = Vec::new();
    for listener in listeners.listeners {
        tasks.push(tokio::spawn(accept_loop(listener, Arc::clone(&proxy))));
    }
    for task in tasks {
        let _ = task.await;
    }
    // The listeners are closed (the node is shutting down); the connections still finishing
    // their responses run on this runtime, which must stay up until the process exits.
    std::future::pending::<()>().await;
}

async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = proxy.drained() => {
                // Shutting down: serve the connections already queued (they would be reset
                // when the socket closes), then stop accepting.
                use futures_util::FutureExt;
                while let Some(Ok((stream, peer))) = listener.accept().now_or_never() {
                    start(stream, peer, &proxy);
                }
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => start(stream, peer, &proxy),
            Err(error) => {
                // Out of file descriptors and similar: wait a moment rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves an accepted connection in a task of its own, unless the node is at
/// `server.max_connections`. The connection keeps the limits and timeouts in force when it was
/// accepted.
fn start(stream: TcpStream, peer: SocketAddr, proxy: &Arc<Proxy>) {
    let metrics = Arc::clone(&proxy.metrics);
    let live = proxy.live();
    let settings: Settings = live.connection;
    if metrics.get(Counter::OpenConnections) >= live.config.server.max_connections as u64 {
        metrics.add(Counter::RefusedConnections, 1);
        drop(stream);
        return;
    }
    metrics.add(Counter::Connections, 1);
    metrics.add(Counter::OpenConnections, 1);
    let proxy = Arc::clone(proxy);
    tokio::spawn(async move {
        serve_stream(stream, peer, proxy, settings).await;
        metrics.decrement(Counter::OpenConnections);
    });
}

async fn serve_stream(stream: TcpStream, peer: SocketAddr, proxy: Arc<Proxy>, settings: Settings) {
    let _ = stream.set_nodelay(true);
    http1::serve_connection(stream, peer, proxy, settings).await;
}
