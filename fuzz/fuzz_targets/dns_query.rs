//! The router's DNS answering never panics on any message, and whenever its common-query path
//! (hand-written, allocation-free) takes a message, its response is the one the general path
//! (hickory-proto) gives, as a client sees it.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shoal::router::config::RouterConfig;
use shoal::router::dns::Zone;
use shoal::router::map::Map;

/// examples/route.toml with the MaxMind test databases, and an IPv6 address for one node.
fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("examples/route.toml"))
            .unwrap()
            .replace(
                "../shared/testdata/geoip",
                &root.join("../shared/testdata/geoip").to_string_lossy(),
            )
            .replace(r#"["127.0.0.13"]"#, r#"["127.0.0.13", "2001:db8::13"]"#);
        let config: RouterConfig =
            shoal::config::parse_toml(&text, Path::new("route.toml")).unwrap();
        Zone::new(&config.dns, Map::build(&config, None)).unwrap()
    })
}

fuzz_target!(|message: &[u8]| {
    let zone = zone();
    let source = "192.0.2.1".parse().unwrap();
    let _ = zone.answer(message, source);
    if let Err(difference) = zone.check_common_path(message, source) {
        panic!("{difference}");
    }
});
