//! Proxy core over real sockets: routing, header hygiene, rewriting, path safety, body limits,
//! upstream failures, streaming and graceful drain.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

use crate::support::tenants::static_tenant_from;
use crate::support::upstream::Upstream;
use crate::support::{self, Binary, Proxy, env, get, raw_status_line, send, unused_addr};

/// A static tenant `acme` in front of `upstream` (base path `/base`) plus `extra` TOML.
fn config(upstream: &Upstream, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
request_timeout = "1s"

[[tenant]]
name = "acme"
provider = "static"
upstream = "{url}/base"
value = {{ env = "ACME_VALUE" }}
headers = {{ "x-api-key" = "fixed-key" }}
max_body = "1KiB"
{extra}
"#,
        url = upstream.url()
    )
}

async fn start(upstream: &Upstream, extra: &str) -> Proxy {
    Proxy::start_with_env(
        &config(upstream, extra),
        &env(&[("ACME_VALUE", "Bearer static-acme-token")]),
    )
    .await
}

#[tokio::test]
async fn routes_by_prefix_and_by_own_listener() {
    let upstream = Upstream::start().await;
    let own = static_tenant_from("own", &upstream.url(), "ACME_VALUE", "listen = \"127.0.0.1:0\"");
    let proxy = start(&upstream, &own).await;

    let answer = get(&proxy.url("/acme/V1/products")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.last().target, "/base/V1/products");

    let own_addr = proxy.tenant_addrs["own"];
    let answer = get(&format!("http://{own_addr}/acme/V1/orders")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        upstream.last().target,
        "/acme/V1/orders",
        "no prefix is stripped on a tenant's own listener"
    );

    let answer = get(&proxy.url("/nobody/V1/products")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.headers["tokenbroker-error"], "unknown_tenant");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    let problem = answer.json();
    assert_eq!(problem["status"], 404);
    assert_eq!(problem["type"], "urn:tokenbroker:error:unknown_tenant");
    assert!(problem["title"].is_string() && problem["detail"].is_string());
    assert_eq!(upstream.recorded().len(), 2);
}

#[tokio::test]
async fn inbound_http2_cleartext_is_served() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "").await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = h2
        .get(proxy.url("/acme/V1/x").parse().expect("uri"))
        .await
        .expect("h2 answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(upstream.last().target, "/base/V1/x");
}

#[tokio::test]
async fn header_rules_hold_both_ways() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "").await;
    let request = Request::get(proxy.url("/acme/V1/products"))
        .header("connection", "x-hop")
        .header("x-hop", "connection-specific")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("authorization", "Bearer caller-supplied")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("tokenbroker-key", "caller-key")
        .header("host", "localhost:8080")
        .header("accept", "application/json")
        .body(Full::default())
        .expect("valid request");
    let answer = send(request).await;
    assert_eq!(answer.status, StatusCode::OK);

    let seen = upstream.last().headers;
    assert_eq!(seen["authorization"], "Bearer static-acme-token");
    assert_eq!(seen["x-api-key"], "fixed-key");
    assert_eq!(seen["host"], upstream.addr().to_string());
    assert_eq!(seen["accept"], "application/json");
    for gone in [
        "x-hop",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "tokenbroker-key",
    ] {
        assert!(!seen.contains_key(gone), "{gone} must not reach the upstream");
    }
    assert!(
        !seen
            .keys()
            .any(|k| k.as_str().starts_with("x-forwarded") || k == "forwarded" || k == "via")
    );
    assert_eq!(seen.get_all("authorization").iter().count(), 1);

    assert_eq!(answer.headers["x-upstream"], "fake");
    assert!(
        !answer.headers.contains_key("keep-alive"),
        "hop-by-hop response headers are stripped"
    );

    // Only the proxy's own answers carry `tokenbroker-error`: an upstream's copy is removed, so
    // its 502 cannot pass for one the proxy made.
    let forged = get(&proxy.url("/acme/forged-error")).await;
    assert_eq!(forged.status, StatusCode::BAD_GATEWAY);
    assert_eq!(forged.text(), "the upstream's own 502");
    assert!(
        !forged.headers.contains_key("tokenbroker-error"),
        "{:?}",
        forged.headers
    );
}

#[tokio::test]
async fn rewrite_rule_moves_the_store_code_to_a_header() {
    let upstream = Upstream::start().await;
    let rule = r#"rewrite = [{ match = "^/rest(?:/(?P<store>[A-Za-z0-9_]+))?(/V1/.*)$", replace = "$2" }]"#;
    let proxy = start(&upstream, rule).await;

    get(&proxy.url("/acme/rest/default/V1/products?searchCriteria[pageSize]=2")).await;
    let seen = upstream.last();
    assert_eq!(seen.target, "/base/V1/products?searchCriteria[pageSize]=2");
    assert_eq!(seen.headers["store"], "default");

    get(&proxy.url("/acme/rest/V1/store/storeViews")).await;
    let seen = upstream.last();
    assert_eq!(seen.target, "/base/V1/store/storeViews");
    assert!(!seen.headers.contains_key("store"));
}

#[tokio::test]
async fn query_strings_pass_byte_for_byte() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "").await;
    let query = "a=%2F%2f&b=+%20&c%5B0%5D=x&&e=%E2%9C%93&f=a=b&g=%2e%2e/";
    let answer = get(&proxy.url(&format!("/acme/search?{query}"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.last().target, format!("/base/search?{query}"));
}

#[tokio::test]
async fn traversal_attempts_stay_inside_the_tenant() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "").await;
    for (sent, expected) in [
        ("/acme/../../other/x", "/base/other/x"),
        ("/acme/%2e%2e/%2E%2e/x", "/base/x"),
        ("/acme/a/./b/../c", "/base/a/c"),
        ("/acme/products/sku%2Fwith%2Fslash", "/base/products/sku%2Fwith%2Fslash"),
    ] {
        let answer = get(&proxy.url(sent)).await;
        assert_eq!(answer.status, StatusCode::OK, "{sent}");
        assert_eq!(upstream.last().target, expected, "{sent}");
    }
    let before = upstream.recorded().len();
    for refused in [
        "/acme/..%2f..%2fother",
        "/acme/x/..%5C..%5Cother",
        "/acme/%2e%2e%2fother",
    ] {
        let answer = get(&proxy.url(refused)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(answer.headers["tokenbroker-error"], "bad_request");
    }
    assert_eq!(
        upstream.recorded().len(),
        before,
        "refused paths never reach the upstream"
    );
}

#[tokio::test]
async fn dot_segments_with_parameters_or_lax_encodings_are_refused() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "").await;
    for (refused, detail) in [
        ("/acme/..;/x", "the path has a parameter on a dot segment"),
        ("/acme/%2e%2e;x/x", "the path has a parameter on a dot segment"),
        ("/acme/.;/x", "the path has a parameter on a dot segment"),
        ("/acme/..%3b/x", "the path has a parameter on a dot segment"),
        (
            "/acme/mine/..;/%25/..;/V1/other/x",
            "the path has a parameter on a dot segment",
        ),
        ("/acme/%252e%252e/x", "the path contains an encoded traversal"),
        (
            "/acme/%c0%ae%c0%ae/x",
            "the path contains a NUL, an overlong UTF-8 sequence or nested percent-encoding",
        ),
        (
            "/acme/..%00/x",
            "the path contains a NUL, an overlong UTF-8 sequence or nested percent-encoding",
        ),
    ] {
        let answer = get(&proxy.url(refused)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(answer.headers["tokenbroker-error"], "bad_request", "{refused}");
        assert_eq!(answer.headers["content-type"], "application/problem+json", "{refused}");
        assert_eq!(answer.json()["detail"], detail, "{refused}");
    }
    assert!(upstream.recorded().is_empty(), "refused paths never reach the upstream");
    // Parameters on ordinary segments are the upstream's business and pass untouched.
    let answer = get(&proxy.url("/acme/V1/carts/mine;jsessionid=x/items")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.last().target, "/base/V1/carts/mine;jsessionid=x/items");
}

#[tokio::test]
async fn a_tenant_with_its_own_listener_is_also_reachable_by_prefix() {
    // Its own listener spares callers the prefix; it is not an isolation boundary (README,
    // "Not an open proxy"), so the main listener's `/<tenant>/` keeps working.
    let upstream = Upstream::start().await;
    let own = static_tenant_from(
        "own",
        &format!("{}/own-base", upstream.url()),
        "ACME_VALUE",
        "listen = \"127.0.0.1:0\"",
    );
    let proxy = start(&upstream, &own).await;
    let answer = get(&proxy.url("/own/V1/orders")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.last().target, "/own-base/V1/orders");
    let answer = get(&format!("http://{}/V1/orders", proxy.tenant_addrs["own"])).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.last().target, "/own-base/V1/orders");
}

#[tokio::test]
async fn absolute_form_and_connect_are_refused() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "").await;
    let absolute = raw_status_line(
        proxy.addr,
        "GET http://example.com/acme/x HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
    let connect = raw_status_line(
        proxy.addr,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert_eq!(upstream.started(), 0);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_no_complete_body_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "").await;
    // Declared too large: refused before anything goes upstream.
    let request = Request::post(proxy.url("/acme/V1/products"))
        .body(Full::new(Bytes::from(vec![b'a'; 2000])))
        .expect("valid");
    let answer = send(request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.headers["tokenbroker-error"], "payload_too_large");
    assert_eq!(upstream.started(), 0);

    // Chunked and growing past the cap: cut off, the upstream never sees a complete body.
    let chunks = (0..4).map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'b'; 600]))));
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = Request::post(proxy.url("/acme/V1/products")).body(body).expect("valid");
    let response = client.request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        upstream.recorded().is_empty(),
        "no complete oversized body was received"
    );

    // Within the cap: forwarded intact.
    let request = Request::post(proxy.url("/acme/V1/products"))
        .body(Full::new(Bytes::from(vec![b'c'; 1000])))
        .expect("valid");
    assert_eq!(send(request).await.status, StatusCode::OK);
    assert_eq!(upstream.last().body.len(), 1000);
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let upstream = Upstream::start().await;
    let closed = unused_addr();
    let down = static_tenant_from("down", &format!("http://{closed}"), "ACME_VALUE", "");
    let proxy = start(&upstream, &down).await;

    let answer = get(&proxy.url("/down/V1/x")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.headers["tokenbroker-error"], "upstream_unreachable");
    assert_eq!(answer.json()["tenant"], "down");

    let started = tokio::time::Instant::now();
    let answer = get(&proxy.url("/acme/slow/3000")).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.headers["tokenbroker-error"], "upstream_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_process_survives_a_flood_of_bad_requests() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "").await;
    for garbage in [
        "\x16\x03\x01\x00\x05hello\r\n\r\n",
        "GET /acme/x HTTP/9.9\r\n\r\n",
        "GET\r\n\r\n",
    ] {
        let _ = raw_status_line(proxy.addr, garbage).await;
    }
    assert_eq!(get(&proxy.url("/acme/V1/ok")).await.status, StatusCode::OK);
}

const STREAM_BYTES: u64 = 512 * 1024 * 1024;

#[tokio::test]
async fn a_large_response_streams_through_in_bounded_memory() {
    let upstream = Upstream::start().await;
    let binary = Binary::start(&config(&upstream, ""), &[("ACME_VALUE", "Bearer static-acme-token")]);
    let response = support::client()
        .request(
            Request::get(binary.url(&format!("/acme/bytes/{STREAM_BYTES}")))
                .body(Full::default())
                .expect("valid"),
        )
        .await
        .expect("response headers");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.expect("frame").data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, STREAM_BYTES);
    let peak = binary.peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB while streaming {STREAM_BYTES} bytes"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let upstream = Upstream::start().await;
    let mut binary = Binary::start(&config(&upstream, ""), &[("ACME_VALUE", "Bearer static-acme-token")]);
    let url = binary.url("/acme/slow/700");
    let in_flight = tokio::spawn(async move { get(&url).await });
    // Wait until the upstream has the request, then ask the proxy to stop.
    for _ in 0..100 {
        if upstream.started() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.started(), 1, "the slow request is in flight");
    binary.signal("TERM");
    let answer = in_flight.await.expect("task");
    assert_eq!(answer.status, StatusCode::OK, "the in-flight request finished");
    let status = wait_exit(&mut binary.child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::net::TcpStream::connect(binary.addr).await.is_err(),
        "no longer accepting"
    );
    assert!(binary.logs().contains("shutting down"));
}

/// With `shutdown_delay`, SIGTERM first turns `/readyz` to 503 while the proxy still serves, so
/// a load balancer stops sending before the listeners close; then the process drains and exits 0.
#[tokio::test]
async fn shutdown_delay_fails_readiness_before_the_listeners_close() {
    let upstream = Upstream::start().await;
    let toml = config(&upstream, "").replace(
        "request_timeout = \"1s\"",
        // A delay long enough for the checks below on a loaded machine.
        "request_timeout = \"1s\"\nshutdown_delay = \"3s\"\nshutdown_grace = \"2s\"",
    );
    let mut binary = Binary::start(&toml, &[("ACME_VALUE", "Bearer static-acme-token")]);
    assert_eq!(get(&binary.admin_url("/readyz")).await.status, StatusCode::OK);
    binary.signal("TERM");
    let draining = support::eventually(Duration::from_secs(2), || async {
        get(&binary.admin_url("/readyz")).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(draining, "readiness fails at once:\n{}", binary.logs());
    let answer = get(&binary.admin_url("/readyz")).await;
    assert_eq!(answer.json()["shutting_down"], true, "{}", answer.text());
    assert_eq!(
        get(&binary.url("/acme/x")).await.status,
        StatusCode::OK,
        "still serving during the delay"
    );
    let status = wait_exit(&mut binary.child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::SystemTime::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            std::time::SystemTime::now() < deadline,
            "the process exits within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
