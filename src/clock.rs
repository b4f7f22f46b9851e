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

// === date-time text ===

/// An RFC 3339 / ISO 8601 date-time with a zone: `2024-01-10T20:00:00.123+08:00`, `…Z`,
/// `… 20:00:00+0800`; any number of fraction digits. A time without a zone is refused (its
/// zone is a guess, and a guess of UTC for a `+08:00` issuer would outlive the token by 8 h).
pub(crate) fn parse_datetime(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (date, rest) = (text.get(..10)?, text.get(10..)?);
    let days = days_since_epoch(date)?;
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (clock, rest) = (rest.get(..8)?, rest.get(8..)?);
    let seconds_of_day = seconds_of_day(clock)?;
    let fraction_len = match rest.strip_prefix('.') {
        Some(f) => f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len()),
        None => 0,
    };
    let nanos = match rest.get(1..=fraction_len).filter(|_| fraction_len > 0) {
        Some(digits) => format!("{:0<9}", &digits[..digits.len().min(9)]).parse().ok()?,
        None => 0,
    };
    let zone = &rest[if fraction_len > 0 { fraction_len + 1 } else { 0 }..];
    let offset = zone_offset(zone)?;
    let secs = days * 86_400 + seconds_of_day - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// `YYYY-MM-DD` → days since 1970-01-01 (proleptic Gregorian; Hinnant's days_from_civil).
fn days_since_epoch(date: &str) -> Option<i64> {
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (number(&date[..4])?, number(&date[5..7])?, number(&date[8..])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > month_len[(m - 1) as usize] {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `HH:MM:SS` → seconds (a leap second `:60` counts as the next second).
fn seconds_of_day(clock: &str) -> Option<i64> {
    let b = clock.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, s) = (number(&clock[..2])?, number(&clock[3..5])?, number(&clock[6..])?);
    (h < 24 && m < 60 && s <= 60).then_some(h * 3600 + m * 60 + s)
}

/// `Z`, `+08:00`, `-0530` → seconds east of UTC.
fn zone_offset(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = zone[1..].replacen(':', "", 1);
    if digits.len() != 4 {
        return None;
    }
    let (h, m) = (number(digits.get(..2)?)?, number(digits.get(2..)?)?);
    (h < 24 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// ASCII digits only (`str::parse` would accept a sign).
fn number(digits: &str) -> Option<i64> {
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())
        .flatten()
}
