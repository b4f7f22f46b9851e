//! Webhook delivery markers in Redis (see `store/deliveries.rs`): one key per delivery,
//! `<prefix>:webhook:<id>`, holding the claiming owner while in flight (with a short lease) and
//! `done` once forwarded (for the retention). Every command and script touches that one key, so
//! they run unchanged on a Redis Cluster.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{RedisStore, StoreDown, StoreOp};
use crate::store::deliveries::Claim;

/// What a forwarded delivery's key holds.
const DONE: &str = "done";

/// Claims `KEYS[1]` for `ARGV[1]` for `ARGV[2]` ms when nobody holds it. Returns nil when claimed,
/// else what the key holds (`done`, or another owner).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local held = redis.call('GET', KEYS[1])
if held then
  return held
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
",
    )
});

/// Deletes `KEYS[1]` if `ARGV[1]` still holds it: a failed forward never frees a later claim or
/// erases a done marker.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

impl RedisStore {
    fn delivery_key(&self, id: &str) -> String {
        format!("{}:webhook:{id}", self.inner.prefix)
    }

    pub(in crate::store) async fn claim_delivery(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreDown> {
        let result: redis::RedisResult<Option<String>> = CLAIM
            .key(self.delivery_key(id))
            .arg(owner)
            .arg(millis(lease))
            .invoke_async(&mut self.conn())
            .await;
        Ok(match self.record(StoreOp::Lease, result)? {
            None => Claim::Mine,
            Some(held) if held == DONE => Claim::Done,
            Some(_) => Claim::Busy,
        })
    }

    pub(in crate::store) async fn delivery_done(&self, id: &str, retention: Duration) -> Result<(), StoreDown> {
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.delivery_key(id))
            .arg(DONE)
            .arg("PX")
            .arg(millis(retention))
            .query_async(&mut self.conn())
            .await;
        self.record(StoreOp::Commit, result)
    }

    pub(in crate::store) async fn release_delivery(&self, id: &str, owner: &str) -> Result<(), StoreDown> {
        let result: redis::RedisResult<i64> = RELEASE
            .key(self.delivery_key(id))
            .arg(owner)
            .invoke_async(&mut self.conn())
            .await;
        self.record(StoreOp::Lease, result).map(drop)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}
