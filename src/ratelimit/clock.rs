//! The limiter's time source: governor's GCRA driven by tokio's monotonic clock.
//!
//! governor normally reads `quanta`/`std::time::Instant`, which paused-time tests cannot control
//! and which the crate bans. `TokioClock` reports time as `Nanos` elapsed since the limiter was
//! built, read from `tokio::time::Instant` (the same shape as governor's `FakeRelativeClock`, whose
//! `Reference` impl for `Nanos` we reuse). Production and tests run the same code: under
//! `#[tokio::test(start_paused = true)]` the bucket refills exactly as `time::advance` says.

use std::time::Duration;

use governor::clock::Clock;
use governor::nanos::Nanos;
use tokio::time::Instant;

/// Nanoseconds since `start`, on tokio's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioClock {
    start: Instant,
}

impl TokioClock {
    /// A clock whose zero is now.
    pub(crate) fn starting_now() -> Self {
        Self { start: Instant::now() }
    }

    /// `at` as nanoseconds since the start (zero before it; saturates after ~584 years).
    pub(crate) fn nanos_at(&self, at: Instant) -> u64 {
        duration_nanos(at.saturating_duration_since(self.start))
    }

    /// Now as nanoseconds since the start.
    pub(crate) fn nanos_now(&self) -> u64 {
        self.nanos_at(Instant::now())
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::new(self.nanos_now())
    }
}

/// A duration in whole nanoseconds, saturating instead of panicking like `Nanos::from(Duration)`.
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
