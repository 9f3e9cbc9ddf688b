//! The most requested URLs, for the dashboard and `GET /top-urls`: a Space-Saving table per
//! worker thread (counting never contends across cores), merged when read. Each table holds at
//! most `CAPACITY` URLs, so memory is bounded whatever the traffic: a URL not in a full table
//! takes the place of the least counted one and inherits its count (the algorithm's
//! over-estimate, shown as `error`), so the hot URLs stay and the long tail churns.
//!
//! Written here because the sketch is forty lines and the crates that offer one bring far more.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cache::{CacheKey, KeyMap};

/// URLs counted per worker.
const CAPACITY: usize = 256;
/// A URL not in a full table replaces the least counted one only once in this many tries: the
/// replacement scans the table, and the long tail of a CDN's URLs would otherwise scan it on
/// nearly every request. Hot URLs are already in.
const REPLACE_ONE_IN: u32 = 8;
/// Longest URL kept (longer ones are cut).
const MAX_URL: usize = 512;

pub use shoal_api::cache::TopUrl;

/// The per-worker tables.
pub struct TopUrls {
    tables: Vec<Mutex<Table>>,
}

#[derive(Default)]
struct Table {
    entries: KeyMap<Counted>,
    misses: u32,
}

struct Counted {
    url: Box<str>,
    requests: u64,
    bytes: u64,
    error: u64,
}

impl TopUrls {
    /// Tables for `workers` worker threads.
    pub fn new(workers: usize) -> TopUrls {
        TopUrls {
            tables: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        let table = &self.tables[super::worker_index() % self.tables.len()];
        table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a request for `key`; `url` is called only when the URL enters the table.
    pub fn record(&self, key: CacheKey, url: impl FnOnce() -> String) {
        let mut table = self.table();
        if let Some(counted) = table.entries.get_mut(&key) {
            counted.requests += 1;
            return;
        }
        let mut inherited = 0;
        if table.entries.len() >= CAPACITY {
            table.misses = table.misses.wrapping_add(1);
            if !table.misses.is_multiple_of(REPLACE_ONE_IN) {
                return;
            }
            let least = table
                .entries
                .iter()
                .min_by_key(|(_, counted)| counted.requests)
                .map(|(key, counted)| (*key, counted.requests));
            if let Some((least, requests)) = least {
                table.entries.remove(&least);
                inherited = requests;
            }
        }
        let mut url = url();
        if url.len() > MAX_URL {
            let mut end = MAX_URL;
            while !url.is_char_boundary(end) {
                end -= 1;
            }
            url.truncate(end);
        }
        table.entries.insert(
            key,
            Counted {
                url: url.into_boxed_str(),
                requests: inherited + 1,
                bytes: 0,
                error: inherited,
            },
        );
    }

    /// Adds the body bytes of a response for `key` (if it is counted).
    pub fn add_bytes(&self, key: CacheKey, bytes: u64) {
        if let Some(counted) = self.table().entries.get_mut(&key) {
            counted.bytes += bytes;
        }
    }

    /// The `top` URLs by requests, every worker's counts summed.
    pub fn top(&self, top: usize) -> Vec<TopUrl> {
        let mut merged: HashMap<CacheKey, TopUrl> = HashMap::new();
        for table in &self.tables {
            let table = table
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (key, counted) in &table.entries {
                let entry = merged.entry(*key).or_insert_with(|| TopUrl {
                    url: counted.url.to_string(),
                    requests: 0,
                    bytes: 0,
                    error: 0,
                });
                entry.requests += counted.requests;
                entry.bytes += counted.bytes;
                entry.error += counted.error;
            }
        }
        let mut rows: Vec<TopUrl> = merged.into_values().collect();
        rows.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then(b.bytes.cmp(&a.bytes))
                .then(a.url.cmp(&b.url))
        });
        rows.truncate(top);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> CacheKey {
        CacheKey(u128::from(n))
    }

    #[test]
    fn hot_urls_stay_on_top_of_a_long_tail() {
        let top = TopUrls::new(1);
        for round in 0..2000u64 {
            top.record(key(1), || "http://a/hot".into());
            top.add_bytes(key(1), 10);
            if round % 2 == 0 {
                top.record(key(2), || "http://a/warm".into());
            }
            // A URL seen once, every time a new one: more than the table holds.
            top.record(key(1000 + round), || format!("http://a/tail/{round}"));
        }
        let rows = top.top(3);
        assert_eq!(rows[0].url, "http://a/hot");
        assert_eq!(rows[0].requests, 2000);
        assert_eq!(rows[0].bytes, 20_000);
        assert_eq!(rows[0].error, 0);
        assert_eq!(rows[1].url, "http://a/warm");
        assert_eq!(rows[1].requests, 1000);
        assert!(rows[2].requests <= 10, "the tail stays small: {rows:?}");
        assert!(top.table().entries.len() <= CAPACITY);
    }
}
