//! The shared store's state as the admin endpoints, the metrics and the log see it: up or
//! unreachable since when, and errors per operation. Lock-free: commands record into atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::clock;

/// What a store command was doing, for `tokenbroker_store_errors_total{op}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Read,
    Lease,
    Commit,
    /// The rate-limit bucket: reservations and pauses.
    Bucket,
    Ping,
    Subscribe,
}

impl StoreOp {
    pub const ALL: [Self; 6] = [
        Self::Read,
        Self::Lease,
        Self::Commit,
        Self::Bucket,
        Self::Ping,
        Self::Subscribe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Lease => "lease",
            Self::Commit => "commit",
            Self::Bucket => "bucket",
            Self::Ping => "ping",
            Self::Subscribe => "subscribe",
        }
    }
}

pub struct StoreHealth {
    up: AtomicBool,
    /// Unix ms of the last change of state (or of startup, before the first answer).
    since_ms: AtomicU64,
    /// Whether Redis has answered at least once since startup.
    answered: AtomicBool,
    errors: [AtomicU64; StoreOp::ALL.len()],
}

impl Default for StoreHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(false),
            since_ms: AtomicU64::new(clock::unix_millis()),
            answered: AtomicBool::new(false),
            errors: Default::default(),
        }
    }
}

impl StoreHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Unix ms since which the store has been in its current state.
    pub fn since_ms(&self) -> u64 {
        self.since_ms.load(Ordering::Acquire)
    }

    pub fn errors(&self, op: StoreOp) -> u64 {
        self.errors[op as usize].load(Ordering::Relaxed)
    }

    /// Records an answer; returns whether the store was unreachable (or not yet reached) before.
    pub(super) fn mark_up(&self) -> bool {
        if self.up.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.since_ms.store(clock::unix_millis(), Ordering::Release);
        let again = self.answered.swap(true, Ordering::AcqRel);
        tracing::info!(reconnected = again, "shared store reachable");
        true
    }

    /// Records a command that reached Redis and was answered with an error (`WRONGTYPE`, a
    /// script error): that operation fails, the store stays up. Logged with the error's code only
    /// (never its text, which can quote keys), on the 1st, 2nd, 4th, 8th… of each operation, so a
    /// key broken for good cannot flood the log.
    pub(super) fn mark_refused(&self, op: StoreOp, code: &str) {
        let count = self.errors[op as usize].fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            tracing::warn!(
                op = op.as_str(),
                error = code,
                count,
                "the shared store refused a command; that operation failed, the store stays in use"
            );
        }
    }

    /// Records a failed command; logs only the change of state, with the error's category (never
    /// its text, which could name the server or the credentials).
    pub(super) fn mark_error(&self, op: StoreOp, category: &str) {
        self.errors[op as usize].fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            self.since_ms.store(clock::unix_millis(), Ordering::Release);
            tracing::warn!(
                op = op.as_str(),
                error = category,
                "shared store unreachable; tokens are renewed locally until it returns"
            );
        } else if !self.answered.load(Ordering::Acquire) && self.errors(StoreOp::Ping) == 1 && op == StoreOp::Ping {
            tracing::warn!(
                op = op.as_str(),
                error = category,
                "shared store unreachable at startup; tokens are renewed locally until it answers"
            );
        }
    }
}
