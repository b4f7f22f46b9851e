//! Token stores: where a tenant's current token is kept so that it outlives one token manager.
//!
//! The token manager asks the store before it calls a token endpoint and tells it after: with the
//! in-process [`MemoryStore`] that lets a reloaded tenant whose credentials did not change pick up
//! the token it already had; with the shared store (Redis, `docs/architecture.md#shared-store-redis`)
//! it lets replicas share one token, which SHOPLINE needs because every renewal shortens every
//! other copy's life. Entries are keyed by tenant and a fingerprint of the credentials, so changed
//! credentials never see an old token. Times are wall-clock unix milliseconds: the one place the
//! program persists absolute time.

pub mod deliveries;
#[cfg(test)]
mod fake;
mod key;
mod memory;
mod redis;
mod seal;

use std::time::Duration;

use tokio::sync::watch;

pub use self::deliveries::{Claim, Deliveries};
#[cfg(test)]
pub use self::fake::FakeShared;
pub use self::key::StoreKey;
pub use self::memory::MemoryStore;
pub use self::redis::{
    Ask, Commit, RedisBucket, RedisSetupError, RedisSlot, RedisStore, Reservation, StoreDown, StoreFailure,
    StoreHealth, StoreOp, Versioned,
};
use crate::auth::Token;
use crate::clock;
use crate::config::{Secret, StoreConfig};

/// A token as persisted: absolute wall-clock times, so another process can use it.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub access: Secret<String>,
    pub refresh_token: Option<Secret<String>>,
    pub obtained_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub secret_index: usize,
}

impl StoredToken {
    pub fn from_token(token: &Token) -> Self {
        let now_ms = clock::unix_millis();
        let to_ms = |at: tokio::time::Instant| {
            let ahead = at.saturating_duration_since(tokio::time::Instant::now());
            now_ms.saturating_add(u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX))
        };
        let age = u64::try_from(token.obtained_at.elapsed().as_millis()).unwrap_or(0);
        Self {
            access: token.access.clone(),
            refresh_token: token.refresh_token.clone(),
            obtained_at_ms: now_ms.saturating_sub(age),
            expires_at_ms: token.expires_at.map(to_ms),
            secret_index: token.secret_index,
        }
    }

    /// Back to monotonic time for this process. A record's times come from outside (another
    /// process, or whoever wrote to the store), so an expiry is clamped like an issuer's.
    pub fn to_token(&self) -> Token {
        let now_ms = clock::unix_millis();
        let now = tokio::time::Instant::now();
        let from_ms = |ms: u64| {
            if ms >= now_ms {
                clock::deadline_in(Duration::from_millis(ms - now_ms))
            } else {
                now.checked_sub(Duration::from_millis(now_ms - ms)).unwrap_or(now)
            }
        };
        Token {
            access: self.access.clone(),
            obtained_at: from_ms(self.obtained_at_ms),
            expires_at: self.expires_at_ms.map(from_ms),
            refresh_token: self.refresh_token.clone(),
            secret_index: self.secret_index,
        }
    }
}

/// The store a deployment uses; a closed set dispatched with `match`, like providers.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
    /// The shared-store protocol on paused time, in unit tests.
    #[cfg(test)]
    Fake(FakeShared),
}

/// Why the configured store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Redis(#[from] RedisSetupError),
}

impl Store {
    /// The store `[store]` asks for. Opening Redis does not connect: a Redis that is down at
    /// startup is a degraded state (tokens renewed locally), not a reason to refuse to start.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        match config {
            StoreConfig::Memory => Ok(Self::Memory(MemoryStore::default())),
            StoreConfig::Redis(redis) => Ok(Self::Redis(RedisStore::open(redis)?)),
        }
    }

    /// The shared slot of `key`, when replicas share tokens; `None` for the in-process store.
    pub fn shared(&self, key: &StoreKey) -> Option<SharedSlot> {
        match self {
            Self::Memory(_) => None,
            Self::Redis(store) => Some(SharedSlot::Redis(Box::new(store.slot(key)))),
            #[cfg(test)]
            Self::Fake(store) => Some(SharedSlot::Fake(store.clone())),
        }
    }

    /// The cluster-wide rate-limit bucket of `key`, when replicas share limits.
    pub fn bucket(&self, key: &StoreKey) -> Option<RedisBucket> {
        match self {
            Self::Redis(store) => Some(store.bucket(key)),
            _ => None,
        }
    }

    /// The shared store's state, for `/readyz`, `/tenants` and the metrics.
    pub fn health(&self) -> Option<&StoreHealth> {
        match self {
            Self::Redis(store) => Some(store.health()),
            _ => None,
        }
    }

    /// The in-process store's entry for `key` (the shared store is read through its slot).
    pub async fn get(&self, key: &StoreKey) -> Option<StoredToken> {
        match self {
            Self::Memory(store) => store.get(key),
            _ => None,
        }
    }

    pub async fn put(&self, key: &StoreKey, token: StoredToken) {
        if let Self::Memory(store) = self {
            store.put(key, token);
        }
    }
}

/// One credential set's place in the shared store: the operations of the renewal protocol
/// (`token::shared`).
#[derive(Debug)]
pub enum SharedSlot {
    Redis(Box<RedisSlot>),
    #[cfg(test)]
    Fake(FakeShared),
}

macro_rules! dispatch {
    ($self:ident, $slot:ident => $body:expr) => {
        match $self {
            SharedSlot::Redis($slot) => $body,
            #[cfg(test)]
            SharedSlot::Fake($slot) => $body,
        }
    };
}

impl SharedSlot {
    pub async fn read(&self) -> Result<Option<Versioned>, StoreDown> {
        dispatch!(self, slot => slot.read().await)
    }

    pub async fn try_lease(&self, owner: &str, ttl: Duration) -> Result<bool, StoreDown> {
        dispatch!(self, slot => slot.try_lease(owner, ttl).await)
    }

    pub async fn extend_lease(&self, owner: &str, ttl: Duration) -> Result<bool, StoreDown> {
        dispatch!(self, slot => slot.extend_lease(owner, ttl).await)
    }

    pub async fn release_lease(&self, owner: &str) -> Result<(), StoreDown> {
        dispatch!(self, slot => slot.release_lease(owner).await)
    }

    pub async fn commit(
        &self,
        owner: &str,
        read_version: u64,
        version: u64,
        token: &StoredToken,
    ) -> Result<Commit, StoreDown> {
        dispatch!(self, slot => slot.commit(owner, read_version, version, token).await)
    }

    /// The last version announced on this key's channel.
    pub fn renewed(&self) -> watch::Receiver<u64> {
        dispatch!(self, slot => slot.renewed())
    }

    /// Changes whenever the store answers again after being unreachable.
    pub fn reconnected(&self) -> watch::Receiver<u64> {
        dispatch!(self, slot => slot.reconnected())
    }

    pub fn is_up(&self) -> bool {
        dispatch!(self, slot => slot.is_up())
    }
}
