//! Token stores: where a tenant's current token is kept so that it outlives one token manager.
//!
//! The token manager asks the store before it calls a token endpoint and tells it after: with the
//! in-process [`MemoryStore`] that lets a reloaded tenant whose credentials did not change pick up
//! the token it already had; with a shared store (Redis, `docs/architecture.md#shared-store-plan`)
//! it lets replicas share one token, which SHOPLINE needs because every renewal shortens every
//! other copy's life. Entries are keyed by tenant and a fingerprint of the credentials, so changed
//! credentials never see an old token. Times are wall-clock unix milliseconds: the one place the
//! program persists absolute time.

mod key;
mod memory;

use std::time::Duration;

pub use self::key::StoreKey;
pub use self::memory::MemoryStore;
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
            now_ms + u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX / 2)
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

    /// Back to monotonic time for this process.
    pub fn to_token(&self) -> Token {
        let now_ms = clock::unix_millis();
        let now = tokio::time::Instant::now();
        let from_ms = |ms: u64| {
            if ms >= now_ms {
                now + Duration::from_millis(ms - now_ms)
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
}

/// Why the configured store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Validation refuses `kind = "redis"` until the shared store exists; this is the same refusal
    /// for a configuration built without `check` (a test, an embedding).
    #[error("store kind \"redis\" is not available in this version; use \"memory\"")]
    Unsupported,
}

impl Store {
    /// The store `[store]` asks for.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        match config {
            StoreConfig::Memory => Ok(Self::Memory(MemoryStore::default())),
            StoreConfig::Redis { .. } => Err(StoreError::Unsupported),
        }
    }

    pub async fn get(&self, key: &StoreKey) -> Option<StoredToken> {
        match self {
            Self::Memory(store) => store.get(key),
        }
    }

    pub async fn put(&self, key: &StoreKey, token: StoredToken) {
        match self {
            Self::Memory(store) => store.put(key, token),
        }
    }
}
