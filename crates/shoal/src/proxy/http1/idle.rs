//! One clock for all connections that wait for their next request with their buffers kept.
//!
//! A connection keeps its buffers for a moment after a response (see `next_request`). Timing
//! that moment with a timer of its own costs more than the timer: tokio wakes its driver
//! whenever a timer is registered that is due before the driver's next planned wake, and a
//! short timer registered after every response nearly always is. The driver's wake is a write
//! to an eventfd and another `epoll_wait`, about once per request on a quiet node. A
//! single task ticking for all of them instead keeps its own timer due first, so the
//! connections' waits register no timer, and the other timers of a request (origin first
//! byte, keep-alive) are later than the tick and wake nothing either.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

/// How often the clock ticks; a connection keeps its buffers for one to two ticks.
const TICK: Duration = Duration::from_millis(50);

/// Ticks for the connections of one runtime (a worker thread has one of its own: tokio's timer
/// driver, the one to keep from waking, is per runtime, and a wake from another runtime's
/// ticker would cost the same eventfd write). Clones share the clock; the ticking task ends
/// once the last clone is dropped.
#[derive(Clone)]
pub struct IdleTicks {
    notify: Arc<Notify>,
}

impl IdleTicks {
    /// Starts ticking on the current runtime.
    pub fn start() -> IdleTicks {
        let notify = Arc::new(Notify::new());
        tokio::spawn(tick(Arc::downgrade(&notify)));
        IdleTicks { notify }
    }

    /// Completes at the second tick from now: after one to two ticks. The caller races it
    /// against the socket becoming readable.
    pub async fn two_ticks(&self) {
        for _ in 0..2 {
            self.notify.notified().await;
        }
    }
}

async fn tick(notify: Weak<Notify>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match notify.upgrade() {
            Some(notify) => notify.notify_waiters(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the clock moves only when every task waits, so these durations are exact.
    #[tokio::test(start_paused = true)]
    async fn a_wait_lasts_one_to_two_ticks() {
        let ticks = IdleTicks::start();
        let started = tokio::time::Instant::now();
        ticks.two_ticks().await;
        let waited = started.elapsed();
        assert!(waited >= TICK && waited <= 2 * TICK, "waited {waited:?}");
        let started = tokio::time::Instant::now();
        ticks.two_ticks().await;
        assert_eq!(started.elapsed(), 2 * TICK);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticking_ends_with_the_ticks() {
        let runtime = tokio::runtime::Handle::current().metrics();
        let ticks = IdleTicks::start();
        ticks.two_ticks().await;
        assert_eq!(runtime.num_alive_tasks(), 1);
        drop(ticks);
        tokio::time::sleep(2 * TICK).await;
        assert_eq!(runtime.num_alive_tasks(), 0);
    }
}
