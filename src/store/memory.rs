//! The in-process token store: a bounded moka cache shared by every token manager of the process.
//! Freshness is decided by the manager from `expires_at_ms`, never by moka's clock (which tests
//! cannot pause); moka only bounds memory and drops entries of tenants long gone.

use std::sync::Arc;
use std::time::Duration;

use super::{StoreKey, StoredToken};

/// Entries idle this long belong to tenants that were removed; dropping them frees memory.
const IDLE_EVICTION: Duration = Duration::from_secs(24 * 3600);
/// Far above any realistic tenant count; only a bound against a reload loop leaking entries.
const MAX_ENTRIES: u64 = 100_000;

#[derive(Clone)]
pub struct MemoryStore {
    entries: Arc<moka::sync::Cache<StoreKey, StoredToken>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(MAX_ENTRIES)
            .time_to_idle(IDLE_EVICTION)
            .build();
        Self {
            entries: Arc::new(entries),
        }
    }
}

impl MemoryStore {
    pub fn get(&self, key: &StoreKey) -> Option<StoredToken> {
        self.entries.get(key)
    }

    pub fn put(&self, key: &StoreKey, token: StoredToken) {
        self.entries.insert(key.clone(), token);
    }
}
