//! The first look at a file on the network thread itself, for what the kernel can answer from
//! its caches without waiting for a disk: names resolved only from the dentry cache
//! (`openat2` with `RESOLVE_CACHED`) and small files read only from the page cache
//! (`preadv2` with `RWF_NOWAIT`). A trip to the blocking pool costs two thread wake-ups, more
//! than the whole read of a small cached file (bench/RESULTS.md, "first read"), so the common
//! case is answered here and everything else goes there as before (`Files::open`): a name the
//! kernel would have to read from disk, bytes not in the page cache, a symbolic link anywhere
//! in the path (its target decides what is served, which `path::confined` checks), a sidecar
//! `.etag`, or a file over 64 KiB whose tag is not known yet.
//!
//! Written by hand because no crate does this: the two calls are what io_uring runtimes use
//! for their own fast paths, and tokio's file API always goes through the blocking pool.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

use super::encoding::{Accepted, Encoding};
use super::{etag, respond, Files, Opened, Unopened, READ_WITH_OPEN};

/// A name that cannot be opened from the caches alone, or is the careful path's to judge.
struct NotHere;

/// Opens `name` under `dir` from the dentry cache alone. Without `follow`, no symbolic link
/// may be on the way (`ELOOP`), and the result stays under `dir`. `Ok(None)`: nothing is
/// there, as the cache knows for sure.
fn open_cached(
    dir: RawFd,
    name: &Path,
    flags: OFlag,
    follow: bool,
) -> Result<Option<OwnedFd>, NotHere> {
    let mut resolve = ResolveFlag::from_bits_retain(libc::RESOLVE_CACHED);
    if !follow {
        resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH;
    }
    // Never blocking on a FIFO or a device; `O_PATH` takes no such flag (EINVAL).
    let flags = match flags.contains(OFlag::O_PATH) {
        true => flags | OFlag::O_CLOEXEC,
        false => flags | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
    };
    let how = OpenHow::new().flags(flags).resolve(resolve);
    match openat2(dir, name, how) {
        Ok(fd) => Ok(Some(owned(fd))),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
        // EAGAIN (not all in the cache), ELOOP (a link), EXDEV, ENOSYS (an older kernel), ...
        Err(_) => Err(NotHere),
    }
}

/// Takes ownership of a descriptor `openat2` has just returned.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `openat2` returned this descriptor just now; nothing else has or closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The whole of `file` (`length` bytes) if the page cache holds all of it.
#[allow(unsafe_code)]
fn read_if_cached(file: &File, length: u64) -> Option<Bytes> {
    let mut content = vec![0u8; usize::try_from(length).ok()?];
    let iov = libc::iovec {
        iov_base: content.as_mut_ptr().cast(),
        iov_len: content.len(),
    };
    // SAFETY: one iovec describing `content`, which is valid for writes of its length and
    // outlives the call; the descriptor is `file`'s, open for reading.
    let read = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    // A short read: part of it is not in the page cache (or the file shrank).
    (usize::try_from(read).ok()? == content.len()).then(|| Bytes::from(content))
}

/// `name` with `suffix` appended.
fn suffixed(name: &Path, suffix: &str) -> OsString {
    let mut with = name.as_os_str().to_owned();
    with.push(suffix);
    with
}

/// A regular file's descriptor and metadata.
fn regular(fd: OwnedFd) -> Option<(File, Metadata)> {
    let file = File::from(fd);
    let metadata = file.metadata().ok()?;
    metadata.is_file().then_some((file, metadata))
}

impl Files {
    /// [`Files::open`] from the kernel's caches alone, on the calling thread: the file, or why
    /// there is none; `None` when the kernel would have to wait for a disk, or the case is the
    /// careful path's.
    pub(super) fn look(
        &self,
        root: &Path,
        relative: &Path,
        directory_wanted: bool,
        accepted: Accepted,
    ) -> Option<Result<Opened, Unopened>> {
        if !self.on_a_local_disk(root)? {
            return None;
        }
        self.look_cached(root, relative, directory_wanted, accepted)
            .ok()
    }

    /// Whether `root` is on a local file system, where an open and a `stat` of what the dentry
    /// cache holds do not wait: `None` until the careful path has asked (`statfs` itself could
    /// wait on a network file system). On FUSE or NFS an open is a round trip to a daemon or a
    /// server however warm the caches are, so those roots always take the careful path.
    fn on_a_local_disk(&self, root: &Path) -> Option<bool> {
        let known = self.local_roots.lock().unwrap_or_else(|p| p.into_inner());
        known
            .iter()
            .find(|(path, _)| path == root)
            .map(|(_, local)| *local)
    }

    /// Finds out (blocking) whether `root` is on a local file system, for [`Files::look`].
    pub(super) fn learn_root(&self, root: &Path) {
        if self.on_a_local_disk(root).is_some() {
            return;
        }
        use nix::sys::statfs::{
            statfs, BTRFS_SUPER_MAGIC, EXT2_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC,
            OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
        };
        let local = [
            EXT4_SUPER_MAGIC,
            EXT2_SUPER_MAGIC,
            XFS_SUPER_MAGIC,
            BTRFS_SUPER_MAGIC,
            F2FS_SUPER_MAGIC,
            TMPFS_MAGIC,
            OVERLAYFS_SUPER_MAGIC,
        ];
        let Ok(found) = statfs(root) else {
            return;
        };
        let is_local = local.contains(&found.filesystem_type());
        let mut known = self.local_roots.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() < 64 {
            known.push((root.to_owned(), is_local));
        }
    }

    fn look_cached(
        &self,
        root: &Path,
        relative: &Path,
        directory_wanted: bool,
        accepted: Accepted,
    ) -> Result<Result<Opened, Unopened>, NotHere> {
        let not_found = || Ok(Err(Unopened::Failed(std::io::ErrorKind::NotFound.into())));
        // The root may be a link (symlink-swapped deployments): followed, from the cache.
        let directory = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let Some(root_fd) = open_cached(libc::AT_FDCWD, root, directory, true)? else {
            return not_found();
        };
        let (mut parent, mut name) = match (relative.parent(), relative.file_name()) {
            (Some(parent), Some(name)) => {
                let parent_fd = match parent.as_os_str().is_empty() {
                    true => root_fd,
                    false => match open_cached(root_fd.as_raw_fd(), parent, directory, false)? {
                        Some(fd) => fd,
                        None => return not_found(),
                    },
                };
                (parent_fd, Path::new(name).to_owned())
            }
            // The directory itself.
            _ => (root_fd, Path::new(".").to_owned()),
        };
        let Some(fd) = open_cached(parent.as_raw_fd(), &name, OFlag::O_RDONLY, false)? else {
            return not_found();
        };
        let file = File::from(fd);
        let metadata = file.metadata().map_err(|_| NotHere)?;
        let (file, metadata) = if metadata.is_dir() {
            if !directory_wanted && !relative.as_os_str().is_empty() {
                return Ok(Err(Unopened::Directory));
            }
            name = Path::new("index.html").to_owned();
            parent = OwnedFd::from(file);
            match open_cached(parent.as_raw_fd(), &name, OFlag::O_RDONLY, false)? {
                Some(fd) => match regular(fd) {
                    Some(regular) => regular,
                    None => return not_found(),
                },
                None => return not_found(),
            }
        } else if directory_wanted || !metadata.is_file() {
            // `/file.txt/` names no file; FIFOs and devices are never served.
            return not_found();
        } else {
            (file, metadata)
        };
        let dir = parent.as_raw_fd();
        let (mut vary, mut chosen) = (false, None);
        for encoding in Encoding::ALL {
            let sibling = suffixed(&name, encoding.suffix());
            let Some(fd) = open_cached(dir, Path::new(&sibling), OFlag::O_PATH, false)? else {
                continue;
            };
            vary = true;
            let is_file = File::from(fd).metadata().is_ok_and(|m| m.is_file());
            if is_file && accepted.prefers(encoding, chosen) {
                chosen = Some(encoding);
            }
        }
        let (served, file, metadata) = match chosen {
            None => (name.clone(), file, metadata),
            Some(encoding) => {
                let sibling = Path::new(&suffixed(&name, encoding.suffix())).to_owned();
                let fd = open_cached(dir, &sibling, OFlag::O_RDONLY, false)?.ok_or(NotHere)?;
                let (file, metadata) = regular(fd).ok_or(NotHere)?;
                (sibling, file, metadata)
            }
        };
        // A sidecar's tag is read with care, on the blocking pool.
        let sidecar = suffixed(&served, ".etag");
        if open_cached(dir, Path::new(&sidecar), OFlag::O_PATH, false)?.is_some() {
            return Err(NotHere);
        }
        let identity = etag::Identity::of(&metadata);
        let (tag, content) = match metadata.len() <= READ_WITH_OPEN {
            true => {
                let content = read_if_cached(&file, metadata.len()).ok_or(NotHere)?;
                (
                    self.tags.of_content(identity, &file, &content),
                    Some(content),
                )
            }
            false => (self.tags.known_tag(identity).ok_or(NotHere)?, None),
        };
        Ok(Ok(Opened {
            file: Arc::new(file),
            metadata,
            tag: Some(tag),
            content_type: respond::content_type(&name),
            encoding: chosen,
            vary,
            content,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolConfig;

    fn files() -> Files {
        Files::new(super::super::Settings::of(&PoolConfig::of_hosts(
            "p",
            Vec::new(),
        )))
    }

    #[test]
    fn a_cached_small_file_is_answered_here_and_links_and_sidecars_are_not() {
        let dir = std::env::temp_dir().join(format!("shoal-inline-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/a.css"), b"body{}").unwrap();
        std::fs::write(dir.join("d/a.css.gz"), b"gzipped").unwrap();
        std::fs::write(dir.join("d/index.html"), b"<p>").unwrap();
        std::fs::write(dir.join("t.txt"), b"tagged").unwrap();
        std::fs::write(dir.join("t.txt.etag"), b"v1").unwrap();
        std::os::unix::fs::symlink(dir.join("t.txt"), dir.join("link.txt")).unwrap();
        // Read once, so that the names and bytes are in the kernel's caches.
        for name in ["d/a.css", "d/a.css.gz", "d/index.html", "t.txt", "link.txt"] {
            std::fs::read(dir.join(name)).unwrap();
        }
        // And the names that are not there, as the careful path's first look leaves them.
        for name in ["d/a.css", "d/index.html"] {
            for suffix in [".br", ".zst", ".gz", ".etag", ".gz.etag"] {
                let _ = std::fs::metadata(dir.join(format!("{name}{suffix}")));
            }
        }
        let files = files();
        let plain = Accepted::default();
        assert!(
            files
                .look(&dir, Path::new("d/a.css"), false, plain)
                .is_none(),
            "not known yet"
        );
        files.learn_root(&dir);
        let look = |path: &str, accepted| files.look(&dir, Path::new(path), false, accepted);

        let opened = match look("d/a.css", plain).expect("answered here") {
            Ok(opened) => opened,
            Err(Unopened::Failed(error)) => panic!("{error}"),
            Err(_) => panic!("refused"),
        };
        assert_eq!(opened.content.as_deref(), Some(&b"body{}"[..]));
        assert!(opened.vary && opened.encoding.is_none());
        let gzip = super::super::encoding::accepted(Some(&http::HeaderValue::from_static("gzip")));
        let opened = match look("d/a.css", gzip).expect("answered here") {
            Ok(opened) => opened,
            Err(Unopened::Failed(error)) => panic!("{error}"),
            Err(_) => panic!("refused"),
        };
        assert_eq!(opened.content.as_deref(), Some(&b"gzipped"[..]));
        assert!(matches!(look("d", plain), Some(Err(Unopened::Directory))));
        let index = files.look(&dir, Path::new("d"), true, plain).unwrap().ok();
        assert_eq!(index.unwrap().content.as_deref(), Some(&b"<p>"[..]));

        // The careful path's: a link (its target decides) and a sidecar.
        assert!(look("link.txt", plain).is_none());
        assert!(look("t.txt", plain).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
