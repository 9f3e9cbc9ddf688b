//! Listening sockets and the accept loops: each accepted connection becomes a task running the
//! HTTP/1 connection (which hands over to HTTP/2 when it sees the preface); on TLS listeners,
//! after the handshake, HTTP/2 when the client chose it by ALPN. Connections beyond
//! `server.max_connections` are closed at once, so a flood cannot exhaust the node.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::http1;
use super::http1::idle::IdleTicks;
use super::settings::Settings;
use super::{Counter, Proxy};
use crate::config::ServerConfig;
use crate::wire::stream::ClientStream;

/// Bound listening sockets, ready to serve.
pub struct Listeners {
    listeners: Vec<Listener>,
}

struct Listener {
    socket: TcpListener,
    /// For TLS listeners.
    tls: Option<TlsAcceptor>,
}

impl Listeners {
    /// Binds every address of `server.listen` and, with `tls` (the certificates'
    /// configuration), of `server.listen_tls`; fails with the address that could not be bound.
    /// With `shared`, the sockets use SO_REUSEPORT so that every worker thread can bind its own
    /// and the kernel spreads connections across them.
    pub fn bind(
        server: &ServerConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        shared: bool,
    ) -> Result<Listeners, std::io::Error> {
        // The configuration refuses sizes of 4 GiB or more; saturate rather than wrap anyway.
        let notsent_lowat = u32::try_from(server.tcp_notsent_lowat.bytes()).unwrap_or(u32::MAX);
        let defer_accept = server.defer_accept.duration();
        let acceptor = tls.map(TlsAcceptor::from);
        let plain = server.listen.iter().map(|address| (address, None));
        let secure = server
            .listen_tls
            .iter()
            .filter(|_| acceptor.is_some())
            .map(|address| (address, acceptor.clone()));
        let listeners = plain
            .chain(secure)
            .map(|(address, tls)| {
                let socket =
                    bind_one(*address, shared, notsent_lowat, defer_accept).map_err(|error| {
                        std::io::Error::new(
                            error.kind(),
                            format!("cannot listen on {address}: {error}"),
                        )
                    })?;
                Ok(Listener { socket, tls })
            })
            .collect::<Result<_, std::io::Error>>()?;
        Ok(Listeners { listeners })
    }

    /// The bound addresses of the plain listeners and of the TLS ones (with the real ports
    /// when port 0 was asked for).
    pub fn local_addrs(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let of = |tls: bool| {
            self.listeners
                .iter()
                .filter(|listener| listener.tls.is_some() == tls)
                .filter_map(|listener| listener.socket.local_addr().ok())
                .collect()
        };
        (of(false), of(true))
    }
}

fn bind_one(
    address: SocketAddr,
    shared: bool,
    notsent_lowat: u32,
    defer_accept: std::time::Duration,
) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    // Accepted connections inherit it on Linux, which saves a system call per connection
    // (elsewhere `start` sets it on each).
    socket.set_tcp_nodelay(true)?;
    // Inherited the same way.
    #[cfg(target_os = "linux")]
    if notsent_lowat > 0 {
        socket.set_tcp_notsent_lowat(notsent_lowat)?;
    }
    #[cfg(target_os = "linux")]
    if !defer_accept.is_zero() {
        set_defer_accept(&socket, defer_accept)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (notsent_lowat, defer_accept);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Sets `TCP_DEFER_ACCEPT`: the listener reports a connection once its first bytes have
/// arrived (or after about `after`), so that the accepting worker finds the request there
/// instead of waking once for the connection and again for its data: a quarter less CPU per
/// new connection (bench/RESULTS.md, "A nine-round full run, and deferred accept").
///
/// Written by hand because no safe binding exists: std's `set_deferaccept` is unstable, and
/// socket2, nix and rustix do not have the option.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_defer_accept(socket: &socket2::Socket, after: std::time::Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let seconds = libc::c_int::try_from(after.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is the open socket `socket` borrows for the call, and the value
    // passed is a `c_int` with its own size, as TCP_DEFER_ACCEPT expects.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&seconds).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match result {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Accepts and serves connections on every listener until the node shuts down, then keeps
/// serving the connections that are open until the process ends.
pub async fn serve(listeners: Listeners, proxy: Arc<Proxy>) {
    let mut tasks = Vec::new();
    let ticks = IdleTicks::start();
    for listener in listeners.listeners {
        tasks.push(tokio::spawn(accept_loop(
            listener.socket,
            listener.tls,
            Arc::clone(&proxy),
            ticks.clone(),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
    // The listeners are closed (the node is shutting down); the connections still finishing
    // their responses run on this runtime, which must stay up until the process exits.
    std::future::pending::<()>().await;
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    ticks: IdleTicks,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = proxy.drained() => {
                // Shutting down: serve the connections already queued (they would be reset
                // when the socket closes), then stop accepting.
                use futures_util::FutureExt;
                while let Some(Ok((stream, peer))) = listener.accept().now_or_never() {
                    start(stream, peer, tls.as_ref(), &proxy, &ticks);
                }
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => start(stream, peer, tls.as_ref(), &proxy, &ticks),
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
fn start(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&TlsAcceptor>,
    proxy: &Arc<Proxy>,
    ticks: &IdleTicks,
) {
    let metrics = Arc::clone(&proxy.metrics);
    let live = proxy.live();
    let settings: Settings = live.connection;
    if metrics.get(Counter::OpenConnections) >= live.config.server.max_connections as u64 {
        metrics.add(Counter::RefusedConnections, 1);
        drop(stream);
        return;
    }
    let per_ip = live.config.server.max_connections_per_ip;
    let Some(slot) = proxy.limits.connect(peer.ip(), per_ip, super::now_millis()) else {
        metrics.add(Counter::RefusedConnections, 1);
        metrics.add(Counter::RefusedPerClient, 1);
        drop(stream);
        return;
    };
    metrics.add(Counter::Connections, 1);
    metrics.add(Counter::OpenConnections, 1);
    let proxy = Arc::clone(proxy);
    let ticks = ticks.clone();
    let tls = tls.cloned();
    tokio::spawn(async move {
        if cfg!(not(target_os = "linux")) {
            let _ = stream.set_nodelay(true);
        }
        match tls {
            None => {
                let stream = ClientStream::Plain(stream);
                http1::serve_connection(stream, peer, proxy, ticks, settings).await;
            }
            Some(acceptor) => {
                // Boxed: only TLS connections carry the handshake's state.
                Box::pin(serve_tls(stream, peer, acceptor, proxy, ticks, settings)).await;
            }
        }
        metrics.decrement(Counter::OpenConnections);
        drop(slot);
    });
}

/// The TLS handshake (within the head timeout: a client that never finishes it must not hold
/// the connection), then HTTP/2 if the client chose it by ALPN, else HTTP/1.1.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    ticks: IdleTicks,
    settings: Settings,
) {
    let handshake = tokio::time::timeout(settings.header_timeout, acceptor.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            proxy.metrics.add(Counter::TlsHandshakeErrors, 1);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            proxy.metrics.add(Counter::HandshakeTimeouts, 1);
            return;
        }
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2);
    let stream = ClientStream::Tls(Box::new(stream));
    if h2 {
        super::h2::serve(stream, bytes::Bytes::new(), peer, proxy, settings).await;
    } else {
        http1::serve_connection(stream, peer, proxy, ticks, settings).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one plain listener of `server` (on 127.0.0.1, port 0), and its address.
    fn bind_loopback(server: &ServerConfig) -> (TcpListener, SocketAddr) {
        let listener = Listeners::bind(server, None, false)
            .unwrap()
            .listeners
            .remove(0)
            .socket;
        let address = listener.local_addr().unwrap();
        (listener, address)
    }

    /// `start` sets neither TCP_NODELAY nor TCP_NOTSENT_LOWAT on Linux: the accepted socket
    /// must have them from the listener, or small responses would wait for the client's
    /// delayed ACKs, and large ones would queue without limit in the kernel.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_inherit_nagle_off_and_the_unsent_limit() {
        let server = ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            tcp_notsent_lowat: crate::config::ByteSize(300_000),
            defer_accept: crate::config::Span(std::time::Duration::ZERO),
            ..ServerConfig::default()
        };
        let (listener, address) = bind_loopback(&server);
        let _client = TcpStream::connect(address).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
        let lowat = socket2::SockRef::from(&accepted)
            .tcp_notsent_lowat()
            .unwrap();
        assert_eq!(lowat, 300_000);
    }

    /// With `defer_accept`, a connection is handed to the node only once its first bytes are
    /// there, so the worker that accepts it reads the request at once.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_deferred_connection_is_accepted_with_its_request() {
        use tokio::io::AsyncWriteExt;
        let server = ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            defer_accept: crate::config::Span(std::time::Duration::from_secs(30)),
            ..ServerConfig::default()
        };
        let (listener, address) = bind_loopback(&server);
        let mut client = TcpStream::connect(address).await.unwrap();
        let silent = tokio::time::timeout(std::time::Duration::from_millis(300), listener.accept());
        assert!(silent.await.is_err(), "accepted before the client spoke");
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut buffer = [0u8; 64];
        let read = accepted.try_read(&mut buffer).unwrap();
        assert_eq!(&buffer[..read], b"GET / HTTP/1.1\r\n");
    }
}
