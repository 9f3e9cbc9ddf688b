//! `Range` resolution must never panic, and what it accepts must be servable: every range
//! non-empty, inside the representation, at most `MAX_RANGES` of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::cache::range::{resolve, RangeRequest, MAX_RANGES};

fuzz_target!(|input: (&str, u64)| {
    let (header, length) = input;
    if let RangeRequest::Parts(parts) = resolve(Some(header), length) {
        assert!(!parts.is_empty() && parts.len() <= MAX_RANGES, "{header:?}");
        for part in parts {
            assert!(part.start < part.end && part.end <= length, "{header:?} {length}: {part:?}");
        }
    }
});
