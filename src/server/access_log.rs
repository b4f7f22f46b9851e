//! The access log and the per-request metrics: one event per request, written by [`record`]
//! when the pipeline has its answer. Never a query string, a header value or a body.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri};

use super::pipeline::RequestCtx;
use super::request_id;
use crate::error::ProxyBody;
use crate::tenant::Snapshot;

/// What only the access log needs, captured before the request is consumed upstream.
pub(super) struct Logged {
    /// Correlates the access log line with the caller's own logs (see [`request_id::of`]).
    pub(super) request_id: request_id::RequestId,
    pub(super) method: Method,
    pub(super) uri: Uri,
    /// The caller's W3C `traceparent`, whose trace id the event carries.
    pub(super) traceparent: Option<HeaderValue>,
}

/// Target of the one-per-request access event.
pub(super) const ACCESS_LOG: &str = "tokenbroker::access";

/// Whether the upstream made this answer: its body streams from the upstream (`Left`); the
/// proxy's own answers carry a body it wrote (`Right`). No header lookup needed.
fn is_upstreams(response: &Response<ProxyBody>) -> bool {
    matches!(response.body(), http_body_util::Either::Left(_))
}

/// Metrics and the access log: one event per request, never a query string, header value or body.
/// A request that matched no tenant is counted too, with an empty `tenant`.
pub(super) fn record(snapshot: &Snapshot, ctx: &RequestCtx, logged: Option<&Logged>, response: &Response<ProxyBody>) {
    let elapsed = ctx.started.elapsed();
    if ctx.tenant.is_none() {
        snapshot.unmatched_statuses().add(response.status().as_u16());
    }
    if let Some(tenant) = &ctx.tenant {
        let metrics = &tenant.metrics;
        metrics.record_status(response.status().as_u16(), is_upstreams(response));
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
        traceparent,
    }) = logged
    else {
        return;
    };
    let caller = ctx
        .caller
        .and_then(|i| snapshot.callers.get(i))
        .map(|c| c.name.as_str());
    tracing::info!(
        target: ACCESS_LOG,
        request_id = %request_id,
        tenant = ctx.tenant.as_ref().map(|t| t.config.name.as_str()),
        caller,
        class = caller.map(|_| ctx.class.as_str()),
        trace_id = traceparent.as_ref().and_then(trace_id),
        upstream_request_id = upstream_request_id(response.headers()),
        method = %method,
        path = uri.path(),
        status = response.status().as_u16(),
        upstream_status = ctx.upstream_status.map(|s| s.as_u16()),
        duration_ms = millis(elapsed),
        rate_limit_wait_ms = ctx.rate_limit_wait.map(millis),
        token_generation = ctx.generation,
        replayed = ctx.replayed,
        error = response.headers().get(&crate::error::ERROR_HEADER).and_then(|v| v.to_str().ok()),
    );
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), when it is well formed.
fn trace_id(traceparent: &HeaderValue) -> Option<&str> {
    let text = traceparent.to_str().ok()?;
    let mut parts = text.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let plain = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0');
    plain.then_some(id)
}

/// Upstream headers that carry its own id for a request, which vendor support asks for:
/// `x-request-id` (most APIs), SHOPLINE's `traceid`, AWS-fronted APIs' `x-amzn-requestid`.
/// Names made once, so a lookup only hashes them (a `&str` name is parsed on every lookup).
const UPSTREAM_REQUEST_IDS: [HeaderName; 3] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceid"),
    HeaderName::from_static("x-amzn-requestid"),
];

/// The W3C trace context header of an incoming request.
pub(super) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The upstream's id for this request, when it sends a short, plain one (a log line cannot be
/// forged or bloated through it).
fn upstream_request_id(headers: &HeaderMap) -> Option<&str> {
    let value = UPSTREAM_REQUEST_IDS.iter().find_map(|name| headers.get(name))?;
    let text = value.to_str().ok()?;
    let plain = !text.is_empty()
        && text.len() <= 128
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    plain.then_some(text)
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
    fn trace_and_upstream_ids_are_read_only_when_well_formed() {
        let parent = |text: &str| HeaderValue::from_str(text).expect("header");
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(&parent(good)), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-xyz-1-01",
            "garbage",
        ] {
            assert_eq!(trace_id(&parent(bad)), None, "{bad}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("traceid", parent("0a1b2c3d4e5f"));
        assert_eq!(upstream_request_id(&headers), Some("0a1b2c3d4e5f"));
        headers.insert("x-request-id", parent("req-1"));
        assert_eq!(upstream_request_id(&headers), Some("req-1"), "x-request-id first");
        headers.insert("x-request-id", parent("forged\" line"));
        assert_eq!(upstream_request_id(&headers), None);
    }

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
