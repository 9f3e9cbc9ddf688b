//! Config parsing must never panic on any text; a refusal always names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::config::Config;

fuzz_target!(|text: &str| {
    if let Err(error) = Config::parse(text, std::path::Path::new("fuzz.toml")) {
        assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
    }
});
