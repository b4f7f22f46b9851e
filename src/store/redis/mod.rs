//! The shared store on Redis (README, "Several replicas"): one multiplexed RESP3 connection per
//! process (one server, a Cluster or a Sentinel-managed primary: `conn.rs`, README "Redis
//! topologies"), a subscription that wakes the token manager of a key a peer renewed, and a
//! health task that pings so the store's state is known (and logged once per change) even while
//! no token is due. Nothing here is on the request path: only token managers and buckets call it.
//!
//! Keys, all of one credential set under one hash tag so the scripts also run on a Cluster:
//!
//! ```text
//!   <prefix>:{<tenant>:<fingerprint>}:token     hash: version, sealed   (PEXPIRE: the token's life)
//!   <prefix>:{<tenant>:<fingerprint>}:lease     string: owner            (PX: the lease TTL)
//!   <prefix>:{<tenant>:<fingerprint>}:renewed   channel: the new version
//!   <prefix>:{<tenant>:<fingerprint>}:bucket    string: GCRA arrival time, µs  (PX: until idle)
//!   <prefix>:{<tenant>:<fingerprint>}:pause     string: paused until, µs      (PX: the pause)
//!   <prefix>:{<tenant>:<fingerprint>}:pause-for channel: the pause's length from now, µs
//!   <prefix>:replicas                           sorted set: replica → last heartbeat, ms
//! ```

mod bucket;
mod conn;
mod connect;
mod deliveries;
mod errors;
mod health;
mod scripts;
mod sentinel;
mod slot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

pub use self::bucket::{Ask, RedisBucket, Reservation};
pub use self::errors::RedisSetupError;
use self::errors::is_unreachable;
pub use self::health::{StoreHealth, StoreOp};
pub use self::slot::{Commit, RedisSlot, Versioned};
use super::StoreKey;
use crate::config::{MAX_PAUSE, RedisConfig};

/// A replica that has not beaten for this long is no longer counted.
const REPLICA_TTL_MS: u64 = 10_000;
/// How often the health task pings (and beats) while Redis answers, and while it does not.
const PING_UP: Duration = Duration::from_secs(2);
const PING_DOWN: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: conn::Conn,
    prefix: String,
    health: StoreHealth,
    /// Per renewal channel, the last version a peer announced; token managers watch theirs.
    channels: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Per pause channel, when the latest announced pause ends on this process's clock.
    pauses: Mutex<HashMap<String, watch::Sender<Option<Instant>>>>,
    /// Bumped each time Redis answers again after being unreachable.
    reconnected: watch::Sender<u64>,
    /// This process in the deployment's replica set (`<prefix>:replicas`).
    replica_id: String,
    /// Live replicas at the last heartbeat.
    replicas: std::sync::atomic::AtomicU32,
    /// `[store] seal_secret`, mixed into every slot's sealing key.
    seal_secret: Option<crate::config::Secret<String>>,
    /// Sharded channels (a Cluster) not subscribed yet; the health task subscribes them.
    unheard: Mutex<Vec<String>>,
    /// Wakes the health task when a channel is added to `unheard`. Shared apart from the rest so
    /// the task can wait on it without keeping the store alive.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("up", &self.inner.health.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Sets the store up without connecting; the health task connects in the background.
    pub fn open(config: &RedisConfig) -> Result<Self, RedisSetupError> {
        let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
        let conn = conn::Conn::open(config, push_tx)?;
        let inner = Arc::new(Inner {
            conn,
            prefix: config.key_prefix.clone(),
            health: StoreHealth::default(),
            channels: Mutex::new(HashMap::new()),
            pauses: Mutex::new(HashMap::new()),
            reconnected: watch::Sender::new(0),
            replica_id: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
            replicas: std::sync::atomic::AtomicU32::new(1),
            seal_secret: config.seal_secret.clone(),
            unheard: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
        });
        tokio::spawn(dispatch(Arc::downgrade(&inner), push_rx));
        tokio::spawn(watch_health(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The handle a token manager uses for `key`.
    pub fn slot(&self, key: &StoreKey) -> RedisSlot {
        let base = self.base(key);
        let channel = format!("{base}:renewed");
        let renewed = self.channel(&channel);
        self.listen_to(&channel);
        RedisSlot::new(self.clone(), key, &base, channel, renewed)
    }

    /// The handle a rate limiter uses for `key`'s cluster-wide bucket.
    pub fn bucket(&self, key: &StoreKey) -> RedisBucket {
        let base = self.base(key);
        let channel = format!("{base}:pause-for");
        let paused = self
            .inner
            .pauses
            .lock()
            .expect("pause map lock is never poisoned")
            .entry(channel.clone())
            .or_insert_with(|| watch::Sender::new(None))
            .subscribe();
        self.listen_to(&channel);
        RedisBucket::new(self.clone(), &base, channel, paused)
    }

    /// `<prefix>:{<tenant>:<fingerprint>}`: every key of one credential set under one hash tag.
    fn base(&self, key: &StoreKey) -> String {
        format!("{}:{{{}}}", self.inner.prefix, key.name())
    }

    /// The last value announced on `channel` (0 before any).
    fn channel(&self, channel: &str) -> watch::Receiver<u64> {
        self.inner
            .channels
            .lock()
            .expect("channel map lock is never poisoned")
            .entry(channel.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    /// On a Cluster, queues `channel` for a sharded subscription (a pattern covers them all on
    /// one server). Subscribing twice is harmless.
    fn listen_to(&self, channel: &str) {
        if self.inner.conn.is_sharded() {
            let mut unheard = self.inner.unheard.lock().expect("channel list lock is never poisoned");
            unheard.push(channel.to_owned());
            self.inner.wake.notify_one();
        }
    }

    /// The command the scripts announce with (`PUBLISH`, or `SPUBLISH` on a Cluster).
    fn publish_command(&self) -> &'static str {
        self.inner.conn.publish_command()
    }

    /// The deployment-wide seal secret, if one is configured.
    fn seal_secret(&self) -> Option<&crate::config::Secret<String>> {
        self.inner.seal_secret.as_ref()
    }

    /// Live replicas of this deployment (same prefix) at the last heartbeat; at least 1.
    pub fn replicas(&self) -> u32 {
        self.inner.replicas.load(std::sync::atomic::Ordering::Relaxed).max(1)
    }

    pub fn health(&self) -> &StoreHealth {
        &self.inner.health
    }

    /// Changes each time Redis answers again after being unreachable.
    pub fn reconnected(&self) -> watch::Receiver<u64> {
        self.inner.reconnected.subscribe()
    }

    /// The connection for one command (a clone is a cheap handle on the one multiplexed link).
    fn conn(&self) -> conn::Conn {
        self.inner.conn.clone()
    }

    /// Notes the outcome of one command for the health state, the metrics and the log; any
    /// failure fails the operation.
    fn record<T>(&self, op: StoreOp, result: redis::RedisResult<T>) -> Result<T, StoreDown> {
        self.outcome(op, result).map_err(|_| StoreDown)
    }

    /// As [`Self::record`], telling an error reply from lost connectivity: only the latter marks
    /// the store unreachable.
    fn outcome<T>(&self, op: StoreOp, result: redis::RedisResult<T>) -> Result<T, StoreFailure> {
        match result {
            Ok(value) => {
                if self.inner.health.mark_up() {
                    self.inner.reconnected.send_modify(|n| *n += 1);
                }
                Ok(value)
            }
            Err(error) if is_unreachable(&error) => {
                self.inner.health.mark_error(op, error.category());
                Err(StoreFailure::Unreachable)
            }
            Err(error) => {
                self.inner
                    .health
                    .mark_refused(op, error.code().unwrap_or(error.category()));
                Err(StoreFailure::Refused)
            }
        }
    }

    /// Every announcement channel of this prefix: `...:renewed` (tokens), `...:pause-for` (buckets).
    fn pattern(&self) -> String {
        format!("{}:{{*}}:*", self.inner.prefix)
    }

    /// Registers this process in the deployment's replica set and counts the live ones, so a
    /// bucket that cannot reach Redis knows what share of the rate is its own.
    async fn heartbeat(&self) {
        let now = crate::clock::unix_millis();
        let key = format!("{}:replicas", self.inner.prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD").arg(&key).arg(now).arg(&self.inner.replica_id).ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now.saturating_sub(REPLICA_TTL_MS))
            .ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(REPLICA_TTL_MS * 10).ignore();
        pipe.cmd("ZCARD").arg(&key);
        let result: redis::RedisResult<(u32,)> = pipe.query_async(&mut self.conn()).await;
        if let Ok((count,)) = self.record(StoreOp::Ping, result) {
            self.inner.replicas.store(count, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A store command did not get an answer (Redis down, restarting, failing over, or too slow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared store is unreachable")]
pub struct StoreDown;

/// Why a store command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    /// No answer: the store is down, restarting, failing over or too slow (it is marked so).
    #[error("the shared store is unreachable")]
    Unreachable,
    /// Redis answered with an error (a key of the wrong type, a script error): this operation
    /// failed, the store is still up.
    #[error("the shared store refused the command")]
    Refused,
}

/// Hands each renewal announcement to the token manager of its key.
async fn dispatch(store: Weak<Inner>, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        let Some(inner) = store.upgrade() else { return };
        // pmessage: pattern, channel, payload; smessage (a Cluster's shard): channel, payload.
        let first = match push.kind {
            PushKind::PMessage => 1,
            PushKind::SMessage => 0,
            _ => continue,
        };
        let (Some(Value::BulkString(channel)), Some(payload)) = (push.data.get(first), push.data.get(first + 1)) else {
            continue;
        };
        let (Ok(channel), Some(number)) = (std::str::from_utf8(channel), number(payload)) else {
            continue;
        };
        if announce_pause(&inner, channel, number) {
            continue;
        }
        let version = number;
        let channels = inner.channels.lock().expect("channel map lock is never poisoned");
        if let Some(sender) = channels.get(channel) {
            tracing::debug!(channel, version, "a token was committed to the store");
            sender.send_replace(version);
        }
    }
}

/// A payload that is a non-negative integer (anything else is ignored).
fn number(payload: &Value) -> Option<u64> {
    match payload {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()),
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// If `channel` is a bucket's pause channel: a peer paused it for `micros` from now. Converted to
/// this process's clock on receipt, at most [`MAX_PAUSE`] (the number comes from whoever can
/// publish); a later end replaces an earlier one, never the reverse. Returns whether it was one.
fn announce_pause(inner: &Inner, channel: &str, micros: u64) -> bool {
    let pauses = inner.pauses.lock().expect("pause map lock is never poisoned");
    let Some(sender) = pauses.get(channel) else {
        return false;
    };
    let until = Instant::now() + Duration::from_micros(micros).min(MAX_PAUSE);
    sender.send_if_modified(|current| {
        let later = current.is_none_or(|end| end < until);
        if later {
            *current = Some(until);
        }
        later
    });
    tracing::debug!(
        channel,
        pause_ms = Duration::from_micros(micros).min(MAX_PAUSE).as_millis() as u64,
        "a peer paused a bucket"
    );
    true
}

/// Pings Redis so that its state is known while no token is due, and (re)subscribes to the
/// renewal channels whenever it comes back.
async fn watch_health(store: Weak<Inner>) {
    let mut subscribed = false;
    loop {
        let Some(inner) = store.upgrade() else { return };
        let handle = RedisStore { inner };
        let mut conn = handle.conn();
        let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        let up = handle.record(StoreOp::Ping, ping).is_ok();
        if up {
            handle.heartbeat().await;
        }
        if up && (!subscribed || conn.resubscribes()) {
            subscribed = handle.listen(&mut conn).await;
        }
        // After a reconnect (or a slot's move) redis-rs resubscribes by itself; a failed first
        // subscribe is retried.
        let pause = if up { PING_UP } else { PING_DOWN };
        // Only the wake-up is kept while waiting: a store dropped meanwhile (a reload that
        // changed `[store]`, shutdown) closes its connections now, not a ping interval later.
        let wake = Arc::clone(&handle.inner.wake);
        drop(handle);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
        }
    }
}

impl RedisStore {
    /// Subscribes to the announcement pattern (one server) or the channels queued since the last
    /// time (a Cluster); returns whether that worked. Failed channels stay queued.
    async fn listen(&self, conn: &mut conn::Conn) -> bool {
        let channels = std::mem::take(&mut *self.inner.unheard.lock().expect("channel list lock is never poisoned"));
        let result = conn.listen(&self.pattern(), &channels).await;
        let heard = self.record(StoreOp::Subscribe, result).is_ok();
        if !heard {
            let mut unheard = self.inner.unheard.lock().expect("channel list lock is never poisoned");
            unheard.extend(channels);
        }
        heard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_wide_refusals_count_as_unreachable_and_command_errors_do_not() {
        for code in ["BUSY", "MISCONF", "OOM", "NOAUTH", "WRONGPASS", "NOPERM", "NOREPLICAS"] {
            let error = redis::make_extension_error(code.to_owned(), Some("refused".to_owned()));
            assert!(is_unreachable(&error), "{code}");
        }
        let wrong_type = redis::make_extension_error("WRONGTYPE".to_owned(), Some("a hash".to_owned()));
        assert!(!is_unreachable(&wrong_type), "one key's type fails one operation");
    }
}
