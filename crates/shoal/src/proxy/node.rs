//! The node's state and lifecycle around the pipeline: configuration reloads, the certificate
//! watch, draining for shutdown, load reports and where the listeners are. Nothing here is on
//! the path of a request.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{now_millis, Counter, Proxy, ReloadReport};
use crate::config::{Config, ConfigSource, OriginUrl};
use crate::tls::Certificates;

pub use shoal_api::node::{Load, ReloadOutcome};

/// Where the configuration is read from on reload, and how the last reload went.
#[derive(Default)]
pub(super) struct Reloads {
    source: Option<ConfigSource>,
    /// The built-in demo origin, when the node started one: a reloaded file without origins
    /// keeps fronting it.
    demo: Option<OriginUrl>,
    last: Option<ReloadOutcome>,
}

fn outcome(result: &Result<ReloadReport, String>) -> ReloadOutcome {
    ReloadOutcome {
        at: now_millis(),
        report: result.as_ref().ok().cloned(),
        error: result.as_ref().err().cloned(),
    }
}

impl Proxy {
    /// Records the addresses the listeners were bound to.
    pub fn set_bound(&self, listen: Vec<SocketAddr>, listen_tls: Vec<SocketAddr>) {
        let _ = self.bound.set((listen, listen_tls));
    }

    /// The addresses the node listens on (plain, TLS): as bound, else as configured.
    pub fn listening(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        match self.bound.get() {
            Some(bound) => bound.clone(),
            None => {
                let server = &self.live().config.server;
                (server.listen.clone(), server.listen_tls.clone())
            }
        }
    }

    /// The rustls configuration of the TLS listeners, if there are any.
    pub fn tls_server_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.as_ref().map(|(_, server)| Arc::clone(server))
    }

    /// Checks the certificate files every `tls.watch_interval` and loads them again when they
    /// changed, on the current runtime (nothing to do without TLS listeners).
    pub fn start_certificate_watch(self: &Arc<Self>) {
        if self.tls.is_none() {
            return;
        }
        let proxy = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(interval) = proxy
                    .upgrade()
                    .map(|proxy| proxy.live().config.tls.watch_interval.duration())
                else {
                    return;
                };
                tokio::time::sleep(interval).await;
                let Some(proxy) = proxy.upgrade() else {
                    return;
                };
                if let Some((resolver, _)) = &proxy.tls {
                    // Reading the files is quick; they are small.
                    resolver.reload_if_changed(&proxy.live().config.tls);
                }
            }
        });
    }

    /// Remembers where the configuration came from, so that [`Proxy::reload_from_source`] can
    /// read it again; `demo` is the demo origin the node started, if any.
    pub fn set_config_source(&self, source: ConfigSource, demo: Option<OriginUrl>) {
        let mut reloads = self.reloads();
        reloads.source = Some(source);
        reloads.demo = demo;
    }

    fn reloads(&self) -> std::sync::MutexGuard<'_, Reloads> {
        self.reloads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the configuration again from where it came from (file and command line) and puts
    /// it in force; see [`Proxy::reload`].
    pub fn reload_from_source(&self) -> Result<ReloadReport, String> {
        let (source, demo) = {
            let reloads = self.reloads();
            (reloads.source.clone(), reloads.demo.clone())
        };
        let Some(source) = source else {
            return self.record_reload(Err("this node was not started from a config file".into()));
        };
        let mut config = match source.load() {
            Ok(config) => config,
            Err(error) => return self.record_reload(Err(error.to_string())),
        };
        if config.origin.urls.is_empty() && config.pools.is_empty() {
            match demo {
                Some(demo) => config.origin.urls.push(demo),
                None => {
                    return self.record_reload(Err(
                        "no origin configured (the demo origin only starts with the node)".into(),
                    ))
                }
            }
        }
        self.reload(config)
    }

    /// Puts `config` in force for every request from now on: requests in flight finish with
    /// the generation they started with; cached content stays. Settings that only apply at
    /// start keep their running value and are named in the report. Refused (and nothing
    /// changes) when part of the new configuration cannot be set up, such as a log file that
    /// cannot be opened. Must be called within the tokio runtime (health checks of new pools
    /// start on it).
    pub fn reload(&self, config: Config) -> Result<ReloadReport, String> {
        // One reload at a time: two at once could each build on the same generation.
        let mut reloads = self.reloads();
        let running = self.live.load_full();
        // Certificates load before anything changes: a pair that does not load refuses the
        // whole reload.
        let certificates = match &self.tls {
            Some(_) => Certificates::load(&config.tls)
                .map(Some)
                .map_err(|error| format!("certificates: {error}")),
            None => Ok(None),
        };
        for warning in config.warnings() {
            tracing::warn!(%warning, "configuration");
        }
        let result = certificates.and_then(|certificates| {
            let (next, report, new_pools) = running.next(config, self.workers)?;
            if let (Some((resolver, _)), Some(certificates)) = (&self.tls, certificates) {
                resolver.replace(certificates);
            }
            Ok((next, report, new_pools))
        });
        let result = result.map(|(next, report, new_pools)| {
            if next.config.cache.memory != running.config.cache.memory {
                self.tiers.resize(next.config.cache.memory.bytes());
            }
            self.live.store(Arc::new(next));
            crate::upstream::health::spawn(&new_pools);
            report
        });
        match &result {
            Ok(report) => tracing::info!(
                generation = report.generation,
                changed = ?report.changed,
                needs_restart = ?report.needs_restart,
                "configuration reloaded"
            ),
            Err(error) => {
                tracing::error!(%error, "configuration reload refused; the running configuration stays")
            }
        }
        reloads.last = Some(outcome(&result));
        result
    }

    fn record_reload(&self, result: Result<ReloadReport, String>) -> Result<ReloadReport, String> {
        if let Err(error) = &result {
            tracing::error!(%error, "configuration reload refused; the running configuration stays");
        }
        self.reloads().last = Some(outcome(&result));
        result
    }

    /// The last reload's outcome, if there was one.
    pub fn last_reload(&self) -> Option<ReloadOutcome> {
        self.reloads().last.clone()
    }

    /// The access log, if configured.
    pub fn access_log(&self) -> Option<Arc<crate::accesslog::AccessLog>> {
        self.live().access_log.clone()
    }

    /// Reopens the access log file (after rotation).
    pub fn reopen_access_log(&self) {
        if let Some(log) = self.live().access_log() {
            log.reopen();
        }
    }

    /// Starts a graceful shutdown: no new connections, and every connection closes after its
    /// current response (idle ones at once).
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
        self.drain_started.notify_waiters();
    }

    /// Whether the node is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Completes when the node starts shutting down, if it was not when this was called: check
    /// [`Proxy::is_draining`] after calling it, and the start cannot be missed in between.
    pub fn drain_started(&self) -> tokio::sync::futures::Notified<'_> {
        self.drain_started.notified()
    }

    /// Completes when the node starts shutting down (at once if it has).
    pub fn drained(&self) -> impl std::future::Future<Output = ()> + '_ {
        let notified = self.drain_started();
        let draining = self.is_draining();
        async move {
            if !draining {
                notified.await;
            }
        }
    }

    /// Starts the active health checks of the pools, on the current runtime.
    pub fn start_health_checks(&self) {
        crate::upstream::health::spawn(self.live().routes.pools());
    }

    /// The node's load for a request router: requests and bytes sent per second since the
    /// previous report (the router asks at its check interval), and connections open.
    pub fn load(&self) -> Load {
        let now = std::time::Instant::now();
        let requests = self.metrics.get(Counter::Requests);
        let bytes = self.metrics.get(Counter::BytesSent);
        let mut sample = self
            .load_sample
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let rate = |count: u64, before: u64, since: std::time::Instant| {
            let seconds = now.duration_since(since).as_secs_f64();
            match seconds > 0.0 {
                true => (count.saturating_sub(before) as f64 / seconds).round() as u64,
                false => 0,
            }
        };
        let (requests_per_second, bytes_per_second) = match *sample {
            Some((since, before_requests, before_bytes)) => (
                rate(requests, before_requests, since),
                rate(bytes, before_bytes, since),
            ),
            None => (0, 0),
        };
        *sample = Some((now, requests, bytes));
        Load {
            requests_per_second,
            bytes_per_second,
            connections: self.metrics.get(Counter::OpenConnections),
        }
    }

    /// Writes what is queued for the disk and the bans' file, so that a clean restart finds
    /// all of it. Blocks: call it from a blocking thread.
    pub fn shutdown_storage(&self) {
        self.tiers.shutdown();
        self.bans.flush();
    }
}
