//! Shoal: an HTTP caching reverse proxy and content delivery network node.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate. In short: `config`
//! reads the configuration, `proxy` runs the request path and owns the client connections,
//! `cache` holds the HTTP caching rules, `store` holds the bytes, `upstream` talks to origins,
//! `admin` serves the operator API (whose types are the `shoal-api` crate's; `shoal ctl`, its
//! command-line client, is the `shoal-ctl` crate).

pub mod accesslog;
pub mod admin;
pub mod bearer;
pub mod cache;
pub mod clock;
pub mod config;
pub mod demo;
pub mod geo;
pub mod histogram;
pub mod prefix;
pub mod proxy;
pub mod router;
pub use shoal_api::signed_url;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod upstream;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use config::{Config, ConfigSource, OriginUrl};
use proxy::{Listeners, Proxy};
use tokio::signal::unix::{signal, SignalKind};

/// A running edge node: its proxy state and where it listens.
pub struct Node {
    /// The request pipeline and its shared state.
    pub proxy: Arc<Proxy>,
    /// The client-facing addresses.
    pub listen: Vec<SocketAddr>,
    /// The client-facing TLS addresses.
    pub listen_tls: Vec<SocketAddr>,
    /// The admin API's address, if enabled.
    pub admin: Option<SocketAddr>,
    /// The demo origin's address, when it was started.
    pub demo: Option<SocketAddr>,
}

impl Node {
    /// Starts a node on the current tokio runtime: the demo origin if no origin is configured,
    /// the listeners and the admin API. Returns once everything is bound. Used by tests and
    /// embedders; the `shoal` binary uses [`run`], which adds one runtime per core.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        let (config, demo) = with_demo_origin(config).await?;
        let proxy = Proxy::new(Arc::new(config), 1).map_err(anyhow::Error::msg)?;
        proxy.start_certificate_watch();
        let server = &proxy.config().server;
        let listeners = Listeners::bind(server, proxy.tls_server_config(), false)?;
        let (listen, listen_tls) = listeners.local_addrs();
        proxy.set_bound(listen.clone(), listen_tls.clone());
        proxy.start_health_checks();
        let admin = start_admin(&proxy).await?;
        tokio::spawn(proxy::serve(listeners, Arc::clone(&proxy)));
        Ok(Node {
            proxy,
            listen,
            listen_tls,
            admin,
            demo,
        })
    }
}

/// Runs a node until Ctrl-C or SIGTERM: one thread per core (or `server.workers`), each with its own
/// single-threaded runtime and its own SO_REUSEPORT listening sockets, so that a connection is
/// served start to end on one core without cross-thread wake-ups. The admin API and the demo
/// origin run on the main thread's runtime.
pub fn run(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    control.block_on(async move {
        // Handlers first: a signal's default action kills the process, and a SIGHUP (a reload)
        // or a SIGTERM that arrives while the node starts must be handled like any other.
        let mut rotations = signal(SignalKind::user_defined1())?;
        let mut hangups = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (config, demo) = with_demo_origin(config).await?;
        let proxy = Proxy::new(Arc::new(config), workers).map_err(anyhow::Error::msg)?;
        let demo = demo.and_then(|address| format!("http://{address}").parse().ok());
        proxy.set_config_source(source, demo);
        proxy.start_certificate_watch();
        proxy.start_health_checks();
        start_admin(&proxy).await?;
        let (ready, mut bound) = tokio::sync::mpsc::channel(workers);
        for index in 0..workers {
            let proxy = Arc::clone(&proxy);
            let ready = ready.clone();
            std::thread::Builder::new()
                .name(format!("shoal-worker-{index}"))
                .spawn(move || worker(index, proxy, ready))?;
        }
        drop(ready);
        while let Some(result) = bound.recv().await {
            result?;
        }
        let (plain, tls) = proxy.listening();
        for address in plain {
            tracing::info!(%address, workers, "serving");
        }
        for address in tls {
            tracing::info!(%address, workers, "serving TLS");
        }
        let rotation = Arc::clone(&proxy);
        tokio::spawn(async move {
            while rotations.recv().await.is_some() {
                tracing::info!("SIGUSR1: reopening the access log");
                rotation.reopen_access_log();
            }
        });
        let reloading = Arc::clone(&proxy);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                // The outcome is logged, and shown by the status endpoint.
                let _ = reloading.reload_from_source();
            }
        });
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
        // Graceful: stop accepting, let responses in flight finish (connections close after
        // them), then go, at the latest after server.shutdown_grace.
        let grace = proxy.config().server.shutdown_grace.duration();
        tracing::info!(?grace, "shutting down: finishing the responses in flight");
        proxy.drain();
        let deadline = tokio::time::Instant::now() + grace;
        while proxy.metrics().get(proxy::Counter::OpenConnections) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tracing::info!(
            still_open = proxy.metrics().get(proxy::Counter::OpenConnections),
            "shutting down"
        );
        let storage = Arc::clone(&proxy);
        tokio::task::spawn_blocking(move || storage.shutdown_storage()).await?;
        Ok(())
    })
}

fn worker(index: usize, proxy: Arc<Proxy>, ready: tokio::sync::mpsc::Sender<anyhow::Result<()>>) {
    proxy::set_worker(index);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.blocking_send(Err(error.into()));
            return;
        }
    };
    runtime.block_on(async move {
        let server = &proxy.config().server;
        let bound = Listeners::bind(server, proxy.tls_server_config(), true);
        match bound {
            Ok(listeners) => {
                let _ = ready.send(Ok(())).await;
                drop(ready);
                proxy::serve(listeners, proxy).await;
            }
            Err(error) => {
                let _ = ready.send(Err(error.into())).await;
            }
        }
    });
}

/// Starts the demo origin when no origin is configured and points the config at it.
async fn with_demo_origin(mut config: Config) -> anyhow::Result<(Config, Option<SocketAddr>)> {
    if !config.origin.urls.is_empty() || !config.pools.is_empty() {
        return Ok((config, None));
    }
    let address = demo::start(config.demo.listen, config.demo.root.clone())
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot start the demo origin on {}: {error}",
                config.demo.listen
            )
        })?;
    tracing::info!(%address, root = %config.demo.root.display(), "demo origin started (no origin configured)");
    let url: OriginUrl = format!("http://{address}")
        .parse()
        .map_err(anyhow::Error::msg)?;
    config.origin.urls.push(url);
    Ok((config, Some(address)))
}

async fn start_admin(proxy: &Arc<Proxy>) -> anyhow::Result<Option<SocketAddr>> {
    let Some(address) = proxy.config().admin.listen else {
        return Ok(None);
    };
    let admin = &proxy.config().admin;
    let token = admin.token().map_err(|error| anyhow::anyhow!(error))?;
    let bound = admin::start(address, Arc::clone(proxy), token)
        .await
        .map_err(|error| anyhow::anyhow!("cannot start the admin API on {address}: {error}"))?;
    tracing::info!(address = %bound, "admin API");
    Ok(Some(bound))
}

#[cfg(test)]
pub(crate) mod test_support {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// A header map of `(name, value)` pairs, in order, repeated names appended.
    pub fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }
}
