//! From a request's path to a file under a host's directory, refusing every way out of it:
//! `..` (also percent-encoded), encoded slashes and NULs, names that start with a dot (unless
//! allowed), and symbolic links that lead outside the directory (unless allowed).
//!
//! The proxy has already put the path in its normal form (`cache::key::normalize_path`), so a
//! dot segment here means someone went around it; this module does not rely on that and checks
//! the decoded path itself.

use std::path::{Path, PathBuf};

/// What the temporary files of uploads have in their names (`.NAME.shoal-upload-…`).
pub const UPLOAD_MARK: &str = ".shoal-upload-";

/// Why a path is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A path that tries to leave the directory or cannot name a file (400).
    Invalid(&'static str),
    /// A name that is hidden (a dotfile, or a link out of the directory): answered as if it did
    /// not exist (404), so its existence is not told.
    Hidden(&'static str),
}

impl Refused {
    /// Why, for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Invalid(reason) | Refused::Hidden(reason) => reason,
        }
    }
}

/// What the pool allows beyond plain files under the directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Names starting with a dot (`.well-known` is always allowed: RFC 8615).
    pub dotfiles: bool,
    /// Symbolic links whose target is outside the directory.
    pub symlinks: bool,
}

/// The relative path a request path names: percent-decoded once, split into its segments,
/// each checked. `/` and an empty path name the directory itself (`""`).
pub fn relative(request_path: &str, allowed: Allowed) -> Result<PathBuf, Refused> {
    let raw = request_path.strip_prefix('/').unwrap_or(request_path);
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(Refused::Invalid("an encoded slash in the path"));
    }
    let decoded = percent_encoding::percent_decode_str(raw).collect::<Vec<u8>>();
    let decoded =
        String::from_utf8(decoded).map_err(|_| Refused::Invalid("a path that is not UTF-8"))?;
    if decoded.contains('\0') {
        return Err(Refused::Invalid("a NUL in the path"));
    }
    let mut relative = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            // `a//b` and a trailing `/` (a directory's index is the caller's business).
            "" => continue,
            "." | ".." => return Err(Refused::Invalid("a dot segment in the path")),
            _ if segment.starts_with('.') && !allowed.dotfiles && segment != ".well-known" => {
                return Err(Refused::Hidden("a name that starts with a dot"))
            }
            // An upload being written: never read (half a file) nor written, dotfiles or not
            // (in any case: some file systems fold it).
            _ if is_upload(segment) => return Err(Refused::Hidden("an upload in progress")),
            _ => relative.push(segment),
        }
    }
    Ok(relative)
}

/// Whether `name` is an upload's temporary file.
fn is_upload(name: &str) -> bool {
    name.starts_with('.') && name.to_ascii_lowercase().contains(UPLOAD_MARK)
}

/// `candidate` (an existing path under `root`) with its links resolved, if that stays inside
/// `root` (itself resolved: a root that is a link, as in symlink-swapped deployments, is fine),
/// or anywhere when links out are allowed. Blocking.
pub fn confined(
    root: &Path,
    candidate: &Path,
    allowed: Allowed,
) -> std::io::Result<Result<PathBuf, Refused>> {
    let real = candidate.canonicalize()?;
    if allowed.symlinks {
        return Ok(Ok(real));
    }
    let root = root.canonicalize()?;
    let Ok(inside) = real.strip_prefix(&root) else {
        return Ok(Err(Refused::Hidden(
            "a link that leads out of the directory",
        )));
    };
    // What a link leads to is held to the rules of names too: `pub.txt -> .env` is `.env`.
    for name in inside.iter().map(|name| name.to_string_lossy()) {
        if is_upload(&name) {
            return Ok(Err(Refused::Hidden("an upload in progress")));
        }
        if name.starts_with('.') && !allowed.dotfiles && name != ".well-known" {
            return Ok(Err(Refused::Hidden(
                "a link to a name that starts with a dot",
            )));
        }
    }
    Ok(Ok(real))
}

/// For a file about to be written: the nearest existing ancestor of `candidate` must be inside
/// `root` (the directories still missing will be made under it). Blocking.
pub fn confined_parent(
    root: &Path,
    candidate: &Path,
    allowed: Allowed,
) -> std::io::Result<Result<(), Refused>> {
    let mut ancestor = candidate.parent();
    while let Some(dir) = ancestor {
        match dir.symlink_metadata() {
            Ok(_) => return Ok(confined(root, dir, allowed)?.map(|_| ())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => ancestor = dir.parent(),
            Err(error) => return Err(error),
        }
    }
    Ok(Err(Refused::Invalid("no directory to write in")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused_and_plain_names_kept() {
        let plain = Allowed::default();
        assert_eq!(relative("/a/b.txt", plain), Ok(PathBuf::from("a/b.txt")));
        assert_eq!(relative("/", plain), Ok(PathBuf::new()));
        assert_eq!(relative("/a//b/", plain), Ok(PathBuf::from("a/b")));
        assert_eq!(relative("/caf%C3%A9", plain), Ok(PathBuf::from("café")));
        assert_eq!(relative("/%252e%252e", plain), Ok(PathBuf::from("%2e%2e")));
        assert_eq!(
            relative("/.well-known/x", plain),
            Ok(PathBuf::from(".well-known/x"))
        );
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/a/%2E%2E",
            "/a/./b",
            "/a%2fb",
            "/a%5Cb",
            "/a%00",
            "/%ff",
        ] {
            assert!(
                matches!(relative(bad, plain), Err(Refused::Invalid(_))),
                "{bad} was accepted"
            );
        }
        assert!(matches!(
            relative("/.git/config", plain),
            Err(Refused::Hidden(_))
        ));
        assert!(matches!(
            relative("/a/.env", plain),
            Err(Refused::Hidden(_))
        ));
        let dotfiles = Allowed {
            dotfiles: true,
            symlinks: false,
        };
        assert_eq!(relative("/a/.env", dotfiles), Ok(PathBuf::from("a/.env")));
        assert!(
            relative("/a/..", dotfiles).is_err(),
            "`..` with dotfiles allowed"
        );
    }

    #[test]
    fn links_are_held_to_the_rules_of_names_and_uploads_are_never_served() {
        let root = std::env::temp_dir().join(format!("shoal-path-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(".env"), b"SECRET=1").unwrap();
        std::fs::write(root.join("ok.txt"), b"ok").unwrap();
        std::os::unix::fs::symlink(root.join(".env"), root.join("pub.txt")).unwrap();
        std::os::unix::fs::symlink(root.join("ok.txt"), root.join("alias.txt")).unwrap();
        let plain = Allowed::default();
        let confined = |name: &str| confined(&root, &root.join(name), plain).unwrap();
        assert!(
            confined("alias.txt").is_ok(),
            "a link to a plain name inside"
        );
        assert!(
            confined("pub.txt").is_err(),
            "a link to a dotfile is the dotfile"
        );
        let dotfiles = Allowed {
            dotfiles: true,
            symlinks: false,
        };
        assert!(super::confined(&root, &root.join("pub.txt"), dotfiles)
            .unwrap()
            .is_ok());
        for upload in ["/.a.txt.shoal-upload-1-2", "/d/.A.TXT.SHOAL-UPLOAD-1-2"] {
            assert!(relative(upload, dotfiles).is_err(), "{upload}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
