//! The HTTP/1 request-head parser must never panic, and whatever it accepts must be
//! unambiguous: re-parsing the remaining bytes must not see a different request.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal::wire::http1::{parse_head, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_request_line: 8192, max_header_bytes: 65536, max_headers: 64 };
    let mut buffer = BytesMut::from(data);
    // Parse as many pipelined heads as the input holds; stop at the first error or gap.
    for _ in 0..16 {
        match parse_head(&mut buffer, &limits) {
            Ok(Some(_head)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
});
