//! One process-wide budget for the request bodies the proxy keeps in memory (for a 401 replay, a
//! resend of a stream an HTTP/2 upstream refused, or a webhook delivery held whole to verify its
//! signature), so that many concurrent uploads cannot take more than `server.replay_buffer_budget`
//! between them.
//!
//! A body reserves its declared length (a webhook's, without one, its `max_body`) before it is
//! read. When the budget cannot take it, a proxied body streams instead and is not replayable
//! (never refused, never waiting), and a webhook delivery gets 503 with `Retry-After`, which its
//! platform retries (README, "Limits").
//! The reservation is one lock-free `fetch_update` on the bytes in use, and the [`ReplayPermit`]
//! it returns gives them back when dropped, which is when the last copy of the kept body goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed};

use crate::metrics::GlobalMetrics;

/// The bytes of kept bodies, all requests together, and how many they may reach.
#[derive(Debug)]
pub(crate) struct ReplayBudget {
    limit: usize,
    used: AtomicUsize,
    /// Where a reservation the budget could not take is counted.
    metrics: Arc<GlobalMetrics>,
}

/// `bytes` of the budget, held until dropped.
#[derive(Debug)]
pub(crate) struct ReplayPermit {
    budget: Arc<ReplayBudget>,
    bytes: usize,
}

impl ReplayBudget {
    pub(crate) fn new(limit: usize, metrics: Arc<GlobalMetrics>) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            metrics,
        })
    }

    /// `bytes` of the budget, or `None` (counted) when they would take it past its limit.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<ReplayPermit> {
        let reserved = self.used.fetch_update(AcqRel, Acquire, |used| {
            used.checked_add(bytes).filter(|total| *total <= self.limit)
        });
        if reserved.is_err() {
            self.metrics.replay_budget_exhausted.fetch_add(1, Relaxed);
            return None;
        }
        Some(ReplayPermit {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Acquire)
    }
}

impl Drop for ReplayPermit {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_never_exceed_the_budget_and_give_it_back_on_drop() {
        let metrics = Arc::new(GlobalMetrics::default());
        let budget = ReplayBudget::new(100, Arc::clone(&metrics));
        let first = budget.try_reserve(60).expect("fits");
        assert!(budget.try_reserve(41).is_none(), "60 + 41 is over 100");
        let second = budget.try_reserve(40).expect("60 + 40 fits exactly");
        assert_eq!(budget.used(), 100);
        assert!(budget.try_reserve(1).is_none());
        assert_eq!(metrics.replay_budget_exhausted.load(Relaxed), 2);
        drop(first);
        assert_eq!(budget.used(), 40, "a dropped permit gives its bytes back");
        assert!(budget.try_reserve(usize::MAX).is_none(), "no overflow past the limit");
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn concurrent_reservations_stay_within_the_budget() {
        let budget = ReplayBudget::new(1000, Arc::new(GlobalMetrics::default()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = Arc::clone(&budget);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let permit = budget.try_reserve(300);
                        assert!(budget.used() <= 1000, "never over the budget");
                        drop(permit);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no thread panicked");
        }
        assert_eq!(budget.used(), 0, "every permit gave its bytes back");
    }
}
