//! Request collapsing: a table of in-flight origin fetches keyed by cache key. The first miss
//! for a key becomes the leader and owns the fetch; later misses follow it and are told the
//! outcome: an object to read as it fills, "pass" (the response cannot be shared, so go to the
//! origin yourself, at once), or a failure. Keys found uncacheable are remembered for a while so
//! that requests for them skip the table instead of queueing behind fetches that are never
//! shared; they still fetch as misses, so a cacheable answer is stored and ends the mark.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{CacheKey, KeyMap};

/// What followers of a fetch learn once its response head arrives. `T` is what the
/// response is stored as (the pipeline's stored object; this module needs nothing of it).
#[derive(Clone, Debug)]
pub enum FlightOutcome<T> {
    /// Still waiting for the origin's response head.
    Pending,
    /// The response is being stored: read it from this object (it may still be filling).
    Object(T),
    /// The response cannot be shared: make your own request.
    Pass,
    /// The origin failed; the status the leader answered with (502 or 504).
    Failed(http::StatusCode),
}

struct Flight<T> {
    outcome: watch::Sender<FlightOutcome<T>>,
}

/// The in-flight table.
pub struct Collapser<T> {
    flights: Mutex<KeyMap<Arc<Flight<T>>>>,
    uncacheable: Marks,
    /// Keys found changed at the origin while an upstream (a peer, a parent) may still hold
    /// the old version fresh: their next fetch asks it to revalidate.
    changed: Marks,
}

/// Keys marked until a time. Every miss asks both tables about its key, and they are nearly
/// always empty: `len` answers that without the lock.
#[derive(Default)]
struct Marks {
    marks: Mutex<KeyMap<Instant>>,
    /// The table's size, kept under the lock and read without it. A mark set while another
    /// thread reads 0 is seen by that thread's next request: marks are hints, not barriers.
    len: AtomicUsize,
}

impl Marks {
    fn mark(&self, key: CacheKey, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut marks = lock(&self.marks);
        let now = Instant::now();
        // Keep the table small: sweep expired marks whenever it grows large.
        if marks.len() >= 10_000 {
            marks.retain(|_, until| *until > now);
        }
        marks.insert(key, now + ttl);
        self.len.store(marks.len(), Ordering::Relaxed);
    }

    /// Whether `key` is marked (an expired mark is dropped; so is a live one if `take`).
    fn holds(&self, key: CacheKey, take: bool) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut marks = lock(&self.marks);
        let live = match marks.get(&key) {
            Some(until) => *until > Instant::now(),
            None => return false,
        };
        if take || !live {
            marks.remove(&key);
            self.len.store(marks.len(), Ordering::Relaxed);
        }
        live
    }

    fn clear(&self, key: CacheKey) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut marks = lock(&self.marks);
        marks.remove(&key);
        self.len.store(marks.len(), Ordering::Relaxed);
    }
}

impl<T> Default for Collapser<T> {
    fn default() -> Self {
        Collapser {
            flights: Mutex::default(),
            uncacheable: Marks::default(),
            changed: Marks::default(),
        }
    }
}

/// The role a request gets for its key.
pub enum Role<T: Clone> {
    /// Fetch from the origin and report through the guard.
    Leader(FlightGuard<T>),
    /// Wait for the leader's outcome.
    Follower(Follower<T>),
}

/// Held by the leader; reports the outcome to the followers. Dropping it without a report
/// (the leader failed or was cancelled) releases the followers with [`FlightOutcome::Pass`], so
/// nobody hangs.
pub struct FlightGuard<T: Clone> {
    collapser: Arc<Collapser<T>>,
    key: CacheKey,
    flight: Arc<Flight<T>>,
    settled: bool,
}

/// Waits for a leader's outcome.
pub struct Follower<T> {
    outcome: watch::Receiver<FlightOutcome<T>>,
}

impl<T: Clone> Collapser<T> {
    /// Joins the fetch for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: CacheKey) -> Role<T> {
        let mut flights = lock(&self.flights);
        if let Some(flight) = flights.get(&key) {
            return Role::Follower(Follower {
                outcome: flight.outcome.subscribe(),
            });
        }
        let flight = Arc::new(Flight {
            outcome: watch::Sender::new(FlightOutcome::Pending),
        });
        flights.insert(key, Arc::clone(&flight));
        Role::Leader(FlightGuard {
            collapser: Arc::clone(self),
            key,
            flight,
            settled: false,
        })
    }

    /// [`Collapser::join`] for a caller whose lookup found nothing usable: a would-be leader
    /// first asks `stored` once more. A fetch that stored its object between that lookup and
    /// this join has left the table already (it stores before it leaves), so without the second
    /// look the object would be fetched twice. What `stored` finds ends the new flight at once
    /// and the caller follows it, reading that object.
    pub fn join_unless(
        self: &Arc<Self>,
        key: CacheKey,
        stored: impl FnOnce() -> Option<T>,
    ) -> Role<T> {
        let role = self.join(key);
        let Role::Leader(guard) = role else {
            return role;
        };
        let Some(object) = stored() else {
            return Role::Leader(guard);
        };
        let follower = Follower {
            outcome: guard.flight.outcome.subscribe(),
        };
        guard.finish(FlightOutcome::Object(object));
        Role::Follower(follower)
    }

    /// A fetch for `key` that nobody can join: for a key recently found uncacheable, whose
    /// requests must not queue behind one another (Varnish's hit-for-miss), but whose response
    /// is still stored when it turns out cacheable.
    pub fn alone(self: &Arc<Self>, key: CacheKey) -> FlightGuard<T> {
        FlightGuard {
            collapser: Arc::clone(self),
            key,
            flight: Arc::new(Flight {
                outcome: watch::Sender::new(FlightOutcome::Pending),
            }),
            settled: false,
        }
    }

    /// Whether a fetch for `key` is under way (a background refresh checks before starting one).
    pub fn in_flight(&self, key: CacheKey) -> bool {
        lock(&self.flights).contains_key(&key)
    }

    /// Remembers that `key` gave an uncacheable response, for `ttl`.
    pub fn mark_uncacheable(&self, key: CacheKey, ttl: Duration) {
        self.uncacheable.mark(key, ttl);
    }

    /// Whether `key` was recently found uncacheable.
    pub fn is_uncacheable(&self, key: CacheKey) -> bool {
        self.uncacheable.holds(key, false)
    }

    /// Forgets that `key` was uncacheable (it just gave a storable response).
    pub fn clear_uncacheable(&self, key: CacheKey) {
        self.uncacheable.clear(key);
    }

    /// Remembers, for `ttl`, that `key` changed at the origin while an upstream may still
    /// hold the old version.
    pub fn mark_changed(&self, key: CacheKey, ttl: Duration) {
        self.changed.mark(key, ttl);
    }

    /// Whether `key` was marked changed; the mark is used up.
    pub fn take_changed(&self, key: CacheKey) -> bool {
        self.changed.holds(key, true)
    }

    /// Fetches under way, for the admin API.
    pub fn flights(&self) -> usize {
        lock(&self.flights).len()
    }

    /// The keys of the fetches under way, for the admin API.
    pub fn flight_keys(&self) -> Vec<CacheKey> {
        lock(&self.flights).keys().copied().collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning follows a panic while holding the lock; the maps are consistent regardless.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T: Clone> FlightGuard<T> {
    /// Tells the followers the response is being stored as `object`. The flight stays in the
    /// table, so that later misses attach to the filling object, until [`FlightGuard::finish`].
    pub fn publish(&mut self, object: T) {
        self.flight
            .outcome
            .send_replace(FlightOutcome::Object(object));
    }

    /// Ends the flight with a final outcome and removes it from the table.
    pub fn finish(mut self, outcome: FlightOutcome<T>) {
        self.settle(outcome);
    }

    fn settle(&mut self, outcome: FlightOutcome<T>) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut flights = lock(&self.collapser.flights);
        if flights
            .get(&self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &self.flight))
        {
            flights.remove(&self.key);
        }
        drop(flights);
        if !matches!(outcome, FlightOutcome::Pending) {
            self.flight.outcome.send_replace(outcome);
        }
    }
}

impl<T: Clone> Drop for FlightGuard<T> {
    fn drop(&mut self) {
        if !self.settled {
            let published = !matches!(*self.flight.outcome.borrow(), FlightOutcome::Pending);
            self.settle(if published {
                FlightOutcome::Pending
            } else {
                FlightOutcome::Pass
            });
        }
    }
}

impl<T: Clone> Follower<T> {
    /// Waits for the leader's outcome (never [`FlightOutcome::Pending`]).
    pub async fn outcome(mut self) -> FlightOutcome<T> {
        loop {
            let current = self.outcome.borrow_and_update().clone();
            if !matches!(current, FlightOutcome::Pending) {
                return current;
            }
            if self.outcome.changed().await.is_err() {
                // The leader vanished without a word: fend for yourself.
                let last = self.outcome.borrow().clone();
                return match last {
                    FlightOutcome::Pending => FlightOutcome::Pass,
                    other => other,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the tests store: any cloneable thing does.
    type Stored = Arc<&'static str>;

    /// Marks last their time, a taken one is gone, and the count the lock-free look trusts
    /// follows every change (a count stuck above 0 would only cost the lock; stuck at 0 it
    /// would lose marks).
    #[test]
    fn marks_expire_are_taken_and_keep_their_count() {
        let marks = Marks::default();
        assert!(!marks.holds(CacheKey(1), false), "empty");
        marks.mark(CacheKey(1), Duration::from_secs(60));
        marks.mark(CacheKey(2), Duration::from_millis(1));
        marks.mark(CacheKey(3), Duration::ZERO);
        assert_eq!(marks.len.load(Ordering::Relaxed), 2);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!marks.holds(CacheKey(2), false), "expired");
        assert!(!marks.holds(CacheKey(3), false), "never marked");
        assert!(marks.holds(CacheKey(1), false));
        assert!(marks.holds(CacheKey(1), true), "taken");
        assert!(!marks.holds(CacheKey(1), false), "gone once taken");
        assert_eq!(marks.len.load(Ordering::Relaxed), 0);
        marks.mark(CacheKey(4), Duration::from_secs(60));
        marks.clear(CacheKey(4));
        assert!(!marks.holds(CacheKey(4), false), "cleared");
        assert_eq!(marks.len.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn followers_hear_the_outcome_and_a_dropped_leader_releases_them() {
        let collapser = Arc::new(Collapser::<Stored>::default());
        let key = CacheKey(7);
        let Role::Leader(leader) = collapser.join(key) else {
            panic!("first is leader")
        };
        let Role::Follower(follower) = collapser.join(key) else {
            panic!("second follows")
        };
        let waiting = tokio::spawn(follower.outcome());
        leader.finish(FlightOutcome::Failed(http::StatusCode::BAD_GATEWAY));
        assert!(matches!(waiting.await.unwrap(), FlightOutcome::Failed(_)));
        assert!(!collapser.in_flight(key));

        let Role::Leader(leader) = collapser.join(key) else {
            panic!("new leader")
        };
        let Role::Follower(follower) = collapser.join(key) else {
            panic!("follower")
        };
        drop(leader);
        assert!(matches!(follower.outcome().await, FlightOutcome::Pass));
    }

    #[tokio::test]
    async fn a_leader_that_finds_the_object_stored_follows_it_instead() {
        let collapser = Arc::new(Collapser::<Stored>::default());
        let key = CacheKey(9);
        let object: Stored = Arc::new("stored");
        let Role::Follower(follower) = collapser.join_unless(key, || Some(Arc::clone(&object)))
        else {
            panic!("stored meanwhile: nothing to lead")
        };
        assert!(!collapser.in_flight(key), "the flight it opened is over");
        let FlightOutcome::Object(found) = follower.outcome().await else {
            panic!("the stored object")
        };
        assert!(Arc::ptr_eq(&found, &object));
        // Nothing stored: it leads.
        assert!(matches!(
            collapser.join_unless(key, || None),
            Role::Leader(_)
        ));
    }

    #[test]
    fn uncacheable_marks_expire() {
        let collapser = Collapser::<Stored>::default();
        collapser.mark_uncacheable(CacheKey(1), Duration::from_secs(60));
        assert!(collapser.is_uncacheable(CacheKey(1)));
        collapser.mark_uncacheable(CacheKey(2), Duration::from_nanos(1));
        std::thread::sleep(Duration::from_millis(2));
        assert!(!collapser.is_uncacheable(CacheKey(2)));
    }
}
