//! What an origin's answer can make the node do must never panic and must stay in bounds:
//! a reproxy instruction (`X-Accel-Redirect`, `X-Reproxy-URL`, `X-Reproxy-Expected-Size`) is
//! either refused or names an absolute path without dot segments, or at most 16 http(s) URLs;
//! a bucket's object key (from a request path) is refused or has no dot segments and nothing
//! unescaped but what S3's canonical form leaves so.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::proxy::reproxy::{take, Instruction};
use shoal::upstream::s3::object_key;

fuzz_target!(|input: (&[u8], &[u8], &[u8], &str, bool)| {
    let (accel, urls, size, path, follow) = input;
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("x-accel-redirect", accel),
        ("x-reproxy-url", urls),
        ("x-reproxy-expected-size", size),
    ] {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            if !value.is_empty() {
                headers.insert(name, value);
            }
        }
    }
    let (request, ()) = http::Request::new(()).into_parts();
    match take(&mut headers, follow, &request) {
        Some(Instruction::Internal(target)) => {
            assert!(target.path().starts_with('/'), "{target}");
            let decoded = percent_encoding::percent_decode_str(target.path()).decode_utf8_lossy();
            assert!(
                !decoded.split(['/', '\\']).any(|s| s == "." || s == ".."),
                "{target}"
            );
        }
        Some(Instruction::Urls(targets)) => {
            assert!(!targets.urls.is_empty() && targets.urls.len() <= 16);
            for (url, _) in &targets.urls {
                assert!(!url.is_directory() && !url.host.is_empty(), "{url:?}");
            }
        }
        _ => {}
    }
    assert!(!headers.contains_key("x-accel-redirect") && !headers.contains_key("x-reproxy-url"));
    if let Some(key) = object_key(path) {
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~/%".contains(&b)), "{key}");
        let decoded = percent_encoding::percent_decode_str(&key).collect::<Vec<u8>>();
        assert!(!decoded.split(|&b| b == b'/').any(|s| s == b"." || s == b".."), "{key}");
    }
});
