//! The answers as text for people: tables and short summaries.

use std::fmt::Write as _;

use shoal_api::cache::{BanView, Inspection, ReportRow, TopUrl};
use shoal_api::node::{ReloadReport, Status};
use shoal_api::router::RouterStatus;
use shoal_api::stats::Stats;
use shoal_api::upstreams::{AdminState, PoolView};

/// Lines of columns padded to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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

/// Name–value lines, without a header.
fn fields(rows: &[Vec<String>]) -> String {
    let mut text = table(&["", ""], rows);
    text.drain(..text.find('\n').map_or(0, |end| end + 1));
    text
}

/// A list as `a, b`, or `-` for none.
fn listed<T: ToString>(items: &[T]) -> String {
    match items.is_empty() {
        true => "-".into(),
        false => items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn or_dash(text: Option<&str>) -> String {
    text.unwrap_or("-").to_owned()
}

/// `GET /status`.
pub fn status(status: &Status) -> String {
    let mut rows = vec![
        vec!["version".into(), status.version.clone()],
        vec!["uptime".into(), format!("{} s", status.uptime_seconds)],
        vec!["listen".into(), listed(&status.listen)],
        vec!["listen tls".into(), listed(&status.listen_tls)],
        vec!["workers".into(), status.workers.to_string()],
        vec!["requests".into(), status.requests.to_string()],
        vec![
            "fetches in flight".into(),
            status.fetches_in_flight.to_string(),
        ],
        vec![
            "config generation".into(),
            status.config_generation.to_string(),
        ],
    ];
    if let Some(error) = status.last_reload.as_ref().and_then(|r| r.error.as_ref()) {
        rows.push(vec!["last reload".into(), format!("refused: {error}")]);
    }
    if let Some(cluster) = &status.cluster {
        rows.push(vec![
            "cluster".into(),
            format!("this node {} of {} peers", cluster.this_node, cluster.peers),
        ]);
    }
    fields(&rows)
}

/// `GET /stats`.
pub fn stats(stats: &Stats) -> String {
    let mut rows: Vec<Vec<String>> = stats
        .counters
        .iter()
        .map(|(name, value)| vec![name.clone(), value.to_string()])
        .collect();
    let store = &stats.store;
    for (field, value) in [
        ("entries", store.entries),
        ("bytes", store.bytes),
        ("capacity", store.capacity),
        ("evictions", store.evictions),
    ] {
        rows.push(vec![format!("store.{field}"), value.to_string()]);
    }
    if let Some(disk) = &stats.disk {
        for (field, value) in [
            ("entries", disk.entries),
            ("bytes", disk.bytes),
            ("capacity", disk.capacity),
            ("hits", disk.hits),
            ("objects_written", disk.objects_written),
            ("corrupt", disk.corrupt),
            ("read_timeouts", disk.read_timeouts),
        ] {
            rows.push(vec![format!("disk.{field}"), value.to_string()]);
        }
    }
    if let Some(ratio) = stats.hit_ratio {
        rows.push(vec!["hit ratio".into(), format!("{:.1}%", ratio * 100.0)]);
    }
    table(&["counter", "value"], &rows)
}

/// Every counter with its rate since `previous`, `seconds` ago.
pub fn rates(stats: &Stats, previous: Option<&Stats>, seconds: f64) -> String {
    let rows: Vec<Vec<String>> = stats
        .counters
        .iter()
        .map(|(name, &now)| {
            let before = previous
                .and_then(|previous| previous.counters.get(name).copied())
                .unwrap_or(now);
            let rate = now.saturating_sub(before) as f64 / seconds;
            vec![name.clone(), now.to_string(), format!("{rate:.1}/s")]
        })
        .collect();
    table(&["counter", "value", "rate"], &rows)
}

/// `GET /upstreams`.
pub fn upstreams(pools: &[PoolView]) -> String {
    let mut rows = Vec::new();
    for pool in pools {
        for host in &pool.hosts {
            rows.push(vec![
                pool.pool.clone(),
                name_of(&pool.policy),
                host.host.clone(),
                host.state.clone(),
                name_of(&host.admin),
                host.in_flight.to_string(),
                or_dash(host.last_check.as_ref().map(|check| check.detail.as_str())),
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

/// A unit enum's name as the API writes it.
fn name_of(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "-".into(),
    }
}

/// `POST /upstreams/state`.
pub fn state_change(host: &str, pool: &str, state: AdminState, previous: AdminState) -> String {
    format!(
        "{host} in {pool}: {} (was {})\n",
        name_of(&state),
        name_of(&previous)
    )
}

/// `GET /cache/inspect`.
pub fn inspection(inspection: &Inspection) -> String {
    let mut out = format!(
        "{}  key {}{}\n",
        inspection.url,
        inspection.key,
        match inspection.fetch_in_flight {
            true => "  (fetch in flight)",
            false => "",
        }
    );
    if inspection.variants.is_empty() {
        out.push_str("not cached\n");
    }
    for variant in &inspection.variants {
        let freshness = match variant.fresh_for_seconds {
            left if left >= 0 => format!("fresh for {left} s"),
            over => format!("stale for {} s", over.unsigned_abs()),
        };
        let _ = writeln!(
            out,
            "\n{} in {}: {} bytes, age {} s, {freshness}, {}",
            variant.status,
            variant.tiers.join("+"),
            variant.bytes,
            variant.age_seconds,
            variant.state
        );
        // The request values this variant was stored for, one per field `Vary` names.
        for (name, value) in &variant.vary {
            let value = value.as_deref().unwrap_or("(absent)");
            let _ = writeln!(out, "  for {name}: {value}");
        }
        for (name, value) in &variant.headers {
            let _ = writeln!(out, "  {name}: {value}");
        }
    }
    out
}

/// `GET /bans`.
pub fn bans(bans: &[BanView]) -> String {
    let rows: Vec<Vec<String>> = bans
        .iter()
        .map(|ban| vec![ban.created.to_string(), ban.kind.clone(), ban.value.clone()])
        .collect();
    table(&["created (ms)", "kind", "value"], &rows)
}

/// A router's `GET /status`.
pub fn nodes(status: &RouterStatus) -> String {
    let rows: Vec<Vec<String>> = status
        .nodes
        .iter()
        .map(|node| {
            vec![
                node.name.clone(),
                listed(&node.addresses),
                node.weight.to_string(),
                match node.up {
                    true => "up".into(),
                    false => "down".into(),
                },
                or_dash(node.last_check.as_deref()),
            ]
        })
        .collect();
    let mut text = table(
        &["node", "addresses", "weight", "state", "last check"],
        &rows,
    );
    if status.failing_open {
        text.push_str("failing open: no node of some clients' rules is up\n");
    }
    text
}

/// `POST /reload`.
pub fn reload(report: &ReloadReport) -> String {
    let list = |names: &[String]| match names.is_empty() {
        true => "nothing".to_owned(),
        false => names.join(", "),
    };
    let mut text = format!(
        "reloaded: configuration generation {}; changed: {}\n",
        report.generation,
        list(&report.changed)
    );
    if !report.needs_restart.is_empty() {
        let _ = writeln!(
            text,
            "not applied until a restart: {}",
            list(&report.needs_restart)
        );
    }
    text
}

/// `GET /top-urls`.
pub fn top_urls(rows: &[TopUrl]) -> String {
    let rows = rows.iter().map(|row| (&row.url, row.requests, row.bytes));
    counts(rows, "url")
}

/// `GET /report`, by `by`.
pub fn report(rows: &[ReportRow], by: &str) -> String {
    counts(
        rows.iter().map(|row| (&row.key, row.requests, row.bytes)),
        by,
    )
}

/// Rows of a name (under `heading`) with its requests and bytes.
fn counts<'a>(rows: impl Iterator<Item = (&'a String, u64, u64)>, heading: &str) -> String {
    let rows: Vec<Vec<String>> = rows
        .map(|(name, requests, bytes)| vec![name.clone(), requests.to_string(), bytes.to_string()])
        .collect();
    table(&[heading, "requests", "bytes"], &rows)
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
}
