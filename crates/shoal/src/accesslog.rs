//! The access log: one line per request, in JSON lines or the combined log format. Requests
//! only queue a small record (never blocking: when the bounded queue is full the line is dropped
//! and counted); a writer thread formats and writes, flushing when the queue goes quiet, and
//! reopens the file after SIGUSR1 (log rotation).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::CacheStatus;
use crate::config::{LogConfig, LogFormat};

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
    /// `User-Agent`, for the combined format.
    pub user_agent: Option<String>,
    /// `Referer`, for the combined format.
    pub referer: Option<String>,
}

/// The access log.
pub struct AccessLog {
    queue: SyncSender<Entry>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Opens the configured log file and starts its writer; `None` when logging is off. A file
    /// that cannot be opened is an error at start.
    pub fn open(config: &LogConfig) -> std::io::Result<Option<AccessLog>> {
        let Some(path) = config.access.clone() else {
            return Ok(None);
        };
        let file = open_file(&path)?;
        let (queue, entries) = mpsc::sync_channel(config.queue.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            path,
            file: BufWriter::with_capacity(64 << 10, file),
            format: config.format,
            written: Arc::clone(&written),
            reopen: Arc::clone(&reopen),
        };
        std::thread::Builder::new()
            .name("shoal-access-log".into())
            .spawn(move || writer.run(&entries))?;
        Ok(Some(AccessLog {
            queue,
            dropped: AtomicU64::new(0),
            written,
            reopen,
        }))
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

fn open_file(path: &PathBuf) -> std::io::Result<File> {
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
    path: PathBuf,
    file: BufWriter<File>,
    format: LogFormat,
    written: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, entries: &Receiver<Entry>) {
        let mut line = String::with_capacity(512);
        loop {
            match entries.recv_timeout(Duration::from_millis(100)) {
                Ok(entry) => {
                    line.clear();
                    format_entry(&mut line, &entry, self.format);
                    if self.file.write_all(line.as_bytes()).is_ok() {
                        self.written.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.file.flush();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.file.flush();
                    return;
                }
            }
            if self.reopen.swap(false, Ordering::AcqRel) {
                let _ = self.file.flush();
                match open_file(&self.path) {
                    Ok(file) => self.file = BufWriter::with_capacity(64 << 10, file),
                    Err(error) => {
                        tracing::error!(%error, "cannot reopen the access log; still writing to the old file")
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
                "time": httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(entry.time)),
                "client": entry.client.to_string(),
                "method": entry.method.as_str(),
                "host": entry.host,
                "target": entry.target,
                "protocol": version,
                "status": entry.status,
                "bytes": entry.bytes,
                "cache": entry.cache.as_str(),
                "duration_ms": entry.micros as f64 / 1000.0,
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
            let _ = writeln!(
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
        }
    }
}

/// `10/Oct/2000:13:55:36 +0000`, the combined format's time, in UTC.
fn chrono_like(millis: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
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
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
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
            user_agent: Some("curl/8".into()),
            referer: None,
        }
    }

    #[test]
    fn combined_format() {
        let mut line = String::new();
        format_entry(&mut line, &entry(), LogFormat::Combined);
        assert_eq!(
            line,
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=1 HTTP/1.1\" 200 1234 \"-\" \"curl/8\"\n"
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
        assert_eq!(value["time"], "Tue, 10 Oct 2000 13:55:36 GMT");
    }
}
