//! Bans: invalidation by URL prefix, URL regular expression or tag (surrogate key), applied
//! lazily. A ban never walks the cache: each object is tested against the bans newer than it
//! the next time it is looked up, and a match makes it absent. The hit path pays one comparison
//! of two numbers while no ban is newer than the object.
//!
//! A ban covers the objects stored before it (by the time their response arrived), so an object
//! fetched again after a ban is not affected. Bans are kept for `BAN_LIFETIME`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

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
}

impl Bans {
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
}
