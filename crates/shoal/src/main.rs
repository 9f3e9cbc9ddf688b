//! The `shoal` binary: `shoal serve` runs an edge cache node; `shoal ctl` talks to one.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shoal::config::{ConfigSource, Overrides};

/// mimalloc rather than glibc's malloc: on the miss path every response allocates and frees
/// buffers, headers and cache entries on one worker thread and often frees them on another,
/// and glibc's allocator spent a fifth of the node's CPU there (`_int_free`,
/// `malloc_consolidate`); mimalloc's per-thread free lists make those calls cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off for this process, whatever the system's setting. mimalloc marks
/// its arenas `MADV_HUGEPAGE`, and under the usual `defrag = madvise` the kernel then fills the
/// first write into each new 2 MiB region with a whole huge page, zeroed (and memory compacted
/// if need be) while the writing thread waits. Every miss grows the cache, so every few hundred
/// misses a worker stalled for milliseconds with all its connections: that was the miss path's
/// latency tail (bench/RESULTS.md, 2026-12-02: paced misses p99 5.1-7.9 ms with huge pages,
/// 3.5-4.2 ms without; 64 MiB hits cost the same CPU either way). Varnish and Redis advise
/// operators to turn THP off for the same reason; the flag does it for this process alone.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(%error, "could not turn transparent huge pages off for this process");
    }
}

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: an HTTP caching reverse proxy and CDN node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an edge cache node. With no origin configured, it fronts a built-in demo origin
    /// serving examples/site on 127.0.0.1:8081.
    Serve {
        /// Config file (TOML); see examples/shoal.toml.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (repeatable); overrides server.listen.
        #[arg(long)]
        listen: Vec<SocketAddr>,
        /// Origin URL such as http://127.0.0.1:8081 (repeatable); overrides origin.urls.
        #[arg(long)]
        origin: Vec<String>,
        /// Admin API address; overrides admin.listen.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// RAM cache size such as 512MiB; overrides cache.memory.
        #[arg(long = "cache-mem")]
        cache_mem: Option<String>,
        /// Cache directory for the disk tier (repeatable, one per disk); overrides disk.dirs.
        #[arg(long = "cache-dir")]
        cache_dir: Vec<PathBuf>,
        /// Disk space of each cache directory such as 100GiB (default 1GiB).
        #[arg(long = "cache-disk")]
        cache_disk: Option<String>,
        /// Address to accept TLS on (repeatable), with the certificate of --tls-cert;
        /// overrides server.listen_tls.
        #[arg(long = "listen-tls")]
        listen_tls: Vec<SocketAddr>,
        /// PEM certificate chain for the TLS listeners (with --tls-key); replaces
        /// tls.certificates.
        #[arg(long = "tls-cert")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long = "tls-key")]
        tls_key: Option<PathBuf>,
        /// A node of this node's cluster, itself included, such as http://127.0.0.1:8001
        /// (repeatable); overrides cluster.peers.
        #[arg(long)]
        peer: Vec<String>,
        /// The admin API of each --peer, in the same order, such as http://127.0.0.1:9001
        /// (repeatable): where cluster-wide purges and bans go; overrides cluster.admin.
        #[arg(long = "peer-admin")]
        peer_admin: Vec<String>,
    },
    /// Operate a running node through its admin API.
    Ctl(shoal_ctl::CtlArgs),
    /// Run the request router: an authoritative DNS server that sends each client to the
    /// nearest healthy edge node (see examples/route.toml).
    Route {
        /// Router config file (TOML); see examples/route.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Address to answer DNS on, UDP and TCP (repeatable); overrides dns.listen.
        #[arg(long)]
        dns: Vec<SocketAddr>,
        /// Address to answer HTTP on with redirects to the chosen node; overrides http.listen.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Address of the status API (GET /status, POST /reload); overrides admin.listen.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    no_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Ctl(args) => match shoal_ctl::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("shoal ctl: {reason}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Route {
            config,
            dns,
            http,
            admin,
        } => match shoal::router::run(&config, &dns, http, admin) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("shoal route: {error:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Serve {
            config,
            listen,
            origin,
            admin,
            cache_mem,
            cache_dir,
            cache_disk,
            peer,
            peer_admin,
            listen_tls,
            tls_cert,
            tls_key,
        } => {
            let overrides = Overrides {
                listen,
                origins: origin,
                admin,
                cache_memory: cache_mem,
                cache_dirs: cache_dir,
                cache_disk,
                peers: peer,
                peer_admins: peer_admin,
                listen_tls,
                tls_cert,
                tls_key,
            };
            let source = ConfigSource {
                file: config,
                overrides,
            };
            let config = match source.load() {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("shoal: {error}");
                    return std::process::ExitCode::from(2);
                }
            };
            match shoal::run(config, source) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("shoal: {error:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
