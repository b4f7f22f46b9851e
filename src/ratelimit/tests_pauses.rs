//! Pauses from outside are bounded: an upstream's `Retry-After` (seconds or an HTTP-date) is read
//! defensively and capped at `MAX_PAUSE`, and a request never waits past its `max_wait` for one.
//! Paused tokio time where a clock is involved.

use std::num::NonZeroU32;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::{Instant, advance};

use super::{DEFAULT_PAUSE, Limiter, LocalLimiter, MAX_PAUSE, retry_after};
use crate::config::{BatchShare, CallerClass, PerClass, RateLimitConfig};

fn config(max_wait: Duration) -> RateLimitConfig {
    RateLimitConfig {
        per_second: NonZeroU32::MIN,
        burst: NonZeroU32::MIN,
        max_wait: PerClass::all(max_wait),
        batch_share: BatchShare::DEFAULT,
        headroom: Duration::ZERO,
        lead: CallerClass::Standard,
    }
}

fn header(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("a valid header value")
}

fn http_date_in(secs: u64) -> HeaderValue {
    header(&httpdate::fmt_http_date(
        crate::clock::system_now() + Duration::from_secs(secs),
    ))
}

#[test]
fn retry_after_reads_seconds_and_http_dates_and_caps_both() {
    assert_eq!(retry_after(&header("30")), Some(Duration::from_secs(30)));
    assert_eq!(retry_after(&header(" 0 ")), Some(Duration::ZERO));
    assert_eq!(retry_after(&header("18446744073709551615")), Some(MAX_PAUSE));
    let soon = retry_after(&http_date_in(20)).expect("an HTTP-date");
    assert!(
        soon <= Duration::from_secs(20) && soon >= Duration::from_secs(18),
        "{soon:?}"
    );
    assert_eq!(retry_after(&http_date_in(86_400 * 365 * 100)), Some(MAX_PAUSE));
    assert_eq!(
        retry_after(&header("Sun, 06 Nov 1994 08:49:37 GMT")),
        Some(DEFAULT_PAUSE)
    );
    for garbage in ["-1", "1.5", "soon", "99999999999999999999999", ""] {
        assert_eq!(retry_after(&header(garbage)), None, "{garbage}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_absurd_pause_is_capped_and_refused_at_once_beyond_max_wait() {
    let limiter = Limiter::Local(LocalLimiter::new(config(Duration::from_secs(3))));
    limiter.pause_for(Duration::MAX);
    let asked = Instant::now();
    let refused = limiter.acquire(CallerClass::Standard).await.expect_err("paused");
    assert_eq!(
        asked.elapsed(),
        Duration::ZERO,
        "refused only after {:?}",
        asked.elapsed()
    );
    assert!(
        refused.retry_after > Duration::from_secs(3) && refused.retry_after <= MAX_PAUSE,
        "{refused:?}"
    );
    advance(MAX_PAUSE).await;
    let waited = limiter.acquire(CallerClass::Standard).await.expect("the pause is over");
    assert_eq!(waited, Duration::ZERO);
}
