//! Per-tenant rate limiting (`docs/architecture.md#rate-limiting`): a slot before forwarding, and a
//! pause after an upstream 429.
//!
//! One `Limiter` per rate-limited tenant, shared by `Arc` across its requests (unlimited tenants
//! have none, so they pay nothing): [`LocalLimiter`] in one process, or with the shared store a
//! [`ClusterLimiter`] on one Redis bucket per upstream account (`cluster.rs`). The local one (`local.rs`) keeps the provider's quota with a governor GCRA
//! bucket (`per_second`, `burst`) running on tokio's clock (`clock.rs`), and adds what governor
//! lacks:
//!
//! ```text
//!  acquire() ──▶ fast path: nobody waiting, no pause ──▶ bucket.check() ──Ok──▶ slot, no await
//!      │                                                      │ Err
//!      ▼                                                      ▼
//!  predict wait (pause, next slot, queue depth) ──> max_wait? ──▶ RateLimited { retry_after }
//!      │ fits
//!      ▼
//!  queue per class (FIFO) ──▶ head: sleep out the pause / bucket wait ──▶ due? check() ──▶ slot
//!                                                                  └ a higher class is: requeue
//! ```
//!
//! Only the head of the queue calls `check()`, so only a request that actually gets its slot
//! consumes one: a caller that disconnects (its future dropped) simply leaves the queue. When the
//! slot is due, the head gives it to the class due it (interactive, standard, batch; batch keeps
//! `batch_share`), see `waiters.rs`. `pause_for` (after an upstream 429) is a lock-free `fetch_max` on
//! an atomic deadline, so a shorter later pause never shortens a longer one.

mod batches;
mod clock;
mod cluster;
mod local;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_classes;
#[cfg(test)]
mod tests_pauses;
mod waiters;

use std::time::Duration;

pub(crate) use self::cluster::ClusterLimiter;
pub(crate) use self::local::LocalLimiter;
pub(crate) use crate::config::MAX_PAUSE;
use crate::config::{CallerClass, PerClass, RateLimitConfig};
use crate::store::{Store, StoreKey};

/// Stands in for an unbounded `max_wait` whose deadline would overflow `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The pause after a 429 whose `Retry-After` is missing or unreadable, or a date already past.
pub(crate) const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// The pause an upstream's `Retry-After` asks for, at most [`MAX_PAUSE`]: delay-seconds, or an
/// HTTP-date read against the wall clock (one already past gives [`DEFAULT_PAUSE`]). `None`
/// when the value is neither.
pub(crate) fn retry_after(value: &http::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let pause = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => crate::clock::until_http_date(text)?.max(DEFAULT_PAUSE),
    };
    Some(pause.min(MAX_PAUSE))
}

/// One slot's worth of time: `1 / per_second`, plus the preset's headroom.
fn slot_period(config: &RateLimitConfig) -> Duration {
    Duration::from_secs(1) / config.per_second.get() + config.headroom
}

/// A rate-limited tenant's limiter.
#[derive(Debug)]
pub(crate) enum Limiter {
    Local(LocalLimiter),
    Cluster(ClusterLimiter),
}

impl Limiter {
    /// Cluster-wide when the store is shared, else local to this process.
    pub(crate) fn new(config: RateLimitConfig, store: &Store, key: &StoreKey) -> Self {
        match store.bucket(key) {
            Some(bucket) => Self::Cluster(ClusterLimiter::new(config, bucket)),
            None => Self::Local(LocalLimiter::new(config)),
        }
    }

    /// Waits for a slot up to the class's `max_wait` (higher classes first and FIFO within one,
    /// in this process); returns how long it waited.
    pub(crate) async fn acquire(&self, class: CallerClass) -> Result<Duration, RateLimited> {
        match self {
            Self::Local(limiter) => limiter.acquire_as(class).await,
            Self::Cluster(limiter) => limiter.acquire(class).await,
        }
    }

    /// The upstream answered 429 (or SHOPLINE's 423): hold the tenant's requests for `delay` (at
    /// most [`MAX_PAUSE`]), on every replica when the bucket is shared.
    pub(crate) fn pause_for(&self, delay: Duration) {
        let delay = delay.min(MAX_PAUSE);
        match self {
            Self::Local(limiter) => limiter.pause_for(delay),
            Self::Cluster(limiter) => limiter.pause_for(delay),
        }
    }

    pub(crate) fn state(&self) -> LimiterState {
        match self {
            Self::Local(limiter) => limiter.state(),
            Self::Cluster(limiter) => limiter.state(),
        }
    }
}

/// No slot within `max_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {retry_after:?}")]
pub(crate) struct RateLimited {
    /// Estimated time until a slot frees up (precise; rounding up for `Retry-After` is the
    /// caller's concern).
    pub retry_after: Duration,
}

/// A snapshot of a limiter for `/tenants` and metrics. Durations serialize as seconds (`_s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct LimiterState {
    pub per_second: u32,
    pub burst: u32,
    #[serde(rename = "max_wait_s", serialize_with = "secs")]
    pub max_wait: Duration,
    /// Requests queued for a slot right now.
    pub waiting: usize,
    /// The same, per caller class (this process's queue).
    pub waiting_by_class: PerClass<usize>,
    /// Remaining upstream-429 pause, if one is in force.
    #[serde(rename = "paused_for_s", serialize_with = "opt_secs")]
    pub paused_for: Option<Duration>,
    /// Slots handed out since the limiter was built. (Requests turned away are counted once, by
    /// class, in the tenant's metrics, which outlive a limiter rebuilt by a reload.)
    pub granted_total: u64,
    /// Sum of the waits of granted requests.
    #[serde(rename = "waited_total_s", serialize_with = "secs")]
    pub waited_total: Duration,
    /// `local` (one process), `shared` (the cluster-wide bucket in Redis), or `fallback` (Redis
    /// unreachable: a local bucket at the rate divided by the replicas last seen).
    pub mode: &'static str,
    /// With `fallback`: the number of replicas the rate is divided by.
    pub divided_by: Option<u32>,
}

// === serde helpers ===

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}
