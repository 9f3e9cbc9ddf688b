//! `shoal route`: the request router. An authoritative DNS server that answers each client
//! with the edge nodes its location calls for (`map`: operator prefixes, AS number, country,
//! continent, default; `dns`: the wire; `health`: node checks), with a status API for
//! `shoal ctl nodes`. See `examples/route.toml`.

mod client_subnet;
pub mod config;
pub mod dns;
pub mod health;
pub mod map;
mod redirect;
mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::RouterConfig;
use dns::Zone;
use map::Map;

pub use shoal_api::node::Load;

/// A running router.
pub struct Router {
    /// The zone and map it answers from.
    pub zone: Arc<Zone>,
    /// The DNS addresses bound (UDP and TCP on each).
    pub dns: Vec<SocketAddr>,
    /// The status API's address, if enabled.
    pub admin: Option<SocketAddr>,
    /// The redirect mode's address, if enabled.
    pub http: Option<SocketAddr>,
    /// The file the configuration came from, read again on reload.
    file: Option<PathBuf>,
    /// The configuration in force.
    config: std::sync::Mutex<RouterConfig>,
    /// 1 at start, one more per reload.
    generation: std::sync::atomic::AtomicU64,
}

impl Router {
    /// Starts the DNS listeners of `config` (`dns` replaces the configured addresses when not
    /// empty), the node checks and the status API on the current runtime. `file` is where a
    /// reload reads the configuration again.
    pub async fn start(
        config: RouterConfig,
        dns: &[SocketAddr],
        http: Option<SocketAddr>,
        file: Option<PathBuf>,
    ) -> anyhow::Result<Arc<Router>> {
        let zone = Arc::new(
            Zone::new(&config.dns, Map::build(&config, None)).map_err(anyhow::Error::msg)?,
        );
        health::spawn(&zone.map.load_full(), &config.health);
        let addresses = if dns.is_empty() {
            config.dns.listen.clone()
        } else {
            dns.to_vec()
        };
        let mut bound = Vec::new();
        let mut udp_sockets = Vec::new();
        for address in addresses {
            let (udp, tcp) = bind_dns(address).await?;
            let local = udp[0].local_addr()?;
            udp_sockets.extend(udp);
            tokio::spawn(dns::serve_tcp(tcp, Arc::clone(&zone)));
            tracing::info!(address = %local, "answering DNS (UDP and TCP)");
            bound.push(local);
        }
        let bind = |address: Option<SocketAddr>, what: &'static str| async move {
            match address {
                Some(address) => tokio::net::TcpListener::bind(address)
                    .await
                    .map(Some)
                    .map_err(|error| {
                        anyhow::anyhow!("cannot listen on {address} ({what}): {error}")
                    }),
                None => Ok(None),
            }
        };
        let admin = bind(config.admin.listen, "status").await?;
        let redirects = bind(http.or(config.http.listen), "redirects").await?;
        let router = Arc::new(Router {
            zone,
            dns: bound,
            admin: admin
                .as_ref()
                .and_then(|listener| listener.local_addr().ok()),
            http: redirects
                .as_ref()
                .and_then(|listener| listener.local_addr().ok()),
            file,
            config: std::sync::Mutex::new(config),
            generation: std::sync::atomic::AtomicU64::new(1),
        });
        for socket in udp_sockets {
            let (zone, owner) = (Arc::clone(&router.zone), Arc::downgrade(&router));
            std::thread::Builder::new()
                .name("shoal-dns-udp".into())
                .spawn(move || dns::serve_udp(socket, zone, owner))?;
        }
        if router.file.is_some() {
            tokio::spawn(watch(Arc::downgrade(&router)));
        }
        if let Some(listener) = admin {
            tokio::spawn(serve_http(
                listener,
                Arc::downgrade(&router),
                status::answer,
            ));
        }
        if let Some(listener) = redirects {
            tracing::info!(address = ?router.http, "answering HTTP with redirects");
            tokio::spawn(serve_http(
                listener,
                Arc::downgrade(&router),
                redirect::answer,
            ));
        }
        Ok(router)
    }

    /// The redirect mode's settings in force.
    fn http_config(&self) -> config::HttpConfig {
        self.config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .http
            .clone()
    }

    /// Reads the configuration file again and puts its nodes, groups, rules, prefixes and
    /// GeoIP databases in force at once: answers come from the old map until the new one is
    /// whole. A bad file is refused with its reason and nothing changes. (`[dns]` and
    /// `[admin]` apply at start only.)
    pub fn reload(&self) -> Result<u64, String> {
        let Some(file) = &self.file else {
            return Err("this router was not started from a file".into());
        };
        let config = RouterConfig::load(file).map_err(|error| error.to_string())?;
        Ok(self.reload_with(config))
    }

    /// The generation of the map in force: 1 at start, one more per reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The files the map is read from (the config and its MaxMind databases) and when they
    /// were last modified.
    fn files(&self) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
        let config = self
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.file
            .iter()
            .chain(config.geoip.country.iter())
            .chain(config.geoip.asn.iter())
            .map(|path| {
                let modified = std::fs::metadata(path)
                    .and_then(|meta| meta.modified())
                    .ok();
                (path.clone(), modified)
            })
            .collect()
    }

    /// Puts the map of `config` in force (see [`Router::reload`]); returns its generation.
    pub fn reload_with(&self, config: RouterConfig) -> u64 {
        let running = self.zone.map.load_full();
        let next = Arc::new(Map::build(&config, Some(&running)));
        self.zone.map.store(Arc::clone(&next));
        health::spawn(&next, &config.health);
        *self
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        tracing::info!(generation, "router map reloaded");
        generation
    }
}

/// Reloads when the config file or a MaxMind database changes (checked every two seconds), as
/// long as the router lives. A change that does not load is logged once and the map stays.
async fn watch(router: std::sync::Weak<Router>) {
    let mut known = match router.upgrade() {
        Some(router) => router.files(),
        None => return,
    };
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let now = router.files();
        if now != known {
            if let Err(error) = router.reload() {
                tracing::error!(%error, "a changed file does not load; the map in force stays");
            }
            known = router.files();
        }
    }
}

/// Serves HTTP/1.1 on `listener` while the router lives, answering each request with
/// `answer(router, request, client address)`: the status API and the redirect mode.
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: std::sync::Weak<Router>,
    answer: fn(
        &Router,
        &http::Request<hyper::body::Incoming>,
        SocketAddr,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move {
                        let response = match router.upgrade() {
                            Some(router) => answer(&router, &request, peer),
                            None => http::Response::builder()
                                .status(http::StatusCode::SERVICE_UNAVAILABLE)
                                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                    b"stopping\n",
                                )))
                                .unwrap_or_default(),
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// UDP sockets, one per core, sharing the address (SO_REUSEPORT: the kernel spreads the
/// queries over them, so answering scales with the cores), and a TCP listener on it. For port
/// 0, the port UDP gets is tried for TCP, and another one if TCP cannot have it (a client
/// socket may hold it). The UDP sockets block, with a read timeout (see `dns::serve_udp`).
async fn bind_dns(
    address: SocketAddr,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, tokio::net::TcpListener)> {
    let sockets = std::thread::available_parallelism().map_or(1, |n| n.get());
    let udp = |address: SocketAddr| -> std::io::Result<std::net::UdpSocket> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::DGRAM,
            None,
        )?;
        socket.set_reuse_port(true)?;
        socket.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
        socket.bind(&address.into())?;
        Ok(socket.into())
    };
    let mut attempts = 0;
    loop {
        let first = udp(address)
            .map_err(|error| anyhow::anyhow!("cannot listen on {address} (UDP): {error}"))?;
        let local = first.local_addr()?;
        match tokio::net::TcpListener::bind(local).await {
            Ok(tcp) => {
                let mut all = vec![first];
                for _ in 1..sockets {
                    all.push(udp(local).map_err(|error| {
                        anyhow::anyhow!("cannot listen on {local} (UDP): {error}")
                    })?);
                }
                return Ok((all, tcp));
            }
            Err(_) if address.port() == 0 && attempts < 16 => attempts += 1,
            Err(error) => anyhow::bail!("cannot listen on {local} (TCP): {error}"),
        }
    }
}

/// Runs `shoal route` until Ctrl-C or SIGTERM; SIGHUP reloads the file.
pub fn run(
    file: &Path,
    dns: &[SocketAddr],
    http: Option<SocketAddr>,
    admin: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let mut config = RouterConfig::load(file)?;
    if admin.is_some() {
        config.admin.listen = admin;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let router = Router::start(config, dns, http, Some(file.to_owned())).await?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                result = tokio::signal::ctrl_c() => return result.map_err(Into::into),
                _ = terminate.recv() => return Ok(()),
                _ = hangup.recv() => {
                    if let Err(error) = router.reload() {
                        tracing::error!(%error, "reload refused; the running map stays");
                    }
                }
            }
        }
    })
}
