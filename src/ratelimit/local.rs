//! The in-process limiter: one governor GCRA bucket, a FIFO queue and an upstream-429 pause.
//! See the module above for the diagram.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use tokio::time::Instant;

use super::clock::{TokioClock, duration_nanos};
use super::waiters::{Place, Step, Waiters};
use super::{FAR_FUTURE, LimiterState, RateLimited, slot_period};
use crate::config::{CallerClass, RateLimitConfig};

/// governor's lock-free GCRA bucket on our clock.
type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// A tenant's token bucket, FIFO wait queue and upstream-429 pause.
#[derive(Debug)]
pub(crate) struct LocalLimiter {
    config: RateLimitConfig,
    clock: TokioClock,
    bucket: Bucket,
    /// One slot's worth of time: `1 / per_second`.
    period: Duration,
    /// Per-class FIFO queues and the head that takes the next slot (`waiters.rs`).
    pub(super) queue: Waiters,
    /// Requests past the fast path that hold no slot yet; zero lets the fast path skip the queue.
    waiting: AtomicUsize,
    /// Clock nanos until which nobody takes a slot (upstream 429); 0 = never paused.
    paused_until: AtomicU64,
    /// Clock nanos of the earliest known next slot, learned from the bucket; feeds predictions.
    next_slot_at: AtomicU64,
    granted_total: AtomicU64,
    waited_total_nanos: AtomicU64,
}

// === impl LocalLimiter ===

impl LocalLimiter {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        Self::with_quota(config, config.burst, 1)
    }

    /// The share of one of `replicas` processes: `1 / replicas` of the rate and of the burst (at
    /// least one), for when the cluster-wide bucket cannot be reached.
    pub(crate) fn share_of(config: RateLimitConfig, replicas: u32) -> Self {
        let replicas = replicas.max(1);
        let burst = NonZeroU32::new(config.burst.get() / replicas).unwrap_or(NonZeroU32::MIN);
        Self::with_quota(config, burst, replicas)
    }

    fn with_quota(config: RateLimitConfig, burst: NonZeroU32, replicas: u32) -> Self {
        let period = slot_period(&config) * replicas;
        let quota = Quota::with_period(period)
            .expect("a positive rate gives a non-zero period")
            .allow_burst(burst);
        let clock = TokioClock::starting_now();
        Self {
            config,
            clock,
            bucket: RateLimiter::direct_with_clock(quota, clock),
            period: quota.replenish_interval(),
            queue: Waiters::new(config.batch_share.every()),
            waiting: AtomicUsize::new(0),
            paused_until: AtomicU64::new(0),
            next_slot_at: AtomicU64::new(0),
            granted_total: AtomicU64::new(0),
            waited_total_nanos: AtomicU64::new(0),
        }
    }

    /// [`Self::acquire_as`] for a `standard` request.
    #[cfg(test)]
    pub(crate) async fn acquire(&self) -> Result<Duration, RateLimited> {
        self.acquire_as(CallerClass::Standard).await
    }

    /// Waits for a slot up to the class's `max_wait` (higher classes first, FIFO within one);
    /// returns how long it waited.
    ///
    /// Rejects at once when the predicted wait already exceeds `max_wait`. Dropping the future
    /// leaves the queue without consuming a slot.
    pub(crate) async fn acquire_as(&self, class: CallerClass) -> Result<Duration, RateLimited> {
        // Fast path: no await, no allocation. A request arriving in the instant between the
        // waiter-count load and `check()` could take a slot ahead of a new head; that costs
        // fairness by one slot at most, never the quota.
        if self.waiting.load(Ordering::Acquire) == 0 && self.pause_remaining() == Duration::ZERO {
            match self.bucket.check() {
                Ok(()) => {
                    self.granted_total.fetch_add(1, Ordering::Relaxed);
                    return Ok(Duration::ZERO);
                }
                Err(not_until) => self.note_next_slot(&not_until),
            }
        }
        self.acquire_queued(class).await
    }

    /// The upstream answered 429: hold every request of this tenant (queued or new) for `delay`.
    /// A pause already in force that ends later is kept.
    pub(crate) fn pause_for(&self, delay: Duration) {
        let until = self.clock.nanos_now().saturating_add(duration_nanos(delay));
        self.paused_until.fetch_max(until, Ordering::AcqRel);
    }

    /// A snapshot for the admin endpoint and metrics.
    pub(crate) fn state(&self) -> LimiterState {
        let paused = self.pause_remaining();
        LimiterState {
            per_second: self.config.per_second.get(),
            burst: self.config.burst.get(),
            max_wait: self.config.max_wait.get(CallerClass::Standard),
            waiting: self.waiting.load(Ordering::Acquire),
            waiting_by_class: self.queue.per_class(),
            paused_for: (paused > Duration::ZERO).then_some(paused),
            granted_total: self.granted_total.load(Ordering::Relaxed),
            waited_total: Duration::from_nanos(self.waited_total_nanos.load(Ordering::Relaxed)),
            mode: "local",
            divided_by: None,
        }
    }

    /// The slow path: predict, queue, then wait as head of the queue.
    async fn acquire_queued(&self, class: CallerClass) -> Result<Duration, RateLimited> {
        let arrived = Instant::now();
        let max_wait = self.config.max_wait.get(class);
        let deadline = arrived.checked_add(max_wait).unwrap_or(arrived + FAR_FUTURE);
        let position = QueuePosition::enter(&self.waiting);
        let mut place = self.queue.join(class);
        let predicted = self.predicted_wait(place.ahead);
        if predicted > max_wait {
            return Err(self.reject(predicted));
        }
        let blocked = loop {
            if tokio::time::timeout_at(deadline, place.wait_turn()).await.is_err() {
                // Still behind others at the deadline: estimate from the queue that is left.
                let ahead = self.waiting.load(Ordering::Acquire).saturating_sub(1);
                return Err(self.reject(self.predicted_wait(ahead).max(self.period)));
            }
            if let Some(blocked) = self.wait_as_head(&mut place, deadline).await? {
                break blocked;
            }
        };
        drop(place);
        drop(position);
        if blocked {
            // We took the slot the bucket refilled, so it is empty again: the next one is a
            // period away. Keeps predictions for later arrivals exact under contention.
            self.note_next_slot_nanos(self.clock.nanos_now().saturating_add(self.nanos_period()));
        }
        let waited = arrived.elapsed();
        self.granted_total.fetch_add(1, Ordering::Relaxed);
        self.waited_total_nanos
            .fetch_add(duration_nanos(waited), Ordering::Relaxed);
        Ok(waited)
    }

    /// As head of the queue, sleeps out the pause and the bucket until `check()` grants a slot.
    /// Returns whether the bucket made us wait, or `None` when a request of another class was
    /// due the slot (we are queued again). Rejects as soon as the wait would pass `deadline`.
    async fn wait_as_head(&self, place: &mut Place<'_>, deadline: Instant) -> Result<Option<bool>, RateLimited> {
        let mut blocked = false;
        loop {
            let now = Instant::now();
            let wait = match self.pause_remaining_at(now) {
                Duration::ZERO => match place.take_slot(|| self.bucket.check()) {
                    Step::Granted => return Ok(Some(blocked)),
                    Step::Yielded => return Ok(None),
                    Step::Blocked(not_until) => {
                        self.note_next_slot(&not_until);
                        blocked = true;
                        not_until.wait_time_from(Nanos::new(self.clock.nanos_at(now)))
                    }
                },
                pause => pause,
            };
            if wait > deadline.saturating_duration_since(now) {
                return Err(self.reject(wait));
            }
            // Re-checked on wake: a pause may have been set, or (rarely) the fast path won a slot.
            tokio::time::sleep(wait).await;
        }
    }

    /// A lower bound on how long a request with `ahead` requests queued before it will wait.
    ///
    /// Two bounds, the larger wins: the bucket hands out one slot per period from the next known
    /// slot on; and after a pause at most `burst` slots are ready at once, then one per period.
    fn predicted_wait(&self, ahead: usize) -> Duration {
        let now = self.clock.nanos_now();
        let ahead = u32::try_from(ahead).unwrap_or(u32::MAX);
        let bucket_free = self.next_slot_at.load(Ordering::Acquire).saturating_sub(now);
        let by_bucket = Duration::from_nanos(bucket_free).saturating_add(self.period_times(ahead));
        let pause_left = self.paused_until.load(Ordering::Acquire).saturating_sub(now);
        let beyond_burst = ahead.saturating_add(1).saturating_sub(self.config.burst.get());
        let by_pause = Duration::from_nanos(pause_left).saturating_add(self.period_times(beyond_burst));
        by_bucket.max(by_pause)
    }

    fn period_times(&self, n: u32) -> Duration {
        self.period.saturating_mul(n)
    }

    fn nanos_period(&self) -> u64 {
        duration_nanos(self.period)
    }

    fn note_next_slot(&self, not_until: &NotUntil<Nanos>) {
        self.note_next_slot_nanos(not_until.earliest_possible().as_u64());
    }

    /// The GCRA's next-slot time only moves forward, so the latest knowledge is the largest.
    fn note_next_slot_nanos(&self, at: u64) {
        self.next_slot_at.fetch_max(at, Ordering::AcqRel);
    }

    fn pause_remaining(&self) -> Duration {
        self.pause_remaining_at(Instant::now())
    }

    fn pause_remaining_at(&self, now: Instant) -> Duration {
        let until = self.paused_until.load(Ordering::Acquire);
        Duration::from_nanos(until.saturating_sub(self.clock.nanos_at(now)))
    }

    fn reject(&self, retry_after: Duration) -> RateLimited {
        RateLimited { retry_after }
    }
}

// === impl QueuePosition ===

/// Counts a request as waiting from entry until it is dropped (granted, rejected or cancelled),
/// so a disconnected caller never leaves a phantom waiter behind.
pub(super) struct QueuePosition<'a> {
    waiting: &'a AtomicUsize,
}

impl<'a> QueuePosition<'a> {
    pub(super) fn enter(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::AcqRel);
        Self { waiting }
    }
}

impl Drop for QueuePosition<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}
