//! A file host's path resolution must never panic, and what it accepts must stay under the
//! directory: only plain names, none of them a dot segment, none hidden unless dotfiles are
//! allowed. `Accept-Encoding` reading must never panic either.
#![no_main]

use std::path::Component;

use libfuzzer_sys::fuzz_target;
use shoal::upstream::files::encoding::accepted;
use shoal::upstream::files::path::{relative, Allowed};

fuzz_target!(|input: (&str, bool, &[u8])| {
    let (request_path, dotfiles, accept_encoding) = input;
    let allowed = Allowed { dotfiles, symlinks: false };
    if let Ok(path) = relative(request_path, allowed) {
        for component in path.components() {
            let Component::Normal(name) = component else {
                panic!("{request_path:?} gave {path:?}");
            };
            let name = name.to_string_lossy();
            assert!(!name.contains('/') && !name.contains('\0'), "{request_path:?}");
            assert!(dotfiles || !name.starts_with('.') || name == ".well-known", "{request_path:?}");
        }
    }
    if let Ok(value) = http::HeaderValue::from_bytes(accept_encoding) {
        let _ = accepted(Some(&value));
    }
});
