//! The origin client's response-head parser must never panic on anything an origin sends, must
//! consume no more than it was given, and must give every header it accepts a valid value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal::upstream::client::parse_response_head;

fuzz_target!(|data: &[u8]| {
    let mut buffer = BytesMut::from(data);
    // Interim responses come before the final one: parse as many heads as the input holds.
    for _ in 0..8 {
        let before = buffer.len();
        match parse_response_head(&mut buffer) {
            Ok(Some(response)) => {
                assert!(buffer.len() < before, "a head was parsed from nothing");
                for value in response.headers().values() {
                    assert!(value.as_bytes().iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
});
