//! The one place wall-clock time is read and converted to tokio's monotonic clock.
//!
//! Token lifetimes arrive as wall-clock facts (`expires_in` seconds from now, a JWT `exp` in unix
//! seconds, SHOPLINE's `expireTime` as an ISO date). The rest of the program reasons in
//! `tokio::time::Instant`, which tests can pause and advance, so every conversion happens here,
//! once, on receipt.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Wall-clock now. The only call to `SystemTime::now` in the crate.
pub fn system_now() -> SystemTime {
    SystemTime::now()
}

/// Milliseconds since the Unix epoch (SHOPLINE signatures, the Redis store).
pub fn unix_millis() -> u64 {
    system_now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The monotonic deadline matching wall-clock `at`; a time already past maps to now.
pub fn deadline_for(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(system_now()) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

/// The monotonic deadline for a unix-seconds timestamp (a JWT `exp`).
pub fn deadline_for_unix_secs(secs: u64) -> Instant {
    deadline_for(UNIX_EPOCH + Duration::from_secs(secs))
}

/// How far `deadline` is from now, zero if past.
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
