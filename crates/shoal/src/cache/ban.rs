//! Bans: invalidation by URL prefix, URL regular expression or tag (surrogate key), applied
//! lazily. A ban never walks the cache: each object is tested against the bans newer than it
//! the next time it is looked up, and a match makes it absent. The hit path pays one comparison
//! of two numbers while no ban is newer than the object.
//!
//! A ban covers the objects stored before it (by the time their response arrived), so an object
//! fetched again after a ban is not affected. Bans are kept for `BAN_LIFETIME`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

/// How long a ban is kept; an object older than that is not tested against it any more.
pub const BAN_LIFETIME_MILLIS: u64 = 30 * 24 * 3600 * 1000;

/// What a ban matches.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// URLs starting with this (`http://host/path...`).
    Prefix(String),
    /// URLs matching this regular expression.
    Regex(regex::Regex),
    /// Objects tagged with this (in the configured tag header).
    Tag(String),
}

impl Matcher {
    /// Whether an object with this URL and tag header value matches.
    fn matches(&self, url: &str, tags: Option<&[u8]>) -> bool {
        match self {
            // The scheme aside: a ban of `http://host/a/` covers what was fetched for https
            // clients too.
            Matcher::Prefix(prefix) => without_scheme(url).starts_with(without_scheme(prefix)),
            Matcher::Regex(regex) => regex.is_match(url),
            Matcher::Tag(tag) => tags.is_some_and(|tags| {
                tags.split(|b| *b == b',' || b.is_ascii_whitespace())
                    .any(|one| one == tag.as_bytes())
            }),
        }
    }

    /// The ban as the admin API shows it.
    pub fn describe(&self) -> (&'static str, &str) {
        match self {
            Matcher::Prefix(prefix) => ("prefix", prefix),
            Matcher::Regex(regex) => ("regex", regex.as_str()),
            Matcher::Tag(tag) => ("tag", tag),
        }
    }
}

fn without_scheme(url: &str) -> &str {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url)
}

/// One ban.
#[derive(Clone, Debug)]
pub struct Ban {
    /// When it was made, in milliseconds since the epoch; it covers objects stored before.
    pub created: u64,
    /// What it matches.
    pub matcher: Matcher,
}

/// The node's bans.
#[derive(Debug, Default)]
pub struct Bans {
    list: RwLock<Vec<Ban>>,
    /// `created` of the newest ban (0 without any).
    newest: AtomicU64,
    /// Where they are saved, if anywhere.
    file: Option<BanFile>,
}

impl Bans {
    /// The bans saved in `file` by a previous run, saved there again whenever one is added;
    /// no file: kept in memory only.
    pub fn saved_in(file: Option<PathBuf>) -> Bans {
        let Some(path) = file else {
            return Bans::default();
        };
        let mut bans = Bans::default();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for (created, matcher) in parse_saved(&text) {
                // Saved under the limit in force then; kept whatever it is now.
                let _ = bans.add(matcher, created, usize::MAX);
            }
        }
        bans.file = Some(BanFile::start(path));
        bans
    }

    /// Waits (up to a second) until the bans added so far are in their file: for a clean
    /// shutdown.
    pub fn flush(&self) {
        if let Some(file) = &self.file {
            file.flush();
        }
    }

    /// Adds a ban made at `now` (in milliseconds, kept strictly increasing so that two bans in
    /// one millisecond are told apart), unless `max` bans are held already (each lookup of an
    /// older object may test every one): returns its time, or the number held.
    pub fn add(&self, matcher: Matcher, now: u64, max: usize) -> Result<u64, usize> {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|ban| ban.created + BAN_LIFETIME_MILLIS > now);
        if list.len() >= max {
            return Err(list.len());
        }
        let created = now.max(self.newest.load(Ordering::Relaxed) + 1);
        list.push(Ban { created, matcher });
        self.newest.store(created, Ordering::Release);
        if let Some(file) = &self.file {
            file.save(saved_text(&list));
        }
        Ok(created)
    }

    /// Whether a ban newer than `since` exists (an object's stored time, or the newest ban it
    /// was already tested against).
    pub fn newer_than(&self, since: u64) -> bool {
        self.newest.load(Ordering::Acquire) > since
    }

    /// Tests an object (URL, tag header) against the bans made after `since`. Returns whether
    /// one matches, and the time it is now tested up to.
    pub fn test(&self, url: &str, tags: Option<&[u8]>, since: u64) -> (bool, u64) {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        let banned = list
            .iter()
            .filter(|ban| ban.created > since)
            .any(|ban| ban.matcher.matches(url, tags));
        (
            banned,
            list.last().map_or(since, |ban| ban.created.max(since)),
        )
    }

    /// Every ban, oldest first.
    pub fn list(&self) -> Vec<Ban> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The file format: a line `created kind value` per ban.
fn saved_text(list: &[Ban]) -> String {
    list.iter()
        .map(|ban| {
            let (kind, value) = ban.matcher.describe();
            format!("{} {kind} {value}\n", ban.created)
        })
        .collect()
}

/// The bans of a saved file; lines that do not read are skipped.
fn parse_saved(text: &str) -> Vec<(u64, Matcher)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (created, kind, value) = (parts.next()?, parts.next()?, parts.next()?);
            let matcher = match kind {
                "prefix" => Matcher::Prefix(value.to_owned()),
                "tag" => Matcher::Tag(value.to_owned()),
                "regex" => Matcher::Regex(regex::Regex::new(value).ok()?),
                _ => return None,
            };
            Some((created.parse().ok()?, matcher))
        })
        .collect()
}

/// Saves the bans off the request path: a thread of its own writes the newest list whole (to
/// a temporary name, then renamed, so a crash leaves the old file or the new one), so that the
/// admin request that made a ban never waits for the disk. Lists added while one is written
/// are coalesced: only the newest is written next.
#[derive(Debug)]
struct BanFile {
    shared: Arc<BanFileState>,
}

#[derive(Debug, Default)]
struct BanFileState {
    /// The text to write next, and whether the file is being closed.
    pending: Mutex<(Option<String>, bool)>,
    /// Woken when there is text to write, when the file closes, and when a write ends.
    changed: Condvar,
}

impl BanFile {
    fn start(path: PathBuf) -> BanFile {
        let shared = Arc::new(BanFileState::default());
        let writer = Arc::clone(&shared);
        let started = std::thread::Builder::new()
            .name("ban-writer".into())
            .spawn(move || writer.run(&path));
        if let Err(error) = started {
            tracing::warn!(%error, "cannot start the ban writer; bans hold until a restart");
        }
        BanFile { shared }
    }

    fn save(&self, text: String) {
        lock(&self.shared.pending).0 = Some(text);
        self.shared.changed.notify_all();
    }

    fn flush(&self) {
        let pending = lock(&self.shared.pending);
        let _unused =
            self.shared
                .changed
                .wait_timeout_while(pending, Duration::from_secs(1), |(text, _)| text.is_some());
    }
}

impl Drop for BanFile {
    fn drop(&mut self) {
        lock(&self.shared.pending).1 = true;
        self.shared.changed.notify_all();
    }
}

impl BanFileState {
    fn run(&self, path: &Path) {
        loop {
            let mut pending = lock(&self.pending);
            while pending.0.is_none() && !pending.1 {
                pending = self
                    .changed
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            let Some(text) = pending.0.clone() else {
                return; // closed with nothing left to write
            };
            drop(pending);
            let temporary = path.with_extension("tmp");
            let written =
                std::fs::write(&temporary, &text).and_then(|()| std::fs::rename(&temporary, path));
            if let Err(error) = written {
                tracing::warn!(file = %path.display(), %error, "cannot save the bans; they hold until a restart");
            }
            let mut pending = lock(&self.pending);
            // Done with this text unless a newer one came meanwhile.
            if pending.0.as_ref() == Some(&text) {
                pending.0 = None;
            }
            drop(pending);
            self.changed.notify_all();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_covers_only_older_matching_objects() {
        let bans = Bans::default();
        assert!(!bans.newer_than(1_000));
        let created = bans
            .add(Matcher::Prefix("http://a.test/img/".into()), 2_000, 10)
            .unwrap();
        assert!(bans.newer_than(1_000));
        assert!(!bans.newer_than(3_000), "stored after the ban");
        assert_eq!(
            bans.test("http://a.test/img/x.png", None, 1_000),
            (true, created)
        );
        assert_eq!(
            bans.test("http://a.test/css/x.css", None, 1_000),
            (false, created)
        );
        assert!(!bans.newer_than(created), "tested once, not again");
    }

    #[test]
    fn regex_and_tag_bans() {
        let bans = Bans::default();
        let regex = Matcher::Regex(regex::Regex::new(r"\.css$").unwrap());
        bans.add(regex, 10, 10).unwrap();
        bans.add(Matcher::Tag("product-42".into()), 11, 10).unwrap();
        assert!(bans.test("http://a.test/x.css", None, 1).0);
        assert!(!bans.test("http://a.test/x.css?v=1", None, 1).0);
        assert!(
            bans.test("http://a.test/p", Some(b"shop, product-42 x"), 1)
                .0
        );
        assert!(!bans.test("http://a.test/p", Some(b"product-420"), 1).0);
        // Bans in the same millisecond stay distinct and ordered.
        let (first, second) = (
            bans.add(Matcher::Tag("a".into()), 5, 10).unwrap(),
            bans.add(Matcher::Tag("b".into()), 5, 10).unwrap(),
        );
        assert!(second > first && first > 11);
        // Four held, the most allowed: the next is refused, with the number held.
        assert_eq!(bans.add(Matcher::Tag("c".into()), 6, 4), Err(4));
    }

    #[test]
    fn bans_are_saved_and_read_back() {
        let path = std::env::temp_dir().join(format!("shoal-bans-{}", std::process::id()));
        let bans = Bans::saved_in(Some(path.clone()));
        bans.add(Matcher::Prefix("http://a/x".into()), 10, 100)
            .unwrap();
        bans.add(
            Matcher::Regex(regex::Regex::new("\\.jpg$").unwrap()),
            20,
            100,
        )
        .unwrap();
        bans.add(Matcher::Tag("t1".into()), 30, 100).unwrap();
        bans.flush();
        drop(bans);
        let again = Bans::saved_in(Some(path.clone()));
        let listed: Vec<(u64, String)> = again
            .list()
            .iter()
            .map(|ban| (ban.created, format!("{:?}", ban.matcher.describe())))
            .collect();
        assert_eq!(
            listed,
            [
                (10, r#"("prefix", "http://a/x")"#.to_owned()),
                (20, r#"("regex", "\\.jpg$")"#.to_owned()),
                (30, r#"("tag", "t1")"#.to_owned()),
            ]
        );
        let _ = std::fs::remove_file(path);
    }
}
