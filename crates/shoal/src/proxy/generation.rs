//! What a configuration reload replaces: the configuration in force and everything built from
//! it (pools and routes, the cluster, the origin clients, the access log, header values,
//! connection limits). Requests read the current generation with one atomic load; a reload
//! builds the next generation beside it and swaps it in, so that no request sees half a change.
//! Pools, origin clients, the cluster and the access log whose settings did not change are
//! carried over with their connections, health state and counters.
//!
//! Some settings are fixed for the life of the process (sockets bound, files opened at start);
//! a reload that changes them keeps the running values and says which ones need a restart.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

use super::settings::Settings;
use crate::accesslog::AccessLog;
use crate::config::Config;
use crate::upstream::cluster::Cluster;
use crate::upstream::route::Routes;
use crate::upstream::{Pool, Upstream};

/// The configuration in force and what was built from it.
pub struct Generation {
    /// The configuration, as loaded (restart-only settings as the process started).
    pub config: Arc<Config>,
    /// 1 at start, one more per successful reload.
    pub number: u64,
    /// When it was loaded, in milliseconds since the Unix epoch.
    pub loaded_at: u64,
    /// One origin client per worker thread, so that pooled connections stay on the thread (and
    /// runtime) that uses them.
    pub(super) upstreams: Arc<[Upstream]>,
    /// The pools and the routes to them.
    pub(super) routes: Routes,
    /// The peer caches, if this node is in a cluster.
    pub(super) cluster: Option<Arc<Cluster>>,
    /// The access log, if configured.
    pub(super) access_log: Option<Arc<AccessLog>>,
    /// Client connection limits and timeouts.
    pub(super) connection: Settings,
    /// This node's mark in `Via` (`via_token`), which lasts as long as the process: a request
    /// that carries it has been here before.
    pub(super) instance: Arc<str>,
    /// `1.1 <name> (<instance>)`, appended to `Via` on responses and on HTTP/1.1 requests.
    pub(super) via: HeaderValue,
    /// `1.0 <name>` and `2 <name>`: `Via` names the protocol a request was received with.
    pub(super) via_http10: HeaderValue,
    pub(super) via_http2: HeaderValue,
    /// The cache status header, if enabled.
    pub(super) status_header: Option<HeaderName>,
    /// The tag header's name, for tag bans.
    pub(super) tag_header: HeaderName,
    /// `Strict-Transport-Security` for responses over TLS, if configured.
    pub(super) hsts: Option<HeaderValue>,
    /// `server.rate_limit_per_ip` and its burst, if on.
    pub(super) rate_limit: Option<super::limits::Rate>,
    /// The methods served, and the `Allow` value that lists them.
    pub(super) methods: Vec<http::Method>,
    pub(super) allow: HeaderValue,
    /// The admin token, which also authorizes writes to writable pools.
    pub(super) write_token: Option<crate::bearer::Bearer>,
    /// Some pool is `internal` or a bucket: requests' routes are looked up at recv for what
    /// that asks (else not, which keeps the lookup off the hit path).
    pub(super) route_checks: bool,
}

pub use shoal_api::node::ReloadReport;

impl Generation {
    /// The first generation of a node with `workers` worker threads.
    pub(super) fn first(config: Config, workers: usize) -> Result<Generation, String> {
        let access_log = AccessLog::open(&config.log, None).unwrap_or_else(|error| {
            tracing::error!(%error, "running without an access log");
            None
        });
        let instance = Arc::from(via_token());
        Generation::build(config, 1, workers, None, access_log.map(Arc::new), instance)
    }

    /// The generation after `self` for `config`, or why `config` cannot be put in force.
    /// Returns the report and the pools that are new (their health checks must start).
    pub(super) fn next(
        &self,
        mut config: Config,
        workers: usize,
    ) -> Result<(Generation, ReloadReport, Vec<Arc<Pool>>), String> {
        let needs_restart = keep_restart_only(&self.config, &mut config);
        let running = &self.config;
        let sections: [(&'static str, bool); 8] = [
            ("server", config.server != running.server),
            ("origin", config.origin != running.origin),
            ("cache", config.cache != running.cache),
            ("pools", config.pools != running.pools),
            ("routes", config.routes != running.routes),
            ("cluster", config.cluster != running.cluster),
            ("retries", config.retries != running.retries),
            ("log", config.log != running.log),
        ];
        let changed = sections
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(name, _)| (*name).to_owned())
            .collect();
        let access_log = if config.log == running.log {
            self.access_log.clone()
        } else {
            AccessLog::open(&config.log, self.access_log.as_deref())
                .map_err(|error| error.to_string())?
                .map(Arc::new)
        };
        let instance = Arc::clone(&self.instance);
        let next = Generation::build(
            config,
            self.number + 1,
            workers,
            Some(self),
            access_log,
            instance,
        )?;
        let new_pools = next
            .routes
            .pools()
            .iter()
            .filter(|pool| !self.routes.pools().iter().any(|old| Arc::ptr_eq(old, pool)))
            .cloned()
            .collect();
        let report = ReloadReport {
            generation: next.number,
            changed,
            needs_restart: needs_restart.into_iter().map(str::to_owned).collect(),
        };
        Ok((next, report, new_pools))
    }

    fn build(
        config: Config,
        number: u64,
        workers: usize,
        previous: Option<&Generation>,
        access_log: Option<Arc<AccessLog>>,
        instance: Arc<str>,
    ) -> Result<Generation, String> {
        let via_as = |protocol: &str| {
            HeaderValue::from_str(&format!("{protocol} {} ({instance})", config.server.via))
                .unwrap_or_else(|_| HeaderValue::from_static("1.1 shoal"))
        };
        let status_header = config.cache.status_header.clone();
        let upstreams = match previous {
            Some(previous)
                if previous.config.origin == config.origin
                    && previous.config.retries == config.retries
                    && previous.config.pools == config.pools =>
            {
                Arc::clone(&previous.upstreams)
            }
            _ => (0..workers.max(1))
                .map(|_| Upstream::new(&config))
                .collect::<Result<_, _>>()?,
        };
        let cluster = match previous {
            Some(previous) if previous.config.cluster == config.cluster => previous.cluster.clone(),
            _ => Cluster::new(&config).map(Arc::new),
        };
        let write_token = config
            .admin
            .token()?
            .as_deref()
            .map(crate::bearer::Bearer::new);
        Ok(Generation {
            write_token,
            route_checks: config
                .effective_pools()
                .iter()
                .any(|pool| pool.internal || pool.s3.is_some()),
            number,
            loaded_at: super::now_millis(),
            upstreams,
            routes: Routes::new(&config, previous.map(|previous| &previous.routes)),
            cluster,
            access_log,
            connection: Settings::from_config(&config.server),
            via: via_as("1.1"),
            via_http10: via_as("1.0"),
            via_http2: via_as("2"),
            instance,
            status_header,
            tag_header: config.cache.tag_header.0.clone(),
            rate_limit: (config.server.rate_limit_per_ip > 0).then(|| super::limits::Rate {
                per_second: config.server.rate_limit_per_ip,
                burst: match config.server.rate_limit_burst {
                    0 => config.server.rate_limit_per_ip.saturating_mul(2),
                    burst => burst,
                },
            }),
            methods: config
                .server
                .methods
                .iter()
                .map(|method| method.0.clone())
                .collect(),
            allow: allow_value(&config.server.methods),
            hsts: config.server.hsts.as_ref().map(|hsts| hsts.0.clone()),
            config: Arc::new(config),
        })
    }

    /// Whether a request's `Via` says it has passed through this node already: a loop.
    pub(super) fn looped(&self, headers: &http::HeaderMap) -> bool {
        headers.get_all(http::header::VIA).iter().any(|value| {
            value
                .as_bytes()
                .windows(self.instance.len())
                .any(|window| window == self.instance.as_bytes())
        })
    }

    /// The origin client of the calling worker thread.
    pub(super) fn upstream(&self) -> &Upstream {
        &self.upstreams[super::worker_index() % self.upstreams.len()]
    }

    /// The pools and routes.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The cluster, if this node is in one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_deref()
    }

    /// The access log, if configured.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_deref()
    }
}

/// Puts the running value back into `new` for every setting that only takes effect at start,
/// and names those that differed.
fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    let mut keep = |name: &'static str, differs: bool| {
        if differs {
            kept.push(name);
        }
    };
    keep("server.listen", new.server.listen != running.server.listen);
    new.server.listen.clone_from(&running.server.listen);
    keep(
        "server.listen_tls",
        new.server.listen_tls != running.server.listen_tls,
    );
    new.server.listen_tls.clone_from(&running.server.listen_tls);
    keep(
        "server.workers",
        new.server.workers != running.server.workers,
    );
    new.server.workers = running.server.workers;
    keep(
        "server.tcp_notsent_lowat",
        new.server.tcp_notsent_lowat != running.server.tcp_notsent_lowat,
    );
    new.server.tcp_notsent_lowat = running.server.tcp_notsent_lowat;
    keep(
        "server.defer_accept",
        new.server.defer_accept != running.server.defer_accept,
    );
    new.server.defer_accept = running.server.defer_accept;
    keep("admin", new.admin != running.admin);
    new.admin = running.admin.clone();
    keep("disk", new.disk != running.disk);
    new.disk = running.disk.clone();
    keep("demo", new.demo != running.demo);
    new.demo = running.demo.clone();
    kept
}

/// A mark for this node in `Via`, unique to the process: `shoal-` and 12 hex digits from the
/// standard library's per-process random hash keys. Nodes share a `server.via` name (a parent
/// tier and its edges are all "shoal" by default), so the name alone cannot tell a loop from
/// the next tier.
fn via_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(super::now_millis() as u128 | (u128::from(std::process::id()) << 64));
    format!("shoal-{:012x}", hasher.finish() >> 16)
}

/// The `Allow` value of a 405: the methods served.
fn allow_value(methods: &[crate::config::MethodName]) -> HeaderValue {
    let names: Vec<&str> = methods.iter().map(|method| method.0.as_str()).collect();
    // Method names are tokens, so this is a valid value.
    HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static("GET, HEAD"))
}
