//! The textual units of the configuration: durations (`"90s"`), sizes (`"2MiB"`) and RFC 3339
//! timestamps.
//!
//! Operators copy values between nginx, Envoy and Kubernetes manifests, so the accepted forms are
//! deliberately narrow and every rejection says what would have been accepted: a bare `"90"` is
//! refused rather than guessed to be seconds, and `MB` (10^6) and `MiB` (2^20) are both spelled out
//! because they differ by 5 %.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use regex::Regex;

/// Why a unit string was refused; the message is shown to the operator as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnitError {
    #[error("`{0}` has no unit; write a duration such as \"90s\", \"5m\", \"10h\", \"250ms\" or \"1d\"")]
    DurationWithoutUnit(String),
    #[error("`{0}` is negative; durations and sizes cannot be")]
    Negative(String),
    #[error("`{0}` is not a whole number followed by a unit (use \"90m\" rather than \"1.5h\")")]
    NotInteger(String),
    #[error("`{value}` has an unknown unit `{unit}`; expected one of {expected}")]
    UnknownUnit {
        value: String,
        unit: String,
        expected: &'static str,
    },
    #[error("`{0}` is too large")]
    Overflow(String),
    #[error("`{0}` is not an RFC 3339 date-time such as 2026-01-01T00:00:00Z")]
    BadTimestamp(String),
}

const DURATION_UNITS: &str = "ms, s, m, h, d";
const SIZE_UNITS: &str = "B, KB, KiB, MB, MiB, GB, GiB (or a bare number of bytes)";

/// `"250ms"`, `"90s"`, `"5m"`, `"10h"`, `"1d"`.
///
/// Hand-written on purpose, not `humantime::parse_duration`: that one also takes `5M` (months),
/// `1y`, `5 minutes`, `1h 30m` and `1.5h`, which this narrow form refuses, so it would need a
/// pre-check as long as this parser and could not say which rule a value broke.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (number, unit) = split_number(text)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(UnitError::DurationWithoutUnit(text.to_owned())),
        _ => return Err(unknown_unit(text, unit, DURATION_UNITS)),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| UnitError::Overflow(text.to_owned()))?;
    Ok(Duration::from_millis(millis))
}

/// `"2MB"` = 2 000 000, `"2MiB"` = 2 097 152, `"512"` = 512 bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, UnitError> {
    let (number, unit) = split_number(text)?;
    let bytes_per_unit: u64 = match unit {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return Err(unknown_unit(text, unit, SIZE_UNITS)),
    };
    number
        .checked_mul(bytes_per_unit)
        .ok_or_else(|| UnitError::Overflow(text.to_owned()))
}

/// Splits `"  90 s "` into `(90, "s")`, refusing signs and fractions with a message that says so.
fn split_number(text: &str) -> Result<(u64, &str), UnitError> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(UnitError::Negative(text.to_owned()));
    }
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, rest) = trimmed.split_at(digits_end);
    if digits.is_empty() || rest.starts_with('.') || rest.starts_with(',') {
        return Err(UnitError::NotInteger(text.to_owned()));
    }
    let number = digits
        .parse::<u64>()
        .map_err(|_| UnitError::Overflow(text.to_owned()))?;
    Ok((number, rest.trim_start()))
}

fn unknown_unit(text: &str, unit: &str, expected: &'static str) -> UnitError {
    UnitError::UnknownUnit {
        value: text.to_owned(),
        unit: unit.to_owned(),
        expected,
    }
}

/// RFC 3339's `date-time` (section 5.6), with the space it allows in place of `T`. ASCII digits
/// only: the regex crate's `\d` would also take other scripts' digits.
static RFC3339_SHAPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$")
        .expect("the RFC 3339 pattern is a valid regex")
});

/// `2026-01-01T00:00:00Z`, `2026-01-01 00:00:00.5+08:00`: an RFC 3339 date-time with an offset.
/// Stricter than what IdPs are allowed to send (`clock::parse_datetime` also takes ISO 8601's
/// `+0800`, which SHOPLINE uses, and the rest of jiff's Temporal grammar): an operator writes RFC
/// 3339 proper, so the shape is checked here and the calendar (month lengths, leap years) by jiff.
pub(crate) fn parse_rfc3339(text: &str) -> Result<SystemTime, UnitError> {
    let bad = || UnitError::BadTimestamp(text.to_owned());
    let text = text.trim();
    if !RFC3339_SHAPE.is_match(text) {
        return Err(bad());
    }
    crate::clock::parse_datetime(text).ok_or_else(bad)
}

/// A duration as [`parse_duration`] reads it back: the largest unit that divides it, so `30s`
/// and `5m` print as operators write them. Below a millisecond is not configurable, so it is not
/// printed.
pub(crate) fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    let units = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    if millis == 0 {
        return "0s".to_owned();
    }
    match units.iter().find(|(per, _)| millis % per == 0) {
        Some((per, unit)) => format!("{}{unit}", millis / per),
        None => format!("{millis}ms"),
    }
}

/// A size as [`parse_size`] reads it back: in the largest unit that divides it (binary before
/// decimal at each step), else in bytes.
pub(crate) fn format_size(bytes: u64) -> String {
    let units = [
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1_000, "KB"),
    ];
    match units.iter().find(|(per, _)| bytes != 0 && bytes % per == 0) {
        Some((per, unit)) => format!("{}{unit}", bytes / per),
        None => bytes.to_string(),
    }
}

/// An instant as RFC 3339 in UTC (`2026-01-01T00:00:00Z`), which [`parse_rfc3339`] reads back.
pub(crate) fn format_rfc3339(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at).map_or_else(|_| "out of range".to_owned(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_units_read_back_the_same() {
        for millis in [
            0, 1, 250, 1_000, 1_500, 30_000, 90_000, 300_000, 3_600_000, 86_400_000, 90_061_001,
        ] {
            let duration = Duration::from_millis(millis);
            let text = format_duration(duration);
            assert_eq!(parse_duration(&text), Ok(duration), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1500ms");
        for bytes in [0, 1, 1_000, 1_024, 65_536, 10 << 20, 3 << 30, (1 << 30) + 1] {
            let text = format_size(bytes);
            assert_eq!(parse_size(&text), Ok(bytes), "{text}");
        }
        assert_eq!(format_size(64 * 1024), "64KiB");
        assert_eq!(format_size(2_000_000), "2MB");
        let at = parse_rfc3339("2026-01-01T00:00:00.5+08:00").expect("valid");
        assert_eq!(format_rfc3339(at), "2025-12-31T16:00:00.5Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(at)), Ok(at));
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("90s", Some(90_000)),
            ("5m", Some(300_000)),
            ("10h", Some(36_000_000)),
            ("250ms", Some(250)),
            ("1d", Some(86_400_000)),
            ("0s", Some(0)),
            (" 30 s ", Some(30_000)),
            ("90", None),
            ("-5s", None),
            ("1.5h", None),
            ("s", None),
            ("", None),
            ("5 minutes", None),
            ("5M", None),
            ("99999999999999999999s", None),
            ("9999999999999999d", None),
        ];
        for (text, want) in cases {
            let got = parse_duration(text)
                .ok()
                .map(|d| u64::try_from(d.as_millis()).expect("small"));
            assert_eq!(got, *want, "parse_duration({text:?})");
        }
    }

    #[test]
    fn duration_errors_say_what_is_wrong() {
        assert!(matches!(parse_duration("90"), Err(UnitError::DurationWithoutUnit(_))));
        assert!(matches!(parse_duration("-5s"), Err(UnitError::Negative(_))));
        assert!(matches!(parse_duration("1.5h"), Err(UnitError::NotInteger(_))));
        let message = parse_duration("5y").expect_err("no years").to_string();
        assert!(
            message.contains("unknown unit `y`") && message.contains("ms, s, m, h, d"),
            "{message}"
        );
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("2MB", Some(2_000_000)),
            ("2MiB", Some(2_097_152)),
            ("1KB", Some(1_000)),
            ("1KiB", Some(1_024)),
            ("3GB", Some(3_000_000_000)),
            ("1GiB", Some(1_073_741_824)),
            ("512B", Some(512)),
            ("512", Some(512)),
            ("10 MiB", Some(10_485_760)),
            ("2mb", None),
            ("-1MB", None),
            ("1.5MB", None),
            ("MB", None),
            ("2TB", None),
            ("99999999999999GiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), *want, "parse_size({text:?})");
        }
    }

    #[test]
    fn rfc3339_timestamps() {
        let cases: &[(&str, Option<(u64, u32)>)] = &[
            ("1970-01-01T00:00:00Z", Some((0, 0))),
            ("2026-01-01T00:00:00Z", Some((1_767_225_600, 0))),
            ("2026-01-01T08:00:00+08:00", Some((1_767_225_600, 0))),
            ("2025-12-31T23:00:00-01:00", Some((1_767_225_600, 0))),
            ("2024-02-29 12:30:45.25z", Some((1_709_209_845, 250_000_000))),
            ("2026-01-01", None),
            ("2026-01-01T00:00:00", None),
            ("2026-13-01T00:00:00Z", None),
            ("2026-01-01T00:00:00+0800", None),
            ("2026-01-01T00:00:00.123456789123Z", Some((1_767_225_600, 123_456_789))),
            ("2026-01-01T00:00Z", None),
            ("2026-01-01T00:00:00+08", None),
            ("20260101T000000Z", None),
            ("2026-01-01T00:00:00Z[Europe/Paris]", None),
            ("2026-01-01T00:00:00,5Z", None),
            ("2026-01-01T00:00:00+08:00:00", None),
            ("2026-02-29T00:00:00Z", None),
            ("1969-12-31T23:59:59Z", None),
            ("yesterday", None),
        ];
        for (text, want) in cases {
            let got = parse_rfc3339(text).ok().map(|t| {
                let since = t.duration_since(SystemTime::UNIX_EPOCH).expect("after epoch");
                (since.as_secs(), since.subsec_nanos())
            });
            assert_eq!(got, *want, "parse_rfc3339({text:?})");
        }
    }
}
