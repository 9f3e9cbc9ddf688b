//! `shoal ctl`: the operator's command line, a client of a node's admin API (and of nothing
//! else: this crate depends on the API's types, `shoal-api`, and on no part of the node).
//! Tables for people by default, the API's JSON with `--json`; a failure exits non-zero with
//! one line saying why.

mod client;
mod tables;

use std::time::Duration;

use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use shoal_api::cache::{
    BanAdded, BanView, ClusterResult, Inspection, Invalidation, Purged, ReportRow, TopUrl,
};
use shoal_api::node::{ReloadReport, Status};
use shoal_api::path;
use shoal_api::router::RouterStatus;
use shoal_api::stats::Stats;
use shoal_api::upstreams::{HostStateChange, PoolView};

use client::{encode, Answer, Api};

/// Options of every `shoal ctl` command.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The node's admin API.
    #[arg(
        long,
        default_value = "http://127.0.0.1:9090",
        env = "SHOAL_ADMIN",
        global = true
    )]
    pub admin: String,
    /// The admin API's bearer token.
    #[arg(long, env = "SHOAL_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `shoal ctl` commands.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Version, uptime, listeners and cluster of the node.
    Status,
    /// Counters; with --watch, a live view refreshed every few seconds, with rates.
    Stats {
        /// Refresh every SECONDS (like varnishstat); Ctrl-C to stop.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<f64>,
    },
    /// Pools, hosts and their health.
    Upstreams,
    /// Sets an upstream host's state: up, down, drain or auto (follow the health checks).
    Upstream {
        /// What to do with the host.
        #[command(subcommand)]
        action: UpstreamAction,
    },
    /// What the cache holds for a URL: variants, headers, age, freshness, size, tiers.
    Inspect {
        /// The URL, such as `http://example.com/path`.
        url: String,
    },
    /// Removes a URL from the cache (RAM and disk).
    Purge {
        /// The URL, such as `http://example.com/path`.
        url: String,
        /// On every node of the cluster (the node forwards it to its peers' admin APIs).
        #[arg(long)]
        all: bool,
    },
    /// Makes every cached URL starting with PREFIX (or, with --regex, matching it) absent.
    Ban {
        /// A URL prefix such as `http://example.com/images/`, or a regular expression.
        pattern: String,
        /// PATTERN is a regular expression matched against `http://host/path?query`.
        #[arg(long)]
        regex: bool,
        /// On every node of the cluster.
        #[arg(long)]
        all: bool,
    },
    /// Makes every cached object tagged TAG (in its tag header, such as Surrogate-Key) absent.
    PurgeTag {
        /// The tag.
        tag: String,
        /// On every node of the cluster.
        #[arg(long)]
        all: bool,
    },
    /// The bans in force.
    Bans,
    /// The configuration in force, as JSON (secrets hidden).
    Config,
    /// Signs a URL for a route with signing_keys (computed here, offline: the node is not
    /// asked).
    Sign {
        /// The URL, such as `https://cdn.example.com/files/a.iso`.
        url: String,
        /// How long the signed URL stays valid, such as 30m, 1h or 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The signing key (one of the route's signing_keys).
        #[arg(long, env = "SHOAL_SIGNING_KEY", hide_env_values = true)]
        key: String,
        /// Sign for this method only, such as PUT or DELETE: a URL that allows a write to a
        /// writable pool (a URL signed without a method is for reading).
        #[arg(long)]
        method: Option<String>,
    },
    /// A request router's nodes: addresses, weight, health (`--admin` the router's status API).
    Nodes,
    /// The most requested URLs (requests and bytes).
    TopUrls {
        /// How many rows.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Reads the node's config file again and puts it in force (like SIGHUP); a bad file is
    /// refused and the running configuration stays.
    Reload,
    /// Traffic by client country or AS number (needs the MaxMind databases in `[log]`).
    Report {
        /// `country` or `asn`.
        by: String,
        /// How many rows.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
}

/// `shoal ctl upstream ...`
#[derive(Subcommand, Debug)]
pub enum UpstreamAction {
    /// Sets the state of HOST (host:port) in POOL.
    Set {
        /// The pool's name (`cluster` for the cluster's peers).
        pool: String,
        /// The host, as host:port.
        host: String,
        /// up, down, drain or auto.
        state: String,
    },
}

/// Runs a `shoal ctl` command; the error is the one line to print.
pub fn run(args: CtlArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(execute(args))
}

async fn execute(args: CtlArgs) -> Result<(), String> {
    let api = Api::new(&args.admin, args.token.clone())?;
    let json = args.json;
    match &args.command {
        CtlCommand::Status => show(json, api.get::<Status>(path::STATUS).await?, tables::status),
        CtlCommand::Stats { watch: None } => {
            show(json, api.get::<Stats>(path::STATS).await?, tables::stats)
        }
        CtlCommand::Stats {
            watch: Some(seconds),
        } => watch(&api, *seconds).await,
        CtlCommand::Upstreams => show(
            json,
            api.get::<Vec<PoolView>>(path::UPSTREAMS).await?,
            |pools| tables::upstreams(pools),
        ),
        CtlCommand::Upstream {
            action: UpstreamAction::Set { pool, host, state },
        } => {
            let target = format!(
                "{}?pool={}&host={}&state={}",
                path::UPSTREAM_STATE,
                encode(pool),
                encode(host),
                encode(state)
            );
            let answer = api.post::<HostStateChange>(&target).await?;
            show(json, answer, |change| {
                tables::state_change(&change.host, &change.pool, change.state, change.previous)
            })
        }
        CtlCommand::Inspect { url } => {
            let target = format!("{}?url={}", path::INSPECT, encode(url));
            show(
                json,
                api.get::<Inspection>(&target).await?,
                tables::inspection,
            )
        }
        CtlCommand::Purge { url, all } => {
            let target = format!("{}?url={}", path::PURGE, encode(url));
            invalidate(&api, json, target, *all, |done| match done {
                Invalidation::Purged(Purged { purged: true }) => format!("purged {url}"),
                _ => format!("{url} was not cached"),
            })
            .await
        }
        CtlCommand::Ban {
            pattern,
            regex,
            all,
        } => {
            let kind = if *regex { "regex" } else { "prefix" };
            let target = format!("{}?{kind}={}", path::BAN, encode(pattern));
            invalidate(&api, json, target, *all, |done| banned(done, kind, pattern)).await
        }
        CtlCommand::PurgeTag { tag, all } => {
            let target = format!("{}?tag={}", path::PURGE_TAG, encode(tag));
            invalidate(&api, json, target, *all, |done| banned(done, "tag", tag)).await
        }
        CtlCommand::Bans => show(json, api.get::<Vec<BanView>>(path::BANS).await?, |bans| {
            tables::bans(bans)
        }),
        CtlCommand::Config => {
            // The node's configuration format is the node's own: shown as it comes.
            let answer = api.get::<serde_json::Value>(path::CONFIG).await?;
            show(true, answer, |_| String::new())
        }
        CtlCommand::Nodes => show(
            json,
            api.get::<RouterStatus>(path::STATUS).await?,
            tables::nodes,
        ),
        // Computed here: the node is not asked.
        CtlCommand::Sign {
            url,
            ttl,
            key,
            method,
        } => write_out(&format!("{}\n", sign(url, ttl, key, method.as_deref())?)),
        CtlCommand::Reload => show(
            json,
            api.post::<ReloadReport>(path::RELOAD).await?,
            tables::reload,
        ),
        CtlCommand::Report { by, top } => {
            let target = format!("{}?by={}&top={top}", path::REPORT, encode(by));
            let answer = api.get::<Vec<ReportRow>>(&target).await?;
            show(json, answer, |rows| tables::report(rows, by))
        }
        CtlCommand::TopUrls { top } => {
            let target = format!("{}?top={top}", path::TOP_URLS);
            let answer = api.get::<Vec<TopUrl>>(&target).await?;
            show(json, answer, |rows| tables::top_urls(rows))
        }
    }
}

/// What a ban answer says, in one line.
fn banned(done: &Invalidation, kind: &str, pattern: &str) -> String {
    match done {
        Invalidation::Banned(BanAdded { .. }) => match kind {
            "tag" => format!("purged tag {pattern}"),
            _ => format!("banned {kind} {pattern}"),
        },
        Invalidation::Purged(_) => format!("unexpected answer to a ban of {pattern}"),
    }
}

/// Sends a purge or ban (`target`), to the whole cluster when `all`, and shows the answer:
/// one line for this node (`line`), and with `all` one per peer; fails (after showing it)
/// when a peer failed.
async fn invalidate(
    api: &Api,
    json: bool,
    target: String,
    all: bool,
    line: impl Fn(&Invalidation) -> String,
) -> Result<(), String> {
    if !all {
        let answer = api.post::<Invalidation>(&target).await?;
        return show(json, answer, |done| format!("{}\n", line(done)));
    }
    let answer = api
        .post::<ClusterResult<Invalidation>>(&format!("{target}&cluster=1"))
        .await?;
    let peers = &answer.value.peers;
    let failures: Vec<String> = peers
        .iter()
        .filter(|peer| !peer.ok)
        .map(|peer| format!("{}: {}", peer.admin, peer.error.as_deref().unwrap_or("-")))
        .collect();
    let total = peers.len();
    show(json, answer, |cluster| {
        let mut text = format!("this node: {}\n", line(&cluster.this_node));
        for peer in &cluster.peers {
            let outcome = match (&peer.result, peer.ok) {
                (Some(result), true) => line(result),
                _ => format!("FAILED: {}", peer.error.as_deref().unwrap_or("-")),
            };
            text.push_str(&format!("{}: {outcome}\n", peer.admin));
        }
        text
    })?;
    match failures.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{} of {total} peers failed: {}",
            failures.len(),
            failures.join("; ")
        )),
    }
}

/// `url` signed with `key` until `ttl` from now, for `method` only when given.
fn sign(url: &str, ttl: &str, key: &str, method: Option<&str>) -> Result<String, String> {
    let method = method.map(str::to_ascii_uppercase);
    if let Some(method) = &method {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "--method {method}: expected a method such as PUT or DELETE"
            ));
        }
    }
    let ttl = shoal_api::duration::parse(ttl).map_err(|error| format!("--ttl {ttl}: {error}"))?;
    let uri: http::Uri = url
        .parse()
        .map_err(|error| format!("{url}: not a URL: {error}"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "{url}: expected a whole URL such as https://cdn.example.com/files/a.iso"
        ));
    };
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|error| error.to_string())?
        .as_secs()
        + ttl.as_secs();
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(format!(
        "{scheme}://{authority}{}",
        shoal_api::signed_url::sign_for(target, key.as_bytes(), expires, method.as_deref())
    ))
}

/// Prints `answer`: its JSON as the API sent it (pretty) with `--json`, else `table` of it.
fn show<T: DeserializeOwned>(
    json: bool,
    answer: Answer<T>,
    table: impl Fn(&T) -> String,
) -> Result<(), String> {
    if json {
        let value: serde_json::Value = serde_json::from_slice(&answer.json).unwrap_or_default();
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        write_out(&format!("{text}\n"))
    } else {
        write_out(&table(&answer.value))
    }
}

/// Writes to stdout. A reader that went away (`shoal ctl stats --watch 1 | head`) ends the
/// program quietly, as `cat` or `grep` end, rather than with a panic or an error.
fn write_out(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => Err(format!("cannot write to stdout: {error}")),
    }
}

/// A varnishstat-like view: every counter with its rate over the last interval.
async fn watch(api: &Api, seconds: f64) -> Result<(), String> {
    let interval = Duration::from_secs_f64(seconds.max(0.2));
    let mut previous: Option<Stats> = None;
    loop {
        let stats = api.get::<Stats>(path::STATS).await?.value;
        let table = tables::rates(&stats, previous.as_ref(), interval.as_secs_f64());
        // Clear the screen and draw the table again.
        write_out(&format!("\x1b[2J\x1b[H{table}"))?;
        previous = Some(stats);
        tokio::time::sleep(interval).await;
    }
}
