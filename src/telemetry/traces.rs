//! Traces: an OpenTelemetry span tree for each request and a trace of its own for each token call,
//! exported as OTLP over HTTP/protobuf when the standard `OTEL_*` variables name an endpoint
//! (README, "Observability"). With none, [`init`] sets nothing up, [`tracer`] is `None`, and the
//! request path pays one branch per phase; an incoming `traceparent` then passes upstream as it came.
//!
//! The OpenTelemetry API is used directly rather than through `tracing` spans: the request's child
//! spans are mostly built after the fact, from durations the pipeline measures anyway (so no span
//! lives across an await in the request future), and a span exists only when it is exported.
//!
//! ```text
//!  GET acme (server; parent: the caller's traceparent)
//!  ├── rate_limit.wait   (class, outcome)
//!  ├── token.wait        (link ─▶ the token.fetch trace that produced the token)
//!  ├── upstream GET      (client; its id is the traceparent the upstream receives)
//!  ├── token.wait        (after a 401: the renewal)
//!  └── upstream.replay   (client)
//!  token.fetch (a root of its own: tenant, outcome)
//! ```

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

/// The tracer, set once by [`init`] when traces are exported.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer, when traces are exported.
pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Why the `OTEL_*` variables ask for something this build cannot do. The proxy refuses to start
/// rather than run without the traces an operator configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceSetupError {
    #[error("{variable}={value} is not supported: this build exports OTLP over http/protobuf only")]
    Protocol { variable: &'static str, value: String },
    #[error("OTEL_TRACES_EXPORTER={0} is not supported: use otlp or none")]
    Exporter(String),
    #[error("the OTLP trace exporter cannot be built: {0}")]
    Build(String),
}

/// Whether the environment asks for exported traces: an OTLP endpoint is named, the SDK is not
/// disabled and the exporter is not `none`. Any protocol but `http/protobuf` is refused.
fn wanted(var: impl Fn(&str) -> Option<String>) -> Result<bool, TraceSetupError> {
    let set = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match set("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(false),
        Some(other) => return Err(TraceSetupError::Exporter(other.to_owned())),
    }
    for variable in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(value) = set(variable) {
            if value != "http/protobuf" {
                return Err(TraceSetupError::Protocol { variable, value });
            }
            break;
        }
    }
    Ok(set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
}

/// The longest the exit waits for the last batch of spans.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// The exporting pipeline; [`Traces::shutdown`] sends what is still batched.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Flushes the batch and stops the exporter, giving up after [`SHUTDOWN_LIMIT`]: a collector
    /// that is down (the exporter retries) must not hold the process past its drain.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(SHUTDOWN_LIMIT, stopped).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the trace exporter did not shut down cleanly"),
            Ok(Err(_)) | Err(_) => tracing::warn!("the last traces were not exported before shutdown"),
        }
    }
}

/// Sets up export from the `OTEL_*` environment: `Ok(None)` when none is asked for. Call once,
/// from inside the tokio runtime (exports run on it).
pub fn init() -> Result<Option<Traces>, TraceSetupError> {
    if !wanted(|name| std::env::var(name).ok())? {
        return Ok(None);
    }
    let client = RuntimeClient::new();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(client)
        .build()
        .map_err(|error| TraceSetupError::Build(error.to_string()))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty());
    let resource = Resource::builder()
        .with_service_name(service.unwrap_or_else(|| "tokenbroker".to_owned()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    // The sampler comes from OTEL_TRACES_SAMPLER / _ARG (the SDK's default configuration reads
    // them); parent-based always-on otherwise.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let _ = TRACER.set(provider.tracer("tokenbroker"));
    Ok(Some(Traces { provider }))
}

/// Longest answer body read from the collector (it is only checked for its status).
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

/// One export's bound when `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` (milliseconds) does not say, and
/// the most it may say: a collector that hangs holds one batch, never the thread for long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_EXPORT_TIMEOUT: Duration = Duration::from_secs(60);

fn export_timeout(var: impl Fn(&str) -> Option<String>) -> Duration {
    ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .into_iter()
        .find_map(|name| var(name)?.trim().parse::<u64>().ok())
        .map_or(EXPORT_TIMEOUT, |ms| Duration::from_millis(ms).min(MAX_EXPORT_TIMEOUT))
}

/// The exporter's HTTP client: the batch processor exports from a thread of its own, outside the
/// runtime, so each export is spawned onto the runtime (hyper needs it) and awaited from there.
/// `https://` collectors are verified against the system's roots.
#[derive(Debug, Clone)]
struct RuntimeClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl RuntimeClient {
    fn new() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime: tokio::runtime::Handle::current(),
            timeout: export_timeout(|name| std::env::var(name).ok()),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_COLLECTOR_ANSWER).collect().await?.to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        };
        let timeout = self.timeout;
        // The timer too is made on the runtime: this thread has none.
        self.runtime
            .spawn(async move { tokio::time::timeout(timeout, exchange).await })
            .await??
    }
}

/// A request's server span (in its context) while the request is served; the phases add their
/// child spans to it. Boxed in the request, and present only when traces are exported.
#[derive(Debug)]
pub(crate) struct RequestTrace {
    cx: Context,
    /// When the phase being timed began (see [`Self::begin`]): kept here, in the box, rather
    /// than in the request future, which every request moves.
    phase_began: Instant,
}

impl RequestTrace {
    /// The server span of a request, continuing the caller's `traceparent` when it sent one;
    /// `None` when traces are not exported.
    pub(crate) fn start(headers: &HeaderMap, method: &Method, path: &str) -> Option<Box<Self>> {
        let tracer = tracer()?;
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = tracer
            .span_builder(method.to_string())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.path", path.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        Some(Box::new(Self {
            cx: parent.with_span(span),
            phase_began: Instant::now(),
        }))
    }

    /// Marks the start of a phase that a later call records as a span.
    pub(crate) fn begin(&mut self) {
        self.phase_began = Instant::now();
    }

    pub(crate) fn trace_id(&self) -> TraceId {
        self.cx.span().span_context().trace_id()
    }

    /// A child span for the phase that began at [`Self::begin`] and ended now.
    fn phase(&self, name: &'static str, attributes: Vec<KeyValue>, links: Vec<Link>) {
        let Some(tracer) = tracer() else { return };
        let took = self.phase_began.elapsed();
        let end = SystemTime::now();
        let mut span = tracer
            .span_builder(name)
            .with_start_time(end.checked_sub(took).unwrap_or(end))
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(tracer, &self.cx);
        span.end_with_timestamp(end);
    }

    /// The rate-limit wait of `class`, which ended now: granted or refused.
    pub(crate) fn rate_limit_wait(&self, class: &'static str, granted: bool) {
        let outcome = if granted { "granted" } else { "refused" };
        let attributes = vec![
            KeyValue::new("tokenbroker.class", class),
            KeyValue::new("tokenbroker.outcome", outcome),
        ];
        self.phase("rate_limit.wait", attributes, Vec::new());
    }

    /// A wait for a token, which ended now: `fetch` is the token call that produced the token
    /// waited for, when this process made it (linked, since it is a trace of its own).
    pub(crate) fn token_wait(&self, reason: &'static str, fetch: Option<&SpanContext>) {
        let links = fetch
            .map(|fetch| vec![Link::with_context(fetch.clone())])
            .unwrap_or_default();
        let attributes = vec![KeyValue::new("tokenbroker.reason", reason)];
        self.phase("token.wait", attributes, links);
    }

    /// Starts the span of one upstream exchange and puts its `traceparent` on `headers`.
    pub(crate) fn upstream(&self, method: &Method, replay: bool, headers: &mut HeaderMap) -> UpstreamSpan {
        let tracer = tracer().expect("a request trace exists only with a tracer");
        let name = if replay { "upstream.replay" } else { "upstream" };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("http.request.method", method.to_string())])
            .start_with_context(tracer, &self.cx);
        let cx = self.cx.with_remote_span_context(span.span_context().clone());
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
        UpstreamSpan(Box::new(span))
    }

    /// What the answer's head says, set when it is ready.
    pub(crate) fn answered(&self, tenant: Option<&str>, status: u16, error: Option<&str>) {
        let span = self.cx.span();
        if let Some(tenant) = tenant {
            span.set_attribute(KeyValue::new("tokenbroker.tenant", tenant.to_owned()));
        }
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if let Some(error) = error {
            span.set_attribute(KeyValue::new("tokenbroker.error", error.to_owned()));
        }
        if status >= 500 {
            span.set_status(Status::error(error.unwrap_or("server error").to_owned()));
        }
    }

    /// Ends the server span when the response body has been sent, or was cut off by `aborted`.
    pub(crate) fn end(&self, aborted: Option<&'static str>) {
        let span = self.cx.span();
        if let Some(who) = aborted {
            span.set_attribute(KeyValue::new("tokenbroker.aborted", who));
        }
        span.end();
    }
}

/// One upstream exchange in progress. Boxed: it is held across the exchange's await, in the
/// request future, which should not grow by a span's size for every request when none is traced.
#[derive(Debug)]
pub(crate) struct UpstreamSpan(Box<Span>);

impl UpstreamSpan {
    /// Ends it with the upstream's status, or the proxy's error code when none came.
    pub(crate) fn end(mut self, status: Result<u16, &'static str>) {
        match status {
            Ok(status) => {
                self.0
                    .set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
                if status >= 500 {
                    self.0.set_status(Status::error("upstream server error"));
                }
            }
            Err(code) => {
                self.0.set_attribute(KeyValue::new("tokenbroker.error", code));
                self.0.set_status(Status::error(code));
            }
        }
        self.0.end();
    }
}

/// A token call in progress: a trace of its own.
#[derive(Debug)]
pub(crate) struct FetchSpan(Span);

impl FetchSpan {
    /// Starts one for `tenant`; `None` when traces are not exported.
    pub(crate) fn start(tenant: &str) -> Option<Self> {
        let tracer = tracer()?;
        let span = tracer
            .span_builder("token.fetch")
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("tokenbroker.tenant", tenant.to_owned())])
            .start_with_context(tracer, &Context::new());
        Some(Self(span))
    }

    /// Ends it with the call's outcome (an error message never holds a secret); the context
    /// waiting requests link to.
    pub(crate) fn end(mut self, failure: Option<String>) -> SpanContext {
        let outcome = if failure.is_some() { "failure" } else { "success" };
        self.0.set_attribute(KeyValue::new("tokenbroker.outcome", outcome));
        if let Some(message) = failure {
            self.0.set_status(Status::error(message));
        }
        self.0.end();
        self.0.span_context().clone()
    }
}

/// The W3C trace context header.
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The trace id of a caller's W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), when it is well
/// formed and not all zeros (which the W3C spec makes invalid): what the access events print when
/// no trace is exported.
pub(crate) fn caller_trace_id(traceparent: &http::HeaderValue) -> Option<&str> {
    let text = traceparent.to_str().ok()?;
    let mut parts = text.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let plain = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0');
    plain.then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn traces_are_exported_only_where_an_endpoint_is_named() {
        assert_eq!(wanted(env(&[])), Ok(false));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(wanted(env(&[endpoint])), Ok(true));
        let traces_only = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces");
        assert_eq!(wanted(env(&[traces_only])), Ok(true));
        assert_eq!(wanted(env(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])), Ok(false));
        assert_eq!(wanted(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])), Ok(false));
        assert_eq!(
            wanted(env(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])),
            Ok(true)
        );
    }

    #[test]
    fn an_export_is_bounded() {
        assert_eq!(export_timeout(env(&[])), EXPORT_TIMEOUT);
        assert_eq!(
            export_timeout(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])),
            Duration::from_millis(2500)
        );
        let both = [
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ];
        assert_eq!(export_timeout(env(&both)), Duration::from_millis(100));
        let huge = [("OTEL_EXPORTER_OTLP_TIMEOUT", "99999999999")];
        assert_eq!(export_timeout(env(&huge)), MAX_EXPORT_TIMEOUT);
    }

    #[test]
    fn what_this_build_cannot_export_is_refused() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        let grpc = wanted(env(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]));
        assert!(matches!(grpc, Err(TraceSetupError::Protocol { .. })), "{grpc:?}");
        let signal_first = [
            endpoint,
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ];
        assert!(wanted(env(&signal_first)).is_err(), "the traces variable wins");
        let zipkin = wanted(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]));
        assert_eq!(zipkin, Err(TraceSetupError::Exporter("zipkin".into())));
    }
}
