//! Reading a token endpoint's 2xx body into a [`Granted`] credential and its expiry.
//!
//! Shared by every form-based provider (`oauth2`, `adobe_ims`, `vantage`) and, for the date
//! parser, by `shopline`. Expiry precedence is the SPEC's: what the response says (`expires_in`
//! in its unit, or an absolute `expires_at`), else the JWT `exp` claim, else the provider's
//! configured default; never a constant of ours. Nothing here formats a token or a body into an
//! error: only field paths.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::time::Instant;

use crate::auth::{ProviderError, Token, jwt};
use crate::clock;
use crate::config::{ExpiresInUnit, ResponseMapping, Secret};

/// When a granted token stops working, as the response (or its JWT) put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Relative to receipt (`expires_in`).
    In(Duration),
    /// Absolute wall-clock time (`expires_at`, JWT `exp`, SHOPLINE `expireTime`).
    At(SystemTime),
}

/// What a successful token response granted. `Debug` is safe: both tokens are [`Secret`]s.
#[derive(Debug)]
pub(crate) struct Granted {
    pub(crate) access: Secret<String>,
    pub(crate) expiry: Option<Expiry>,
    pub(crate) refresh_token: Option<Secret<String>>,
}

impl Granted {
    /// The [`Token`], taking its expiry from the response, else the JWT `exp`, else `default_ttl`.
    /// No expiry at all, or one already past, is a `BadResponse`: a token we cannot schedule
    /// renewal for would be used until it fails.
    pub(crate) fn into_token(self, secret_index: usize, default_ttl: Option<Duration>) -> Result<Token, ProviderError> {
        let expiry = self
            .expiry
            .or_else(|| jwt_expiry(self.access.expose()))
            .or(default_ttl.map(Expiry::In))
            .ok_or_else(|| {
                ProviderError::BadResponse("no expiry in the response and the token is not a JWT with `exp`".into())
            })?;
        let now = Instant::now();
        let expires_at = match expiry {
            Expiry::In(lifetime) => now + lifetime,
            Expiry::At(at) => clock::deadline_for(at),
        };
        if expires_at <= now {
            return Err(ProviderError::BadResponse(
                "the granted token is already expired".into(),
            ));
        }
        Ok(Token {
            access: self.access,
            obtained_at: now,
            expires_at: Some(expires_at),
            refresh_token: self.refresh_token,
            secret_index,
        })
    }
}

/// The JWT `exp` of `token` as an [`Expiry`].
pub(crate) fn jwt_expiry(token: &str) -> Option<Expiry> {
    jwt::exp(token).map(|secs| Expiry::At(UNIX_EPOCH + Duration::from_secs(secs)))
}

/// RFC 6749 5.1 field names: `access_token`, `expires_in` in seconds.
pub(crate) fn standard_mapping() -> ResponseMapping {
    ResponseMapping {
        token: vec!["access_token".into()],
        expires_in: vec!["expires_in".into()],
        expires_in_unit: ExpiresInUnit::Seconds,
        expires_at: None,
    }
}

/// Reads a 2xx body. A body without a token where `mapping` says it is, is a `BadResponse`
/// (some gateways answer 200 with an error page). The refresh token is always `refresh_token`.
pub(crate) fn parse_token_response(body: &[u8], mapping: &ResponseMapping) -> Result<Granted, ProviderError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|_| ProviderError::BadResponse("token response is not JSON".into()))?;
    let access = lookup(&json, &mapping.token)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::BadResponse(format!("no token at `{}`", mapping.token.join("."))))?;
    let expiry = match &mapping.expires_at {
        Some(path) => lookup(&json, path).and_then(absolute_time).map(Expiry::At),
        None => lookup(&json, &mapping.expires_in).and_then(unsigned).map(|n| {
            Expiry::In(match mapping.expires_in_unit {
                ExpiresInUnit::Seconds => Duration::from_secs(n),
                ExpiresInUnit::Millis => Duration::from_millis(n),
            })
        }),
    };
    let refresh_token = json
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    Ok(Granted {
        access: Secret::new(access.to_owned()),
        expiry,
        refresh_token: refresh_token.map(|t| Secret::new(t.to_owned())),
    })
}

/// The value at a dotted path (already split), `None` when any step is missing.
pub(crate) fn lookup<'v>(json: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(json, |value, key| value.get(key))
}

/// A non-negative integer given as a JSON number or a numeric string (`"86400000"`: Adobe's JWT
/// claims and some gateways quote numbers).
pub(crate) fn unsigned(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Unix seconds (number or numeric string) or an RFC 3339 date-time.
fn absolute_time(value: &Value) -> Option<SystemTime> {
    match unsigned(value) {
        Some(secs) => Some(UNIX_EPOCH + Duration::from_secs(secs)),
        None => parse_datetime(value.as_str()?),
    }
}

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
