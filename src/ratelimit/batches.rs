//! The cluster limiter's reservations, one round trip per batch rather than per request.
//!
//! A replica's waiting requests of one class join that class's FIFO queue. One task per class
//! (started by the first request that finds it idle, gone when the queue is empty) takes every
//! request queued, up to [`MAX_BATCH`], and asks RESERVE for all of them in one script call, oldest
//! first; the script answers each as if they had asked in turn. While that call is out, newcomers
//! queue for the next. So a slow Redis costs its latency once per batch, not once per request, and
//! FIFO order within a class holds: batches go in order, and so do the slots within one.
//!
//! A request whose caller hung up (or whose deadline passed) has dropped its receiver and is
//! skipped when the next batch is taken. For a class that only takes due slots, the requests the
//! script found not due go back to the front of the queue, and the task asks again after the wait
//! the script gave (at most a period).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{CallerClass, PerClass, RateLimitConfig};
use crate::store::{Ask, RedisBucket, Reservation, StoreFailure};

/// Requests per script call: bounds the time Redis spends in one script (a few µs per request).
const MAX_BATCH: usize = 128;

/// What a queued request gets: its reservation, or why Redis gave none.
pub(super) type Answer = Result<Reservation, StoreFailure>;

/// The per-class queues of one cluster limiter, shared with their tasks.
#[derive(Debug)]
pub(super) struct Batches {
    bucket: Arc<RedisBucket>,
    config: RateLimitConfig,
    period: Duration,
    queues: PerClass<Mutex<Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// Whether the class's task is running (it empties the queue before it stops).
    serving: bool,
}

#[derive(Debug)]
struct Pending {
    deadline: Instant,
    answer: oneshot::Sender<Answer>,
}

impl Batches {
    pub(super) fn new(bucket: Arc<RedisBucket>, config: RateLimitConfig, period: Duration) -> Arc<Self> {
        Arc::new(Self {
            bucket,
            config,
            period,
            queues: PerClass::default(),
        })
    }

    /// Queues a request of `class` that may wait until `deadline`; the receiver gets its answer.
    pub(super) fn enqueue(self: &Arc<Self>, class: CallerClass, deadline: Instant) -> oneshot::Receiver<Answer> {
        let (answer, receiver) = oneshot::channel();
        let mut queue = self.queue(class);
        queue.pending.push_back(Pending { deadline, answer });
        if !queue.serving {
            queue.serving = true;
            tokio::spawn(Arc::clone(self).serve(class));
        }
        receiver
    }

    /// The class's task: a batch per round trip until the queue is empty.
    async fn serve(self: Arc<Self>, class: CallerClass) {
        loop {
            let batch = self.take(class);
            if batch.is_empty() {
                return;
            }
            if let Some(again_after) = self.reserve(class, batch).await {
                // From Redis: at most a slot apart, or the whole class's queue would stall.
                tokio::time::sleep(again_after.min(self.period)).await;
            }
        }
    }

    /// Asks for one batch and hands out the answers; the requests not due yet go back to the
    /// front of the queue, and the wait before asking again is returned.
    async fn reserve(&self, class: CallerClass, batch: Vec<Pending>) -> Option<Duration> {
        let now = Instant::now();
        let waits: Vec<Duration> = batch
            .iter()
            .map(|p| p.deadline.saturating_duration_since(now))
            .collect();
        let ask = Ask {
            period: self.period,
            burst: self.config.burst.get(),
            max_wait: Duration::ZERO,
            class,
            ahead: class.index() <= self.config.lead.index(),
            batch_every: self.config.batch_share.every(),
        };
        let answers = match self.bucket.reserve_batch(&ask, &waits).await {
            Ok(answers) => answers,
            Err(failure) => {
                for pending in batch {
                    // A receiver gone means its caller stopped waiting: nothing to tell it.
                    let _ = pending.answer.send(Err(failure));
                }
                return None;
            }
        };
        let mut again = Vec::new();
        let mut again_after = None;
        let refused = Reservation::Refused(self.period);
        for (i, pending) in batch.into_iter().enumerate() {
            match answers.get(i).copied().unwrap_or(refused) {
                Reservation::NotDue(after) if pending.deadline > Instant::now() => {
                    again_after = Some(after);
                    again.push(pending);
                }
                Reservation::NotDue(_) => {
                    let _ = pending.answer.send(Ok(refused));
                }
                answer => {
                    let _ = pending.answer.send(Ok(answer));
                }
            }
        }
        let mut queue = self.queue(class);
        for pending in again.into_iter().rev() {
            queue.pending.push_front(pending);
        }
        again_after
    }

    /// The requests queued now (up to [`MAX_BATCH`]) whose callers still wait; when there are
    /// none, the task stops (under the same lock a newcomer checks it with).
    fn take(&self, class: CallerClass) -> Vec<Pending> {
        let mut queue = self.queue(class);
        queue.pending.retain(|p| !p.answer.is_closed());
        let n = queue.pending.len().min(MAX_BATCH);
        if n == 0 {
            queue.serving = false;
        }
        queue.pending.drain(..n).collect()
    }

    fn queue(&self, class: CallerClass) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned queue is still a consistent queue.
        self.queues
            .by(class)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
