//! One credential set's cluster-wide rate-limit bucket: GCRA reservations and pauses in Lua.

use std::time::Duration;

use tokio::sync::watch;

use super::{RedisStore, StoreFailure, StoreOp, scripts};
use crate::config::CallerClass;

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
    paused: watch::Receiver<u64>,
}

impl std::fmt::Debug for RedisBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBucket")
            .field("bucket_key", &self.bucket_key)
            .finish_non_exhaustive()
    }
}

impl RedisBucket {
    pub(super) fn new(store: RedisStore, base: &str, channel: String, paused: watch::Receiver<u64>) -> Self {
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
        let mut invocation = scripts::RESERVE.key(&self.bucket_key);
        invocation.key(&self.pause_key);
        for key in &self.class_keys {
            invocation.key(key);
        }
        let result: redis::RedisResult<(i64, i64)> = invocation
            .arg(micros(ask.period).max(1))
            .arg(ask.burst.max(1))
            .arg(micros(ask.max_wait))
            .arg(ask.class.index())
            .arg(u8::from(ask.ahead))
            .arg(ask.batch_every.max(1))
            .invoke_async(&mut self.store.conn())
            .await;
        let (answer, wait) = self.store.outcome(StoreOp::Bucket, result)?;
        let wait = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
        Ok(match answer {
            1 => Reservation::Granted(wait),
            2 => Reservation::NotDue(wait),
            _ => Reservation::Refused(wait),
        })
    }

    /// Pauses the bucket for every replica for `delay` (a longer pause in force is kept), and
    /// announces it.
    pub async fn pause(&self, delay: Duration) -> Result<(), StoreFailure> {
        let result: redis::RedisResult<String> = scripts::PAUSE
            .key(&self.pause_key)
            .arg(micros(delay).max(1))
            .arg(&self.channel)
            .invoke_async(&mut self.store.conn())
            .await;
        self.store.outcome(StoreOp::Bucket, result).map(drop)
    }

    /// The end (unix µs) of the latest pause a replica announced; 0 before any.
    pub fn paused_until_unix_us(&self) -> u64 {
        *self.paused.borrow()
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

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
