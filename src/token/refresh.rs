//! When to renew and how long to back off: pure functions, table-tested.
//!
//! Renewal is due at `expires_at - refresh_before`, less up to 10 % jitter so tenants sharing an IdP
//! do not renew in lockstep, and clamped to 50–80 % of the lifetime: never so late that a slow IdP
//! lets the token lapse, never so early that short-lived tokens hammer the IdP (linkerd's
//! `refresh_in` rule). Failed attempts back off exponentially from 1 s to 60 s.

use std::time::Duration;

use tokio::time::Instant;

/// First retry delay after a failed token call.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Retry delays stop growing here: a minute is short against hour-long lifetimes and long enough
/// not to add load to an IdP that is already struggling. The one retry ceiling, shared with the
/// limiter's pauses and an IdP's `Retry-After` (which `auth` caps with the same constant).
pub(crate) const BACKOFF_CAP: Duration = crate::config::MAX_PAUSE;

/// Delay from issuance to the renewal of a token living `lifetime`. `jitter` is uniform in [0, 1).
/// Total for any input: the lifetime is taken as at most `clock::MAX_TOKEN_LIFETIME` (so the
/// float products below stay far inside a `Duration`), and a jitter outside [0, 1] is clamped.
pub(crate) fn refresh_delay(lifetime: Duration, refresh_before: Duration, jitter: f64) -> Duration {
    let lifetime = lifetime.min(crate::clock::MAX_TOKEN_LIFETIME);
    let target = lifetime.saturating_sub(refresh_before);
    let jittered = target.mul_f64(1.0 - 0.1 * unit(jitter));
    jittered.clamp(lifetime.mul_f64(0.5), lifetime.mul_f64(0.8))
}

/// When a token obtained at `obtained_at` and expiring at `expires_at` is renewed, `delay` after
/// it was obtained; never past its expiry, and never an overflow.
pub(crate) fn renewal_at(obtained_at: Instant, expires_at: Instant, delay: Duration) -> Instant {
    obtained_at
        .checked_add(delay)
        .map_or(expires_at, |at| at.min(expires_at))
}

/// Delay before retry number `attempt` (1-based): 1 s doubling to 60 s, scaled into [80 %, 100 %]
/// by `jitter` in [0, 1) so that many tenants failing together spread their retries.
pub(crate) fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let base = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_CAP);
    base.mul_f64(0.8 + 0.2 * unit(jitter))
}

/// `jitter` clamped into [0, 1]; NaN counts as 0 (`Duration::mul_f64` panics on NaN).
fn unit(jitter: f64) -> f64 {
    if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    #[test]
    fn renewal_is_refresh_before_expiry_within_the_clamp() {
        let secs = |s| Duration::from_secs(s);
        // (lifetime, refresh_before, jitter) -> delay
        let table = [
            // IMS 24 h, renew 10 min before: 23h50m, above the 80 % clamp of 19h12m.
            (secs(24 * H), secs(600), 0.0, secs(24 * H).mul_f64(0.8)),
            // SHOPLINE 10 h with refresh_before 4 h: 6 h = 60 %, inside the clamp; jitter shaves up to 10 %.
            (secs(10 * H), secs(4 * H), 0.0, secs(6 * H)),
            (secs(10 * H), secs(4 * H), 0.5, secs(6 * H).mul_f64(0.95)),
            // Short token with a long refresh_before: never earlier than half its life.
            (secs(60), secs(600), 0.0, secs(30)),
            (secs(60), secs(600), 0.99, secs(30)),
        ];
        for (lifetime, before, jitter, expected) in table {
            assert_eq!(
                refresh_delay(lifetime, before, jitter),
                expected,
                "{lifetime:?} {before:?} {jitter}"
            );
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_the_clamp() {
        let lifetime = Duration::from_secs(10 * H);
        let before = Duration::from_secs(3 * H);
        for i in 0..100 {
            let d = refresh_delay(lifetime, before, f64::from(i) / 100.0);
            assert!(
                d <= Duration::from_secs(7 * H) && d >= Duration::from_secs(7 * H).mul_f64(0.9),
                "{d:?}"
            );
            assert!(d >= lifetime.mul_f64(0.5) && d <= lifetime.mul_f64(0.8));
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let plain: Vec<u64> = (1..=9).map(|a| backoff(a, 1.0).as_secs()).collect();
        assert_eq!(plain, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(1, 0.0), Duration::from_millis(800));
        assert_eq!(backoff(u32::MAX, 0.5), Duration::from_secs(54));
    }
}
