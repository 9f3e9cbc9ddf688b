//! Configuration: the TOML file format, its defaults, and the validated [`Config`] the rest of
//! the node reads. Every key has a default and a doc comment; `examples/shoal.toml` shows them
//! all. Unknown keys are errors. Values are parsed into real types (sizes, durations, socket
//! addresses, origin URLs) while deserializing, so every mistake is reported with the file, line
//! and key. This module does no I/O beyond reading the file and knows nothing of the other
//! modules.

mod check;
mod load;
mod origin_url;
mod units;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::prefix::IpPrefix;

pub use load::{parse_toml, ConfigSource, Overrides};
pub use origin_url::{HostHeader, OriginUrl};
pub use units::{ByteSize, FieldName, FieldValue, MethodName, Span};
pub use upstream::{
    ClusterConfig, HealthConfig, HostConfig, Policy, PoolConfig, RetryConfig, RouteConfig,
    S3Config, S3Style,
};

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid, or a key has a value of the wrong kind.
    #[error("{file}:{line}: key `{key}`: {message}")]
    Invalid {
        /// The file (or `<flags>` for command-line overrides).
        file: PathBuf,
        /// 1-based line of the offending key, 0 when unknown.
        line: usize,
        /// The key, as written in the file (dotted for nested tables).
        key: String,
        /// What was expected.
        message: String,
    },
}

/// The whole configuration of a node.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client-facing listeners and their limits.
    pub server: ServerConfig,
    /// The origins this node fetches from.
    pub origin: OriginConfig,
    /// HTTP caching policy and the RAM store.
    pub cache: CacheConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// The disk tier.
    pub disk: DiskConfig,
    /// Upstream pools; `origin.urls`, if set, is one more, named "origin".
    pub pools: Vec<PoolConfig>,
    /// Which pool a request goes to, first match wins; unmatched requests go to the pool named
    /// "origin", or else the first pool.
    pub routes: Vec<RouteConfig>,
    /// The peer caches this node shares objects with.
    pub cluster: ClusterConfig,
    /// Retries of failed upstream requests.
    pub retries: RetryConfig,
    /// Certificates for `server.listen_tls`.
    pub tls: TlsConfig,
    /// The access log.
    pub log: LogConfig,
    /// The built-in demo origin, used when no origin is configured.
    pub demo: DemoConfig,
}

/// Client-facing listeners and limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to accept HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on.
    pub listen: Vec<SocketAddr>,
    /// Addresses to accept TLS on (HTTP/2 and HTTP/1.1 by ALPN), with the certificates of
    /// `[tls]`.
    pub listen_tls: Vec<SocketAddr>,
    /// On the plain listeners, answer every request with a redirect (308) to the same URL over
    /// HTTPS (on the first `listen_tls` port), instead of serving it.
    pub redirect_to_https: bool,
    /// `Strict-Transport-Security` value added to every response sent over TLS, such as
    /// "max-age=31536000; includeSubDomains"; empty: none.
    #[serde(
        deserialize_with = "units::optional_value",
        serialize_with = "units::optional_text"
    )]
    pub hsts: Option<FieldValue>,
    /// Worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Open client connections above which new ones are refused (closed at once).
    pub max_connections: usize,
    /// Open connections one client IP address may have; more are refused (closed at once).
    /// 0: no limit.
    pub max_connections_per_ip: u32,
    /// Requests per second one client IP address may make on average (a token bucket); more
    /// get 429 with `Retry-After`. 0: no limit.
    pub rate_limit_per_ip: u32,
    /// Requests one client IP address may make at once after a quiet time; 0: twice
    /// `rate_limit_per_ip`.
    pub rate_limit_burst: u32,
    /// Origin body bytes being filled into objects not yet complete (so not yet bounded by a
    /// store) above which new misses are shed: 503 with `Retry-After`, or stale content when
    /// there is some. 0: no cap.
    pub max_inflight_memory: ByteSize,
    /// Time allowed to receive a whole request head once its first byte has arrived.
    pub header_read_timeout: Span,
    /// Time an idle keep-alive connection is kept open waiting for the next request.
    pub keepalive_timeout: Span,
    /// Time allowed between two reads of a request body.
    pub body_read_timeout: Span,
    /// Time allowed for a client to accept a write before the connection is dropped.
    pub send_timeout: Span,
    /// Most response bytes queued unsent in the kernel per client connection
    /// (`TCP_NOTSENT_LOWAT`, Linux): the node writes more only once the queue is below it. It
    /// bounds the kernel memory a slow reader holds, and stops a client that reads many
    /// connections in turn (as wrk does) from draining one large download after another
    /// while the others wait. A body's writes after its first are kept 128 KiB under it (and
    /// within 64-512 KiB), so that each fits under it. 0: the kernel's default (no limit).
    pub tcp_notsent_lowat: ByteSize,
    /// Wake the node for a new connection only once the client has sent its first bytes
    /// (`TCP_DEFER_ACCEPT`, Linux), which spares an empty read and a wake-up per connection
    /// (every HTTP and TLS client speaks first). A connection that sends nothing is handed over
    /// after about this long anyway (in whole seconds, at least 1), and then has
    /// `header_read_timeout` like any other. 0s: every connection is handed over as soon as it
    /// is established.
    pub defer_accept: Span,
    /// Longest request line (method, target, version); longer gets 414.
    pub max_request_line: ByteSize,
    /// Largest request head (request line and all headers); larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Most header fields in one request; more gets 431.
    pub max_headers: usize,
    /// Largest request body forwarded to an origin; larger gets 413.
    pub max_request_body: ByteSize,
    /// HTTP/2: most streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub h2_max_streams: u32,
    /// HTTP/2: most request bodies one connection may have forwarded to origins at once (each
    /// holds an origin connection for as long as the client takes to send it); the connection's
    /// other uploads wait for a turn before any of their body is read.
    pub h2_max_uploads: usize,
    /// Methods served (GET and HEAD from the cache, the rest passed to the origin); others get
    /// 405. CONNECT is never served (a reverse proxy does not tunnel); TRACE only if listed.
    pub methods: Vec<MethodName>,
    /// Name this node gives itself in the `Via` header (one token).
    #[serde(deserialize_with = "units::pseudonym")]
    pub via: String,
    /// Proxies in front of this node (client addresses or CIDR prefixes, such as
    /// "10.0.0.0/8"): their `X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded` and
    /// `X-Real-IP` are kept (and the node's own appended). From any other client these fields
    /// are claims nobody checked, and are removed before the request goes on.
    pub trusted_proxies: Vec<IpPrefix>,
    /// On SIGTERM or Ctrl-C, how long in-flight responses may take to finish before the
    /// process exits.
    pub shutdown_grace: Span,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            listen_tls: Vec::new(),
            redirect_to_https: false,
            hsts: None,
            workers: 0,
            max_connections: 16_384,
            max_connections_per_ip: 1024,
            rate_limit_per_ip: 0,
            rate_limit_burst: 0,
            max_inflight_memory: ByteSize(1 << 30),
            tcp_notsent_lowat: ByteSize(512 << 10),
            defer_accept: Span(std::time::Duration::from_secs(1)),
            header_read_timeout: Span(std::time::Duration::from_secs(10)),
            keepalive_timeout: Span(std::time::Duration::from_secs(75)),
            body_read_timeout: Span(std::time::Duration::from_secs(30)),
            send_timeout: Span(std::time::Duration::from_secs(60)),
            max_request_line: ByteSize(8 << 10),
            max_header_bytes: ByteSize(64 << 10),
            max_headers: 128,
            max_request_body: ByteSize(100 << 20),
            h2_max_streams: 128,
            h2_max_uploads: 16,
            methods: {
                use http::Method;
                [
                    Method::GET,
                    Method::HEAD,
                    Method::POST,
                    Method::PUT,
                    Method::DELETE,
                    Method::PATCH,
                    Method::OPTIONS,
                ]
                .map(MethodName)
                .to_vec()
            },
            via: "shoal".to_owned(),
            trusted_proxies: Vec::new(),
            shutdown_grace: Span(std::time::Duration::from_secs(10)),
        }
    }
}

/// Certificates served on the TLS listeners.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificates, chosen by the name the client asks for (SNI); the first one is the
    /// default, for clients that send no name or one no certificate is for.
    pub certificates: Vec<CertificateConfig>,
    /// How often the certificate and key files are checked for changes; a changed pair is
    /// loaded without a restart (and without dropping a connection).
    pub watch_interval: Span,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            certificates: Vec::new(),
            watch_interval: Span(std::time::Duration::from_secs(10)),
        }
    }
}

/// One certificate and its key.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file with the certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM file with its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Names this certificate is served for, such as "example.com" or "*.example.com";
    /// empty: the names the certificate is valid for.
    #[serde(default)]
    pub names: Vec<String>,
}

/// Shows whether a secret is set, never the secret.
pub(crate) fn redacted<S: serde::Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_str("(set)"),
        None => serializer.serialize_none(),
    }
}

/// The origins and how to talk to them.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    /// Origin servers, tried in turn; empty means the built-in demo origin.
    pub urls: Vec<OriginUrl>,
    /// `Host` sent to the origin: "preserve" (the client's), "origin" (the origin URL's), or a
    /// fixed host name.
    pub host_header: HostHeader,
    /// Time allowed to open a TCP connection to an origin.
    pub connect_timeout: Span,
    /// Time allowed from sending a request to receiving the response head.
    pub first_byte_timeout: Span,
    /// Time allowed between two reads of a response body before the fetch is abandoned.
    pub body_timeout: Span,
    /// Time an idle pooled connection to an origin is kept.
    pub idle_timeout: Span,
    /// Idle connections kept per origin.
    pub max_idle_per_origin: usize,
    /// Append the client address to `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// Append a `Forwarded` element (RFC 7239) with the client address and protocol.
    pub forwarded: bool,
    /// Request fields removed before a request goes to an origin: fields that make origins
    /// answer another method, path or host than the one the cache key is made of, so that one
    /// client's request could fill the cache for everyone with that answer.
    pub strip_request_headers: Vec<FieldName>,
    /// For `https://` origins: a PEM file of CA certificates trusted besides the system's.
    pub tls_ca: Option<PathBuf>,
    /// For `https://` origins: accept any certificate, unverified. For tests against
    /// self-signed origins only; never in production.
    pub danger_accept_invalid_certs_for_testing: bool,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            urls: Vec::new(),
            host_header: HostHeader::Preserve,
            connect_timeout: Span(std::time::Duration::from_secs(5)),
            first_byte_timeout: Span(std::time::Duration::from_secs(15)),
            body_timeout: Span(std::time::Duration::from_secs(30)),
            idle_timeout: Span(std::time::Duration::from_secs(60)),
            max_idle_per_origin: 256,
            x_forwarded_for: true,
            forwarded: true,
            strip_request_headers: [
                "x-http-method-override",
                "x-http-method",
                "x-method-override",
                "x-original-url",
                "x-rewrite-url",
                "x-original-host",
                "x-forwarded-host",
                "x-forwarded-port",
                "x-forwarded-server",
                "x-forwarded-scheme",
                "x-forwarded-ssl",
                "x-host",
            ]
            .map(|name| FieldName(http::HeaderName::from_static(name)))
            .to_vec(),
            tls_ca: None,
            danger_accept_invalid_certs_for_testing: false,
        }
    }
}

/// How query strings take part in the cache key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryKey {
    /// Use the query string as sent.
    #[default]
    Keep,
    /// Sort the parameters so that `?a=1&b=2` and `?b=2&a=1` share an entry.
    Sort,
    /// Leave the query string out of the key entirely.
    Ignore,
}

/// HTTP caching policy and the RAM store.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes of objects kept in RAM: bodies, header fields and each object's fixed cost (about
    /// 0.9 KiB), so that the process's memory follows it. A 1 KiB object counts about 2.3 KiB.
    pub memory: ByteSize,
    /// Objects larger than this are streamed to the client without being stored (objects
    /// stored in slices are not held whole, and not bound by it). Unset: 128MiB, or half of
    /// `memory` when that is less.
    pub max_object_size: ByteSize,
    /// Fraction of the time since `Last-Modified` used as heuristic freshness.
    pub heuristic_fraction: f64,
    /// Upper bound of heuristic freshness.
    pub heuristic_max: Span,
    /// Freshness given to 404, 410 and 414 answers without explicit freshness.
    pub negative_ttl: Span,
    /// A fill whose readers have all left (clients that read part of a large object and went
    /// away) goes on, so that the next request finds the object stored, only while no more than
    /// this is left to fetch (of a body of unknown length: until this much has come); a
    /// larger rest is abandoned. A sliced object's fill stops at the end of its current slice.
    pub finish_without_readers: ByteSize,
    /// Most bans held at once (each lookup of an object stored before a ban may test it);
    /// more are refused with 507 until older ones end (after 30 days).
    pub max_bans: usize,
    /// Default time a stale object may be served while it is refreshed in the background,
    /// when the origin does not say (`stale-while-revalidate`). None by default: RFC 9111
    /// §4.2.4 lets a cache serve stale only with the origin's or the client's leave, or by an
    /// agreement with the origin, which setting this is (Varnish's grace).
    pub stale_while_revalidate: Span,
    /// Default time a stale object may be served when the origin fails (`stale-if-error`).
    pub stale_if_error: Span,
    /// Store responses that carry `Set-Cookie` (the header is stored and served with them).
    pub store_set_cookie: bool,
    /// Take this cache's directives from `CDN-Cache-Control` (RFC 9213) when a response has
    /// it, instead of from `Cache-Control` and `Expires`. The field is forwarded unchanged.
    pub cdn_cache_control: bool,
    /// Take this cache's directives from `Surrogate-Control` (`max-age`, `no-store`, untargeted
    /// or targeted `;shoal`) when a response has them, instead of from `Cache-Control` and
    /// `Expires`, and announce `Surrogate-Capability: shoal="Surrogate/1.0"` to origins. The
    /// field is forwarded unchanged.
    pub surrogate_control: bool,
    /// Name of the response header reporting the cache outcome; empty to leave it out.
    #[serde(
        deserialize_with = "units::optional_name",
        serialize_with = "units::optional_text"
    )]
    pub status_header: Option<http::HeaderName>,
    /// How the query string takes part in the cache key.
    pub query: QueryKey,
    /// Query parameters removed from the cache key (for example tracking parameters).
    pub ignore_query_params: Vec<String>,
    /// Objects larger than this (with a validator to tell their versions apart) are cached in
    /// slices of this size, fetched from the origin with `Range` requests as they are needed.
    pub slice_size: ByteSize,
    /// How long a URL found uncacheable is fetched without collapsing (hit-for-miss: a
    /// cacheable answer is still stored, and clears the mark).
    pub remember_uncacheable: Span,
    /// Response header whose tags (separated by spaces or commas) purge-by-tag matches, such as
    /// `Surrogate-Key` or `Cache-Tag`.
    pub tag_header: FieldName,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory: ByteSize(256 << 20),
            max_object_size: ByteSize(128 << 20),
            heuristic_fraction: 0.1,
            heuristic_max: Span(std::time::Duration::from_secs(86_400)),
            negative_ttl: Span(std::time::Duration::from_secs(30)),
            max_bans: 1000,
            finish_without_readers: ByteSize(8 << 20),
            stale_while_revalidate: Span(std::time::Duration::ZERO),
            stale_if_error: Span(std::time::Duration::from_secs(3600)),
            store_set_cookie: false,
            cdn_cache_control: true,
            surrogate_control: true,
            status_header: Some(http::HeaderName::from_static("x-cache")),
            query: QueryKey::Keep,
            ignore_query_params: Vec::new(),
            slice_size: ByteSize(1 << 20),
            remember_uncacheable: Span(std::time::Duration::from_secs(10)),
            tag_header: FieldName(http::HeaderName::from_static("surrogate-key")),
        }
    }
}

/// The disk tier: persistent storage behind the RAM tier, one directory per disk.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskConfig {
    /// Cache directories, one per disk; none disables the disk tier.
    pub dirs: Vec<DiskDir>,
    /// Size of the files each directory's space is divided into. Writes fill one segment
    /// sequentially; when the directory is full the oldest segment is reused (FIFO eviction).
    /// Unset: a sixteenth of the directory, at most 64 MiB and at least twice
    /// `max_object_size` plus 1 MiB.
    pub segment_size: Option<ByteSize>,
    /// Which objects are written to disk: `second-request` (an object is written when it is
    /// requested a second time, so one-hit objects never churn the disk) or `always`.
    pub admission: Admission,
    /// Objects read from disk this many times are copied back into RAM.
    pub promote_after_hits: u8,
    /// Threads per directory that read from disk, off the network threads.
    pub io_threads: usize,
    /// A disk read that takes longer is abandoned and the object fetched from the origin; after
    /// three in a row the directory is considered stalled and dropped.
    pub read_timeout: Span,
    /// Objects larger than this are not written to disk (large objects go as their slices).
    /// Unset: 1MiB, or `cache.slice_size` when that is larger.
    pub max_object_size: ByteSize,
}

/// One cache directory and the space it may use.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiskDir {
    /// The directory (created if missing).
    pub path: PathBuf,
    /// Bytes it may use.
    pub size: ByteSize,
}

/// The disk tier's admission policy.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admission {
    /// Written once requested a second time (remembered for about as many objects as the
    /// disk holds).
    SecondRequest,
    /// Every stored object is written.
    Always,
}

impl DiskConfig {
    /// The smallest segment: two of the largest records (an object and its metadata).
    fn min_segment(&self) -> u64 {
        2 * (self.max_object_size.bytes() + (1 << 20))
    }

    /// The segment size for a directory of `size` bytes.
    pub fn segment_size_for(&self, size: u64) -> u64 {
        match self.segment_size {
            Some(segment) => segment.bytes(),
            None => (size / 16).clamp(self.min_segment(), 64 << 20),
        }
    }
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            dirs: Vec::new(),
            segment_size: None,
            admission: Admission::SecondRequest,
            promote_after_hits: 2,
            io_threads: 4,
            read_timeout: Span(std::time::Duration::from_secs(2)),
            max_object_size: ByteSize(1 << 20),
        }
    }
}

/// The access log.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// File the access log is appended to; unset for none. Reopened on SIGUSR1.
    pub access: Option<PathBuf>,
    /// `json` (one object per line) or `combined` (the Apache/nginx combined format).
    pub format: LogFormat,
    /// Lines waiting for the writer; when it is that far behind, lines are dropped (and
    /// counted) rather than slowing requests down.
    pub queue: usize,
    /// A MaxMind country (or city) database: each client's country goes into the access log
    /// and the traffic report.
    pub geoip_country: Option<PathBuf>,
    /// A MaxMind ASN database: each client's AS number goes into the access log and the
    /// traffic report.
    pub geoip_asn: Option<PathBuf>,
}

/// The access log's format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// The combined log format.
    Combined,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access: None,
            format: LogFormat::Json,
            queue: 65_536,
            geoip_country: None,
            geoip_asn: None,
        }
    }
}

/// The admin API.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin API; keep it on loopback or a management network.
    pub listen: Option<SocketAddr>,
    /// Bearer token every request must carry (`Authorization: Bearer TOKEN`). Required when
    /// `listen` is not a loopback address. Never shown by `GET /config`.
    #[serde(serialize_with = "redacted")]
    pub token: Option<String>,
    /// A file holding the token (its first line), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Host names the admin API is reached by, besides `localhost` and its addresses (a
    /// request under any other name in `Host` is refused: that is what a DNS-rebinding page
    /// sends).
    pub names: Vec<String>,
}

impl AdminConfig {
    /// The token in force: `token`, or the first line of `token_file` (read now).
    pub fn token(&self) -> Result<Option<String>, String> {
        let file = match (&self.token, &self.token_file) {
            (Some(token), _) => return Ok(Some(token.clone())),
            (None, None) => return Ok(None),
            (None, Some(file)) => file,
        };
        let text = std::fs::read_to_string(file)
            .map_err(|error| format!("cannot read admin.token_file {}: {error}", file.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_owned();
        if token.len() < 16 {
            return Err(format!(
                "admin.token_file {}: expected a token of at least 16 characters on its first line",
                file.display()
            ));
        }
        Ok(Some(token))
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            token: None,
            token_file: None,
            names: Vec::new(),
        }
    }
}

/// The built-in demo origin: a static-file server started when no origin is configured, so
/// that a node run with no arguments serves something real.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Address of the demo origin.
    pub listen: SocketAddr,
    /// Directory it serves.
    pub root: PathBuf,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            root: PathBuf::from("examples/site"),
        }
    }
}

/// Longest `server.defer_accept`.
const MAX_DEFER_ACCEPT: std::time::Duration = std::time::Duration::from_secs(60);

/// Size of a directory given with `--cache-dir` but no `--cache-disk`.
pub const DEFAULT_DISK_SIZE: ByteSize = ByteSize(1 << 30);

impl Config {
    /// The pools requests can go to: the configured ones, and `origin.urls` as the pool
    /// "origin" (unless a pool of that name is configured).
    pub fn effective_pools(&self) -> Vec<PoolConfig> {
        let mut pools = self.pools.clone();
        if !self.origin.urls.is_empty() && !pools.iter().any(|pool| pool.name == "origin") {
            let hosts = self
                .origin
                .urls
                .iter()
                .map(|url| HostConfig {
                    url: url.clone(),
                    weight: 1,
                    max_connections: 0,
                })
                .collect();
            let mut pool = PoolConfig::of_hosts("origin", hosts);
            pool.policy = Policy::RoundRobin;
            pool.tls_ca = self.origin.tls_ca.clone();
            pool.danger_accept_invalid_certs_for_testing =
                self.origin.danger_accept_invalid_certs_for_testing;
            pools.push(pool);
        }
        pools
    }

    /// Rules that involve more than one value; on failure, the keys involved (the first one set
    /// in the file is blamed) and what is wrong.
    /// `retries.deadline`, or (unset) the first-byte timeout plus the connect timeout.
    pub fn retry_deadline(&self) -> std::time::Duration {
        match self.retries.deadline {
            Some(deadline) => deadline.duration(),
            None => {
                self.origin.first_byte_timeout.duration() + self.origin.connect_timeout.duration()
            }
        }
    }

    /// What a valid configuration sets that cannot work as its writer probably meant: logged
    /// when it is put in force.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(deadline) = self.retries.deadline {
            let first_byte = self.origin.first_byte_timeout;
            if self.retries.tries > 1 && deadline.duration() <= first_byte.duration() {
                warnings.push(format!(
                    "retries.deadline ({deadline}) is not longer than origin.first_byte_timeout \
                     ({first_byte}): a host that times out is never retried on the next one"
                ));
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn error_of(text: &str) -> String {
        Config::parse(text, Path::new("shoal.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_file_is_the_default() {
        let config = Config::parse("", Path::new("x")).unwrap();
        assert_eq!(config.cache.memory, ByteSize(256 << 20));
        assert_eq!(config.server.listen[0].port(), 8080);
    }

    #[test]
    fn values_are_parsed() {
        let config = Config::parse(
            "[cache]\nmemory = \"1GiB\"\nnegative_ttl = \"5s\"\n[origin]\nurls = [\"http://[::1]:9000\"]\nhost_header = \"origin\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(config.cache.memory, ByteSize(1 << 30));
        assert_eq!(config.cache.negative_ttl.0.as_secs(), 5);
        assert_eq!(config.origin.urls[0].host, "::1");
        assert_eq!(config.origin.urls[0].port, 9000);
        assert_eq!(config.origin.host_header, HostHeader::Origin);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let check = |text: &str, expected: &str| {
            let error = error_of(text);
            assert!(
                error.starts_with(expected),
                "{error:?} should start with {expected:?}"
            );
        };
        check(
            "[cache]\n\nmemory = \"12XB\"\n",
            "shoal.toml:3: key `cache.memory`: unknown size unit",
        );
        check(
            "[cache]\nmemroy = \"1GiB\"\n",
            "shoal.toml:2: key `cache.memroy`: unknown field `memroy`",
        );
        check(
            "[server]\nlisten = [\"nowhere\"]\n",
            "shoal.toml:2: key `server.listen`:",
        );
        check(
            "[origin]\nurls = [\"ftp://x\"]\n",
            "shoal.toml:2: key `origin.urls`: `ftp://x`: scheme",
        );
        check(
            "[bogus]\n",
            "shoal.toml:1: key `bogus`: unknown field `bogus`",
        );
        // Header names and values, methods and the Via name are read as what they are.
        check(
            "[server]\nmethods = [\"GET\", \"CONNECT\"]\n",
            "shoal.toml:2: key `server.methods`: `CONNECT`: expected a method name",
        );
        check(
            "[server]\nhsts = \"max-age=1\\u0001\"\n",
            "shoal.toml:2: key `server.hsts`: `max-age=1\u{1}` is not a header field value",
        );
        check(
            "[server]\nvia = \"my node\"\n",
            "shoal.toml:2: key `server.via`: `my node`: expected a single token",
        );
        check(
            "[cache]\ntag_header = \"bad name\"\n",
            "shoal.toml:2: key `cache.tag_header`: `bad name` is not a header field name",
        );
        let quiet = Config::parse("[cache]\nstatus_header = \"\"\n", Path::new("x")).unwrap();
        assert_eq!(quiet.cache.status_header, None, "empty: no status header");
        // Inside an array of tables too: the line of the value.
        let pool = "[[pools]]\nname = \"a\"\nhosts = [{ url = \"http://127.0.0.1:1\" }]\n";
        check(
            &format!("{pool}[pools.health]\nmethod = \"POST\"\n"),
            "shoal.toml:5: key `pools.health.method`: expected GET, HEAD or OPTIONS, not `POST`",
        );
        check(
            &format!("{pool}health = {{ path = \"status\" }}\n"),
            "shoal.toml:4: key `pools.health`: expected a path starting with /",
        );
        check(
            &format!("{pool}[pools.health]\n\nrise = 0\n"),
            "shoal.toml:6: key `pools.health.rise`: expected at least 1",
        );
        check(
            "[cache]\nmemory = \"1MiB\"\nmax_object_size = \"2MiB\"\n",
            "shoal.toml:3: key `cache.max_object_size`",
        );
        check(
            "[disk]\ndirs = [{ path = \"/c\", size = \"8MiB\" }]\n",
            "shoal.toml:2: key `disk.dirs`: /c is 8MiB; a cache directory needs at least 4 segments",
        );
        check(
            "[disk]\ndirs = [{ path = \"/c\" }]\n",
            "shoal.toml:2: key `disk.dirs`: missing field `size`",
        );
        check(
            "[admin]\nlisten = \"0.0.0.0:9090\"\n",
            "shoal.toml:2: key `admin.listen`: 0.0.0.0:9090 is not a loopback address: set admin.token",
        );
        check(
            "[admin]\ntoken = \"short\"\n",
            "shoal.toml:2: key `admin.token`: expected at least 16 printable characters",
        );
        check(
            "[disk]\nadmission = \"sometimes\"\n",
            "shoal.toml:2: key `disk.admission`: unknown variant `sometimes`",
        );
        check(
            "[cache]\nslice_size = \"2MiB\"\n[disk]\nmax_object_size = \"1MiB\"\ndirs = [{ path = \"/c\", size = \"1GiB\" }]\n",
            "shoal.toml:4: key `disk.max_object_size`",
        );
        check(
            "[server]\n\ntcp_notsent_lowat = \"8GiB\"\n",
            "shoal.toml:3: key `server.tcp_notsent_lowat`: expected a size below 4GiB",
        );
        check(
            "[server]\ndefer_accept = \"5m\"\n",
            "shoal.toml:2: key `server.defer_accept`: expected at most 60s",
        );
    }

    #[test]
    fn flags_override_the_file() {
        let mut config = Config::parse("[cache]\nmemory = \"1GiB\"\n", Path::new("x")).unwrap();
        config
            .apply(&Overrides {
                cache_memory: Some("512MiB".into()),
                origins: vec!["http://127.0.0.1:1234".into()],
                ..Overrides::default()
            })
            .unwrap();
        assert_eq!(config.cache.memory, ByteSize(512 << 20));
        assert_eq!(config.origin.urls[0].port, 1234);
    }

    /// A default never conflicts with a value the user gave: those that depend on another
    /// setting follow it when unset, and only a value written is refused, by its own line.
    #[test]
    fn unset_defaults_follow_what_was_set() {
        let small = Overrides {
            cache_memory: Some("64MiB".into()),
            ..Overrides::default()
        };
        let config = Config::load(None, &small).unwrap();
        assert_eq!(config.cache.max_object_size, ByteSize(32 << 20));
        let only_memory = "[cache]\nmemory = \"64MiB\"\n";
        let config = Config::parse(only_memory, Path::new("shoal.toml")).unwrap();
        assert_eq!(config.cache.max_object_size, ByteSize(32 << 20));
        let large_slices = "[cache]\nslice_size = \"4MiB\"\n[disk]\ndirs = [{ path = \"/tmp/x\", size = \"1GiB\" }]\n";
        let config = Config::parse(large_slices, Path::new("shoal.toml")).unwrap();
        assert_eq!(config.disk.max_object_size, ByteSize(4 << 20));
        // What the user wrote is kept, and refused by its own key and line when it cannot be.
        let written = "[cache]\nmemory = \"64MiB\"\nmax_object_size = \"100MiB\"\n";
        let error = Config::parse(written, Path::new("shoal.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("shoal.toml:3: key `cache.max_object_size`"),
            "{error}"
        );
    }

    /// The shipped retry window always lets a timed-out attempt be retried; one written
    /// shorter than the first-byte timeout is warned about.
    #[test]
    fn retry_deadlines_that_cannot_retry_a_timeout_are_warned_about() {
        let config = Config::default();
        assert!(config.retry_deadline() > config.origin.first_byte_timeout.duration());
        assert!(config.warnings().is_empty());
        let text = "[origin]\nfirst_byte_timeout = \"30s\"\n[retries]\ndeadline = \"10s\"\n";
        let config = Config::parse(text, Path::new("shoal.toml")).unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("retries.deadline (10s)"),
            "{warnings:?}"
        );
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let text = include_str!("../../../../examples/shoal.toml");
        let config = Config::parse(text, Path::new("examples/shoal.toml")).unwrap();
        assert_eq!(config.cache.memory, CacheConfig::default().memory);
        // Every documented key is present in the example.
        for key in [
            "keepalive_timeout",
            "first_byte_timeout",
            "remember_uncacheable",
            "root",
            "slice_size",
            "promote_after_hits",
            "read_timeout",
            "on_status",
            "peers",
            "fallthrough_404",
            "expect",
            "listen_tls",
            "redirect_to_https",
            "hsts",
            "watch_interval",
            "tls_ca",
            "danger_accept_invalid_certs_for_testing",
            "admin",
            "signing_keys",
            "max_connections_per_ip",
            "rate_limit_per_ip",
            "rate_limit_burst",
            "methods",
            "max_inflight_memory",
            "tcp_notsent_lowat",
            "defer_accept",
            "h2_max_streams",
            "h2_max_uploads",
            "trusted_proxies",
            "strip_request_headers",
            "max_bans",
            "finish_without_readers",
            "names",
            "deadline",
        ] {
            assert!(
                text.contains(&format!("{key} =")),
                "{key} missing from example"
            );
        }
    }
}
