//! Uploads to a file host (`writable = true`, the storage-node role): PUT writes a file
//! atomically (a temporary file beside it, written, synced, renamed over the old one, the
//! directory synced), DELETE removes one. Either way the file's precompressed siblings and
//! `.etag` sidecar go too, since they describe the old bytes. A write that fails leaves the old
//! file as it was. Whether the writer may write (the admin token or a signed URL) was checked
//! by the proxy before the request got here.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

use super::encoding::Encoding;
use super::{etag, io_answer, path, refusal, refused_answer, respond, FileBody, Files};
use crate::upstream::body::RequestBody;

/// Body bytes gathered before each write to the file (one trip to the blocking pool each).
const WRITE_BATCH: usize = 1 << 20;

/// Names the temporary files of uploads in progress apart.
static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// PUT: the body becomes the file the path names. 201 for a new file, 204 for a replaced one.
pub(super) async fn put(
    files: &Arc<Files>,
    root: &Path,
    head: &http::request::Parts,
    body: RequestBody,
) -> Response<FileBody> {
    let relative = match path::relative(head.uri.path(), files.settings.allowed) {
        Ok(relative) => relative,
        Err(refused) => return refusal(refused, head),
    };
    if relative.as_os_str().is_empty() || head.uri.path().ends_with('/') {
        return respond::text(
            StatusCode::CONFLICT,
            "a PUT names a file, not a directory\n",
        );
    }
    let declared = head
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let Some(declared) = declared else {
        return respond::text(
            StatusCode::LENGTH_REQUIRED,
            "an upload needs a Content-Length\n",
        );
    };
    if declared > files.settings.max_upload {
        return respond::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload larger than the pool's max_upload_size\n",
        );
    }
    let target = root.join(&relative);
    let prepared = {
        let (files, root, target) = (Arc::clone(files), root.to_owned(), target.clone());
        let conditions = Conditions::of(&head.headers);
        blocking(move || prepare(&files, &root, &target, conditions)).await
    };
    let mut upload = match prepared {
        Ok(Ok(upload)) => upload,
        Ok(Err(answer)) => return answer,
        Err(error) => return io_answer(&error, head.uri.path(), "upload failed"),
    };
    let streamed = stream_into(&mut upload, body, declared).await;
    let outcome = match streamed {
        Err(answer) => Err(answer),
        Ok(()) => {
            let files = Arc::clone(files);
            match blocking(move || finish(&files, upload)).await {
                Ok(Ok(landed)) => Ok(landed),
                Ok(Err(answer)) => Err(answer),
                Err(error) => Err(io_answer(&error, head.uri.path(), "upload failed")),
            }
        }
    };
    match outcome {
        Ok((tag, existed)) => {
            let status = match existed {
                true => StatusCode::NO_CONTENT,
                false => StatusCode::CREATED,
            };
            let mut response = respond::text(status, "");
            response.headers_mut().insert(ETAG, tag);
            response
        }
        // The old file is untouched; the partial new one went with its `Upload`.
        Err(answer) => answer,
    }
}

/// DELETE: the file goes (204), with its siblings.
pub(super) async fn delete(
    files: &Arc<Files>,
    root: &Path,
    head: &http::request::Parts,
) -> Response<FileBody> {
    let relative = match path::relative(head.uri.path(), files.settings.allowed) {
        Ok(relative) if !relative.as_os_str().is_empty() => relative,
        Ok(_) => {
            return respond::text(
                StatusCode::CONFLICT,
                "a DELETE names a file, not a directory\n",
            )
        }
        Err(refused) => return refusal(refused, head),
    };
    let target = root.join(relative);
    let (files, root) = (Arc::clone(files), root.to_owned());
    let conditions = Conditions::of(&head.headers);
    let removed = blocking(move || -> std::io::Result<Response<FileBody>> {
        if let Err(refused) = path::confined_parent(&root, &target, files.settings.allowed)? {
            return Ok(refused_answer(refused));
        }
        // Checked and removed with no other write of the pool landing in between.
        // Hashed (if the conditions want a tag) before the lock, so that the look under it
        // finds the tag remembered and the pool's other writes do not wait for a read.
        what_is_there(&files, &target, &conditions)?;
        let _commit = files.commits.lock().unwrap_or_else(|p| p.into_inner());
        let there = what_is_there(&files, &target, &conditions)?;
        if there.as_ref().is_some_and(|there| !there.is_file) {
            return Ok(respond::text(
                StatusCode::CONFLICT,
                "a DELETE names a file, not a directory\n",
            ));
        }
        if let Some(answer) = conditions.fail(there.as_ref().map(There::current)) {
            return Ok(answer);
        }
        std::fs::remove_file(&target)?;
        remove_siblings(&target);
        sync_directory(&target)?;
        Ok(respond::text(StatusCode::NO_CONTENT, ""))
    })
    .await;
    removed.unwrap_or_else(|error| io_answer(&error, head.uri.path(), "delete failed"))
}

/// An upload in progress: its temporary file, where it goes, and the hash of what is written.
/// Dropped before it has landed (the body broke, the client went away, the node is shutting
/// down, or the request's task was dropped while the file was being made on the blocking
/// pool), it removes its temporary file.
struct Upload {
    file: File,
    temporary: PathBuf,
    landed: bool,
    target: PathBuf,
    conditions: Conditions,
    hasher: Box<xxhash_rust::xxh3::Xxh3>,
    buffered: Vec<u8>,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.landed {
            // One unlink; not worth a trip to the blocking pool.
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// The preconditions of a write (RFC 9110 §13.1): `If-Match` (strong comparison, `*` for "a
/// file exists"), else `If-Unmodified-Since`; `If-None-Match` (weak comparison, `*` for "no
/// file exists"). Every line of a field counts.
struct Conditions {
    if_match: Option<String>,
    if_unmodified_since: Option<std::time::SystemTime>,
    if_none_match: Option<String>,
}

/// What a write's preconditions are evaluated against: the file there now, if any.
struct Current<'a> {
    tag: &'a HeaderValue,
    modified: Option<std::time::SystemTime>,
}

impl Conditions {
    fn of(headers: &http::HeaderMap) -> Conditions {
        let list = |name| {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v: &HeaderValue| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        };
        let if_unmodified_since = headers
            .get(http::header::IF_UNMODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        Conditions {
            if_match: list(IF_MATCH),
            if_unmodified_since,
            if_none_match: list(IF_NONE_MATCH),
        }
    }

    /// Whether an entity tag (not just `*`) is compared: only then is the file hashed.
    fn compares_tags(&self) -> bool {
        [&self.if_match, &self.if_none_match]
            .into_iter()
            .flatten()
            .any(|list| list.split(',').any(|item| !matches!(item.trim(), "*" | "")))
    }

    /// Whether there are any (a write without them needs no second look before it lands).
    fn any(&self) -> bool {
        self.if_match.is_some()
            || self.if_unmodified_since.is_some()
            || self.if_none_match.is_some()
    }

    /// 412 if the conditions fail against the file there now (`None`: no file).
    fn fail(&self, current: Option<Current<'_>>) -> Option<Response<FileBody>> {
        use crate::cache::conditional::{strong_match, weak_match};
        let tag = current
            .as_ref()
            .and_then(|current| current.tag.to_str().ok());
        let listed = |list: &str, compare: fn(&str, &str) -> bool| {
            list.split(',').map(str::trim).any(|item| {
                (item == "*" && tag.is_some()) || tag.is_some_and(|tag| compare(item, tag))
            })
        };
        let failed = match (&self.if_match, self.if_unmodified_since) {
            (Some(list), _) => !listed(list, strong_match),
            // §13.1.4: a file changed since then, or none there (nothing to be unmodified).
            (None, Some(since)) => !current.as_ref().is_some_and(|current| {
                current.modified.is_some_and(|modified| {
                    let whole_seconds = |t: std::time::SystemTime| {
                        t.duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs())
                    };
                    whole_seconds(modified) <= whole_seconds(since)
                })
            }),
            (None, None) => false,
        } || self
            .if_none_match
            .as_deref()
            .is_some_and(|list| listed(list, weak_match));
        failed.then(|| respond::text(StatusCode::PRECONDITION_FAILED, "precondition failed\n"))
    }

    /// Whether the write must not replace a file that appears meanwhile (`If-None-Match: *`).
    fn create_only(&self) -> bool {
        self.if_none_match
            .as_deref()
            .is_some_and(|list| list.split(',').any(|item| item.trim() == "*"))
    }
}

/// Checks where the file goes and the conditions, makes the missing directories and the
/// temporary file. Blocking.
fn prepare(
    files: &Files,
    root: &Path,
    target: &Path,
    conditions: Conditions,
) -> std::io::Result<Result<Upload, Response<FileBody>>> {
    if let Err(refused) = path::confined_parent(root, target, files.settings.allowed)? {
        return Ok(Err(refused_answer(refused)));
    }
    let there = what_is_there(files, target, &conditions)?;
    if there.as_ref().is_some_and(|there| !there.is_file) {
        return Ok(Err(respond::text(
            StatusCode::CONFLICT,
            "a directory is in the way\n",
        )));
    }
    // Checked now, so that a write bound to fail is not uploaded first, and again when it
    // lands (`finish`), since another may have landed meanwhile.
    if let Some(answer) = conditions.fail(there.as_ref().map(There::current)) {
        return Ok(Err(answer));
    }
    let directory = target.parent().unwrap_or(root);
    std::fs::create_dir_all(directory)?;
    // Made under a directory that was confined; checked again in case it was made elsewhere
    // through a link that appeared meanwhile.
    if let Err(refused) = path::confined(root, directory, files.settings.allowed)? {
        return Ok(Err(refused_answer(refused)));
    }
    // Beside the target (one file system, so the rename is atomic), named after it for
    // whoever looks, but short enough for any name to fit in NAME_MAX with the suffix.
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let mut short = name.len().min(160);
    while !name.is_char_boundary(short) {
        short -= 1;
    }
    let temporary = directory.join(format!(
        ".{}{}{}-{}",
        &name[..short],
        path::UPLOAD_MARK,
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)?;
    Ok(Ok(Upload {
        file,
        temporary,
        landed: false,
        target: target.to_owned(),
        conditions,
        hasher: Box::new(xxhash_rust::xxh3::Xxh3::new()),
        buffered: Vec::with_capacity(WRITE_BATCH),
    }))
}

/// What is at a write's target now.
struct There {
    tag: HeaderValue,
    /// A regular file (else a directory or something else in the way).
    is_file: bool,
    modified: Option<std::time::SystemTime>,
}

impl There {
    fn current(&self) -> Current<'_> {
        Current {
            tag: &self.tag,
            modified: self.modified,
        }
    }
}

/// What is at `target`, or `None` if nothing is there; its tag only when `conditions` compare
/// tags (a write without them does not read the file). Blocking (it may hash the file).
fn what_is_there(
    files: &Files,
    target: &Path,
    conditions: &Conditions,
) -> std::io::Result<Option<There>> {
    let untagged = |is_file, modified| There {
        tag: HeaderValue::from_static("\"\""),
        is_file,
        modified,
    };
    match target.symlink_metadata() {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
        Ok(metadata) if metadata.is_dir() => Ok(Some(untagged(false, None))),
        // A link or something else that is not a file: replaced or removed as it is, never
        // followed or read (a FIFO would never end).
        Ok(metadata) if !metadata.is_file() || !conditions.compares_tags() => {
            Ok(Some(untagged(true, metadata.modified().ok())))
        }
        Ok(_) => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(target)?;
            let metadata = file.metadata()?;
            Ok(Some(There {
                tag: files.tags.of_now(target, &file, &metadata)?,
                is_file: true,
                modified: metadata.modified().ok(),
            }))
        }
    }
}

/// Reads the request body into the upload, exactly `declared` bytes.
async fn stream_into(
    upload: &mut Upload,
    mut body: RequestBody,
    declared: u64,
) -> Result<(), Response<FileBody>> {
    let mut received: u64 = 0;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                tracing::debug!(%error, "upload body broken");
                return Err(respond::text(
                    StatusCode::BAD_REQUEST,
                    "the upload's body was cut short\n",
                ));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > declared {
            return Err(respond::text(
                StatusCode::BAD_REQUEST,
                "the upload's body is longer than its Content-Length\n",
            ));
        }
        upload.buffered.extend_from_slice(&data);
        if upload.buffered.len() >= WRITE_BATCH {
            if let Err(error) = write_buffered(upload).await {
                return Err(io_answer(
                    &error,
                    &upload.target.to_string_lossy(),
                    "upload failed",
                ));
            }
        }
    }
    if received != declared {
        return Err(respond::text(
            StatusCode::BAD_REQUEST,
            "the upload's body is shorter than its Content-Length\n",
        ));
    }
    Ok(())
}

/// Writes what is buffered on the blocking pool.
async fn write_buffered(upload: &mut Upload) -> std::io::Result<()> {
    let chunk = Bytes::from(std::mem::replace(
        &mut upload.buffered,
        Vec::with_capacity(WRITE_BATCH),
    ));
    upload.hasher.update(&chunk);
    let mut file = upload.file.try_clone()?;
    blocking(move || file.write_all(&chunk)).await
}

/// Writes the rest, syncs, and puts the file in place if its preconditions still hold;
/// returns its tag and whether a file was replaced, or the 412. Blocking.
fn finish(
    files: &Files,
    mut upload: Upload,
) -> std::io::Result<Result<(HeaderValue, bool), Response<FileBody>>> {
    upload.hasher.update(&upload.buffered);
    upload.file.write_all(&upload.buffered)?;
    upload.file.sync_all()?;
    let metadata = upload.file.metadata()?;
    {
        // The second look and the rename, with no other write of the pool in between.
        let _commit = files.commits.lock().unwrap_or_else(|p| p.into_inner());
        let existed = match upload.conditions.any() {
            true => {
                let there = what_is_there(files, &upload.target, &upload.conditions)?;
                if let Some(answer) = upload.conditions.fail(there.as_ref().map(There::current)) {
                    return Ok(Err(answer));
                }
                there.is_some()
            }
            false => upload.target.symlink_metadata().is_ok(),
        };
        if upload.conditions.create_only() {
            // Not over a file that someone other than the node put there meanwhile either.
            let renamed = nix::fcntl::renameat2(
                None,
                &upload.temporary,
                None,
                &upload.target,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            );
            match renamed {
                Err(nix::errno::Errno::EEXIST) => {
                    let failed = "precondition failed\n";
                    return Ok(Err(respond::text(StatusCode::PRECONDITION_FAILED, failed)));
                }
                // A file system without it: the look just taken, under the lock, has to do.
                Err(nix::errno::Errno::EINVAL) if !existed => {
                    std::fs::rename(&upload.temporary, &upload.target)?;
                }
                Err(errno) => return Err(errno.into()),
                Ok(()) => {}
            }
        } else {
            std::fs::rename(&upload.temporary, &upload.target)?;
        }
        upload.landed = true;
        remove_siblings(&upload.target);
        let hash = upload.hasher.digest128();
        files.tags.remember(etag::Identity::of(&metadata), hash);
        sync_directory(&upload.target)?;
        Ok(Ok((etag::tag_of(hash), existed)))
    }
}

/// Removes the precompressed siblings and the `.etag` sidecar of `target`, which describe
/// bytes that are gone.
fn remove_siblings(target: &Path) {
    let mut sidecar = target.as_os_str().to_owned();
    sidecar.push(".etag");
    for sibling in Encoding::ALL
        .map(|encoding| encoding.sibling(target))
        .into_iter()
        .chain([PathBuf::from(sidecar)])
    {
        let _ = std::fs::remove_file(sibling);
    }
}

/// Syncs the directory holding `path`, so that a rename or removal outlives a crash.
fn sync_directory(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(directory) => File::open(directory)?.sync_all(),
        None => Ok(()),
    }
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(std::io::Error::other(error)))
}
