//! One credential set's cluster-wide rate-limit bucket: GCRA reservations and pauses in Lua.

use std::time::Duration;

use tokio::sync::watch;

use super::{RedisStore, StoreDown, StoreOp, scripts};

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is ours: send after this wait.
    Granted(Duration),
    /// The next slot is further away than allowed: nothing reserved; retry after this long.
    Refused(Duration),
}

pub struct RedisBucket {
    store: RedisStore,
    bucket_key: String,
    pause_key: String,
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
            channel,
            paused,
        }
    }

    /// Reserves the next slot of a bucket of one slot per `period` and `burst`, unless it is
    /// more than `max_wait` away. One round trip.
    pub async fn reserve(&self, period: Duration, burst: u32, max_wait: Duration) -> Result<Reservation, StoreDown> {
        let result: redis::RedisResult<(i64, i64)> = scripts::RESERVE
            .key(&self.bucket_key)
            .key(&self.pause_key)
            .arg(micros(period).max(1))
            .arg(burst.max(1))
            .arg(micros(max_wait))
            .invoke_async(&mut self.store.conn())
            .await;
        let (granted, wait) = self.store.record(StoreOp::Lease, result)?;
        let wait = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
        Ok(if granted == 1 {
            Reservation::Granted(wait)
        } else {
            Reservation::Refused(wait)
        })
    }

    /// Pauses the bucket for every replica for `delay` (a longer pause in force is kept), and
    /// announces it.
    pub async fn pause(&self, delay: Duration) -> Result<(), StoreDown> {
        let result: redis::RedisResult<String> = scripts::PAUSE
            .key(&self.pause_key)
            .arg(micros(delay).max(1))
            .arg(&self.channel)
            .invoke_async(&mut self.store.conn())
            .await;
        self.store.record(StoreOp::Lease, result).map(drop)
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
