//! `shoal ctl`: the operator's command line, a client of a node's admin API (and of nothing
//! else). Tables for people by default, the API's JSON with `--json`; a failure exits non-zero
//! with one line saying why.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

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
    match &args.command {
        CtlCommand::Status => show(args.json, api.get("/status").await?, status_table),
        CtlCommand::Stats { watch: None } => show(args.json, api.get("/stats").await?, stats_table),
        CtlCommand::Stats {
            watch: Some(seconds),
        } => watch(&api, *seconds).await,
        CtlCommand::Upstreams => show(args.json, api.get("/upstreams").await?, upstreams_table),
        CtlCommand::Upstream {
            action: UpstreamAction::Set { pool, host, state },
        } => {
            let path = format!(
                "/upstreams/state?pool={}&host={}&state={}",
                encode(pool),
                encode(host),
                encode(state)
            );
            let answer = api.post(&path).await?;
            show(args.json, answer, |answer| {
                format!(
                    "{} in {}: {} (was {})\n",
                    answer["host"].as_str().unwrap_or(""),
                    answer["pool"].as_str().unwrap_or(""),
                    answer["state"].as_str().unwrap_or(""),
                    answer["previous"].as_str().unwrap_or("")
                )
            })
        }
        CtlCommand::Inspect { url } => {
            let answer = api
                .get(&format!("/cache/inspect?url={}", encode(url)))
                .await?;
            show(args.json, answer, inspect_table)
        }
        CtlCommand::Ban {
            pattern,
            regex,
            all,
        } => {
            let kind = if *regex { "regex" } else { "prefix" };
            let path = format!("/ban?{kind}={}", encode(pattern));
            let answer = api.post(&cluster_wide(path, *all)).await?;
            show_cluster(args.json, answer, |_| format!("banned {kind} {pattern}"))
        }
        CtlCommand::PurgeTag { tag, all } => {
            let path = format!("/purge-tag?tag={}", encode(tag));
            let answer = api.post(&cluster_wide(path, *all)).await?;
            show_cluster(args.json, answer, |_| format!("purged tag {tag}"))
        }
        CtlCommand::Bans => show(args.json, api.get("/bans").await?, |bans| {
            let rows: Vec<Vec<String>> = bans
                .as_array()
                .into_iter()
                .flatten()
                .map(|ban| {
                    vec![
                        cell(&ban["created"]),
                        cell(&ban["kind"]),
                        cell(&ban["value"]),
                    ]
                })
                .collect();
            table(&["created (ms)", "kind", "value"], &rows)
        }),
        CtlCommand::Config => show(true, api.get("/config").await?, |_| String::new()),
        CtlCommand::Nodes => show(args.json, api.get("/status").await?, |status| {
            let rows: Vec<Vec<String>> = status["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|node| {
                    vec![
                        cell(&node["name"]),
                        cell(&node["addresses"]),
                        cell(&node["weight"]),
                        match node["up"].as_bool() {
                            Some(true) => "up".into(),
                            _ => "down".into(),
                        },
                        cell(&node["last_check"]),
                    ]
                })
                .collect();
            let mut text = table(
                &["node", "addresses", "weight", "state", "last check"],
                &rows,
            );
            if status["failing_open"].as_bool() == Some(true) {
                text.push_str("failing open: no node of some clients' rules is up\n");
            }
            text
        }),
        // Computed here: the node is not asked.
        CtlCommand::Sign { url, ttl, key } => write_out(&format!("{}\n", sign(url, ttl, key)?)),
        CtlCommand::Reload => show(args.json, api.post("/reload").await?, reload_summary),
        CtlCommand::Report { by, top } => {
            let answer = api
                .get(&format!("/report?by={}&top={top}", encode(by)))
                .await?;
            show(args.json, answer, |rows| {
                ranking(rows, "key", &[by.as_str(), "requests", "bytes"])
            })
        }
        CtlCommand::TopUrls { top } => {
            let answer = api.get(&format!("/top-urls?top={top}")).await?;
            show(args.json, answer, |rows| {
                ranking(rows, "url", &["url", "requests", "bytes"])
            })
        }
        CtlCommand::Purge { url, all } => {
            let path = format!("/purge?url={}", encode(url));
            let answer = api.post(&cluster_wide(path, *all)).await?;
            show_cluster(args.json, answer, |answer| {
                match answer["purged"].as_bool() {
                    Some(true) => format!("purged {url}"),
                    _ => format!("{url} was not cached"),
                }
            })
        }
    }
}

/// `url` signed with `key` until `ttl` from now.
fn sign(url: &str, ttl: &str, key: &str) -> Result<String, String> {
    let ttl: crate::config::Span = ttl
        .parse()
        .map_err(|error| format!("--ttl {ttl}: {error}"))?;
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
        + ttl.duration().as_secs();
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(format!(
        "{scheme}://{authority}{}",
        crate::signed_url::sign(target, key.as_bytes(), expires)
    ))
}

/// A table of `[{ key_field, requests, bytes }]` rows.
fn ranking(rows: &Value, key_field: &str, header: &[&str]) -> String {
    let rows: Vec<Vec<String>> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            vec![
                cell(&row[key_field]),
                cell(&row["requests"]),
                cell(&row["bytes"]),
            ]
        })
        .collect();
    table(header, &rows)
}

/// `path` for the whole cluster when `all`.
fn cluster_wide(path: String, all: bool) -> String {
    if all {
        format!("{path}&cluster=1")
    } else {
        path
    }
}

/// Shows the answer to a purge or ban: one line for this node (`line`), and with `--all` one
/// per peer; fails (after showing it) when a peer failed.
fn show_cluster(json: bool, answer: Value, line: impl Fn(&Value) -> String) -> Result<(), String> {
    let Some(peers) = answer["peers"].as_array() else {
        return show(json, answer, |answer| format!("{}\n", line(answer)));
    };
    let failures: Vec<String> = peers
        .iter()
        .filter(|peer| peer["ok"] != Value::Bool(true))
        .map(|peer| format!("{}: {}", cell(&peer["admin"]), cell(&peer["error"])))
        .collect();
    show(json, answer.clone(), |answer| {
        let mut text = format!("this node: {}\n", line(&answer["this_node"]));
        for peer in peers {
            let outcome = match peer["ok"].as_bool() {
                Some(true) => line(&peer["result"]),
                _ => format!("FAILED: {}", cell(&peer["error"])),
            };
            text.push_str(&format!("{}: {outcome}\n", cell(&peer["admin"])));
        }
        text
    })?;
    match failures.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{} of {} peers failed: {}",
            failures.len(),
            peers.len(),
            failures.join("; ")
        )),
    }
}

fn show(json: bool, value: Value, table: impl Fn(&Value) -> String) -> Result<(), String> {
    if json {
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        write_out(&format!("{text}\n"))
    } else {
        write_out(&table(&value))
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

/// The admin API of one node.
struct Api {
    base: String,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    fn new(base: &str, token: Option<String>) -> Result<Api, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(format!(
                "--admin {base}: expected a URL such as http://127.0.0.1:9090"
            ));
        }
        Ok(Api {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(http::Method::GET, path).await
    }

    async fn post(&self, path: &str) -> Result<Value, String> {
        self.call(http::Method::POST, path).await
    }

    async fn call(&self, method: http::Method, path: &str) -> Result<Value, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        // What the admin asks of a change, to tell it from a cross-site form.
        let request = request
            .header(crate::admin::guard::CHANGE_HEADER, "1")
            .body(Full::new(Bytes::new()))
            .map_err(|error| format!("bad request: {error}"))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| format!("the admin API at {} did not answer within 10 s", self.base))?
            .map_err(|error| {
                format!(
                    "cannot reach the admin API at {}: {}",
                    self.base,
                    crate::upstream::root_cause(&error)
                )
            })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("reading the answer: {error}"))?
            .to_bytes();
        match status {
            http::StatusCode::UNAUTHORIZED => {
                Err("unauthorized: give the admin token with --token or SHOAL_ADMIN_TOKEN".into())
            }
            status if !status.is_success() => Err(format!(
                "{}: {}",
                status,
                String::from_utf8_lossy(&body).trim()
            )),
            _ => serde_json::from_slice(&body)
                .map_err(|error| format!("the admin API sent something that is not JSON: {error}")),
        }
    }
}

/// Percent-encodes a query parameter value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Lines of columns padded to the widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A list of addresses as `a, b`, or `-` for none.
fn addresses(value: &Value) -> String {
    let listed: Vec<String> = value.as_array().into_iter().flatten().map(cell).collect();
    match listed.is_empty() {
        true => "-".into(),
        false => listed.join(", "),
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn reload_summary(report: &Value) -> String {
    let list = |field: &str| {
        let names: Vec<&str> = report[field]
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        }
    };
    let mut text = format!(
        "reloaded: configuration generation {}; changed: {}\n",
        cell(&report["generation"]),
        list("changed")
    );
    if report["needs_restart"]
        .as_array()
        .is_some_and(|names| !names.is_empty())
    {
        text.push_str(&format!(
            "not applied until a restart: {}\n",
            list("needs_restart")
        ));
    }
    text
}

fn status_table(status: &Value) -> String {
    let mut rows = vec![
        vec!["version".into(), cell(&status["version"])],
        vec![
            "uptime".into(),
            format!("{} s", cell(&status["uptime_seconds"])),
        ],
        vec!["listen".into(), addresses(&status["listen"])],
        vec!["listen tls".into(), addresses(&status["listen_tls"])],
        vec!["requests".into(), cell(&status["requests"])],
        vec![
            "fetches in flight".into(),
            cell(&status["fetches_in_flight"]),
        ],
        vec![
            "config generation".into(),
            cell(&status["config_generation"]),
        ],
    ];
    if let Some(error) = status["last_reload"]["error"].as_str() {
        rows.push(vec!["last reload".into(), format!("refused: {error}")]);
    }
    if let Some(cluster) = status["cluster"].as_object() {
        rows.push(vec![
            "cluster".into(),
            format!(
                "this node {} of {} peers",
                cell(&cluster["this_node"]),
                cell(&cluster["peers"])
            ),
        ]);
    }
    let mut text = table(&["", ""], &rows);
    // No header line for a list of fields.
    text.drain(..text.find('\n').map_or(0, |end| end + 1));
    text
}

fn stats_table(stats: &Value) -> String {
    let mut rows: Vec<Vec<String>> = stats["counters"]
        .as_object()
        .map(|counters| {
            counters
                .iter()
                .map(|(name, value)| vec![name.clone(), cell(value)])
                .collect()
        })
        .unwrap_or_default();
    for (section, fields) in [
        ("store", &["entries", "bytes", "capacity", "evictions"][..]),
        (
            "disk",
            &[
                "entries",
                "bytes",
                "capacity",
                "hits",
                "objects_written",
                "corrupt",
                "read_timeouts",
            ][..],
        ),
    ] {
        if stats[section].is_object() {
            for field in fields {
                rows.push(vec![
                    format!("{section}.{field}"),
                    cell(&stats[section][*field]),
                ]);
            }
        }
    }
    if let Some(ratio) = stats["hit_ratio"].as_f64() {
        rows.push(vec!["hit ratio".into(), format!("{:.1}%", ratio * 100.0)]);
    }
    table(&["counter", "value"], &rows)
}

/// A varnishstat-like view: every counter with its rate over the last interval.
async fn watch(api: &Api, seconds: f64) -> Result<(), String> {
    let interval = Duration::from_secs_f64(seconds.max(0.2));
    let mut previous: Option<Value> = None;
    loop {
        let stats = api.get("/stats").await?;
        let mut rows = Vec::new();
        if let Some(counters) = stats["counters"].as_object() {
            for (name, value) in counters {
                let now = value.as_u64().unwrap_or(0);
                let before = previous
                    .as_ref()
                    .and_then(|previous| previous["counters"][name].as_u64())
                    .unwrap_or(now);
                let rate = now.saturating_sub(before) as f64 / interval.as_secs_f64();
                rows.push(vec![name.clone(), now.to_string(), format!("{rate:.1}/s")]);
            }
        }
        // Clear the screen and draw the table again.
        write_out(&format!(
            "\x1b[2J\x1b[H{}",
            table(&["counter", "value", "rate"], &rows)
        ))?;
        previous = Some(stats);
        tokio::time::sleep(interval).await;
    }
}

fn upstreams_table(pools: &Value) -> String {
    let mut rows = Vec::new();
    for pool in pools.as_array().into_iter().flatten() {
        for host in pool["hosts"].as_array().into_iter().flatten() {
            rows.push(vec![
                cell(&pool["pool"]),
                cell(&pool["policy"]),
                cell(&host["host"]),
                cell(&host["state"]),
                cell(&host["admin"]),
                cell(&host["in_flight"]),
                host["last_check"]["detail"]
                    .as_str()
                    .map_or_else(|| "-".into(), str::to_owned),
            ]);
        }
    }
    table(
        &[
            "pool",
            "policy",
            "host",
            "state",
            "set",
            "in flight",
            "last check",
        ],
        &rows,
    )
}

fn inspect_table(inspection: &Value) -> String {
    let mut out = format!(
        "{}  key {}{}\n",
        cell(&inspection["url"]),
        cell(&inspection["key"]),
        match inspection["fetch_in_flight"].as_bool() {
            Some(true) => "  (fetch in flight)",
            _ => "",
        }
    );
    let variants = inspection["variants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if variants.is_empty() {
        out.push_str("not cached\n");
    }
    for variant in variants {
        let freshness = match variant["fresh_for_seconds"].as_i64() {
            Some(left) if left >= 0 => format!("fresh for {left} s"),
            Some(over) => format!("stale for {} s", over.unsigned_abs()),
            None => "freshness unknown".into(),
        };
        let _ = writeln!(
            out,
            "\n{} in {}: {} bytes, age {} s, {freshness}, {}",
            cell(&variant["status"]),
            variant["tiers"]
                .as_array()
                .map(|tiers| tiers.iter().map(cell).collect::<Vec<_>>().join("+"))
                .unwrap_or_default(),
            cell(&variant["bytes"]),
            cell(&variant["age_seconds"]),
            cell(&variant["state"])
        );
        // The request values this variant was stored for, one per field `Vary` names.
        for pair in variant["vary"].as_array().into_iter().flatten() {
            let value = match &pair[1] {
                Value::Null => "(absent)".to_owned(),
                value => cell(value),
            };
            let _ = writeln!(out, "  for {}: {value}", cell(&pair[0]));
        }
        for pair in variant["headers"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  {}: {}", cell(&pair[0]), cell(&pair[1]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["a", "long header"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), "y".into()],
            ],
        );
        assert_eq!(text, "a          long header\nwide cell  x\nb          y\n");
    }

    #[test]
    fn urls_are_encoded_as_query_values() {
        assert_eq!(
            encode("http://a.test/x?y=1&z"),
            "http%3A%2F%2Fa.test%2Fx%3Fy%3D1%26z"
        );
    }
}
