//! The token engine end to end (README, "Token policy") over real sockets: an in-process proxy
//! whose tenants get their tokens from the sandbox fakes, asserting on the fakes' own counters.
//! Token calls go through a [`SlowRelay`] where a fast loopback IdP would hide what is tested.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokenbroker::sandbox::{self, VantageOptions, VantageSandbox};
use tokio::time::Instant;

use crate::sandboxed::{
    IMS_SECRET_LINE, SlowRelay, adobe_tenant, ims_with_ttl, metric, oauth2_tenant, roomy_shopline, shopline_tenant,
    start_proxy, vantage_tenant,
};
use crate::support::upstream::TokenEndpoint;
use crate::support::{self, get, send};

const ADOBE: &str = "tenant=\"adobe\"";

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_first_requests_cause_one_token_call_per_tenant() {
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    let shop = roomy_shopline().await;
    let vantage = VantageSandbox::start(VantageOptions::default()).await.expect("vantage");
    let generic = VantageSandbox::start(VantageOptions::default()).await.expect("vantage");
    // Every token call takes 300 ms, so all 500 requests arrive while the first fetch is in flight.
    let delay = Duration::from_millis(300);
    let relays = [
        SlowRelay::start(ims.base_url(), delay).await,
        SlowRelay::start(shop.base_url(), delay).await,
        SlowRelay::start(vantage.base_url(), delay).await,
        SlowRelay::start(generic.base_url(), delay).await,
    ];
    let proxy = start_proxy(&[
        adobe_tenant("adobe", &ims, &relays[0].url, IMS_SECRET_LINE),
        shopline_tenant(
            "shop",
            &shop,
            &relays[1].url,
            "app_secret = { env = \"SHOPLINE_SECRET\" }\ncode = { env = \"SHOPLINE_CODE\" }",
        ),
        vantage_tenant("vantage", &vantage, &relays[2].url, ""),
        oauth2_tenant("generic", &generic, &relays[3].url),
    ])
    .await;
    let paths = [
        "/adobe/V1/products",
        "/shop/admin/openapi/v20230901/products/products.json",
        "/vantage/api/publicapi/v1/skills",
        "/generic/api/publicapi/v1/skills",
    ];
    let requests: Vec<_> = (0..500)
        .map(|i| {
            let url = proxy.url(paths[i % paths.len()]);
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for (i, request) in requests.into_iter().enumerate() {
        assert_eq!(request.await.expect("request task"), StatusCode::OK, "request {i}");
    }
    assert_eq!(ims.token_calls(), 1, "adobe_ims: one token call");
    assert_eq!(shop.token_calls(), 1, "shopline: one token call");
    assert_eq!(
        shop.create_calls(),
        1,
        "shopline: the first token comes from token/create"
    );
    assert_eq!(vantage.token_calls(), 1, "vantage: one token call");
    assert_eq!(generic.token_calls(), 1, "oauth2: one token call");
    assert_eq!(
        ims.api_calls() + shop.api_calls() + vantage.api_calls() + generic.api_calls(),
        500
    );
    // The requests that arrived while the first token was fetched waited for it, and the wait
    // histogram counts them (the later ones found it held).
    let metrics = proxy.metrics().await;
    let waits = support::sample(&metrics, r#"tokenbroker_token_wait_seconds_count{tenant="adobe"}"#);
    let waited = support::sample(&metrics, r#"tokenbroker_token_wait_seconds_sum{tenant="adobe"}"#);
    let (waits, waited) = (waits.expect("a wait count"), waited.expect("a wait sum"));
    assert!(
        (1.0..=125.0).contains(&waits),
        "{waits} of 125 requests waited:\n{metrics}"
    );
    assert!(
        waited > 0.2,
        "the first waited most of the 300 ms fetch: {waited} s in all"
    );
    proxy.stop().await;
}

/// Runs GETs back to back on one connection for `span`; returns every status and the slowest.
async fn drive(url: &str, span: Duration) -> (Vec<StatusCode>, Duration) {
    let client = support::client();
    let end = Instant::now() + span;
    let mut statuses = Vec::new();
    let mut slowest = Duration::ZERO;
    while Instant::now() < end {
        let started = Instant::now();
        let request = Request::get(url).body(Full::default()).expect("valid request");
        let response = client.request(request).await.expect("the proxy answers");
        let status = response.status();
        response.into_body().collect().await.expect("body arrives");
        slowest = slowest.max(started.elapsed());
        statuses.push(status);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (statuses, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_across_renewals_never_sees_a_401_or_waits() {
    // 3 s tokens and a refresh_before longer than that: renewal at 50 % (1.5 s after issue).
    // Each token call takes 500 ms, so a request that waited on a renewal would take ~500 ms.
    let ims = ims_with_ttl(Duration::from_secs(3)).await;
    let relay = SlowRelay::start(ims.base_url(), Duration::from_millis(500)).await;
    let extra = format!("{IMS_SECRET_LINE}\nrefresh_before = \"1h\"");
    let proxy = start_proxy(&[adobe_tenant("adobe", &ims, &relay.url, &extra)]).await;
    let url = proxy.url("/adobe/V1/products");
    assert_eq!(get(&url).await.status, StatusCode::OK, "first token");
    let api_before = ims.api_calls();

    let loops: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { drive(&url, Duration::from_millis(6500)).await })
        })
        .collect();
    let (mut sent, mut slowest) = (0, Duration::ZERO);
    for driver in loops {
        let (statuses, slow) = driver.await.expect("driver task");
        let failed: Vec<_> = statuses.iter().filter(|s| **s != StatusCode::OK).collect();
        assert!(failed.is_empty(), "every response is 200, got {failed:?}");
        sent += statuses.len();
        slowest = slowest.max(slow);
    }
    // Issued at ~0.5 s, then renewed every ~2 s (1.5 s schedule + 0.5 s call): 4 calls by ~7 s.
    assert!(
        ims.token_calls() >= 3,
        "renewed repeatedly: {} token calls",
        ims.token_calls()
    );
    assert!(sent > 100, "traffic was steady: {sent} requests");
    // One API call per request: no 401 was ever answered (a 401 would have been replayed).
    assert_eq!(ims.api_calls() - api_before, sent, "the fake's API never answered 401");
    assert_eq!(
        metric(&proxy, "tokenbroker_unauthorized_replays_total", &[ADOBE]).await,
        0.0
    );
    assert!(
        slowest < Duration::from_millis(250),
        "no request waited for a 500 ms renewal: slowest {slowest:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_401s_on_a_revoked_token_renews_once_and_replays_every_body() {
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    // A slow renewal, so most of the burst meets the 401 before the new token exists.
    let relay = SlowRelay::start(ims.base_url(), Duration::from_millis(200)).await;
    let extra = format!("{IMS_SECRET_LINE}\nmin_token_age = \"300ms\"");
    let proxy = start_proxy(&[adobe_tenant("adobe", &ims, &relay.url, &extra)]).await;
    assert_eq!(get(&proxy.url("/adobe/V1/products")).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(400)).await;
    ims.revoke_all();

    let url = proxy.url("/adobe/V1/orders");
    let requests: Vec<_> = (0..100)
        .map(|i| {
            let url = url.clone();
            let body = serde_json::json!({"order": i, "note": format!("request number {i}")});
            tokio::spawn(async move {
                let request = Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .expect("valid request");
                (body, send(request).await)
            })
        })
        .collect();
    for request in requests {
        let (sent, answer) = request.await.expect("request task");
        assert_eq!(answer.status, StatusCode::OK, "{sent}: {}", answer.text());
        let echoed = answer.json();
        assert_eq!(echoed["body"], sent, "each response carries its own body");
        assert_eq!(answer.sandbox_echo()["body_length"], sent.to_string().len());
    }
    assert_eq!(ims.token_calls(), 2, "exactly one renewal");
    let replays = metric(&proxy, "tokenbroker_unauthorized_replays_total", &[ADOBE]).await;
    assert!(replays >= 1.0, "the burst met the revoked token: {replays} replays");
    proxy.stop().await;
}

#[tokio::test]
async fn a_401_on_a_young_token_is_passed_back_without_renewing() {
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    let token_base = ims.base_url();
    let proxy = start_proxy(&[adobe_tenant("adobe", &ims, &token_base, IMS_SECRET_LINE)]).await;
    let url = proxy.url("/adobe/V1/products");
    assert_eq!(get(&url).await.status, StatusCode::OK);
    // Within the default min_token_age (30 s): e.g. a valid token lacking a permission.
    ims.revoke_all();
    for _ in 0..5 {
        let answer = get(&url).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "the upstream's 401 goes back");
        assert!(answer.text().contains("consumer isn't authorized"), "{}", answer.text());
        assert!(
            answer.headers.get("tokenbroker-error").is_none(),
            "the upstream's own answer"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ims.token_calls(), 1, "no renewal for a young token");
    assert_eq!(
        metric(&proxy, "tokenbroker_unauthorized_replays_total", &[ADOBE]).await,
        0.0
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_outage_while_a_token_is_held_is_invisible_to_callers() {
    // 8 s tokens renew at 4 s; two failed calls back off ~1 s then ~2 s, so the third attempt
    // (≤ 7 s) lands before the held token's expiry at 8 s.
    let ims = ims_with_ttl(Duration::from_secs(8)).await;
    let token_base = ims.base_url();
    let extra = format!("{IMS_SECRET_LINE}\nrefresh_before = \"1h\"");
    let proxy = start_proxy(&[adobe_tenant("adobe", &ims, &token_base, &extra)]).await;
    let url = proxy.url("/adobe/V1/products");
    assert_eq!(get(&url).await.status, StatusCode::OK);
    ims.fail_next_token_calls(2);

    let client = support::client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut during_outage, mut after) = (0, 0);
    while after < 5 && Instant::now() < deadline {
        let calls = ims.token_calls();
        let request = Request::get(&url).body(Full::default()).expect("valid request");
        let response = client.request(request).await.expect("the proxy answers");
        assert_eq!(response.status(), StatusCode::OK, "token calls so far: {calls}");
        response.into_body().collect().await.expect("body arrives");
        match calls {
            2 | 3 => during_outage += 1,
            4.. => after += 1,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ims.token_calls(), 4, "1 + 2 refused + 1 accepted");
    assert!(
        during_outage > 10,
        "requests were served during the outage: {during_outage}"
    );
    assert_eq!(after, 5, "the renewal after the outage arrived in time");
    let failures = metric(
        &proxy,
        "tokenbroker_token_renewals_total",
        &[ADOBE, "outcome=\"failure\""],
    )
    .await;
    assert_eq!(failures, 2.0, "both refused calls were counted");
    proxy.stop().await;
}

#[tokio::test]
async fn a_never_expiring_token_is_used_for_a_year_through_the_binary() {
    // Java's Long.MAX_VALUE: a common "never expires". It used to overflow the token task's clock.
    let idp = TokenEndpoint::start("9223372036854775807").await;
    let token_url = idp.url();
    let upstream = support::upstream::Upstream::start().await;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
request_timeout = "5s"

[[tenant]]
name = "forever"
provider = "oauth2"
upstream = "{upstream}"
token_url = "{token_url}"
client_id = "cid"
client_secret = {{ env = "FOREVER_SECRET" }}
"#,
        upstream = upstream.url()
    );
    let binary = support::Binary::start(&toml, &[("FOREVER_SECRET", "s3cret")]);
    for _ in 0..3 {
        let answer = get(&binary.url("/forever/x")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    let sent = upstream.last().headers["authorization"].clone();
    assert_eq!(sent, "Bearer token-0");
    assert_eq!(idp.calls(), 1, "one token call");
    let tenants = get(&binary.admin_url("/tenants")).await.json();
    let entry = support::tenant_entry(&tenants, "forever");
    let expires_in = entry["token"]["expires_in_s"].as_u64().expect("expires_in_s");
    let year = 365 * 24 * 3600;
    assert!(expires_in > year - 60 && expires_in <= year, "{entry}");
    let metrics = binary.metrics().await;
    let restarts = support::sample(&metrics, "tokenbroker_token_task_restarts_total{tenant=\"forever\"}");
    assert_eq!(restarts, Some(0.0), "the task never panicked");
}
