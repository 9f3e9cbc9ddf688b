//! `shoal route`: the request router. An authoritative DNS server that answers each client
//! with the edge nodes its location calls for (`map`: operator prefixes, AS number, country,
//! continent, default; `dns`: the wire). See `examples/route.toml`.

pub mod config;
pub mod dns;
pub mod map;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use config::RouterConfig;
use dns::Zone;
use map::Map;

/// A running router: where it answers.
pub struct Router {
    /// The zone and map it answers from.
    pub zone: Arc<Zone>,
    /// The DNS addresses bound (UDP and TCP on each).
    pub dns: Vec<SocketAddr>,
}

impl Router {
    /// Starts the DNS listeners of `config` on the current runtime (`dns` replaces the
    /// configured addresses when not empty).
    pub async fn start(config: &RouterConfig, dns: &[SocketAddr]) -> anyhow::Result<Router> {
        let zone =
            Arc::new(Zone::new(&config.dns, Map::build(config)).map_err(anyhow::Error::msg)?);
        let addresses = if dns.is_empty() {
            &config.dns.listen
        } else {
            dns
        };
        let mut bound = Vec::new();
        for address in addresses {
            let udp = tokio::net::UdpSocket::bind(address)
                .await
                .map_err(|error| anyhow::anyhow!("cannot listen on {address} (UDP): {error}"))?;
            let local = udp.local_addr()?;
            // TCP on the same port as UDP (port 0 gets one for UDP first).
            let tcp = tokio::net::TcpListener::bind(local)
                .await
                .map_err(|error| anyhow::anyhow!("cannot listen on {local} (TCP): {error}"))?;
            tokio::spawn(dns::serve_udp(udp, Arc::clone(&zone)));
            tokio::spawn(dns::serve_tcp(tcp, Arc::clone(&zone)));
            tracing::info!(address = %local, "answering DNS (UDP and TCP)");
            bound.push(local);
        }
        Ok(Router { zone, dns: bound })
    }
}

/// Runs `shoal route` until Ctrl-C or SIGTERM.
pub fn run(file: &Path, dns: &[SocketAddr]) -> anyhow::Result<()> {
    let config = RouterConfig::load(file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let _router = Router::start(&config, dns).await?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
        Ok(())
    })
}
