//! A directory as a pool host (`file:///srv/www`): the node answers the request itself, from
//! the files, as an origin server would, and the pipeline treats the answer as any origin's
//! (caching, slices, purge, logs and metrics apply). GET and HEAD with ranges and conditionals,
//! `Content-Type` from the extension, content-hash ETags (`etag`), precompressed siblings
//! (`x.css.br`, `.zst`, `.gz`), `index.html` for directories and no listings; with
//! `writable = true`, PUT and DELETE (`write`). Paths are resolved safely (`path`). All file
//! I/O runs on the blocking pool.

mod body;
pub mod encoding;
mod etag;
mod inline;
pub mod path;
mod respond;
mod write;

use std::fs::{File, Metadata};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, ALLOW, IF_MATCH, IF_NONE_MATCH, IF_RANGE, LOCATION};
use http::{HeaderValue, Method, Response, StatusCode};

pub use body::{FileBody, Part};
use encoding::Encoding;
pub use path::Allowed;
pub(crate) use respond::text;

use super::body::RequestBody;
use crate::config::PoolConfig;
use crate::throttle::LogBudget;

/// Files up to this size are read whole with their opening, in one trip to the blocking pool.
const READ_WITH_OPEN: u64 = 64 * 1024;

/// Marks a file answer that the cache must not store (it is larger than the pool's
/// `cache_files_up_to`): it goes to the client straight from the file, since the kernel's page
/// cache holds the file already. Put in the response's extensions.
#[derive(Clone, Copy, Debug)]
pub struct StraightFromFile;

/// A pool's file settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `Cache-Control` of file answers (`max-age` from the pool), made once.
    pub cache_control: HeaderValue,
    /// Answers larger than this are marked [`StraightFromFile`].
    pub cache_up_to: u64,
    /// Dotfiles and links out of the directory.
    pub allowed: Allowed,
    /// PUT and DELETE are accepted.
    pub writable: bool,
    /// The largest PUT accepted.
    pub max_upload: u64,
}

impl Settings {
    /// The file settings of `pool`.
    pub fn of(pool: &PoolConfig) -> Settings {
        Settings {
            cache_control: HeaderValue::from_str(&format!(
                "max-age={}",
                pool.max_age.duration().as_secs()
            ))
            .expect("digits are a valid field value"),
            cache_up_to: pool.cache_files_up_to.bytes(),
            allowed: Allowed {
                dotfiles: pool.dotfiles,
                symlinks: pool.symlinks,
            },
            writable: pool.writable,
            max_upload: pool.max_upload_size.bytes(),
        }
    }
}

/// The file hosts of one pool: their settings and the tags of the files read.
pub struct Files {
    settings: Settings,
    tags: Arc<etag::Tags>,
    /// Held while a write checks its preconditions a last time and lands.
    commits: std::sync::Mutex<()>,
    /// The roots known to be on a local file system or not (`inline`).
    local_roots: std::sync::Mutex<Vec<(PathBuf, bool)>>,
}

/// Log lines a second for refused paths and failed file operations (clients cause them).
static LOG_BUDGET: LogBudget = LogBudget::new(10);

impl Files {
    /// File hosts with `settings`.
    pub fn new(settings: Settings) -> Files {
        Files {
            settings,
            tags: Arc::default(),
            commits: std::sync::Mutex::new(()),
            local_roots: std::sync::Mutex::default(),
        }
    }

    /// Answers `head` (and `body`, for a PUT) from the directory `root`.
    pub async fn answer(
        self: &Arc<Self>,
        root: &Path,
        head: &http::request::Parts,
        body: RequestBody,
    ) -> Response<FileBody> {
        match head.method {
            Method::GET | Method::HEAD => self.read(root, head).await,
            Method::PUT if self.settings.writable => write::put(self, root, head, body).await,
            Method::DELETE if self.settings.writable => write::delete(self, root, head).await,
            Method::OPTIONS => {
                let mut response = respond::text(StatusCode::NO_CONTENT, "");
                response.headers_mut().insert(ALLOW, self.allow());
                response
            }
            _ => {
                let mut response =
                    respond::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                response.headers_mut().insert(ALLOW, self.allow());
                response
            }
        }
    }

    fn allow(&self) -> HeaderValue {
        HeaderValue::from_static(match self.settings.writable {
            true => "GET, HEAD, OPTIONS, PUT, DELETE",
            false => "GET, HEAD, OPTIONS",
        })
    }

    async fn read(
        self: &Arc<Self>,
        root: &Path,
        head: &http::request::Parts,
    ) -> Response<FileBody> {
        let request_path = head.uri.path();
        let relative = match path::relative(request_path, self.settings.allowed) {
            Ok(relative) => relative,
            Err(refused) => return refusal(refused, head),
        };
        let accepted = encoding::accepted(head.headers.get(ACCEPT_ENCODING));
        let directory_wanted = request_path.ends_with('/');
        let opened = match self.look(root, &relative, directory_wanted, accepted) {
            Some(answer) => Ok(answer),
            None => {
                let files = Arc::clone(self);
                let root = root.to_owned();
                // A request that compares tags (a parent's revalidation, a resumed download)
                // waits for a big new file's hash rather than get an answer it cannot use.
                let wants_tag = [IF_NONE_MATCH, IF_MATCH, IF_RANGE]
                    .iter()
                    .any(|name| head.headers.contains_key(name));
                tokio::task::spawn_blocking(move || {
                    files.open(&root, relative, directory_wanted, accepted, wants_tag)
                })
                .await
            }
        };
        match opened {
            Ok(Ok(opened)) => respond::file(&self.settings, head, opened),
            Ok(Err(Unopened::Refused(refused))) => refusal(refused, head),
            Ok(Err(Unopened::Directory)) => {
                // As nginx: a directory named without its slash is redirected to it. One
                // leading slash only: `//host/` would send the client to another site.
                let mut target = format!("/{}/", request_path.trim_start_matches('/'));
                if let Some(query) = head.uri.query() {
                    target.push('?');
                    target.push_str(query);
                }
                let mut response = respond::text(StatusCode::MOVED_PERMANENTLY, "moved\n");
                if let Ok(value) = HeaderValue::from_str(&target) {
                    response.headers_mut().insert(LOCATION, value);
                }
                response
            }
            Ok(Err(Unopened::Failed(error))) => {
                io_answer(&error, head.uri.path(), "file read failed")
            }
            Err(_) => respond::text(StatusCode::INTERNAL_SERVER_ERROR, "file read failed\n"),
        }
    }

    /// Opens what `relative` names under `root`: the file (or a directory's `index.html`), in
    /// the best encoding `accepted` has a sibling for, with its tag. Blocking.
    fn open(
        &self,
        root: &Path,
        relative: PathBuf,
        directory_wanted: bool,
        accepted: encoding::Accepted,
        wants_tag: bool,
    ) -> Result<Opened, Unopened> {
        self.learn_root(root);
        let mut candidate = root.join(&relative);
        let metadata = candidate.metadata().map_err(Unopened::Failed)?;
        if metadata.is_dir() {
            if !directory_wanted && !relative.as_os_str().is_empty() {
                return Err(Unopened::Directory);
            }
            candidate.push("index.html");
        } else if directory_wanted {
            // `/file.txt/` names no file.
            return Err(Unopened::Failed(std::io::ErrorKind::NotFound.into()));
        }
        let real = path::confined(root, &candidate, self.settings.allowed)
            .map_err(Unopened::Failed)?
            .map_err(Unopened::Refused)?;
        let content_type = respond::content_type(&real);
        let mut vary = false;
        let mut chosen = None;
        for encoding in Encoding::ALL {
            let sibling = encoding.sibling(&real);
            let Ok(sibling_metadata) = sibling.symlink_metadata() else {
                continue;
            };
            vary = true;
            let usable = sibling_metadata.is_file()
                || (sibling_metadata.is_symlink() && self.settings.allowed.symlinks);
            if usable && accepted.prefers(encoding, chosen) {
                chosen = Some(encoding);
            }
        }
        let (path, encoding) = match chosen {
            Some(encoding) => (encoding.sibling(&real), Some(encoding)),
            None => (real, None),
        };
        let (file, metadata) = open_regular(&path).map_err(Unopened::Failed)?;
        let content = match metadata.len() <= READ_WITH_OPEN {
            true => Some(read_whole(&file, metadata.len()).map_err(Unopened::Failed)?),
            false => None,
        };
        let tag = match self.tags.of(&path, &file, &metadata, content.as_deref()) {
            Ok(None) if wants_tag => self.tags.of_now(&path, &file, &metadata).map(Some),
            tag => tag,
        }
        .map_err(Unopened::Failed)?;
        Ok(Opened {
            file: Arc::new(file),
            metadata,
            tag,
            content_type,
            encoding,
            vary,
            content,
        })
    }
}

/// A file ready to be answered with.
pub(super) struct Opened {
    file: Arc<File>,
    metadata: Metadata,
    /// `None` for a big file whose hash is not known yet.
    tag: Option<HeaderValue>,
    content_type: HeaderValue,
    encoding: Option<Encoding>,
    /// Siblings in other encodings exist: the answer varies by `Accept-Encoding`.
    vary: bool,
    /// The whole file, when it is small.
    content: Option<Bytes>,
}

/// Why nothing was opened.
enum Unopened {
    Refused(path::Refused),
    /// A directory named without its trailing slash.
    Directory,
    Failed(std::io::Error),
}

/// Opens `path` for reading if it is a regular file (never blocking on a FIFO or a device:
/// `O_NONBLOCK`, which regular files ignore).
fn open_regular(path: &Path) -> std::io::Result<(File, Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    Ok((file, metadata))
}

fn read_whole(file: &File, length: u64) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut content = vec![0; length as usize];
    file.read_exact_at(&mut content, 0)?;
    Ok(Bytes::from(content))
}

/// 400 for a path that tries to leave the directory, 404 for a hidden one; logged.
fn refusal(refused: path::Refused, head: &http::request::Parts) -> Response<FileBody> {
    if let Some(held_back) = LOG_BUDGET.admit() {
        tracing::info!(path = %head.uri.path(), reason = refused.reason(), held_back, "file request refused");
    }
    refused_answer(refused)
}

fn refused_answer(refused: path::Refused) -> Response<FileBody> {
    match refused {
        path::Refused::Invalid(_) => respond::text(StatusCode::BAD_REQUEST, "bad path\n"),
        path::Refused::Hidden(_) => respond::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The answer for a failed file operation (`what`, on the file of `path`): 404, 403, 507 for
/// a full disk, 500 otherwise; every one but 404 logged.
fn io_answer(error: &std::io::Error, path: &str, what: &'static str) -> Response<FileBody> {
    use std::io::ErrorKind;
    if matches!(error.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) {
        return respond::text(StatusCode::NOT_FOUND, "not found\n");
    }
    if let Some(held_back) = LOG_BUDGET.admit() {
        tracing::warn!(path, %error, held_back, "{what}");
    }
    match error.kind() {
        ErrorKind::PermissionDenied => respond::text(StatusCode::FORBIDDEN, "forbidden\n"),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => respond::text(
            StatusCode::INSUFFICIENT_STORAGE,
            "no space left for the file\n",
        ),
        _ => respond::text(StatusCode::INTERNAL_SERVER_ERROR, "file operation failed\n"),
    }
}

impl std::fmt::Debug for Files {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Files")
            .field("settings", &self.settings)
            .finish()
    }
}
