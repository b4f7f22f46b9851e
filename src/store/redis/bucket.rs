//! One credential set's cluster-wide rate-limit bucket: GCRA reservations (a batch of requests
//! per round trip) and pauses in Lua.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{RedisStore, StoreFailure, StoreOp, scripts};
use crate::config::{CallerClass, MAX_PAUSE};

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is ours: send after this wait.
    Granted(Duration),
    /// The next slot is further away than allowed: nothing reserved; retry after this long.
    Refused(Duration),
    /// Only for a class that does not reserve ahead: no slot is due for it yet, nothing
    /// reserved; ask again after this long.
    NotDue(Duration),
}

/// What a reservation asks of the bucket.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    /// One slot per `period`, up to `burst` at once.
    pub period: Duration,
    pub burst: u32,
    /// Refuse when the slot is further away than this.
    pub max_wait: Duration,
    pub class: CallerClass,
    /// Reserve the next slot however far ahead (the tenant's highest class), or only take one
    /// that is due now (the lower classes).
    pub ahead: bool,
    /// Batch's share: one contended slot in `batch_every`.
    pub batch_every: u32,
}

pub struct RedisBucket {
    store: RedisStore,
    bucket_key: String,
    pause_key: String,
    /// Marks of `standard` and `batch` requests waiting on some replica, the slots granted since
    /// batch last had one, and a slot set aside for batch (see `scripts::RESERVE`).
    class_keys: [String; 4],
    channel: String,
    /// The local deadline of the latest pause a replica announced (`None` before any).
    paused: watch::Receiver<Option<Instant>>,
}

impl std::fmt::Debug for RedisBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBucket")
            .field("bucket_key", &self.bucket_key)
            .finish_non_exhaustive()
    }
}

impl RedisBucket {
    pub(super) fn new(
        store: RedisStore,
        base: &str,
        channel: String,
        paused: watch::Receiver<Option<Instant>>,
    ) -> Self {
        Self {
            store,
            bucket_key: format!("{base}:bucket"),
            pause_key: format!("{base}:pause"),
            class_keys: [
                format!("{base}:waiting:standard"),
                format!("{base}:waiting:batch"),
                format!("{base}:since-batch"),
                format!("{base}:batch-slot"),
            ],
            channel,
            paused,
        }
    }

    /// Reserves a slot as `ask` says (see [`Reservation`]). One round trip.
    pub async fn reserve(&self, ask: &Ask) -> Result<Reservation, StoreFailure> {
        let answers = self.reserve_batch(ask, &[ask.max_wait]).await?;
        Ok(answers.first().copied().unwrap_or(Reservation::Refused(ask.period)))
    }

    /// Reserves for several requests of `ask`'s class at once, oldest first, each with its own
    /// longest acceptable wait (`ask.max_wait` is not used): one answer per wait, in order, as if
    /// each had asked in turn. One round trip.
    pub async fn reserve_batch(&self, ask: &Ask, max_waits: &[Duration]) -> Result<Vec<Reservation>, StoreFailure> {
        let mut invocation = scripts::RESERVE.key(&self.bucket_key);
        invocation.key(&self.pause_key);
        for key in &self.class_keys {
            invocation.key(key);
        }
        invocation
            .arg(micros(ask.period).max(1))
            .arg(ask.burst.max(1))
            .arg(ask.class.index())
            .arg(u8::from(ask.ahead))
            .arg(ask.batch_every.max(1))
            .arg(micros(MAX_PAUSE));
        for max_wait in max_waits {
            invocation.arg(micros(*max_wait));
        }
        let result: redis::RedisResult<Vec<i64>> = invocation.invoke_async(&mut self.store.conn()).await;
        let answers = self.store.outcome(StoreOp::Bucket, result)?;
        Ok(answers
            .chunks_exact(2)
            .map(|pair| reservation(pair[0], pair[1]))
            .collect())
    }

    /// Pauses the bucket for every replica for `delay` (a longer pause in force is kept), and
    /// announces it.
    pub async fn pause(&self, delay: Duration) -> Result<(), StoreFailure> {
        let result: redis::RedisResult<i64> = scripts::PAUSE
            .key(&self.pause_key)
            .arg(micros(delay.min(MAX_PAUSE)).max(1))
            .arg(&self.channel)
            .arg(self.store.publish_command())
            .invoke_async(&mut self.store.conn())
            .await;
        self.store.outcome(StoreOp::Bucket, result).map(drop)
    }

    /// When the latest pause a replica announced ends, on this process's clock (the announced
    /// length, at most [`MAX_PAUSE`], added on receipt); `None` before any.
    pub fn paused_until(&self) -> Option<Instant> {
        *self.paused.borrow()
    }

    /// Changes each time a replica (this one included) announces a longer pause.
    pub fn pause_changes(&self) -> watch::Receiver<Option<Instant>> {
        let mut changes = self.paused.clone();
        changes.mark_unchanged();
        changes
    }

    /// Changes each time Redis answers again after being unreachable.
    pub fn reconnected(&self) -> watch::Receiver<u64> {
        self.store.reconnected()
    }

    pub fn is_up(&self) -> bool {
        self.store.health().is_up()
    }

    /// Live replicas of the deployment at the last heartbeat; at least 1.
    pub fn replicas(&self) -> u32 {
        self.store.replicas()
    }
}

/// One `code, wait_us` pair of RESERVE's answer.
fn reservation(code: i64, wait_us: i64) -> Reservation {
    let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
    match code {
        1 => Reservation::Granted(wait),
        2 => Reservation::NotDue(wait),
        _ => Reservation::Refused(wait),
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
