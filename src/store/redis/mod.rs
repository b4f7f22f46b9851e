//! The shared store on Redis (README, "Several replicas"): one multiplexed RESP3 connection per
//! process (redis-rs's `ConnectionManager`, which reconnects and resubscribes on its own), a
//! pattern subscription that wakes the token manager of a key a peer renewed, and a health task
//! that pings so the store's state is known (and logged once per change) even while no token is
//! due. Nothing here is on the request path: only token managers call it.
//!
//! Keys, all of one credential set under one hash tag so the scripts also run on a Cluster:
//!
//! ```text
//!   <prefix>:{<tenant>:<fingerprint>}:token     hash: version, sealed   (PEXPIRE: the token's life)
//!   <prefix>:{<tenant>:<fingerprint>}:lease     string: owner            (PX: the lease TTL)
//!   <prefix>:{<tenant>:<fingerprint>}:renewed   channel: the new version
//! ```

mod health;
mod scripts;
mod slot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, watch};

pub use self::health::{StoreHealth, StoreOp};
pub use self::slot::{Commit, RedisSlot, Versioned};
use super::StoreKey;
use crate::config::RedisConfig;

/// How often the health task pings while Redis answers, and while it does not.
const PING_UP: Duration = Duration::from_secs(2);
const PING_DOWN: Duration = Duration::from_millis(500);

/// Why the Redis store could not be set up (never a connection failure: connecting is lazy, and a
/// Redis that is down at startup is a degraded state, not a fatal one).
#[derive(Debug, thiserror::Error)]
#[error("the Redis store URL is not usable: {0}")]
pub struct RedisSetupError(&'static str);

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    health: StoreHealth,
    /// Per renewal channel, the last version a peer announced; token managers watch theirs.
    channels: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Bumped each time Redis answers again after being unreachable.
    reconnected: watch::Sender<u64>,
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
        let info = config
            .url
            .expose()
            .as_str()
            .into_connection_info()
            .map_err(|_| RedisSetupError("not a valid redis:// or rediss:// URL"))?;
        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings))
            .map_err(|_| RedisSetupError("not a valid redis:// or rediss:// URL"))?;
        let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2))
            .set_push_sender(push_tx)
            .set_automatic_resubscription();
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|_| RedisSetupError("the connection settings were refused"))?;
        let inner = Arc::new(Inner {
            conn,
            prefix: config.key_prefix.clone(),
            health: StoreHealth::default(),
            channels: Mutex::new(HashMap::new()),
            reconnected: watch::Sender::new(0),
        });
        tokio::spawn(dispatch(Arc::downgrade(&inner), push_rx));
        tokio::spawn(watch_health(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The handle a token manager uses for `key`.
    pub fn slot(&self, key: &StoreKey) -> RedisSlot {
        let base = format!("{}:{{{}}}", self.inner.prefix, key.name());
        let channel = format!("{base}:renewed");
        let renewed = self
            .inner
            .channels
            .lock()
            .expect("channel map lock is never poisoned")
            .entry(channel.clone())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        RedisSlot::new(self.clone(), key, &base, channel, renewed)
    }

    pub fn health(&self) -> &StoreHealth {
        &self.inner.health
    }

    /// Changes each time Redis answers again after being unreachable.
    pub fn reconnected(&self) -> watch::Receiver<u64> {
        self.inner.reconnected.subscribe()
    }

    /// The connection for one command (a clone is a cheap handle on the one multiplexed link).
    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// Notes the outcome of one command for the health state, the metrics and the log.
    fn record<T>(&self, op: StoreOp, result: redis::RedisResult<T>) -> Result<T, StoreDown> {
        match result {
            Ok(value) => {
                if self.inner.health.mark_up() {
                    self.inner.reconnected.send_modify(|n| *n += 1);
                }
                Ok(value)
            }
            Err(error) => {
                self.inner.health.mark_error(op, error.category());
                Err(StoreDown)
            }
        }
    }

    fn pattern(&self) -> String {
        format!("{}:{{*}}:renewed", self.inner.prefix)
    }
}

/// A store command did not get an answer (Redis down, restarting, failing over, or too slow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared store is unreachable")]
pub struct StoreDown;

/// Hands each renewal announcement to the token manager of its key.
async fn dispatch(store: Weak<Inner>, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        let Some(inner) = store.upgrade() else { return };
        if push.kind != PushKind::PMessage {
            continue;
        }
        // pmessage: pattern, channel, payload.
        let (Some(Value::BulkString(channel)), Some(payload)) = (push.data.get(1), push.data.get(2)) else {
            continue;
        };
        let version = match payload {
            Value::BulkString(bytes) => std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()),
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        };
        let (Ok(channel), Some(version)) = (std::str::from_utf8(channel), version) else {
            continue;
        };
        let channels = inner.channels.lock().expect("channel map lock is never poisoned");
        if let Some(sender) = channels.get(channel) {
            tracing::debug!(channel, version, "a token was committed to the store");
            sender.send_replace(version);
        }
    }
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
        if up && !subscribed {
            let result = conn.psubscribe(handle.pattern()).await;
            subscribed = handle.record(StoreOp::Subscribe, result).is_ok();
        }
        // After a reconnect redis-rs resubscribes by itself; a failed first subscribe is retried.
        let pause = if up { PING_UP } else { PING_DOWN };
        drop(handle);
        tokio::time::sleep(pause).await;
    }
}
