//! The real binary's access log: one JSON event per request at info with the request's fields
//! (request id, tenant, caller and class, trace id, method, path without query, status, upstream
//! status and request id, duration, token generation, rate-limit wait).

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::tenants::{SERVER, static_tenant};
use crate::support::upstream::Upstream;
use crate::support::{Binary, eventually, get, send};

const STATIC_VALUE: &str = "Bearer admin-static-credential";

/// The binary with one static tenant `acme`, rate-limited generously so every event has a wait.
fn start_binary(upstream: &Upstream) -> Binary {
    let limited = r#"rate_limit = { per_second = 100, burst = 100, max_wait = "1s" }"#;
    let toml = format!("{SERVER}{}", static_tenant("acme", &upstream.url(), limited));
    Binary::start_with_log(&toml, &[("STATIC_VALUE", STATIC_VALUE)], "info")
}

/// Five requests: `req-1` with a query, `req-2` answered 404 by the upstream, `req-3` to an
/// unknown tenant, and two without a request id.
async fn send_five_requests(binary: &Binary, upstream: &Upstream) {
    let with_id = |path: &str, id: &str| {
        Request::get(binary.url(path))
            .header("x-request-id", id)
            .body(Full::default())
            .expect("valid request")
    };
    let answer = send(with_id("/acme/V1/orders?searchCriteria=hidden-query-value", "req-1")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        upstream.last().headers["x-request-id"],
        "req-1",
        "the caller's own header passes through"
    );
    assert_eq!(
        send(with_id("/acme/status/404", "req-2")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(send(with_id("/nobody/x", "req-3")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&binary.url("/acme/anonymous")).await.status, StatusCode::OK);
    assert_eq!(get(&binary.url("/acme/anonymous")).await.status, StatusCode::OK);
    assert!(
        !upstream.recorded()[3].headers.contains_key("x-request-id"),
        "a generated id is not forwarded"
    );
}

fn access_events(binary: &Binary) -> Vec<serde_json::Value> {
    binary
        .json_logs()
        .into_iter()
        .filter(|l| l["target"] == "tokenbroker::access")
        .collect()
}

/// Waits (up to 3 s) until at least `n` access events are logged, then returns them all.
async fn wait_for_access_events(binary: &Binary, n: usize) -> Vec<serde_json::Value> {
    let complete = eventually(Duration::from_secs(3), || {
        let logged = access_events(binary).len();
        async move { logged >= n }
    })
    .await;
    assert!(complete, "{}", binary.logs());
    access_events(binary)
}

/// The only event with request id `id`.
fn event_with_id<'a>(events: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    let matching: Vec<_> = events.iter().filter(|e| e["request_id"] == id).collect();
    assert_eq!(matching.len(), 1, "exactly one event for {id}");
    matching[0]
}

/// `req-1` carries every field of a proxied request.
fn assert_full_event(first: &serde_json::Value) {
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/acme/V1/orders");
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream_status"], 200);
    assert_eq!(first["token_generation"], 1);
    assert!(first["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{first}");
    assert!(first["rate_limit_wait_ms"].as_f64().is_some(), "{first}");
}

/// The binary's access log: exactly one JSON event per request with the request's fields, the
/// caller's request id or a generated one, and never the query string.
#[tokio::test]
async fn access_log_has_one_event_per_request_without_the_query() {
    let upstream = Upstream::start().await;
    let binary = start_binary(&upstream);
    send_five_requests(&binary, &upstream).await;

    let events = wait_for_access_events(&binary, 5).await;
    assert_eq!(events.len(), 5, "one event per request:\n{}", binary.logs());
    assert_full_event(event_with_id(&events, "req-1"));
    let second = event_with_id(&events, "req-2");
    assert_eq!(
        (second["status"].clone(), second["upstream_status"].clone()),
        (404.into(), 404.into())
    );
    let third = event_with_id(&events, "req-3");
    assert_eq!(third["status"], 404);
    assert_eq!(third["error"], "unknown_tenant");
    assert!(third.get("upstream_status").is_none_or(serde_json::Value::is_null));
    let generated: Vec<_> = events
        .iter()
        .filter(|e| e["path"] == "/acme/anonymous")
        .map(|e| e["request_id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(generated.len(), 2);
    assert_ne!(generated[0], generated[1], "generated ids are unique");
    assert!(
        !binary.logs().contains("hidden-query-value"),
        "the query string is never logged"
    );
    assert!(!binary.logs().contains("admin-static-credential"));
}

/// With callers, the event names the caller and its class; it carries the trace id of the
/// caller's `traceparent` and the upstream's own id for the request (SHOPLINE's `traceid`).
#[tokio::test]
async fn access_events_name_the_caller_the_trace_and_the_upstreams_request_id() {
    let upstream = Upstream::start().await;
    let caller = "[[caller]]\nname = \"orders\"\nkey = { env = \"KEY\" }\nclass = \"interactive\"\n";
    let toml = format!("{SERVER}{}{caller}", static_tenant("acme", &upstream.url(), ""));
    let envs = [("STATIC_VALUE", STATIC_VALUE), ("KEY", "orders-caller-key-0123456789")];
    let binary = Binary::start_with_log(&toml, &envs, "info");
    let request = Request::get(binary.url("/acme/x"))
        .header("tokenbroker-key", "orders-caller-key-0123456789")
        .header("x-request-id", "req-traced")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .body(Full::default())
        .expect("valid request");
    assert_eq!(send(request).await.status, StatusCode::OK);
    let events = wait_for_access_events(&binary, 1).await;
    let event = event_with_id(&events, "req-traced");
    assert_eq!(event["caller"], "orders", "{event}");
    assert_eq!(event["class"], "interactive", "{event}");
    assert_eq!(event["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{event}");
    assert_eq!(event["upstream_request_id"], "fake-upstream-trace-1", "{event}");
    assert!(!binary.logs().contains("orders-caller-key-0123456789"), "never the key");
}
