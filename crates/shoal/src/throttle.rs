//! A budget of log lines for events an attacker can cause at will (malformed requests, admin
//! requests without the token, connections that stall): a flood of them must not fill the
//! disk or drown the lines that matter. Each call site has its own budget, per second; the
//! lines held back are counted and reported with the next line written.

use std::sync::atomic::{AtomicU64, Ordering};

/// At most `per_second` lines a second from one call site.
pub struct LogBudget {
    per_second: u64,
    /// The second of the Unix epoch the count is for, and the lines written in it, packed
    /// (second << 20 | count) so that one atomic holds both.
    window: AtomicU64,
    /// Lines held back since the last one written.
    held_back: AtomicU64,
}

impl LogBudget {
    /// A budget of `per_second` lines a second (at most a million).
    pub const fn new(per_second: u64) -> LogBudget {
        LogBudget {
            per_second,
            window: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now: `Some(lines held back before it)`, or `None` when
    /// this second's budget is spent (the line is counted as held back).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(crate::clock::now_millis() / 1000)
    }

    fn admit_at(&self, second: u64) -> Option<u64> {
        let mut window = self.window.load(Ordering::Relaxed);
        loop {
            let (current, used) = (window >> 20, window & 0xF_FFFF);
            let next = match current == second {
                true if used >= self.per_second => {
                    self.held_back.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                true => window + 1,
                false => second << 20 | 1,
            };
            match self.window.compare_exchange_weak(
                window,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.held_back.swap(0, Ordering::Relaxed)),
                Err(actual) => window = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_lets_so_many_lines_a_second_through_and_counts_the_rest() {
        let budget = LogBudget::new(3);
        let admitted: Vec<_> = (0..10).map(|_| budget.admit_at(100)).collect();
        assert_eq!(&admitted[..3], [Some(0), Some(0), Some(0)]);
        assert!(admitted[3..].iter().all(Option::is_none));
        // The next second's first line says how many were held back.
        assert_eq!(budget.admit_at(101), Some(7));
        assert_eq!(budget.admit_at(101), Some(0));
    }
}
