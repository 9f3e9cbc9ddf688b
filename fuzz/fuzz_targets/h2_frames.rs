//! The HTTP/2 frame tracker behind the connection timeouts never panics, and ends in the same
//! place however the input is cut into reads (the first byte of the input picks the cut).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::proxy::h2::frames::FrameTracker;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let mut whole = FrameTracker::new();
    whole.feed(input);
    let mut split = FrameTracker::new();
    for part in input.chunks(usize::from(cut).max(1)) {
        split.feed(part);
        let _ = (split.waiting(), split.handshake_complete());
    }
    assert_eq!(split, whole);
});
