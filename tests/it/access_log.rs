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
    assert_eq!(
        third["fault"], "downstream",
        "the caller asked for a tenant that does not exist"
    );
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

/// The request id comes back on every answer: the caller's own as it sent it, else the generated
/// one the event carries (also on the proxy's own refusals).
#[tokio::test]
async fn every_answer_echoes_the_request_id_the_event_carries() {
    let upstream = Upstream::start().await;
    let binary = start_binary(&upstream);
    let given = Request::get(binary.url("/acme/x"))
        .header("x-request-id", "req-echo")
        .body(Full::default())
        .expect("valid request");
    let answer = send(given).await;
    assert_eq!(
        answer.headers["x-request-id"], "req-echo",
        "the caller's id, not the upstream's"
    );
    let made = get(&binary.url("/acme/x")).await;
    let refused = get(&binary.url("/nobody/x")).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let events = wait_for_access_events(&binary, 3).await;
    for answer in [&made, &refused] {
        let id = answer.headers["x-request-id"].to_str().expect("plain");
        assert!(!id.is_empty());
        event_with_id(&events, id);
    }
    assert_ne!(made.headers["x-request-id"], refused.headers["x-request-id"]);
}

/// The event is written when the body has been sent: it counts the bytes both ways, names the
/// peer, and says nothing was cut off.
#[tokio::test]
async fn the_event_counts_the_bytes_both_ways_and_names_the_peer() {
    let upstream = Upstream::start().await;
    let binary = start_binary(&upstream);
    // A body without a length streams upstream; one with a length may be kept whole.
    let chunks: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>> = (0..10)
        .map(|_| Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![b'b'; 1000]))))
        .collect();
    let streamed = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let stream = tokio::net::TcpStream::connect(binary.addr).await.expect("connects");
    let local = stream.local_addr().expect("a local address");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::post("/acme/upload")
        .header("host", "127.0.0.1")
        .header("x-request-id", "req-upload")
        .body(streamed)
        .expect("valid request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.expect("the body").to_bytes();
    assert_eq!(upstream.last().body.len(), 10_000);
    let sized = Request::get(binary.url("/acme/bytes/300000"))
        .header("x-request-id", "req-download")
        .body(Full::default())
        .expect("valid request");
    assert_eq!(send(sized).await.body.len(), 300_000);

    let events = wait_for_access_events(&binary, 2).await;
    let upload = event_with_id(&events, "req-upload");
    assert_eq!(upload["request_bytes"], 10_000, "{upload}");
    assert_eq!(upload["response_bytes"], body.len(), "{upload}");
    assert_eq!(upload["peer"], local.to_string(), "{upload}");
    assert!(upload.get("aborted").is_none_or(serde_json::Value::is_null), "{upload}");
    let download = event_with_id(&events, "req-download");
    assert_eq!(
        download["response_bytes"], 300_000,
        "written after the body, not at the head"
    );
    assert_eq!(download["request_bytes"], 0);
    assert!(
        download.get("aborted").is_none_or(serde_json::Value::is_null),
        "{download}"
    );
}

/// A caller that leaves mid-body gets an event that says so, with the bytes that went out.
#[tokio::test]
async fn a_caller_that_leaves_mid_body_is_logged_as_aborted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let binary = start_binary(&upstream);
    let mut stream = tokio::net::TcpStream::connect(binary.addr).await.expect("connects");
    let head = "GET /acme/bytes/200000000 HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: req-left\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut first = vec![0u8; 64 * 1024];
    let read = stream.read(&mut first).await.expect("reads");
    assert!(String::from_utf8_lossy(&first[..read]).starts_with("HTTP/1.1 200"));
    drop(stream);

    let events = wait_for_access_events(&binary, 1).await;
    let left = event_with_id(&events, "req-left");
    assert_eq!(left["aborted"], "caller", "{left}");
    let sent = left["response_bytes"].as_u64().expect("a count");
    assert!(sent < 200_000_000, "{left}");
    assert_eq!(left["status"], 200);
}

/// An upstream whose body breaks off: the caller's connection is cut too, and the event says the
/// upstream left, with the bytes that were passed on.
#[tokio::test]
async fn an_upstream_that_breaks_off_its_body_is_logged_as_aborted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let _ = conn.read(&mut head).await;
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789";
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.flush().await;
                // Gone, 990 bytes short.
            });
        }
    });
    let toml = format!("{SERVER}{}", static_tenant("acme", &format!("http://{addr}"), ""));
    let binary = Binary::start_with_log(&toml, &[("STATIC_VALUE", STATIC_VALUE)], "info");
    let mut stream = tokio::net::TcpStream::connect(binary.addr).await.expect("connects");
    let head = "GET /acme/x HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: req-cut\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the caller's connection is closed, not left hanging");
    // hyper may not have flushed the head and the 10 bytes before the break: the caller sees at
    // most those, never a body that looks complete.
    let text = String::from_utf8_lossy(&received);
    assert!(text.is_empty() || text.ends_with("0123456789"), "{text}");

    let events = wait_for_access_events(&binary, 1).await;
    let cut = event_with_id(&events, "req-cut");
    assert_eq!(cut["aborted"], "upstream", "{cut}");
    assert_eq!(cut["response_bytes"], 10, "{cut}");
}
