//! Which webhook deliveries were already forwarded, so a sender's repeat is answered without a
//! second forward (README, "Webhooks"). A delivery is claimed with a short in-flight marker before
//! it is forwarded, marked done (for a day) only after the forward succeeded, and released when it
//! failed, so the sender's retry goes through and nothing is lost.
//!
//! With the Redis store the markers live in Redis and hold across replicas (`redis/deliveries.rs`,
//! single-key commands only, so they work on a cluster too); otherwise in a bounded moka cache of
//! this process. Times here are lease and retention lengths, never instants.

use std::sync::Arc;
use std::time::Duration;

use super::{Store, StoreDown};

/// How a claim on a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This request forwards it.
    Mine,
    /// Forwarded already, within the retention.
    Done,
    /// Another request (here or on another replica) is forwarding it now.
    Busy,
}

/// Forwarded deliveries remembered in this process at most; past it the least used are forgotten
/// first (a platform's retry of one of those would be forwarded again, never lost).
const MEMORY_CAPACITY: u64 = 100_000;

/// Where delivery markers live.
#[derive(Clone)]
pub enum Deliveries {
    Memory(Arc<Local>),
    Redis(super::RedisStore),
}

/// The process's own markers. Claims in flight sit in a plain map under a short lock: there are
/// never more than the requests in progress, and a cache could evict one while its forward runs
/// (moka admits new keys by frequency once full), letting a repeat forward too. Forwarded
/// deliveries go to a bounded moka cache, where forgetting one only costs a second forward.
pub struct Local {
    in_flight: std::sync::Mutex<std::collections::HashMap<String, String>>,
    done: moka::sync::Cache<String, ()>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(local) => write!(f, "Deliveries::Memory({} done)", local.done.entry_count()),
            Self::Redis(_) => f.write_str("Deliveries::Redis"),
        }
    }
}

impl Local {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        // The sections below cannot leave the map half-changed, so a poisoned lock is still sound.
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn claim(&self, id: &str, owner: &str) -> Claim {
        let mut in_flight = self.in_flight();
        if self.done.contains_key(id) {
            return Claim::Done;
        }
        match in_flight.get(id) {
            Some(holder) if holder == owner => Claim::Mine,
            Some(_) => Claim::Busy,
            None => {
                in_flight.insert(id.to_owned(), owner.to_owned());
                Claim::Mine
            }
        }
    }

    fn done(&self, id: &str) {
        let mut in_flight = self.in_flight();
        self.done.insert(id.to_owned(), ());
        in_flight.remove(id);
    }

    /// Only the owner's claim is freed: a late release never frees a successor's.
    fn release(&self, id: &str, owner: &str) {
        let mut in_flight = self.in_flight();
        if in_flight.get(id).is_some_and(|holder| holder == owner) {
            in_flight.remove(id);
        }
    }
}

impl Deliveries {
    /// Shared through Redis when the store is Redis; this process's own memory otherwise. Done
    /// markers are kept for `retention` (moka's clock only bounds memory here: a delivery a day
    /// old may be forwarded again, which the platforms' retry windows never reach).
    pub fn for_store(store: &Store, retention: Duration) -> Self {
        match store {
            Store::Redis(redis) => Self::Redis(redis.clone()),
            _ => Self::Memory(Arc::new(Local {
                in_flight: std::sync::Mutex::default(),
                done: moka::sync::Cache::builder()
                    .max_capacity(MEMORY_CAPACITY)
                    .time_to_live(retention)
                    .build(),
            })),
        }
    }

    /// Claims delivery `id` for `owner`, the claim lapsing after `lease` if it is never settled
    /// (the process died, or the request was dropped: see [`Self::release_local`]).
    pub async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Claim, StoreDown> {
        match self {
            Self::Memory(local) => Ok(local.claim(id, owner)),
            Self::Redis(redis) => redis.claim_delivery(id, owner, lease).await,
        }
    }

    /// Records delivery `id` as forwarded, for `retention`.
    pub async fn done(&self, id: &str, retention: Duration) -> Result<(), StoreDown> {
        match self {
            Self::Memory(local) => {
                local.done(id);
                Ok(())
            }
            Self::Redis(redis) => redis.delivery_done(id, retention).await,
        }
    }

    /// Frees `owner`'s claim on `id` after a failed forward, so the sender's retry can forward it.
    pub async fn release(&self, id: &str, owner: &str) -> Result<(), StoreDown> {
        match self {
            Self::Memory(local) => {
                local.release(id, owner);
                Ok(())
            }
            Self::Redis(redis) => redis.release_delivery(id, owner).await,
        }
    }

    /// Frees `owner`'s claim in the process at once (a request dropped midway cannot wait for
    /// anything); Redis claims lapse with their lease instead.
    pub fn release_local(&self, id: &str, owner: &str) {
        if let Self::Memory(local) = self {
            local.release(id, owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Deliveries {
        Deliveries::for_store(
            &Store::Memory(super::super::MemoryStore::default()),
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn a_claim_excludes_others_until_it_is_released_or_done() {
        let ledger = ledger();
        let lease = Duration::from_secs(15);
        assert_eq!(ledger.claim("d1", "a", lease).await, Ok(Claim::Mine));
        assert_eq!(ledger.claim("d1", "b", lease).await, Ok(Claim::Busy));
        // Another owner's release (a late one, say) frees nothing.
        ledger.release("d1", "b").await.expect("memory");
        assert_eq!(ledger.claim("d1", "b", lease).await, Ok(Claim::Busy));
        ledger.release("d1", "a").await.expect("memory");
        assert_eq!(ledger.claim("d1", "b", lease).await, Ok(Claim::Mine));
        ledger.done("d1", Duration::from_secs(60)).await.expect("memory");
        assert_eq!(ledger.claim("d1", "c", lease).await, Ok(Claim::Done));
        // A done delivery stays done: a release by its late owner does not erase it.
        ledger.release_local("d1", "b");
        assert_eq!(ledger.claim("d1", "c", lease).await, Ok(Claim::Done));
        assert_eq!(ledger.claim("d2", "c", lease).await, Ok(Claim::Mine));
    }
}
