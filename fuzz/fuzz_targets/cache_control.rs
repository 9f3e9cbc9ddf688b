//! `Cache-Control` parsing must never panic on any field values, repeated or not, and the
//! freshness it derives must be usable arithmetic (no overflow panics downstream).
#![no_main]

use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL};
use libfuzzer_sys::fuzz_target;
use shoal::cache::CacheControl;

fuzz_target!(|values: Vec<&[u8]>| {
    let mut headers = HeaderMap::new();
    for value in values.into_iter().take(8) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(CACHE_CONTROL, value);
        }
    }
    let parsed = CacheControl::parse(&headers);
    let _ = parsed.forbids_stale();
    let _ = format!("{parsed:?}");
});
