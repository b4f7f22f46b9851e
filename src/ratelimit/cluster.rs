//! The cluster-wide limiter: the provider's quota belongs to the account, not the replica.
//!
//! ```text
//!  acquire() ─▶ Redis up? ─no─▶ fallback: local bucket at rate / replicas last seen
//!      │ yes                       (Redis answers again while queued: leave it, go shared)
//!      ▼
//!  the class's FIFO queue ─▶ RESERVE for the whole queue in one call (Lua, Redis's clock)
//!      │ not due (a lower class): back to the queue's front, asked again after the wait
//!      │ granted: sleep the wait ─▶ slot
//!      │          (a pause announced meanwhile: sleep it out if it ends before the deadline,
//!      │           then RESERVE again; else refused with the pause's remaining time)
//!      └ refused ─▶ RateLimited { retry_after }          (nothing reserved)
//! ```
//!
//! One round trip per batch of waiting requests (`batches.rs`), none for a tenant without a limit.
//! The tenant's lead class (its callers' highest) reserves the next slot however far ahead; the
//! lower classes take a slot only once it is due, so a lead-class request anywhere waits at most
//! about one slot behind them. Batch also gives way to `standard` requests waiting on any replica,
//! and keeps its share (`scripts::RESERVE`). Within one replica each class keeps FIFO order, and a
//! caller that hangs up before its reservation gives its place back. An upstream 429 pauses the
//! shared bucket (later reservations start after it) and is announced, so requests already
//! holding a slot on any replica also wait it out, then reserve again: were they all to go when it
//! ends, the slots that fell inside the pause would reach the upstream as one burst.
//!
//! One clock: Redis computes waits and pauses on its own and answers with durations; this replica
//! turns each into a deadline on its tokio clock on receipt. And one bound: nothing (a queue, a
//! slow Redis, a pause, the fallback) holds a request past its `max_wait`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::batches::Batches;
use super::clock::{TokioClock, duration_nanos};
use super::local::{LocalLimiter, QueuePosition};
use super::{FAR_FUTURE, LimiterState, RateLimited, slot_period};
use crate::config::{CallerClass, PerClass, RateLimitConfig};
use crate::store::{RedisBucket, Reservation, StoreFailure};

#[derive(Debug)]
pub(crate) struct ClusterLimiter {
    config: RateLimitConfig,
    bucket: Arc<RedisBucket>,
    period: Duration,
    /// Each class's FIFO queue of reservations, asked for in batches.
    batches: Arc<Batches>,
    waiting: AtomicUsize,
    /// The same count per class, for `/tenants`.
    waiting_by_class: PerClass<AtomicUsize>,
    clock: TokioClock,
    /// Clock nanos until which this replica saw the upstream ask for a pause (also sent to Redis).
    paused_until: AtomicU64,
    /// Used while Redis cannot be reached; rebuilt when the replica count it divides by changes.
    fallback: ArcSwap<Fallback>,
    granted_total: AtomicU64,
    waited_total_nanos: AtomicU64,
}

#[derive(Debug)]
struct Fallback {
    replicas: u32,
    limiter: LocalLimiter,
}

impl ClusterLimiter {
    pub(crate) fn new(config: RateLimitConfig, bucket: RedisBucket) -> Self {
        let replicas = bucket.replicas();
        let bucket = Arc::new(bucket);
        let period = slot_period(&config);
        Self {
            config,
            batches: Batches::new(Arc::clone(&bucket), config, period),
            bucket,
            period,
            waiting: AtomicUsize::new(0),
            waiting_by_class: PerClass::default(),
            clock: TokioClock::starting_now(),
            paused_until: AtomicU64::new(0),
            fallback: ArcSwap::from_pointee(Fallback {
                replicas,
                limiter: LocalLimiter::share_of(config, replicas),
            }),
            granted_total: AtomicU64::new(0),
            waited_total_nanos: AtomicU64::new(0),
        }
    }

    /// Waits up to the class's `max_wait`, in class order across replicas (and in the local
    /// fallback), never longer.
    pub(crate) async fn acquire(&self, class: CallerClass) -> Result<Duration, RateLimited> {
        let arrived = Instant::now();
        let deadline = arrived
            .checked_add(self.config.max_wait.get(class))
            .unwrap_or(arrived + FAR_FUTURE);
        loop {
            if self.bucket.is_up() {
                match self.acquire_shared(class, arrived, deadline).await {
                    Ok(outcome) => return outcome,
                    Err(StoreFailure::Refused) => return self.acquire_local_once(class, deadline).await,
                    Err(StoreFailure::Unreachable) => {}
                }
            }
            if let Some(outcome) = self.acquire_fallback(class, deadline).await {
                return outcome;
            }
        }
    }

    /// A slot from the shared bucket, or why Redis gave none.
    async fn acquire_shared(
        &self,
        class: CallerClass,
        arrived: Instant,
        deadline: Instant,
    ) -> Result<Result<Duration, RateLimited>, StoreFailure> {
        let position = QueuePosition::enter(&self.waiting);
        let _in_class = QueuePosition::enter(self.waiting_by_class.by(class));
        loop {
            let answer = self.batches.enqueue(class, deadline);
            let wait = match tokio::time::timeout_at(deadline, answer).await {
                // Still queued, or the answer is on its way back, at the deadline.
                Err(_) => return Ok(Err(self.reject(self.period))),
                // Its task went away without answering (a runtime shutting down).
                Ok(Err(_)) => return Err(StoreFailure::Unreachable),
                Ok(Ok(Err(failure))) => return Err(failure),
                // The script bounded the wait by the deadline as it stood before the round trip;
                // a slot past it now (a slow Redis) is refused rather than overslept.
                Ok(Ok(Ok(Reservation::Granted(wait)))) if wait > deadline.saturating_duration_since(Instant::now()) => {
                    return Ok(Err(self.reject(wait)));
                }
                Ok(Ok(Ok(Reservation::Granted(wait)))) => wait,
                Ok(Ok(Ok(Reservation::Refused(retry_after)))) => return Ok(Err(self.reject(retry_after))),
                Ok(Ok(Ok(Reservation::NotDue(_)))) => return Ok(Err(self.reject(self.period))),
            };
            // A zero sleep would still wait for the timer wheel's next tick (about 1 ms).
            if !wait.is_zero() {
                if let Err(limited) = self.sleep_until_slot(wait, deadline).await {
                    return Ok(Err(limited));
                }
            }
            match self.pause_remaining() {
                Duration::ZERO => {}
                pause if Instant::now() + pause > deadline => return Ok(Err(self.reject(pause))),
                pause => {
                    // The slot fell inside a pause announced since: every holder of such a slot
                    // would go at the pause's end at once. Take a fresh one after it.
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            drop(position);
            let waited = arrived.elapsed();
            self.granted_total.fetch_add(1, Ordering::Relaxed);
            self.waited_total_nanos
                .fetch_add(duration_nanos(waited), Ordering::Relaxed);
            return Ok(Ok(waited));
        }
    }

    /// Sleeps `wait` until the reserved slot; a pause announced meanwhile (by any replica) that
    /// ends past `deadline` refuses at once, with its remaining time.
    async fn sleep_until_slot(&self, wait: Duration, deadline: Instant) -> Result<(), RateLimited> {
        let slot = tokio::time::sleep(wait);
        tokio::pin!(slot);
        let mut pauses = self.bucket.pause_changes();
        loop {
            tokio::select! {
                () = &mut slot => return Ok(()),
                changed = pauses.changed() => {
                    if changed.is_err() {
                        slot.as_mut().await;
                        return Ok(());
                    }
                    let pause = self.pause_remaining();
                    if Instant::now() + pause > deadline {
                        return Err(self.reject(pause));
                    }
                }
            }
        }
    }

    /// Redis answered this request's reservation with an error (a broken key, say) while it is
    /// up: this one request takes the local share's slot instead, within its deadline.
    async fn acquire_local_once(&self, class: CallerClass, deadline: Instant) -> Result<Duration, RateLimited> {
        let fallback = self.fallback();
        match tokio::time::timeout_at(deadline, fallback.limiter.acquire_as(class)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.reject(self.period)),
        }
    }

    /// A slot from the local share while Redis is unreachable; `None` when Redis answers again
    /// first. The wait is then given up (the local queue takes no slot for it) and taken on the
    /// shared bucket: were every queued request to go on its local slot, the replicas' shares and
    /// the shared bucket's burst would reach the upstream together.
    async fn acquire_fallback(&self, class: CallerClass, deadline: Instant) -> Option<Result<Duration, RateLimited>> {
        let mut back = self.bucket.reconnected();
        back.borrow_and_update();
        if self.bucket.is_up() {
            return None;
        }
        let fallback = self.fallback();
        tokio::select! {
            outcome = fallback.limiter.acquire_as(class) => Some(outcome),
            _ = back.changed() => None,
            () = tokio::time::sleep_until(deadline) => Some(Err(self.reject(self.period))),
        }
    }

    /// Pauses this replica at once, and the whole cluster through Redis (in the background: the
    /// response that carried the 429 is not held up).
    pub(crate) fn pause_for(&self, delay: Duration) {
        let until = self.clock.nanos_now().saturating_add(duration_nanos(delay));
        self.paused_until.fetch_max(until, Ordering::AcqRel);
        self.fallback.load().limiter.pause_for(delay);
        let bucket = Arc::clone(&self.bucket);
        tokio::spawn(async move {
            if bucket.pause(delay).await.is_err() {
                tracing::debug!("the cluster-wide pause could not reach the store; paused locally");
            }
        });
    }

    pub(crate) fn state(&self) -> LimiterState {
        let fallback = self.fallback.load();
        let local = fallback.limiter.state();
        let shared = self.bucket.is_up();
        let paused = self.pause_remaining();
        LimiterState {
            per_second: self.config.per_second.get(),
            burst: self.config.burst.get(),
            max_wait: self.config.max_wait.get(CallerClass::Standard),
            waiting: self.waiting.load(Ordering::Acquire) + local.waiting,
            waiting_by_class: self.waiting_per_class(local.waiting_by_class),
            paused_for: (paused > Duration::ZERO).then_some(paused).or(local.paused_for),
            granted_total: self.granted_total.load(Ordering::Relaxed) + local.granted_total,
            waited_total: Duration::from_nanos(self.waited_total_nanos.load(Ordering::Relaxed)) + local.waited_total,
            mode: if shared { "shared" } else { "fallback" },
            divided_by: (!shared).then_some(fallback.replicas),
        }
    }

    /// This replica's requests waiting on the shared bucket plus those in the fallback's queue.
    fn waiting_per_class(&self, local: PerClass<usize>) -> PerClass<usize> {
        let mut counts = local;
        for class in CallerClass::ALL {
            *counts.get_mut(class) += self.waiting_by_class.by(class).load(Ordering::Acquire);
        }
        counts
    }

    /// The local bucket for the replica count last seen.
    fn fallback(&self) -> Arc<Fallback> {
        let current = self.fallback.load_full();
        let replicas = self.bucket.replicas();
        if current.replicas == replicas {
            return current;
        }
        let next = Arc::new(Fallback {
            replicas,
            limiter: LocalLimiter::share_of(self.config, replicas),
        });
        // A pause in force carries over: the new share must not send during an upstream's 429.
        next.limiter.pause_for(self.pause_remaining());
        self.fallback.store(Arc::clone(&next));
        next
    }

    /// What is left of the pause in force: seen here, or announced by any replica.
    fn pause_remaining(&self) -> Duration {
        let now = Instant::now();
        let local = self
            .paused_until
            .load(Ordering::Acquire)
            .saturating_sub(self.clock.nanos_at(now));
        let announced = self
            .bucket
            .paused_until()
            .map_or(Duration::ZERO, |end| end.saturating_duration_since(now));
        Duration::from_nanos(local).max(announced)
    }

    /// A refusal; its `Retry-After` may come from Redis, so it is capped at what a full bucket
    /// behind the longest pause could ask for.
    fn reject(&self, retry_after: Duration) -> RateLimited {
        let most = (self.period.saturating_mul(self.config.burst.get())).saturating_add(crate::config::MAX_PAUSE);
        RateLimited {
            retry_after: retry_after.min(most),
        }
    }
}
