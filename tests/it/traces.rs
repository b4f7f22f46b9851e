//! Traces through the real binary, received by a real OTLP/HTTP receiver: the span tree of one
//! request continues the caller's `traceparent`, the upstream receives the proxy's upstream span
//! as its parent, a token wait links to the token call's own trace, and the access event carries
//! the trace id. Without an endpoint nothing is exported and `traceparent` passes as it came.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::otlp::{OtlpReceiver, ReceivedSpan};
use crate::support::tenants::SERVER;
use crate::support::upstream::{TokenEndpoint, Upstream};
use crate::support::{Binary, send};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traced_tenant(upstream: &Upstream, idp: &TokenEndpoint) -> String {
    format!(
        r#"{SERVER}
[[tenant]]
name = "acme"
provider = "oauth2"
upstream = "{upstream}"
token_url = "{token_url}"
client_id = "cid"
client_secret = {{ env = "ACME_SECRET" }}
min_token_age = "0s"
rate_limit = {{ per_second = 100, burst = 100 }}
"#,
        upstream = upstream.url(),
        token_url = idp.url(),
    )
}

fn exporting_to(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("ACME_SECRET", "traces-client-secret-0123".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        // Export within a tenth of a second instead of the default five.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_SERVICE_NAME", "sidecar-under-test".to_owned()),
    ]
}

/// A receiver, an upstream, a token endpoint and the binary exporting to the receiver (the token
/// endpoint is returned to keep it running).
async fn start_exporting() -> (OtlpReceiver, Upstream, TokenEndpoint, Binary) {
    let receiver = OtlpReceiver::start().await;
    let upstream = Upstream::start().await;
    let idp = TokenEndpoint::start("3600").await;
    let envs = exporting_to(&receiver);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let binary = Binary::start_with_log(&traced_tenant(&upstream, &idp), &envs, "info");
    (receiver, upstream, idp, binary)
}

fn traced_request(path: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(path)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("x-request-id", "req-traced")
        .body(Full::default())
        .expect("valid request")
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

/// One request answered 401 by the upstream: renewed and replayed. Its tree, under the caller's
/// span: the server span, then the rate-limit wait, the first exchange, the wait for the renewed
/// token (linked to the token call's own trace) and the replay.
#[tokio::test]
async fn a_request_is_one_span_tree_under_the_callers_traceparent() {
    let (receiver, upstream, _idp, binary) = start_exporting().await;

    let answer = send(traced_request(&binary.url("/acme/status/401"))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            spans.iter().any(|s| s.name == "GET" && s.kind == 2) && named(spans, "token.fetch").len() >= 2
        })
        .await;

    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert_eq!(server.trace_id, CALLER_TRACE, "the caller's trace continues");
    assert_eq!(server.parent_span_id, CALLER_SPAN, "under the caller's span");
    assert_eq!(server.attribute("tokenbroker.tenant"), Some("acme"));
    assert_eq!(server.attribute("http.response.status_code"), Some("401"));
    assert_eq!(server.service_name, "sidecar-under-test");
    for child in ["rate_limit.wait", "upstream", "upstream.replay"] {
        let span = one(&spans, child);
        assert_eq!(span.trace_id, CALLER_TRACE, "{child}");
        assert_eq!(
            span.parent_span_id, server.span_id,
            "{child} is a child of the server span"
        );
    }
    // The first request may also have waited for the first token, before the 401's renewal.
    let waits = named(&spans, "token.wait");
    assert!(
        waits
            .iter()
            .all(|w| w.parent_span_id == server.span_id && w.trace_id == CALLER_TRACE)
    );
    let renewals: Vec<_> = waits
        .iter()
        .filter(|w| w.attribute("tokenbroker.reason") == Some("upstream 401"))
        .collect();
    assert_eq!(renewals.len(), 1, "{waits:#?}");
    assert_eq!(one(&spans, "upstream").kind, 3, "a client span");
    assert_eq!(one(&spans, "upstream.replay").kind, 3);

    // Each exchange told the upstream its own span as the parent.
    let sent: Vec<String> = upstream
        .recorded()
        .iter()
        .map(|r| r.headers["traceparent"].to_str().expect("ascii").to_owned())
        .collect();
    let upstream_spans = [one(&spans, "upstream"), one(&spans, "upstream.replay")];
    for (header, span) in sent.iter().zip(upstream_spans) {
        assert_eq!(header, &format!("00-{CALLER_TRACE}-{}-01", span.span_id));
    }

    // The renewal is a trace of its own, and the request's wait links to it.
    let fetches = named(&spans, "token.fetch");
    assert!(
        fetches
            .iter()
            .all(|f| f.parent_span_id.is_empty() && f.trace_id != CALLER_TRACE)
    );
    let wait = renewals[0];
    assert_eq!(wait.links.len(), 1, "{wait:#?}");
    let renewal = fetches
        .iter()
        .find(|f| f.span_id == wait.links[0].1)
        .expect("the linked token call");
    assert_eq!(renewal.trace_id, wait.links[0].0);
    assert_eq!(renewal.attribute("tokenbroker.tenant"), Some("acme"));

    let logged = binary
        .json_logs()
        .into_iter()
        .find(|l| l["target"] == "tokenbroker::access")
        .expect("an access event");
    assert_eq!(logged["trace_id"], CALLER_TRACE);
    let exported = format!("{spans:?}");
    assert!(!exported.contains("traces-client-secret-0123") && !exported.contains("token-0"));
}

/// Without a caller's `traceparent` the proxy starts the trace; its id is in the access event.
#[tokio::test]
async fn a_request_without_a_traceparent_starts_a_trace_the_log_names() {
    let (receiver, upstream, _idp, binary) = start_exporting().await;
    assert_eq!(crate::support::get(&binary.url("/acme/x")).await.status, StatusCode::OK);
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| spans.iter().any(|s| s.kind == 2))
        .await;
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert!(server.parent_span_id.is_empty(), "a root: {server:?}");
    let logged = binary
        .json_logs()
        .into_iter()
        .find(|l| l["target"] == "tokenbroker::access")
        .expect("an access event");
    assert_eq!(logged["trace_id"], server.trace_id.as_str());
    let header = upstream.last().headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(header.starts_with(&format!("00-{}-", server.trace_id)), "{header}");
}

/// With no endpoint nothing is exported and the caller's `traceparent` reaches the upstream
/// unchanged; a protocol this build cannot speak stops it at startup with EX_CONFIG.
#[tokio::test]
async fn without_an_endpoint_the_traceparent_passes_unchanged() {
    let upstream = Upstream::start().await;
    let idp = TokenEndpoint::start("3600").await;
    let envs = [("ACME_SECRET", "traces-client-secret-0123")];
    let binary = Binary::start_with_log(&traced_tenant(&upstream, &idp), &envs, "info");
    assert_eq!(
        send(traced_request(&binary.url("/acme/x"))).await.status,
        StatusCode::OK
    );
    let header = upstream.last().headers["traceparent"].clone();
    assert_eq!(header, format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01").as_str());

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokenbroker.toml");
    std::fs::write(&path, traced_tenant(&upstream, &idp)).expect("write");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["run", "--config"])
        .arg(&path)
        .env("ACME_SECRET", "x")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"));
}
