//! Shoal: an HTTP caching reverse proxy and content delivery network node.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate. In short: `config`
//! reads the configuration, `proxy` runs the request path and owns the client connections,
//! `cache` holds the HTTP caching rules, `store` holds the bytes, `upstream` talks to origins
//! and `admin` serves the operator API.

pub mod admin;
pub mod cache;
pub mod config;
pub mod demo;
pub mod proxy;
pub mod store;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use config::{Config, OriginUrl};
use proxy::{Listeners, Proxy};

/// A running edge node: its proxy state and where it listens.
pub struct Node {
    /// The request pipeline and its shared state.
    pub proxy: Arc<Proxy>,
    /// The client-facing addresses.
    pub listen: Vec<SocketAddr>,
    /// The admin API's address, if enabled.
    pub admin: Option<SocketAddr>,
    /// The demo origin's address, when it was started.
    pub demo: Option<SocketAddr>,
}

impl Node {
    /// Starts a node on the current tokio runtime: the demo origin if no origin is configured,
    /// the listeners and the admin API. Returns once everything is bound.
    pub async fn start(mut config: Config) -> anyhow::Result<Node> {
        let mut demo = None;
        if config.origin.urls.is_empty() {
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
            demo = Some(address);
        }
        let listeners = Listeners::bind(&config.server.listen)?;
        let listen = listeners.local_addrs();
        let proxy = Proxy::new(Arc::new(config));
        let admin = match proxy.config().admin.listen {
            Some(address) => Some(admin::start(address, Arc::clone(&proxy)).await.map_err(
                |error| anyhow::anyhow!("cannot start the admin API on {address}: {error}"),
            )?),
            None => None,
        };
        tokio::spawn(proxy::serve(listeners, Arc::clone(&proxy)));
        for address in &listen {
            tracing::info!(%address, "serving");
        }
        Ok(Node {
            proxy,
            listen,
            admin,
            demo,
        })
    }
}
