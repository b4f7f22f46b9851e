//! The access log and the per-request metrics. The metrics are recorded by [`record`] when the
//! pipeline has its answer; the one access event per request is written by [`AccessBody`] when
//! the response body has been sent, or the exchange was cut off (`aborted` says by whom). Never a
//! query string, a header value or a body.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::request_id::{self, RequestId};
use crate::config::CallerClass;
use crate::error::ProxyBody;
use crate::telemetry::traces::{self, RequestTrace};
use crate::tenant::{Snapshot, Tenant};
use crate::upstream::BodyFate;

/// What the pipeline learns about one request, for the access log.
pub(crate) struct RequestCtx {
    pub(crate) started: Instant,
    pub(crate) tenant: Option<Arc<Tenant>>,
    /// How long the request waited for a rate-limit slot; `None` when it never got one (no
    /// limiter, refused earlier, or rejected with 429), so the wait histogram only holds real waits.
    pub(crate) rate_limit_wait: Option<Duration>,
    /// The caller, as its index in the snapshot's callers (none without callers).
    pub(crate) caller: Option<usize>,
    /// The caller's class (`standard` until the caller is known).
    pub(crate) class: CallerClass,
    pub(crate) generation: Option<u64>,
    pub(crate) upstream_status: Option<StatusCode>,
    pub(crate) upstream_elapsed: Option<Duration>,
    pub(crate) replayed: bool,
    pub(crate) request_bytes: RequestBytes,
    /// The request's span tree, when traces are exported (README, "Observability").
    pub(crate) trace: Option<Box<RequestTrace>>,
    /// Whose fault the proxy's own refusal was, when it refused.
    pub(crate) fault: Option<crate::error::Fault>,
}

/// Target of the one-per-request access event.
pub(super) const ACCESS_LOG: &str = "tokenbroker::access";

/// Whether the access event is written at all (`RUST_LOG` may turn it off): when it is not,
/// nothing is captured for it.
pub(super) fn enabled() -> bool {
    tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO)
}

/// What only the access log needs, captured before the request is consumed upstream. Boxed in
/// the request future (which every request moves), and only while the access log is written.
pub(super) struct Logged {
    pub(super) method: Method,
    pub(super) uri: Uri,
    /// The caller's W3C `traceparent`, whose trace id the event carries.
    pub(super) traceparent: Option<HeaderValue>,
    pub(super) peer: SocketAddr,
}

/// How many bytes of the caller's body the proxy read.
#[derive(Debug, Default)]
pub(crate) enum RequestBytes {
    /// Read whole (kept for a replay), or not read at all (refused first): `0`.
    #[default]
    None,
    Read(u64),
    /// Streamed upstream, counted as it goes.
    Counted(Arc<BodyFate>),
}

impl RequestBytes {
    fn get(&self) -> u64 {
        match self {
            Self::None => 0,
            Self::Read(n) => *n,
            Self::Counted(fate) => fate.received(),
        }
    }
}

/// Whether the upstream made this answer: its body streams from the upstream (`Left`); the
/// proxy's own answers carry a body it wrote (`Right`). No header lookup needed.
fn is_upstreams(response: &Response<ProxyBody>) -> bool {
    matches!(response.body(), http_body_util::Either::Left(_))
}

/// The per-request metrics, when the answer's head is ready. A request that matched no tenant is
/// counted too, with an empty `tenant`.
pub(super) fn record(snapshot: &Snapshot, ctx: &RequestCtx, response: &Response<ProxyBody>) {
    let Some(tenant) = &ctx.tenant else {
        snapshot.unmatched_statuses().add(response.status().as_u16());
        return;
    };
    let metrics = &tenant.metrics;
    metrics.record_status(response.status().as_u16(), is_upstreams(response));
    metrics.request_duration.observe(ctx.started.elapsed());
    if let Some(elapsed) = ctx.upstream_elapsed {
        metrics.upstream_duration.observe(elapsed);
    }
    if let Some(wait) = ctx.rate_limit_wait {
        metrics.ratelimit_wait.by(ctx.class).observe(wait);
    }
}

/// `response` with the request id echoed as `x-request-id` and its body wrapped to write the
/// access event at its end, when the event is on (`logged` was captured); otherwise the body
/// passes as it is, with nothing to carry. The upstream's own id for the request, which the echo
/// replaces, is taken for the event first.
pub(super) fn finish(
    snapshot: &Arc<Snapshot>,
    mut ctx: RequestCtx,
    request_id: RequestId,
    logged: Option<Box<Logged>>,
    mut response: Response<ProxyBody>,
) -> Response<AccessBody> {
    let echo = request_id.to_header();
    // Only the proxy's own answers carry the header (the upstream's copy was stripped), so a
    // proxied answer costs no lookup.
    let error = (!is_upstreams(&response))
        .then(|| response.headers().get(&crate::error::ERROR_HEADER).cloned())
        .flatten();
    let trace = ctx.trace.take();
    if let Some(trace) = &trace {
        let tenant = ctx.tenant.as_ref().map(|t| t.config.name.as_str());
        let code = error.as_ref().and_then(|v| v.to_str().ok());
        trace.answered(tenant, response.status().as_u16(), code);
    }
    let entry = logged.map(|logged| {
        let headers = response.headers();
        Box::new(Entry {
            trace_id: trace.as_ref().map(|t| t.trace_id()),
            snapshot: Arc::clone(snapshot),
            status: response.status().as_u16(),
            error,
            upstream_request_id: upstream_request_id(headers).cloned(),
            response_bytes: 0,
            request_id,
            logged,
            ctx,
        })
    });
    response.headers_mut().insert(request_id::HEADER, echo);
    response.map(|body| AccessBody { body, entry, trace })
}

/// Everything the access event prints, carried by the response body to its end. Boxed: it is
/// there only when the event is written, and the body moves through hyper's states.
pub(super) struct Entry {
    snapshot: Arc<Snapshot>,
    /// The exported trace's id; without export, the caller's `traceparent` gives it.
    trace_id: Option<opentelemetry::trace::TraceId>,
    ctx: RequestCtx,
    request_id: RequestId,
    logged: Box<Logged>,
    status: u16,
    error: Option<HeaderValue>,
    upstream_request_id: Option<HeaderValue>,
    response_bytes: u64,
}

/// Who left an exchange before its response body was all sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aborted {
    /// The caller went away (hyper dropped the body unfinished).
    Caller,
    /// The upstream's body broke off.
    Upstream,
}

impl Aborted {
    fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Upstream => "upstream",
        }
    }
}

impl Entry {
    fn write(&self, aborted: Option<Aborted>) {
        let Self { ctx, logged, .. } = self;
        let caller = (ctx.caller)
            .and_then(|i| self.snapshot.callers.get(i))
            .map(|c| c.name.as_str());
        let exported = self.trace_id.map(|id| id.to_string());
        tracing::info!(
            target: ACCESS_LOG,
            request_id = %self.request_id,
            tenant = ctx.tenant.as_ref().map(|t| t.config.name.as_str()),
            caller,
            class = caller.map(|_| ctx.class.as_str()),
            peer = %logged.peer,
            trace_id = exported.as_deref().or_else(|| logged.traceparent.as_ref().and_then(traces::caller_trace_id)),
            upstream_request_id = self.upstream_request_id.as_ref().and_then(|v| v.to_str().ok()),
            method = %logged.method,
            path = logged.uri.path(),
            status = self.status,
            upstream_status = ctx.upstream_status.map(|s| s.as_u16()),
            request_bytes = ctx.request_bytes.get(),
            response_bytes = self.response_bytes,
            duration_ms = millis(ctx.started.elapsed()),
            rate_limit_wait_ms = ctx.rate_limit_wait.map(millis),
            token_generation = ctx.generation,
            replayed = ctx.replayed,
            error = self.error.as_ref().and_then(|v| v.to_str().ok()),
            fault = ctx.fault.map(crate::error::Fault::as_str),
            aborted = aborted.map(Aborted::as_str),
        );
    }
}

pin_project_lite::pin_project! {
    /// A response body that writes its request's access event, and ends its server span, when it
    /// ends, breaks off, or is dropped unfinished.
    pub(crate) struct AccessBody {
        #[pin]
        body: ProxyBody,
        entry: Option<Box<Entry>>,
        trace: Option<Box<RequestTrace>>,
    }

    impl PinnedDrop for AccessBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // hyper stops reading a body whose length it has sent, without asking for its end; a
            // body that is not at its end when dropped lost its caller.
            let aborted = (!this.body.is_end_stream()).then_some(Aborted::Caller);
            done(this.entry, this.trace, aborted);
        }
    }
}

/// Writes the event and ends the span, once.
fn done(entry: &mut Option<Box<Entry>>, trace: &mut Option<Box<RequestTrace>>, aborted: Option<Aborted>) {
    if let Some(entry) = entry.take() {
        entry.write(aborted);
    }
    if let Some(trace) = trace.take() {
        trace.end(aborted.map(Aborted::as_str));
    }
}

impl Body for AccessBody {
    type Data = <ProxyBody as Body>::Data;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(entry) = this.entry {
                    entry.response_bytes += frame.data_ref().map_or(0, |data| data.len()) as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => done(this.entry, this.trace, Some(Aborted::Upstream)),
            Poll::Ready(None) => done(this.entry, this.trace, None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
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
pub(super) use traces::TRACEPARENT;

/// The upstream's id for this request, when it sends a short, plain one (a log line cannot be
/// forged or bloated through it).
fn upstream_request_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    let value = UPSTREAM_REQUEST_IDS.iter().find_map(|name| headers.get(name))?;
    let text = value.as_bytes();
    let plain =
        !text.is_empty() && text.len() <= 128 && text.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
    plain.then_some(value)
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
        let trace_id = |text: &str| traces::caller_trace_id(&parent(text)).map(str::to_owned);
        assert_eq!(trace_id(good).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-xyz-1-01",
            "garbage",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("traceid", parent("0a1b2c3d4e5f"));
        let id = |headers: &HeaderMap| upstream_request_id(headers).map(|v| v.to_str().expect("plain").to_owned());
        assert_eq!(id(&headers).as_deref(), Some("0a1b2c3d4e5f"));
        headers.insert("x-request-id", parent("req-1"));
        assert_eq!(id(&headers).as_deref(), Some("req-1"), "x-request-id first");
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
