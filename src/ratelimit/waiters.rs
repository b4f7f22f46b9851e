//! The queue of a local limiter's waiting requests, one FIFO per caller class, and the head:
//! the one waiter that sleeps on the bucket and takes the next slot.
//!
//! Only the head calls the bucket, so a slot is consumed only by the request that gets it. When
//! the slot is due the head asks [`choose`] who should have it: interactive first, then standard,
//! then batch, except that every `every`-th contended slot goes to batch while batch waits (its
//! `batch_share`). A head that is not chosen goes back to the front of its class and hands the
//! turn on without touching the bucket. A waiter dropped anywhere (caller hung up, `max_wait`)
//! leaves its queue, and a dropped head hands its turn on.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::config::{CallerClass, PerClass};

#[derive(Debug)]
pub(super) struct Waiters {
    state: Mutex<State>,
    /// Batch gets every `every`-th contended slot (`BatchShare::every`).
    every: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Indexed by [`CallerClass::index`], oldest first; the head is in none of them.
    queues: [VecDeque<Entry>; 3],
    head: Option<(u64, CallerClass)>,
    next_id: u64,
    /// Slots granted to higher classes since batch last got one, while batch waited.
    since_batch: u32,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    /// Tells the waiter it is the head now.
    turn: oneshot::Sender<()>,
}

/// What the head got from [`Place::take_slot`].
pub(super) enum Step<E> {
    Granted,
    /// Someone else is due the slot; this waiter is queued again, at the front of its class.
    Yielded,
    /// The bucket has no slot yet.
    Blocked(E),
}

/// A request's place among the waiters, from joining until dropped.
pub(super) struct Place<'a> {
    waiters: &'a Waiters,
    id: u64,
    class: CallerClass,
    /// `None` while this waiter is the head (or done).
    turn: Option<oneshot::Receiver<()>>,
    /// Waiters that will be served before this one if nobody else arrives (a lower bound).
    pub(super) ahead: usize,
}

// === impl Waiters ===

impl Waiters {
    pub(super) fn new(every: u32) -> Self {
        Self {
            state: Mutex::new(State::default()),
            every,
        }
    }

    /// Queues a request; it is the head at once when nobody else waits.
    pub(super) fn join(&self, class: CallerClass) -> Place<'_> {
        let every = self.every;
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let ahead = state.ahead_of(class, every);
        let turn = if state.head.is_none() && state.queues.iter().all(VecDeque::is_empty) {
            state.head = Some((id, class));
            None
        } else {
            let (turn, waiting) = oneshot::channel();
            state.queues[class.index()].push_back(Entry { id, turn });
            Some(waiting)
        };
        Place {
            waiters: self,
            id,
            class,
            turn,
            ahead,
        }
    }

    /// Waiting requests per class, the head included.
    pub(super) fn per_class(&self) -> PerClass<usize> {
        let state = self.lock();
        let mut counts = PerClass::default();
        for class in CallerClass::ALL {
            *counts.get_mut(class) = state.queues[class.index()].len();
        }
        if let Some((_, class)) = state.head {
            *counts.get_mut(class) += 1;
        }
        counts
    }

    /// Requests that ever joined (the fast path never does).
    #[cfg(test)]
    pub(super) fn joined_total(&self) -> u64 {
        self.lock().next_id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned queue is still a consistent queue.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

// === impl State ===

impl State {
    fn waits(&self, class: CallerClass) -> bool {
        !self.queues[class.index()].is_empty() || self.head.is_some_and(|(_, c)| c == class)
    }

    fn count(&self, class: CallerClass) -> usize {
        self.queues[class.index()].len() + usize::from(self.head.is_some_and(|(_, c)| c == class))
    }

    /// Served before a newcomer of `class`: its own class and the higher ones; for batch, the
    /// higher ones only up to what its share lets pass first.
    fn ahead_of(&self, class: CallerClass, every: u32) -> usize {
        let own = self.count(class);
        let higher: usize = CallerClass::ALL[..class.index()].iter().map(|c| self.count(*c)).sum();
        match class {
            CallerClass::Batch => {
                let passing = (own + 1).saturating_mul(every.saturating_sub(1) as usize);
                own + higher.min(passing)
            }
            _ => own + higher,
        }
    }

    /// The class due the next slot.
    fn choose(&self, every: u32) -> Option<CallerClass> {
        if self.waits(CallerClass::Batch) && self.since_batch.saturating_add(1) >= every {
            return Some(CallerClass::Batch);
        }
        CallerClass::ALL.into_iter().find(|class| self.waits(*class))
    }

    fn record_grant(&mut self, class: CallerClass) {
        self.since_batch = match class {
            CallerClass::Batch => 0,
            _ if self.queues[CallerClass::Batch.index()].is_empty() => 0,
            _ => self.since_batch.saturating_add(1),
        };
    }

    /// Makes the oldest waiter of the class due the next slot the head (or nobody).
    fn pass_turn(&mut self, every: u32) {
        self.head = None;
        while let Some(class) = self.choose(every) {
            let Some(entry) = self.queues[class.index()].pop_front() else {
                return;
            };
            self.head = Some((entry.id, class));
            // A receiver only goes away with its Place, whose drop removes the entry first.
            if entry.turn.send(()).is_ok() {
                return;
            }
            self.head = None;
        }
    }
}

// === impl Place ===

impl Place<'_> {
    /// Waits until this request is the head. Cancel-safe: dropped, it leaves the queue.
    pub(super) async fn wait_turn(&mut self) {
        if let Some(turn) = self.turn.as_mut() {
            // An error would mean the queue dropped our entry, which only `Drop` does.
            let _ = turn.await;
            self.turn = None;
        }
    }

    /// As head: takes the bucket's slot with `check` if this request is due it, else yields.
    pub(super) fn take_slot<E>(&mut self, check: impl FnOnce() -> Result<(), E>) -> Step<E> {
        let every = self.waiters.every;
        let mut state = self.waiters.lock();
        if state.choose(every).is_some_and(|due| due != self.class) {
            let (turn, waiting) = oneshot::channel();
            state.queues[self.class.index()].push_front(Entry { id: self.id, turn });
            self.turn = Some(waiting);
            state.pass_turn(every);
            return Step::Yielded;
        }
        match check() {
            Ok(()) => {
                state.record_grant(self.class);
                state.pass_turn(every);
                Step::Granted
            }
            Err(e) => Step::Blocked(e),
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut state = self.waiters.lock();
        if state.head.is_some_and(|(id, _)| id == self.id) {
            state.pass_turn(self.waiters.every);
        } else if self.turn.is_some() {
            // Still queued (only then is there a turn to wait for): find our entry and go.
            state.queues[self.class.index()].retain(|entry| entry.id != self.id);
        }
    }
}
