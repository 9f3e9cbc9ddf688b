//! `Cache-Control` parsing, and the fields read with it for a response (`CDN-Cache-Control`,
//! `Surrogate-Control`, `Age`), must never panic on any field values, repeated or not, and the
//! freshness and age they give must be usable arithmetic (no overflow panics downstream).
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use shoal::cache::policy::Timing;
use shoal::cache::CacheControl;
use shoal::config::CacheConfig;

/// The fields the values go to, in turn.
const FIELDS: [&str; 4] = ["cache-control", "cdn-cache-control", "surrogate-control", "age"];

fuzz_target!(|values: Vec<&[u8]>| {
    let mut headers = HeaderMap::new();
    for (index, value) in values.into_iter().take(8).enumerate() {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(FIELDS[index % FIELDS.len()]), value);
        }
    }
    let parsed = CacheControl::parse(&headers);
    let _ = parsed.forbids_stale();
    let _ = format!("{parsed:?}");
    let governing = CacheControl::of_response(&headers, &CacheConfig::default());
    let _ = governing.forbids_stale();
    let timing = Timing::of_response(&headers, 1_000, 2_000);
    let _ = timing.current_age(3_000);
});
