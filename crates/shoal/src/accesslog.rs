//! The access log and the traffic report: one line per request, in JSON lines or the combined
//! log format, and requests and bytes per client country and AS number (from MaxMind
//! databases). Requests only queue a small record (never blocking: when the bounded queue is
//! full the record is dropped and counted); a writer thread looks the client up, counts,
//! formats and writes, flushing when the queue goes quiet, and reopens the file after SIGUSR1
//! (log rotation).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cache::CacheStatus;
use crate::config::{LogConfig, LogFormat};
use crate::geo::Geo;

/// One request, as logged.
#[derive(Debug)]
pub struct Entry {
    /// When the request arrived, in milliseconds since the epoch.
    pub time: u64,
    /// The client's address.
    pub client: IpAddr,
    /// Method.
    pub method: http::Method,
    /// `Host` (or the target's authority).
    pub host: String,
    /// Path and query.
    pub target: String,
    /// The protocol version.
    pub version: http::Version,
    /// Status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// How the cache answered.
    pub cache: CacheStatus,
    /// Time from the request head to the end of the response, in microseconds.
    pub micros: u64,
    /// The upstream host (`host:port`) that answered this request's origin fetch, if any.
    pub upstream: Option<std::sync::Arc<str>>,
    /// That fetch's time from sending the request to the response head, in microseconds.
    pub origin_micros: Option<u64>,
    /// `User-Agent`, for the combined format.
    pub user_agent: Option<String>,
    /// `Referer`, for the combined format.
    pub referer: Option<String>,
    /// The client's country (ISO code), filled in by the writer.
    pub country: Option<String>,
    /// The client's AS number, filled in by the writer.
    pub asn: Option<u32>,
}

/// Most distinct countries or AS numbers counted; the rest are counted as "other".
const MAX_REPORT_KEYS: usize = 4096;

/// Requests and bytes per client country and per AS number.
#[derive(Debug, Default)]
pub struct Traffic {
    /// ISO country code (or "unknown", "other") → (requests, bytes).
    pub countries: HashMap<String, (u64, u64)>,
    /// `AS` and the number (or "unknown", "other") → (requests, bytes).
    pub asns: HashMap<String, (u64, u64)>,
}

fn count(table: &mut HashMap<String, (u64, u64)>, key: String, bytes: u64) {
    let key = if table.len() >= MAX_REPORT_KEYS && !table.contains_key(&key) {
        "other".to_owned()
    } else {
        key
    };
    let counts = table.entry(key).or_default();
    counts.0 += 1;
    counts.1 += bytes;
}

/// The access log and traffic report.
pub struct AccessLog {
    queue: SyncSender<Entry>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
    traffic: Arc<Mutex<Traffic>>,
}

impl AccessLog {
    /// Opens the configured log file and starts its writer; `None` when logging is off. A file
    /// that cannot be opened is an error. The traffic report of `previous` (the log a reload
    /// replaces) carries on.
    pub fn open(
        config: &LogConfig,
        previous: Option<&AccessLog>,
    ) -> std::io::Result<Option<AccessLog>> {
        let geo = Geo::open(config.geoip_country.as_deref(), config.geoip_asn.as_deref())
            .map_err(std::io::Error::other)?;
        if config.access.is_none() && geo.is_empty() {
            return Ok(None);
        }
        let file = match &config.access {
            Some(path) => Some(BufWriter::with_capacity(64 << 10, open_file(path)?)),
            None => None,
        };
        let (queue, entries) = mpsc::sync_channel(config.queue.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let traffic = previous.map_or_else(
            || Arc::new(Mutex::new(Traffic::default())),
            |previous| Arc::clone(&previous.traffic),
        );
        let writer = Writer {
            path: config.access.clone(),
            file,
            format: config.format,
            written: Arc::clone(&written),
            reopen: Arc::clone(&reopen),
            geo,
            traffic: Arc::clone(&traffic),
        };
        std::thread::Builder::new()
            .name("shoal-access-log".into())
            .spawn(move || writer.run(&entries))?;
        Ok(Some(AccessLog {
            queue,
            dropped: AtomicU64::new(0),
            written,
            reopen,
            traffic,
        }))
    }

    /// The `top` countries or AS numbers by bytes: (key, requests, bytes).
    pub fn report(&self, by_asn: bool, top: usize) -> Vec<(String, u64, u64)> {
        let traffic = self.traffic.lock().unwrap_or_else(|p| p.into_inner());
        let table = if by_asn {
            &traffic.asns
        } else {
            &traffic.countries
        };
        let mut rows: Vec<(String, u64, u64)> = table
            .iter()
            .map(|(key, (requests, bytes))| (key.clone(), *requests, *bytes))
            .collect();
        rows.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
        rows.truncate(top);
        rows
    }

    /// Queues a line; drops it (and counts it) when the writer is behind.
    pub fn record(&self, entry: Entry) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(entry)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Asks the writer to reopen the file (after it was rotated).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines written.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

fn open_file(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot open the access log {}: {error}", path.display()),
            )
        })
}

struct Writer {
    path: Option<PathBuf>,
    file: Option<BufWriter<File>>,
    format: LogFormat,
    written: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
    geo: Geo,
    traffic: Arc<Mutex<Traffic>>,
}

impl Writer {
    fn run(mut self, entries: &Receiver<Entry>) {
        let mut line = String::with_capacity(512);
        loop {
            match entries.recv_timeout(Duration::from_millis(100)) {
                Ok(mut entry) => {
                    entry.country = self.geo.country(entry.client);
                    entry.asn = self.geo.asn(entry.client);
                    {
                        let mut traffic = self.traffic.lock().unwrap_or_else(|p| p.into_inner());
                        let country = entry.country.clone().unwrap_or_else(|| "unknown".into());
                        count(&mut traffic.countries, country, entry.bytes);
                        let asn = entry
                            .asn
                            .map_or_else(|| "unknown".into(), |asn| format!("AS{asn}"));
                        count(&mut traffic.asns, asn, entry.bytes);
                    }
                    if let Some(file) = &mut self.file {
                        line.clear();
                        format_entry(&mut line, &entry, self.format);
                        if file.write_all(line.as_bytes()).is_ok() {
                            self.written.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(file) = &mut self.file {
                        let _ = file.flush();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if let Some(file) = &mut self.file {
                        let _ = file.flush();
                    }
                    return;
                }
            }
            if self.reopen.swap(false, Ordering::AcqRel) {
                if let (Some(file), Some(path)) = (&mut self.file, &self.path) {
                    let _ = file.flush();
                    match open_file(path) {
                        Ok(reopened) => *file = BufWriter::with_capacity(64 << 10, reopened),
                        Err(error) => {
                            tracing::error!(%error, "cannot reopen the access log; still writing to the old file")
                        }
                    }
                }
            }
        }
    }
}

/// Formats one line (with its newline).
pub fn format_entry(out: &mut String, entry: &Entry, format: LogFormat) {
    use std::fmt::Write as _;
    let version = match entry.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    match format {
        LogFormat::Json => {
            let line = serde_json::json!({
                "time": rfc3339_millis(entry.time),
                "client": entry.client.to_string(),
                "method": entry.method.as_str(),
                "host": entry.host,
                "target": entry.target,
                "protocol": version,
                "status": entry.status,
                "bytes": entry.bytes,
                "cache": entry.cache.as_str(),
                "duration_ms": entry.micros as f64 / 1000.0,
                "upstream": entry.upstream.as_deref(),
                "origin_ms": entry.origin_micros.map(|micros| micros as f64 / 1000.0),
                "country": entry.country,
                "asn": entry.asn,
            });
            let _ = writeln!(out, "{line}");
        }
        LogFormat::Combined => {
            let time = chrono_like(entry.time);
            let quoted = |value: &Option<String>| {
                value
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |v| v.replace('"', "\\\""))
            };
            let _ = write!(
                out,
                "{} - - [{time}] \"{} {} {version}\" {} {} \"{}\" \"{}\"",
                entry.client,
                entry.method,
                entry.target.replace('"', "%22"),
                entry.status,
                entry.bytes,
                quoted(&entry.referer),
                quoted(&entry.user_agent),
            );
            // Shoal's fields follow the standard ones as key=value pairs, which log tools that
            // read the combined format skip and others can split on spaces.
            let _ = write!(
                out,
                " cache={} total_ms={:.3}",
                entry.cache.as_str(),
                entry.micros as f64 / 1000.0
            );
            if let (Some(upstream), Some(micros)) = (&entry.upstream, entry.origin_micros) {
                let _ = write!(
                    out,
                    " upstream={upstream} origin_ms={:.3}",
                    micros as f64 / 1000.0
                );
            }
            let _ = writeln!(
                out,
                " country={} asn={}",
                entry.country.as_deref().unwrap_or("-"),
                entry
                    .asn
                    .map_or_else(|| "-".to_owned(), |asn| asn.to_string())
            );
        }
    }
}

/// `10/Oct/2000:13:55:36 +0000`, the combined format's time, in UTC.
fn chrono_like(millis: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = CivilTime::of(millis);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        t.day,
        MONTHS[(t.month - 1) as usize],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

/// `2000-10-10T13:55:36.000Z`: RFC 3339 in UTC with milliseconds, the JSON log's time, as log
/// pipelines (Loki, Elasticsearch, Vector) parse it.
fn rfc3339_millis(millis: u64) -> String {
    let t = CivilTime::of(millis);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        millis % 1000
    )
}

/// A UTC date and time of day. Computed here, as httpdate does for its own format, rather than
/// with a calendar crate for two fixed formats.
struct CivilTime {
    year: i64,
    month: i64,
    day: i64,
    hour: u64,
    minute: u64,
    second: u64,
}

impl CivilTime {
    fn of(millis: u64) -> CivilTime {
        let seconds = millis / 1000;
        let (days, rest) = (seconds / 86_400, seconds % 86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        CivilTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rest / 3600,
            minute: rest % 3600 / 60,
            second: rest % 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: 971_186_136_000,
            client: "192.0.2.7".parse().unwrap(),
            method: http::Method::GET,
            host: "example.com".into(),
            target: "/a?b=1".into(),
            version: http::Version::HTTP_11,
            status: 200,
            bytes: 1234,
            cache: CacheStatus::Hit,
            micros: 1500,
            upstream: Some("127.0.0.1:8081".into()),
            origin_micros: Some(1250),
            user_agent: Some("curl/8".into()),
            referer: None,
            country: Some("GB".into()),
            asn: None,
        }
    }

    #[test]
    fn combined_format() {
        let mut line = String::new();
        format_entry(&mut line, &entry(), LogFormat::Combined);
        assert_eq!(
            line,
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=1 HTTP/1.1\" 200 1234 \"-\" \"curl/8\" \
             cache=HIT total_ms=1.500 upstream=127.0.0.1:8081 origin_ms=1.250 country=GB asn=-\n"
        );
    }

    #[test]
    fn json_lines() {
        let mut line = String::new();
        format_entry(&mut line, &entry(), LogFormat::Json);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["cache"], "HIT");
        assert_eq!(value["bytes"], 1234);
        assert_eq!(value["duration_ms"], 1.5);
        assert_eq!(value["time"], "2000-10-10T13:55:36.000Z");
        assert_eq!(value["country"], "GB");
        assert_eq!(value["upstream"], "127.0.0.1:8081");
        assert_eq!(value["origin_ms"], 1.25);
    }

    #[test]
    fn times_are_written_in_both_formats() {
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(chrono_like(951_782_400_123), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    }

    fn geoip_dir() -> PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/geoip")
    }

    #[test]
    fn the_report_counts_requests_and_bytes_by_country_and_network() {
        let dir = geoip_dir();
        let log = AccessLog::open(
            &LogConfig {
                geoip_country: Some(dir.join("country.mmdb")),
                geoip_asn: Some(dir.join("asn.mmdb")),
                ..LogConfig::default()
            },
            None,
        )
        .unwrap()
        .expect("on with a database");
        for (client, bytes) in [
            ("81.2.69.142", 100),
            ("81.2.69.150", 50),
            ("89.160.20.130", 400),
        ] {
            log.record(Entry {
                client: client.parse().unwrap(),
                bytes,
                ..entry()
            });
        }
        let mut report = Vec::new();
        for _ in 0..100 {
            report = log.report(false, 10);
            if report.iter().map(|row| row.1).sum::<u64>() == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            report,
            [("SE".to_owned(), 1, 400), ("GB".to_owned(), 2, 150)]
        );
        assert_eq!(
            log.report(true, 1),
            [("AS29518".to_owned(), 1, 400)],
            "the top one"
        );
    }

    #[test]
    fn the_test_databases_resolve_countries_and_networks() {
        let dir = geoip_dir();
        let geo = Geo::open(Some(&dir.join("country.mmdb")), Some(&dir.join("asn.mmdb"))).unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(geo.country(ip("81.2.69.142")).as_deref(), Some("GB"));
        assert_eq!(geo.country(ip("89.160.20.130")).as_deref(), Some("SE"));
        assert_eq!(geo.asn(ip("89.160.20.130")), Some(29518));
        assert_eq!(geo.asn(ip("81.2.69.142")), None);
        assert_eq!(geo.country(ip("127.0.0.1")), None);
    }
}
