//! One credential set's place in Redis: its token, its renewal lease and its channel.

use std::time::Duration;

use tokio::sync::watch;

use super::conn::Conn;
use super::{RedisStore, StoreDown, StoreOp, scripts};
use crate::store::seal::Sealer;
use crate::store::{StoreKey, StoredToken};

/// A stored token with the version it was committed as.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: u64,
    pub token: StoredToken,
}

/// How a fenced commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Written as this version, and announced.
    Committed(u64),
    /// Our lease had lapsed (we were too slow, or paused): another replica may be renewing.
    LeaseLost,
    /// The stored version is no longer the one we read: someone committed in between.
    Superseded,
}

pub struct RedisSlot {
    store: RedisStore,
    sealer: Sealer,
    token_key: String,
    lease_key: String,
    channel: String,
    renewed: watch::Receiver<u64>,
}

impl std::fmt::Debug for RedisSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSlot")
            .field("token_key", &self.token_key)
            .finish_non_exhaustive()
    }
}

impl RedisSlot {
    pub(super) fn new(
        store: RedisStore,
        key: &StoreKey,
        base: &str,
        channel: String,
        renewed: watch::Receiver<u64>,
    ) -> Self {
        Self {
            sealer: Sealer::new(key, store.seal_secret()),
            store,
            token_key: format!("{base}:token"),
            lease_key: format!("{base}:lease"),
            channel,
            renewed,
        }
    }

    fn conn(&self) -> Conn {
        self.store.conn()
    }

    /// The stored token; `None` when there is none, or it cannot be opened with our credentials.
    pub async fn read(&self) -> Result<Option<Versioned>, StoreDown> {
        let result: redis::RedisResult<(Option<u64>, Option<Vec<u8>>)> = redis::cmd("HMGET")
            .arg(&self.token_key)
            .arg("version")
            .arg("sealed")
            .query_async(&mut self.conn())
            .await;
        let (version, sealed) = self.store.record(StoreOp::Read, result)?;
        let (Some(version), Some(sealed)) = (version, sealed) else {
            return Ok(None);
        };
        match self.sealer.open(&sealed, version) {
            Ok(token) => Ok(Some(Versioned { version, token })),
            Err(error) => {
                tracing::warn!(key = %self.token_key, version, %error, "ignoring a stored token");
                Ok(None)
            }
        }
    }

    /// `SET lease owner NX PX ttl`: whether `owner` now holds the lease.
    pub async fn try_lease(&self, owner: &str, ttl: Duration) -> Result<bool, StoreDown> {
        let result: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(&self.lease_key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.conn())
            .await;
        Ok(self.store.record(StoreOp::Lease, result)?.is_some())
    }

    /// Extends `owner`'s lease to `ttl` from now; false if it was lost.
    pub async fn extend_lease(&self, owner: &str, ttl: Duration) -> Result<bool, StoreDown> {
        let result: redis::RedisResult<i64> = scripts::EXTEND
            .key(&self.lease_key)
            .arg(owner)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn())
            .await;
        Ok(self.store.record(StoreOp::Lease, result)? == 1)
    }

    /// Frees `owner`'s lease (only if it still holds it).
    pub async fn release_lease(&self, owner: &str) -> Result<(), StoreDown> {
        let result: redis::RedisResult<i64> = scripts::RELEASE
            .key(&self.lease_key)
            .arg(owner)
            .invoke_async(&mut self.conn())
            .await;
        self.store.record(StoreOp::Lease, result).map(drop)
    }

    /// The fenced compare-and-set: writes `token` as `version` only while `owner` holds the lease
    /// and the store still holds `read_version` (0: nothing), then announces it.
    pub async fn commit(
        &self,
        owner: &str,
        read_version: u64,
        version: u64,
        token: &StoredToken,
    ) -> Result<Commit, StoreDown> {
        let sealed = self.sealer.seal(token, version);
        let result: redis::RedisResult<i64> = scripts::COMMIT
            .key(&self.lease_key)
            .key(&self.token_key)
            .arg(owner)
            .arg(read_version)
            .arg(version)
            .arg(sealed)
            .arg(millis(retention(token)))
            .arg(&self.channel)
            .arg(self.store.publish_command())
            .invoke_async(&mut self.conn())
            .await;
        Ok(match self.store.record(StoreOp::Commit, result)? {
            -1 => Commit::LeaseLost,
            n => u64::try_from(n).map_or(Commit::Superseded, Commit::Committed),
        })
    }

    /// The last version a peer (or this process) announced on this key's channel.
    pub fn renewed(&self) -> watch::Receiver<u64> {
        self.renewed.clone()
    }

    /// Changes whenever Redis answers again after being unreachable.
    pub fn reconnected(&self) -> watch::Receiver<u64> {
        self.store.reconnected()
    }

    pub fn is_up(&self) -> bool {
        self.store.health().is_up()
    }
}

/// How long Redis keeps a committed token: its remaining life plus a margin (so a replica
/// starting just after expiry still finds a Vantage refresh token to redeem), or a day when it
/// does not say. A removed tenant's entries are gone after that.
fn retention(token: &StoredToken) -> Duration {
    const MARGIN: Duration = Duration::from_secs(3600);
    const UNDATED: Duration = Duration::from_secs(24 * 3600);
    token.expires_at_ms.map_or(UNDATED, |at| {
        Duration::from_millis(at.saturating_sub(crate::clock::unix_millis())) + MARGIN
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}
