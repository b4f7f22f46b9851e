//! The access log and the per-request metrics: one event per request, written by [`record`]
//! when the pipeline has its answer. Never a query string, a header value or a body.

use std::time::Duration;

use http::{Method, Response, Uri};

use super::pipeline::RequestCtx;
use super::request_id;
use crate::error::ProxyBody;

/// What only the access log needs, captured before the request is consumed upstream.
pub(super) struct Logged {
    /// Correlates the access log line with the caller's own logs (see [`request_id::of`]).
    pub(super) request_id: request_id::RequestId,
    pub(super) method: Method,
    pub(super) uri: Uri,
}

/// Target of the one-per-request access event.
pub(super) const ACCESS_LOG: &str = "tokenbroker::access";

/// Metrics and the access log: one event per request, never a query string, header value or body.
pub(super) fn record(ctx: &RequestCtx, logged: Option<&Logged>, response: &Response<ProxyBody>) {
    let elapsed = ctx.started.elapsed();
    if let Some(tenant) = &ctx.tenant {
        let metrics = &tenant.metrics;
        metrics.record_status(response.status().as_u16());
        metrics.request_duration.observe(elapsed);
        if let Some(elapsed) = ctx.upstream_elapsed {
            metrics.upstream_duration.observe(elapsed);
        }
        if let Some(wait) = ctx.rate_limit_wait {
            metrics.ratelimit_wait.by(ctx.class).observe(wait);
        }
    }
    let Some(Logged {
        request_id,
        method,
        uri,
    }) = logged
    else {
        return;
    };
    tracing::info!(
        target: ACCESS_LOG,
        request_id = %request_id,
        tenant = ctx.tenant.as_ref().map(|t| t.config.name.as_str()),
        method = %method,
        path = uri.path(),
        status = response.status().as_u16(),
        upstream_status = ctx.upstream_status.map(|s| s.as_u16()),
        duration_ms = millis(elapsed),
        rate_limit_wait_ms = ctx.rate_limit_wait.map(millis),
        token_generation = ctx.generation,
        replayed = ctx.replayed,
        error = response.headers().get(crate::error::ERROR_HEADER).and_then(|v| v.to_str().ok()),
    );
}

/// Milliseconds with three decimals (whole microseconds): `491.534`, where `as_secs_f64() * 1000.0`
/// would print `491.53399999999997`. A float of whole microseconds over 1000 prints no further
/// digits, since the shortest text that reads back as that float is the three-decimal one.
fn millis(elapsed: Duration) -> f64 {
    // u64 microseconds are 584,000 years; the cast to f64 is exact below 2^53 µs (285 years).
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_log_as_milliseconds_with_three_decimals() {
        assert_eq!(millis(Duration::from_nanos(491_533_999)).to_string(), "491.533");
        assert_eq!(millis(Duration::from_micros(491_534)).to_string(), "491.534");
        assert_eq!(millis(Duration::from_micros(100)).to_string(), "0.1");
        assert_eq!(millis(Duration::from_secs(60)).to_string(), "60000");
        for micros in (0..2_000_000).step_by(7) {
            let text = millis(Duration::from_micros(micros)).to_string();
            let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 3, "{micros} µs logs as {text}");
        }
    }
}
