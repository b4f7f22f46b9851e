//! The fake store's per-(app, store) leaky bucket: SHOPLINE's 40 requests drained at 4 per second
//! (`docs/providers.md#shopline-rate-limits-and-423`).

use std::time::Duration;

use tokio::time::Instant;

/// A leaky bucket in GCRA form: `drained_at` is when the bucket would be empty again.
/// Requests fit while the bucket holds fewer than `burst`; it drains at `rate` per second.
#[derive(Debug)]
pub(crate) struct LeakyBucket {
    interval: Duration,
    capacity: Duration,
    drained_at: Option<Instant>,
}

impl LeakyBucket {
    pub(crate) fn new(rate_per_second: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(1) / rate_per_second.max(1);
        Self {
            interval,
            capacity: interval * burst.max(1),
            drained_at: None,
        }
    }

    /// Admits one request now, or says how long until one would fit.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        let level_end = self.drained_at.map_or(now, |at| at.max(now)) + self.interval;
        let fill = level_end - now;
        if fill > self.capacity {
            return Err(fill - self.capacity);
        }
        self.drained_at = Some(level_end);
        Ok(())
    }
}
