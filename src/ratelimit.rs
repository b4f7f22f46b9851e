//! Per-tenant rate limiting. STUB: the rate-limit helper implements this.

use std::time::Duration;

use crate::config::RateLimitConfig;

/// A tenant's token bucket.
#[derive(Debug)]
pub struct Limiter {
    config: RateLimitConfig,
}

/// No slot within `max_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {retry_after:?}")]
pub struct RateLimited {
    pub retry_after: Duration,
}

impl Limiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self { config }
    }

    /// Waits (FIFO) for a slot up to `max_wait`; returns how long it waited.
    pub async fn acquire(&self) -> Result<Duration, RateLimited> {
        let _ = self.config;
        Ok(Duration::ZERO)
    }

    /// The upstream answered 429: hold every request of this tenant for `delay`.
    pub fn pause_for(&self, _delay: Duration) {}
}
