//! A pool of upstream hosts shared by every worker: the hosts, their passive health (hosts that
//! fail several times in a row are ejected for a growing back-off) and in-flight counts, and
//! the pool's picker.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::select::{Candidate, Selector};
use crate::cache::CacheKey;
use crate::config::{HealthConfig, OriginUrl, PoolConfig};

pub use shoal_api::upstreams::{AdminState, CheckResult};

/// The state stored as `value` in a host's atomic.
fn admin_state_from(value: u8) -> AdminState {
    match value {
        1 => AdminState::Up,
        2 => AdminState::Down,
        3 => AdminState::Drain,
        _ => AdminState::Auto,
    }
}

/// Failures in a row that eject a host.
const FAILURES_TO_EJECT: u32 = 3;
/// The first ejection's length; each further one in a row doubles it, up to `MAX_EJECTION`.
const FIRST_EJECTION_MILLIS: u64 = 1_000;
const MAX_EJECTION_MILLIS: u64 = 60_000;

/// One upstream host and what is known of its health.
#[derive(Debug)]
pub struct Host {
    /// Where it is.
    pub url: OriginUrl,
    /// `url`'s `host:port`, shared by every response's [`super::Trace`].
    pub label: Arc<str>,
    /// Its relative share.
    pub weight: u32,
    /// Most requests in flight to it; 0 for no limit.
    pub max_connections: u32,
    id: u64,
    in_flight: AtomicU32,
    failures_in_a_row: AtomicU32,
    ejections_in_a_row: AtomicU32,
    ejected_until: AtomicU64,
    last_failure: AtomicU64,
    admin: AtomicU8,
    /// What the active checks say (up until they say otherwise).
    healthy: AtomicBool,
    last_check: Mutex<Option<CheckResult>>,
}

impl Host {
    fn new(url: OriginUrl, weight: u32, max_connections: u32) -> Host {
        Host {
            id: xxhash_rust::xxh3::xxh3_64(url.authority.as_bytes()),
            label: Arc::from(url.authority.as_str()),
            url,
            weight,
            max_connections,
            in_flight: AtomicU32::new(0),
            failures_in_a_row: AtomicU32::new(0),
            ejections_in_a_row: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
            admin: AtomicU8::new(0),
            healthy: AtomicBool::new(true),
            last_check: Mutex::new(None),
        }
    }

    /// Whether it takes new requests now: not set down or drained, and (unless set up)
    /// healthy, not ejected and below its connection limit.
    pub fn is_available(&self, now: u64) -> bool {
        match self.admin_state() {
            AdminState::Down | AdminState::Drain => false,
            AdminState::Up => true,
            AdminState::Auto => {
                self.healthy.load(Ordering::Relaxed)
                    && self.ejected_until.load(Ordering::Relaxed) <= now
                    && (self.max_connections == 0
                        || self.in_flight.load(Ordering::Relaxed) < self.max_connections)
            }
        }
    }

    /// May it be tried when no host is available (failing open)? Not when an operator took
    /// it out.
    fn may_fail_open(&self) -> bool {
        !matches!(self.admin_state(), AdminState::Down | AdminState::Drain)
    }

    /// The state an operator set.
    pub fn admin_state(&self) -> AdminState {
        admin_state_from(self.admin.load(Ordering::Relaxed))
    }

    /// Sets the operator's state.
    pub fn set_admin_state(&self, state: AdminState) {
        self.admin.store(state as u8, Ordering::Relaxed);
    }

    /// What the active checks say.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The latest active check.
    pub fn last_check(&self) -> Option<CheckResult> {
        self.last_check
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records an active check; returns whether the host's health changed.
    pub fn record_check(&self, result: CheckResult, streak: u32, health: &HealthConfig) -> bool {
        let was = self.is_healthy();
        let now = super::health::up_after(was, result.passed, streak, health.rise, health.fall);
        *self
            .last_check
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(result);
        self.healthy.store(now, Ordering::Relaxed);
        now != was
    }

    /// Requests in flight to it.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Until when it is ejected (milliseconds since the epoch; in the past when it is not).
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    fn candidate(&self, now: u64) -> Candidate {
        Candidate {
            weight: self.weight,
            id: self.id,
            available: self.is_available(now),
        }
    }
}

/// A pool of hosts.
#[derive(Debug)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Whether its hosts are a parent tier of caches.
    pub parent: bool,
    /// Its hosts, in configuration order.
    pub hosts: Vec<Host>,
    /// Its active health check.
    pub health: Option<HealthConfig>,
    /// CA certificates trusted for its `https://` hosts, besides the system's.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Its `https://` hosts' certificates are not verified (testing only).
    pub accept_invalid_certs: bool,
    /// Time from sending a request to one of its hosts to the response head.
    pub first_byte: crate::histogram::Histogram,
    /// Attempts made after a first one failed (retries and fallthrough).
    pub retries: AtomicU64,
    /// For pools with `file:///` hosts: their settings and the tags of the files read.
    pub files: Option<Arc<super::files::Files>>,
    /// PUT and DELETE are accepted (`writable`), and need the admin token (`writable_auth`).
    pub writable: Option<WriteAuth>,
    /// Its answers' `X-Reproxy-URL` and `X-Accel-Redirect` are followed (`reproxy`).
    pub reproxy: bool,
    /// Clients cannot reach it directly (`internal`).
    pub internal: bool,
    /// Its hosts are an object store's endpoints and its objects a bucket's (`[pools.s3]`).
    pub bucket: bool,
    selector: Selector,
}

/// Who may write through a writable pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteAuth {
    /// Anyone who reaches it (`writable_auth = false`).
    Anyone,
    /// The admin token.
    Token,
}

/// A request in flight to a host; counts against its `max_connections` until dropped.
pub struct InFlight<'a>(&'a Host);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool as configured.
    pub fn new(config: &PoolConfig) -> Pool {
        let mut pool = Pool::of_urls(
            &config.name,
            config.policy,
            config.parent,
            config
                .hosts
                .iter()
                .map(|host| (host.url.clone(), host.weight, host.max_connections)),
        );
        pool.health = config.health.clone();
        pool.tls_ca = config.tls_ca.clone();
        pool.accept_invalid_certs = config.danger_accept_invalid_certs_for_testing;
        if config.serves_files() {
            let settings = super::files::Settings::of(config);
            pool.files = Some(Arc::new(super::files::Files::new(settings)));
        }
        pool.reproxy = config.reproxy;
        pool.internal = config.internal;
        pool.bucket = config.s3.is_some();
        pool.writable = config.writable.then_some(match config.writable_auth {
            true => WriteAuth::Token,
            false => WriteAuth::Anyone,
        });
        pool
    }

    /// The policy.
    pub fn policy(&self) -> crate::config::Policy {
        self.selector.policy()
    }

    /// A pool of `hosts` (URL, weight, connection limit).
    pub fn of_urls(
        name: &str,
        policy: crate::config::Policy,
        parent: bool,
        hosts: impl IntoIterator<Item = (OriginUrl, u32, u32)>,
    ) -> Pool {
        let hosts: Vec<Host> = hosts
            .into_iter()
            .map(|(url, weight, limit)| Host::new(url, weight, limit))
            .collect();
        Pool {
            name: name.to_owned(),
            parent,
            selector: Selector::new(policy, hosts.len()),
            hosts,
            health: None,
            tls_ca: None,
            accept_invalid_certs: false,
            first_byte: crate::histogram::Histogram::default(),
            retries: AtomicU64::new(0),
            files: None,
            writable: None,
            reproxy: false,
            internal: false,
            bucket: false,
        }
    }

    /// The host for a request with cache key `key`, not among `tried`: an available one by the
    /// pool's policy, or, when none is available, the one that failed longest ago (failing
    /// open: a pool whose hosts all look down still gets a chance to answer).
    pub fn pick(&self, key: CacheKey, tried: &[usize], now: u64) -> Option<usize> {
        let candidate = |index: usize| self.candidate(index, now);
        let picked = self
            .selector
            .pick_with(self.hosts.len(), candidate, key, tried);
        picked.or_else(|| {
            (0..self.hosts.len())
                .filter(|index| !tried.contains(index) && self.hosts[*index].may_fail_open())
                .min_by_key(|&index| self.hosts[index].last_failure.load(Ordering::Relaxed))
        })
    }

    /// Host `index` as the picker sees it now.
    pub fn candidate(&self, index: usize, now: u64) -> Candidate {
        self.hosts[index].candidate(now)
    }

    /// Counts a request in flight to host `index`.
    pub fn begin(&self, index: usize) -> InFlight<'_> {
        let host = &self.hosts[index];
        host.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(host)
    }

    /// Host `index` answered: its failure streak ends.
    pub fn succeeded(&self, index: usize) {
        let host = &self.hosts[index];
        // Read first: on the common path nothing changes, and a store would pull the line
        // away from the other workers' cores.
        if host.failures_in_a_row.load(Ordering::Relaxed) != 0 {
            host.failures_in_a_row.store(0, Ordering::Relaxed);
        }
        if host.ejections_in_a_row.load(Ordering::Relaxed) != 0 {
            host.ejections_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// Host `index` failed (connection, timeout or 5xx); after a few in a row it is ejected.
    pub fn failed(&self, index: usize, now: u64) {
        let host = &self.hosts[index];
        host.last_failure.store(now, Ordering::Relaxed);
        if host.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 < FAILURES_TO_EJECT {
            return;
        }
        host.failures_in_a_row.store(0, Ordering::Relaxed);
        let ejections = host
            .ejections_in_a_row
            .fetch_add(1, Ordering::Relaxed)
            .min(16);
        let length = (FIRST_EJECTION_MILLIS << ejections).min(MAX_EJECTION_MILLIS);
        host.ejected_until.store(now + length, Ordering::Relaxed);
        tracing::warn!(
            pool = %self.name,
            host = %host.url.authority,
            seconds = length / 1000,
            "upstream host failed {FAILURES_TO_EJECT} times in a row; ejected"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;

    fn pool(policy: Policy, hosts: usize) -> Pool {
        Pool::of_urls(
            "test",
            policy,
            false,
            (0..hosts).map(|n| {
                (
                    format!("http://127.0.0.1:{}", 9000 + n).parse().unwrap(),
                    1,
                    0,
                )
            }),
        )
    }

    #[test]
    fn three_failures_eject_a_host_for_a_growing_time() {
        let pool = pool(Policy::Failover, 2);
        for _ in 0..2 {
            pool.failed(0, 1_000);
        }
        assert_eq!(
            pool.pick(CacheKey(0), &[], 1_000),
            Some(0),
            "two failures are not enough"
        );
        pool.failed(0, 1_000);
        assert_eq!(pool.pick(CacheKey(0), &[], 1_500), Some(1));
        assert_eq!(
            pool.pick(CacheKey(0), &[], 2_000),
            Some(0),
            "back after a second"
        );
        for _ in 0..3 {
            pool.failed(0, 2_000);
        }
        assert_eq!(
            pool.pick(CacheKey(0), &[], 3_500),
            Some(1),
            "two seconds the second time"
        );
        assert_eq!(pool.pick(CacheKey(0), &[], 4_000), Some(0));
        pool.succeeded(0);
        for _ in 0..3 {
            pool.failed(0, 5_000);
        }
        assert_eq!(
            pool.pick(CacheKey(0), &[], 6_000),
            Some(0),
            "a success resets the back-off"
        );
    }

    #[test]
    fn a_pool_with_every_host_down_fails_open_to_the_least_recently_failed() {
        let pool = pool(Policy::RoundRobin, 2);
        for _ in 0..3 {
            pool.failed(1, 1_000);
        }
        for _ in 0..3 {
            pool.failed(0, 1_100);
        }
        assert_eq!(pool.pick(CacheKey(0), &[], 1_200), Some(1));
        assert_eq!(pool.pick(CacheKey(0), &[1], 1_200), Some(0));
        assert_eq!(pool.pick(CacheKey(0), &[0, 1], 1_200), None);
    }

    #[test]
    fn drained_and_downed_hosts_get_nothing_and_forced_up_ones_everything() {
        let pool = pool(Policy::Failover, 2);
        pool.hosts[0].set_admin_state(AdminState::Drain);
        assert_eq!(pool.pick(CacheKey(0), &[], 0), Some(1));
        pool.hosts[1].set_admin_state(AdminState::Down);
        assert_eq!(
            pool.pick(CacheKey(0), &[], 0),
            None,
            "no failing open to them"
        );
        pool.hosts[0].set_admin_state(AdminState::Up);
        for _ in 0..3 {
            pool.failed(0, 0);
        }
        assert_eq!(pool.pick(CacheKey(0), &[], 1), Some(0));
    }

    #[test]
    fn checks_take_a_host_down_after_fall_and_up_after_rise() {
        let pool = pool(Policy::Failover, 2);
        let health = HealthConfig::default();
        let check = |passed| CheckResult {
            at: 0,
            passed,
            detail: String::new(),
        };
        assert!(!pool.hosts[0].record_check(check(false), 2, &health));
        assert!(pool.hosts[0].record_check(check(false), 3, &health));
        assert_eq!(pool.pick(CacheKey(0), &[], 0), Some(1));
        assert!(!pool.hosts[0].record_check(check(true), 1, &health));
        assert!(pool.hosts[0].record_check(check(true), 2, &health));
        assert_eq!(pool.pick(CacheKey(0), &[], 0), Some(0));
    }

    #[test]
    fn a_host_at_its_connection_limit_is_skipped() {
        let pool = Pool::of_urls(
            "limited",
            Policy::Failover,
            false,
            [
                ("http://127.0.0.1:1".parse().unwrap(), 1, 1),
                ("http://127.0.0.1:2".parse().unwrap(), 1, 0),
            ],
        );
        let first = pool.begin(0);
        assert_eq!(pool.pick(CacheKey(0), &[], 0), Some(1));
        drop(first);
        assert_eq!(pool.pick(CacheKey(0), &[], 0), Some(0));
    }
}
