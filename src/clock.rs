//! The one place wall-clock time is read and converted to tokio's monotonic clock.
//!
//! Token lifetimes arrive as wall-clock facts (`expires_in` seconds from now, a JWT `exp` in unix
//! seconds, SHOPLINE's `expireTime` as an ISO date). The rest of the program reasons in
//! `tokio::time::Instant`, which tests can pause and advance, so every conversion happens here,
//! once, on receipt.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Wall-clock now. The only call to `SystemTime::now` in the crate.
pub(crate) fn system_now() -> SystemTime {
    SystemTime::now()
}

/// Milliseconds since the Unix epoch (SHOPLINE signatures, the Redis store).
pub(crate) fn unix_millis() -> u64 {
    system_now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The longest a token is taken to live, whatever its issuer says: a year. A "never expires"
/// answer (`expires_in` of `Long.MAX_VALUE`, an `exp` in the year 300 billion) is used for this
/// long and renewed on that schedule (README, "Limits"). It also bounds every deadline computed
/// from an outside number, so none can overflow the clock.
pub(crate) const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far ahead a configured credential's own expiry (a static `expires_at`, the JWT `exp` of a
/// CYBERBIZ or SHOPLINE private token) is taken as it is. Operators hold multi-year tokens, and
/// readiness reports their real expiry; this bound only keeps the clock from overflowing.
pub(crate) const MAX_CONFIGURED_AHEAD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The latest wall-clock time read from outside: 9999-12-31T23:59:59Z. Every platform's
/// `SystemTime` holds it, so later unix times are clamped to it rather than overflowing.
const LATEST_UNIX_SECS: u64 = 253_402_300_799;

/// `now + ahead`, with `ahead` clamped to [`MAX_TOKEN_LIFETIME`]: the one way a span from outside
/// becomes a token's deadline.
pub(crate) fn deadline_in(ahead: Duration) -> Instant {
    later(Instant::now(), ahead)
}

/// `from + ahead`, with `ahead` clamped to [`MAX_TOKEN_LIFETIME`] (so it never overflows).
pub(crate) fn later(from: Instant, ahead: Duration) -> Instant {
    from.checked_add(ahead.min(MAX_TOKEN_LIFETIME)).unwrap_or(from)
}

/// How far wall-clock `at` is ahead of now; zero if it is past.
pub(crate) fn until(at: SystemTime) -> Duration {
    at.duration_since(system_now()).unwrap_or(Duration::ZERO)
}

/// The monotonic deadline of a configured credential expiring at wall-clock `at` (at most
/// [`MAX_CONFIGURED_AHEAD`] ahead); a time already past maps to now.
pub(crate) fn deadline_for(at: SystemTime) -> Instant {
    let now = Instant::now();
    now.checked_add(until(at).min(MAX_CONFIGURED_AHEAD)).unwrap_or(now)
}

/// The monotonic deadline of a configured credential's unix-seconds expiry (a JWT `exp`).
pub(crate) fn deadline_for_unix_secs(secs: u64) -> Instant {
    deadline_for(from_unix_secs(secs))
}

/// The wall-clock time `secs` after the epoch, clamped to the year 9999 (never overflows).
pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(LATEST_UNIX_SECS))
}

/// The wall-clock time `ms` after the epoch, clamped to the year 9999 (never overflows).
pub(crate) fn from_unix_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.min(LATEST_UNIX_SECS * 1000))
}

/// How far `deadline` is from now, zero if past.
pub(crate) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// How far ahead of the wall clock an HTTP-date is (`Retry-After: Wed, 21 Oct 2026 07:28:00
/// GMT`, or RFC 9110's two obsolete forms); zero for a date already past, `None` for text that is
/// not an HTTP-date. The caller caps the result: the date comes from outside.
pub(crate) fn until_http_date(text: &str) -> Option<Duration> {
    httpdate::parse_http_date(text.trim()).ok().map(until)
}

// === date-time text ===

/// An RFC 3339 / ISO 8601 date-time with a zone: `2024-01-10T20:00:00.123+08:00`, `…Z`,
/// `… 20:00:00+0800`; any number of fraction digits. A time without a zone is refused (its
/// zone is a guess, and a guess of UTC for a `+08:00` issuer would outlive the token by 8 h), and
/// so is one before 1970 (no token expired then; such a value is a broken response).
///
/// The grammar is jiff's Temporal one (RFC 3339 and RFC 9557 plus ISO 8601's `+0800` offsets,
/// which SHOPLINE may send); that is lenient on purpose, since this reads what IdPs send. A leap
/// second `:60` counts as `:59`. Configuration narrows this to RFC 3339 proper
/// (`config::units::parse_rfc3339`).
pub(crate) fn parse_datetime(text: &str) -> Option<SystemTime> {
    let at: jiff::Timestamp = at_most_nanoseconds(text.trim()).parse().ok()?;
    if at < jiff::Timestamp::UNIX_EPOCH {
        return None;
    }
    SystemTime::try_from(at).ok()
}

/// Drops fraction digits past the ninth: RFC 3339 allows any number, jiff reads at most nine
/// (nanoseconds) and refuses the rest, and digits below a nanosecond cannot matter for an expiry.
fn at_most_nanoseconds(text: &str) -> std::borrow::Cow<'_, str> {
    // Dates and offsets hold no `.`, so the first one starts the fraction of the seconds.
    let Some(dot) = text.find('.') else {
        return text.into();
    };
    let fraction = &text[dot + 1..];
    let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
    if digits <= 9 {
        return text.into();
    }
    format!("{}{}", &text[..dot + 10], &fraction[digits..]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn idp_datetimes_take_compact_offsets_and_long_fractions() {
        // 2024-01-10T12:00:00Z = 1704888000.
        assert_eq!(parse_datetime("2024-01-10T20:00:00+0800"), at(1_704_888_000, 0));
        assert_eq!(
            parse_datetime(" 2024-01-10t20:00:00.5+08:00 "),
            at(1_704_888_000, 500_000_000)
        );
        assert_eq!(
            parse_datetime("2024-01-10T12:00:00.1234567891Z"),
            at(1_704_888_000, 123_456_789)
        );
        assert_eq!(
            parse_datetime("2024-01-10T12:00:00.000000000999+00:00"),
            at(1_704_888_000, 0)
        );
        assert_eq!(parse_datetime("2024-01-10T23:59:60Z"), at(1_704_931_199, 0));
    }

    #[test]
    fn http_dates_in_each_rfc_9110_form_are_read_against_the_wall_clock() {
        let ahead = system_now() + Duration::from_secs(90);
        let text = httpdate::fmt_http_date(ahead);
        let left = until_http_date(&format!(" {text} ")).expect("an IMF-fixdate");
        assert!(
            left <= Duration::from_secs(90) && left >= Duration::from_secs(88),
            "{left:?}"
        );
        for past in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(until_http_date(past), Some(Duration::ZERO), "{past}");
        }
        for garbage in [
            "",
            "30",
            "tomorrow",
            "Wed, 21 Oct 2026 07:28:00",
            "Wed, 32 Oct 2026 07:28:00 GMT",
        ] {
            assert_eq!(until_http_date(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn idp_datetimes_without_a_usable_instant_are_refused() {
        for text in [
            "2024-01-10T20:00:00",
            "1969-12-31T23:59:59.5Z",
            "2024-01-10T20:00:00.1234567891",
            ".",
        ] {
            assert_eq!(parse_datetime(text), None, "{text}");
        }
    }
}
