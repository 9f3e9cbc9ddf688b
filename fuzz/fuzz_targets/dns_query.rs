//! The router's DNS answering never panics on any message, and whenever its common-query path
//! (hand-written, allocation-free) takes a message, its response is the one the general path
//! (hickory-proto) gives, as a client sees it.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shoal::router::dns::Zone;

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| Zone::example(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap())
}

fuzz_target!(|message: &[u8]| {
    let zone = zone();
    let source = "192.0.2.1".parse().unwrap();
    let _ = zone.answer(message, source);
    if let Err(difference) = zone.check_common_path(message, source) {
        panic!("{difference}");
    }
});
