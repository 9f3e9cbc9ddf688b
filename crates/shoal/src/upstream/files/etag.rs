//! Entity tags made from a file's bytes, so that copies of one file on different nodes (other
//! inodes, other mtimes) have the same tag, and caches and clients do not fetch them again.
//! A file is hashed (XXH3-128) once per identity (device, inode, size, mtime) and the tag
//! remembered; an `.etag` sidecar (`NAME.etag` beside `NAME`) overrides it for sites that
//! compute their own.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use http::HeaderValue;

/// Tags remembered at most; past it, an arbitrary one is forgotten for each new one (a
/// forgotten tag costs one more read of its file).
const REMEMBERED: usize = 262_144;
/// Largest sidecar read.
const MAX_SIDECAR: u64 = 256;

/// What makes a file the same file for as long as it is not rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    device: u64,
    inode: u64,
    size: u64,
    modified_secs: i64,
    modified_nanos: i64,
}

impl Identity {
    /// The identity of the file `metadata` describes.
    pub fn of(metadata: &Metadata) -> Identity {
        Identity {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_secs: metadata.mtime(),
            modified_nanos: metadata.mtime_nsec(),
        }
    }
}

/// Files up to this size are hashed before their first answer (from the page cache, a few
/// tens of milliseconds at most); a larger one is first answered without a tag while it is
/// hashed in the background, so that its first byte does not wait for a read of all of it.
pub const HASHED_BEFORE_ANSWER: u64 = 64 << 20;

type ByIdentity<T> = HashMap<Identity, T, foldhash::fast::RandomState>;

/// The tags of the files read so far, by identity.
#[derive(Default)]
pub struct Tags {
    known: Mutex<ByIdentity<u128>>,
    /// The files being hashed now: whoever wants the same one's tag waits for that hash
    /// instead of reading the file again (a new file asked for by many clients at once).
    hashing: Mutex<ByIdentity<Arc<Mutex<()>>>>,
    /// Background hashes running now.
    background: std::sync::atomic::AtomicUsize,
}

/// Background hashes of big files at most at once.
const BACKGROUND_HASHES: usize = 2;

impl Tags {
    /// The entity tag of `file` (open, at `path`, described by `metadata`, its bytes given as
    /// `content` when already read): its sidecar's, or the hash of its bytes; `None` for a
    /// file larger than [`HASHED_BEFORE_ANSWER`] whose hash is not known yet (it is started in
    /// the background). Blocking: it may read the whole file.
    pub fn of(
        self: &Arc<Self>,
        path: &Path,
        file: &File,
        metadata: &Metadata,
        content: Option<&[u8]>,
    ) -> std::io::Result<Option<HeaderValue>> {
        if let Some(tag) = sidecar(path) {
            return Ok(Some(tag));
        }
        let identity = Identity::of(metadata);
        if let Some(hash) = self.known(identity) {
            return Ok(Some(tag_of(hash)));
        }
        if content.is_none() && metadata.len() > HASHED_BEFORE_ANSWER {
            self.hash_in_background(identity, file);
            return Ok(None);
        }
        self.hash_once(identity, file, content)
            .map(|hash| Some(tag_of(hash)))
    }

    /// The tag of `file` even if it must be read whole now (to check a write's condition).
    pub fn of_now(
        &self,
        path: &Path,
        file: &File,
        metadata: &Metadata,
    ) -> std::io::Result<HeaderValue> {
        if let Some(tag) = sidecar(path) {
            return Ok(tag);
        }
        self.hash_once(Identity::of(metadata), file, None)
            .map(tag_of)
    }

    /// The tag of `file` whose whole `content` is at hand (no sidecar): remembered, or its
    /// hash (cheap: the file is small), remembered only if the file is still the one read.
    pub fn of_content(&self, identity: Identity, file: &File, content: &[u8]) -> HeaderValue {
        let hash = self.known(identity).unwrap_or_else(|| {
            let hash = xxhash_rust::xxh3::xxh3_128(content);
            if file
                .metadata()
                .is_ok_and(|now| Identity::of(&now) == identity)
            {
                self.remember(identity, hash);
            }
            hash
        });
        tag_of(hash)
    }

    /// The tag remembered for a file (no sidecar), if any.
    pub fn known_tag(&self, identity: Identity) -> Option<HeaderValue> {
        self.known(identity).map(tag_of)
    }

    fn known(&self, identity: Identity) -> Option<u128> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&identity).copied()
    }

    /// Hashes `file` unless another thread is hashing the same identity, in which case this
    /// one waits for that hash.
    fn hash_once(
        &self,
        identity: Identity,
        file: &File,
        content: Option<&[u8]>,
    ) -> std::io::Result<u128> {
        let turn = {
            let mut hashing = self.hashing.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(hashing.entry(identity).or_default())
        };
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        let hashed = match (self.known(identity), content) {
            (Some(hash), _) => Ok(hash),
            (None, Some(content)) => Ok(xxhash_rust::xxh3::xxh3_128(content)),
            (None, None) => hash_file(file),
        };
        if let Ok(hash) = &hashed {
            // Remembered only if the file did not change while it was read.
            if file
                .metadata()
                .is_ok_and(|now| Identity::of(&now) == identity)
            {
                self.remember(identity, *hash);
            }
        }
        self.hashing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&identity);
        hashed
    }

    /// Starts hashing `file` on the blocking pool, unless it is being hashed already or
    /// [`BACKGROUND_HASHES`] are running (a later request starts it then): a burst of requests
    /// for many big new files reads them a few at a time, not all at once.
    fn hash_in_background(self: &Arc<Self>, identity: Identity, file: &File) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(file) = file.try_clone() else {
            return;
        };
        {
            let mut hashing = self.hashing.lock().unwrap_or_else(|p| p.into_inner());
            let running = self.background.load(std::sync::atomic::Ordering::Relaxed);
            if hashing.contains_key(&identity) || running >= BACKGROUND_HASHES {
                return;
            }
            // Registered before the task starts, so that the next request does not start another.
            hashing.insert(identity, Arc::default());
            self.background
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let tags = Arc::clone(self);
        runtime.spawn_blocking(move || {
            if let Err(error) = tags.hash_once(identity, &file, None) {
                tracing::warn!(%error, "hashing a file for its tag failed");
            }
            tags.background
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }

    /// Remembers the hash of the file with `identity` (just written by the node itself).
    pub fn remember(&self, identity: Identity, hash: u128) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= REMEMBERED {
            if let Some(&forgotten) = known.keys().next() {
                known.remove(&forgotten);
            }
        }
        known.insert(identity, hash);
    }
}

/// The strong entity tag for a content hash: 32 hex digits, quoted.
pub fn tag_of(hash: u128) -> HeaderValue {
    // By hand: `format!` was a few percent of a small file's first read.
    let mut text = [b'"'; 34];
    for (index, digit) in text[1..33].iter_mut().enumerate() {
        let nibble = (hash >> (124 - 4 * index)) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
    HeaderValue::from_bytes(&text).expect("hex digits in quotes are a valid field value")
}

/// XXH3-128 of everything in `file`, read from its start.
fn hash_file(file: &File) -> std::io::Result<u128> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = vec![0; 256 * 1024];
    let mut reader = file;
    // `&File` reads from the current offset, which nobody else moves (reads elsewhere are
    // positioned: `read_at`); start from the beginning all the same.
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(0))?;
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(hasher.digest128()),
            Ok(read) => hasher.update(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// The tag in `PATH.etag`, if there is one and it is a valid entity tag (quoted or not; a
/// weak `W/"…"` is kept weak). An invalid sidecar is ignored with a log line.
fn sidecar(path: &Path) -> Option<HeaderValue> {
    let mut name = path.as_os_str().to_owned();
    name.push(".etag");
    // Never through a link (it could name a file outside the directory) and never a FIFO.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&name)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_SIDECAR).read_to_string(&mut text).ok()?;
    let text = text.trim();
    let (weak, opaque) = match text.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let opaque = opaque
        .strip_prefix('"')
        .and_then(|o| o.strip_suffix('"'))
        .unwrap_or(opaque);
    // RFC 9110 §8.8.3: etagc is %x21 / %x23-7E / obs-text; obs-text is not accepted here.
    let valid = !opaque.is_empty()
        && opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
        // A comma is an etagc, but lists of tags in conditions are split on it.
        && !opaque.contains(',');
    if !valid {
        tracing::warn!(sidecar = %Path::new(&name).display(), "an .etag file that is not an entity tag; ignored");
        return None;
    }
    let tag = match weak {
        true => format!("W/\"{opaque}\""),
        false => format!("\"{opaque}\""),
    };
    HeaderValue::from_str(&tag).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_the_hash_in_32_hex_digits() {
        let hash = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!(tag_of(hash), "\"0123456789abcdeffedcba9876543210\"");
        assert_eq!(tag_of(1), "\"00000000000000000000000000000001\"");
    }

    #[test]
    fn the_tag_follows_the_bytes_and_a_sidecar_overrides_it() {
        let dir = std::env::temp_dir().join(format!("shoal-etag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.txt"), dir.join("b.txt"));
        std::fs::write(&a, b"same bytes").unwrap();
        std::fs::write(&b, b"same bytes").unwrap();
        let tags = Arc::new(Tags::default());
        let tag = |path: &Path| {
            let file = File::open(path).unwrap();
            tags.of(path, &file, &file.metadata().unwrap(), None)
                .unwrap()
                .unwrap()
        };
        assert_eq!(tag(&a), tag(&b), "two copies, two tags");
        let first = tag(&a);
        std::fs::write(&a, b"other bytes").unwrap();
        assert_ne!(tag(&a), first, "a changed file kept its tag");
        std::fs::write(dir.join("a.txt.etag"), "v42\n").unwrap();
        assert_eq!(tag(&a), "\"v42\"");
        std::fs::write(dir.join("a.txt.etag"), "W/\"v43\"").unwrap();
        assert_eq!(tag(&a), "W/\"v43\"");
        std::fs::write(dir.join("a.txt.etag"), "bad \" tag").unwrap();
        assert_eq!(
            tag(&a),
            tag(&dir.join("a.txt")),
            "an invalid sidecar is ignored"
        );
        assert_ne!(tag(&a), "\"bad \\\" tag\"");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
