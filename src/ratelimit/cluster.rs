//! The cluster-wide limiter: the provider's quota belongs to the account, not the replica.
//!
//! ```text
//!  acquire() ─▶ Redis up? ─no─▶ fallback: local bucket at rate / replicas last seen
//!      │ yes                       (Redis answers again while queued: leave it, go shared)
//!      ▼
//!  the class's FIFO turn ─▶ RESERVE (Lua, Redis's clock): the next slot, not due, or refusal
//!      │ not due (a lower class): keep the turn, sleep, RESERVE again
//!      │ granted: release the turn, sleep the wait ─▶ slot
//!      │          (a pause announced meanwhile: sleep it out, then RESERVE again)
//!      └ refused ─▶ RateLimited { retry_after }          (nothing reserved)
//! ```
//!
//! One round trip per request, none for a tenant without a limit. The tenant's lead class (its
//! callers' highest) reserves the next slot however far ahead; the lower classes take a slot only
//! once it is due, so a lead-class request anywhere waits at most about one slot behind them.
//! Batch also gives way to `standard` requests waiting on any replica, and keeps its share
//! (`scripts::RESERVE`). Within one replica each class keeps FIFO order, and a caller that hangs
//! up before its reservation gives its place back. An upstream 429 pauses the shared bucket
//! (later reservations start after it) and is announced, so requests already holding a slot on
//! any replica also wait it out, then reserve again: were they all to go when it ends, the
//! slots that fell inside the pause would reach the upstream as one burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::clock::duration_nanos;
use super::local::{LocalLimiter, QueuePosition};
use super::{FAR_FUTURE, LimiterState, RateLimited, slot_period};
use crate::clock;
use crate::config::{CallerClass, PerClass, RateLimitConfig};
use crate::store::{Ask, RedisBucket, Reservation, StoreFailure};

#[derive(Debug)]
pub struct ClusterLimiter {
    config: RateLimitConfig,
    bucket: Arc<RedisBucket>,
    period: Duration,
    /// FIFO turn among this replica's requests of each class, held until the reservation is made.
    turns: PerClass<Mutex<()>>,
    waiting: AtomicUsize,
    /// The same count per class, for `/tenants`.
    waiting_by_class: PerClass<AtomicUsize>,
    /// Unix µs until which this replica saw the upstream ask for a pause (also sent to Redis).
    paused_until_us: AtomicU64,
    /// Used while Redis cannot be reached; rebuilt when the replica count it divides by changes.
    fallback: ArcSwap<Fallback>,
    granted_total: AtomicU64,
    rejected_total: AtomicU64,
    waited_total_nanos: AtomicU64,
}

#[derive(Debug)]
struct Fallback {
    replicas: u32,
    limiter: LocalLimiter,
}

impl ClusterLimiter {
    pub fn new(config: RateLimitConfig, bucket: RedisBucket) -> Self {
        let replicas = bucket.replicas();
        Self {
            config,
            bucket: Arc::new(bucket),
            period: slot_period(&config),
            turns: PerClass::default(),
            waiting: AtomicUsize::new(0),
            waiting_by_class: PerClass::default(),
            paused_until_us: AtomicU64::new(0),
            fallback: ArcSwap::from_pointee(Fallback {
                replicas,
                limiter: LocalLimiter::share_of(config, replicas),
            }),
            granted_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
            waited_total_nanos: AtomicU64::new(0),
        }
    }

    /// Waits up to the class's `max_wait`, in class order across replicas (and in the local
    /// fallback).
    pub async fn acquire(&self, class: CallerClass) -> Result<Duration, RateLimited> {
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
            if let Some(outcome) = self.acquire_fallback(class).await {
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
            let Ok(turn) = tokio::time::timeout_at(deadline, self.turns.by(class).lock()).await else {
                return Ok(Err(self.reject(self.period)));
            };
            let wait = match self.reserve(class, deadline).await? {
                Ok(wait) => wait,
                Err(refused) => return Ok(Err(refused)),
            };
            drop(turn);
            // A zero sleep would still wait for the timer wheel's next tick (about 1 ms).
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if self.sleep_out_pause().await {
                // The slot fell inside a pause announced since: every holder of such a slot
                // would go at the pause's end at once. Take a fresh one after it.
                continue;
            }
            drop(position);
            let waited = arrived.elapsed();
            self.granted_total.fetch_add(1, Ordering::Relaxed);
            self.waited_total_nanos
                .fetch_add(duration_nanos(waited), Ordering::Relaxed);
            return Ok(Ok(waited));
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

    /// With the class's turn held: reserves a slot, asking again while none is due for the class.
    /// The wait until the slot, or the refusal; or why Redis gave no answer.
    async fn reserve(
        &self,
        class: CallerClass,
        deadline: Instant,
    ) -> Result<Result<Duration, RateLimited>, StoreFailure> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ask = Ask {
                period: self.period,
                burst: self.config.burst.get(),
                max_wait: left,
                class,
                ahead: class.index() <= self.config.lead.index(),
                batch_every: self.config.batch_share.every(),
            };
            match self.bucket.reserve(&ask).await {
                Ok(Reservation::Granted(wait)) => return Ok(Ok(wait)),
                Ok(Reservation::Refused(retry_after)) => return Ok(Err(self.reject(retry_after))),
                Ok(Reservation::NotDue(_)) if left.is_zero() => return Ok(Err(self.reject(self.period))),
                Ok(Reservation::NotDue(after)) => tokio::time::sleep(after.min(left)).await,
                Err(failure) => return Err(failure),
            }
        }
    }

    /// A slot from the local share while Redis is unreachable; `None` when Redis answers again
    /// first. The wait is then given up (the local queue takes no slot for it) and taken on the
    /// shared bucket: were every queued request to go on its local slot, the replicas' shares and
    /// the shared bucket's burst would reach the upstream together.
    async fn acquire_fallback(&self, class: CallerClass) -> Option<Result<Duration, RateLimited>> {
        let mut back = self.bucket.reconnected();
        back.borrow_and_update();
        if self.bucket.is_up() {
            return None;
        }
        let fallback = self.fallback();
        tokio::select! {
            outcome = fallback.limiter.acquire_as(class) => Some(outcome),
            _ = back.changed() => None,
        }
    }

    /// Pauses this replica at once, and the whole cluster through Redis (in the background: the
    /// response that carried the 429 is not held up).
    pub fn pause_for(&self, delay: Duration) {
        let until = clock::unix_millis()
            .saturating_mul(1000)
            .saturating_add(duration_micros(delay));
        self.paused_until_us.fetch_max(until, Ordering::AcqRel);
        self.fallback.load().limiter.pause_for(delay);
        let bucket = Arc::clone(&self.bucket);
        tokio::spawn(async move {
            if bucket.pause(delay).await.is_err() {
                tracing::debug!("the cluster-wide pause could not reach the store; paused locally");
            }
        });
    }

    pub fn state(&self) -> LimiterState {
        let fallback = self.fallback.load();
        let local = fallback.limiter.state();
        let shared = self.bucket.is_up();
        let paused = Duration::from_micros(self.pause_until_us().saturating_sub(now_us()));
        LimiterState {
            per_second: self.config.per_second.get(),
            burst: self.config.burst.get(),
            max_wait: self.config.max_wait.get(CallerClass::Standard),
            waiting: self.waiting.load(Ordering::Acquire) + local.waiting,
            waiting_by_class: self.waiting_per_class(local.waiting_by_class),
            paused_for: (paused > Duration::ZERO).then_some(paused).or(local.paused_for),
            granted_total: self.granted_total.load(Ordering::Relaxed) + local.granted_total,
            rejected_total: self.rejected_total.load(Ordering::Relaxed) + local.rejected_total,
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
        self.fallback.store(Arc::clone(&next));
        next
    }

    /// Waits while a pause announced by any replica (or seen here) is in force; returns whether
    /// there was one.
    async fn sleep_out_pause(&self) -> bool {
        let mut slept = false;
        loop {
            let left = self.pause_until_us().saturating_sub(now_us());
            if left == 0 {
                return slept;
            }
            slept = true;
            tokio::time::sleep(Duration::from_micros(left)).await;
        }
    }

    fn pause_until_us(&self) -> u64 {
        self.paused_until_us
            .load(Ordering::Acquire)
            .max(self.bucket.paused_until_unix_us())
    }

    fn reject(&self, retry_after: Duration) -> RateLimited {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        RateLimited { retry_after }
    }
}

fn now_us() -> u64 {
    clock::unix_millis().saturating_mul(1000)
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
