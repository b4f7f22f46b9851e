//! The admin listener end to end (README, "Operating it"): readiness as tokens come and go, every
//! metric with exact values after a scripted sequence of requests, and `/tenants`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokenbroker::sandbox::{self, ImsOptions, ImsSandbox};

use crate::support::tenants::{SERVER, ims_tenant, static_tenant, static_tenant_from};
use crate::support::upstream::Upstream;
use crate::support::{
    Answer, MapEnv, Proxy, assert_no_secret_in, assert_reload_counts, env, eventually, get, sample, send, tenant_entry,
    unix_now, unused_addr,
};

const IMS_SECRET: (&str, &str) = ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET);
const STATIC_VALUE: &str = "Bearer admin-static-credential";

/// The secrets of an IMS tenant and a static one.
fn ims_and_static_env() -> MapEnv {
    env(&[IMS_SECRET, ("STATIC_VALUE", STATIC_VALUE)])
}

/// A bearer JWT whose `exp` is `secs_from_now` ahead (the static provider reads it, unverified).
fn jwt_expiring_in(secs_from_now: u64) -> String {
    let claims = serde_json::json!({ "exp": unix_now() + secs_from_now }).to_string();
    format!(
        "Bearer {}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

/// The tenant names in one of `/readyz`'s lists (`failing` or `expiring`).
fn tenant_names(answer: &Answer, list: &str) -> Vec<String> {
    let json = answer.json();
    json[list]
        .as_array()
        .unwrap_or_else(|| panic!("a `{list}` list: {json}"))
        .iter()
        .map(|f| f["tenant"].as_str().expect("tenant name").to_owned())
        .collect()
}

fn failing_tenants(answer: &Answer) -> Vec<String> {
    tenant_names(answer, "failing")
}

/// Polls `/readyz` for up to `limit` until it answers `status`; returns whether it did.
async fn readyz_turns(proxy: &Proxy, status: StatusCode, limit: Duration) -> bool {
    eventually(limit, || async {
        get(&proxy.admin_url("/readyz")).await.status == status
    })
    .await
}

// === readiness ===

/// A tenant with `required = false` whose IdP is dead is reported but does not fail `/readyz`;
/// `/readyz?tenant=NAME` answers for one tenant, required or not.
#[tokio::test]
async fn an_optional_tenant_fails_alone() {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS");
    ims.fail_next_token_calls(1_000);
    let upstream = Upstream::start().await;
    let optional = ims_tenant("adobe", &ims, "required = false");
    let toml = format!("{SERVER}{optional}{}", static_tenant("acme", &upstream.url(), ""));
    let proxy = Proxy::start_with_env(&toml, &ims_and_static_env()).await;
    let failed = eventually(Duration::from_secs(5), || async { ims.token_calls() >= 1 }).await;
    assert!(failed, "the first token call was made and failed");

    let answer = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(failing_tenants(&answer), ["adobe"]);
    assert_eq!(answer.json()["failing"][0]["required"], false);
    let one = get(&proxy.admin_url("/readyz?tenant=adobe")).await;
    assert_eq!(one.status, StatusCode::SERVICE_UNAVAILABLE, "{}", one.text());
    assert_eq!(
        (one.json()["state"].clone(), one.json()["required"].clone()),
        ("failing".into(), false.into())
    );
    let acme = get(&proxy.admin_url("/readyz?tenant=acme")).await;
    assert_eq!(acme.status, StatusCode::OK, "{}", acme.text());
    assert_eq!(
        get(&proxy.admin_url("/readyz?tenant=nosuch")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&proxy.url("/acme/x")).await.status,
        StatusCode::OK,
        "the other tenant serves"
    );

    // Required (the default), the same failure fails the whole pod.
    let toml = toml.replace("required = false", "");
    proxy
        .reload_with_env(&toml, &ims_and_static_env())
        .await
        .expect("valid reload");
    let answer = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.text());
    assert_eq!(answer.json()["failing"][0]["required"], true);
    proxy.stop().await;
}

/// An IMS fake issuing 2 s tokens whose first `failing_calls` token calls fail, and a proxy with
/// one tenant `adobe` on it.
async fn proxy_on_short_lived_ims(failing_calls: usize) -> (ImsSandbox, Proxy) {
    let ims = ImsSandbox::start(ImsOptions {
        token_ttl: Duration::from_secs(2),
        ..ImsOptions::default()
    })
    .await
    .expect("fake IMS");
    ims.fail_next_token_calls(failing_calls);
    let toml = format!("{SERVER}{}", ims_tenant("adobe", &ims, ""));
    let proxy = Proxy::start_with_env(&toml, &env(&[IMS_SECRET])).await;
    (ims, proxy)
}

/// Started without a token: not ready, with `adobe` named as failing, but alive.
async fn assert_starting_without_a_token(proxy: &Proxy) {
    let answer = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.text());
    assert_eq!(failing_tenants(&answer), ["adobe"]);
    assert_eq!(answer.json()["ready"], false);
    assert_eq!(get(&proxy.admin_url("/healthz")).await.status, StatusCode::OK);
}

/// Every surface agrees that `adobe`'s token expired with no renewal, and requests fail fast.
async fn assert_outage_reported(proxy: &Proxy) {
    let answer = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(failing_tenants(&answer), ["adobe"]);
    let reason = answer.json()["failing"][0]["reason"]
        .as_str()
        .expect("reason")
        .to_owned();
    assert!(reason.contains("no valid token"), "{reason}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, r#"tokenbroker_token_expires_in_seconds{tenant="adobe"}"#),
        Some(0.0)
    );
    let state = &get(&proxy.admin_url("/tenants")).await.json()["tenants"][0]["token"];
    assert_eq!(state["state"], "failed", "{state}");
    assert!(state["last_error"].is_string(), "{state}");
    assert_eq!(
        get(&proxy.admin_url("/healthz")).await.status,
        StatusCode::OK,
        "alive while not ready"
    );
    // Requests are refused as token_unavailable, not sent with an expired token.
    let answer = get(&proxy.url("/adobe/sandbox-tenant/V1/products")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["tokenbroker-error"], "token_unavailable");
}

#[tokio::test]
async fn readiness_follows_the_token_through_start_and_outage() {
    // The first two token calls fail: the proxy starts without a token and retries (1 s, 2 s).
    let (ims, proxy) = proxy_on_short_lived_ims(2).await;
    assert_starting_without_a_token(&proxy).await;

    let ready = readyz_turns(&proxy, StatusCode::OK, Duration::from_secs(8)).await;
    assert!(ready, "ready once the third token call succeeds");
    assert_eq!(
        get(&proxy.admin_url("/readyz")).await.json()["failing"],
        serde_json::json!([])
    );
    assert_eq!(ims.token_calls(), 3);

    // Outage: every renewal fails; once the 2 s token has expired the tenant is not ready.
    ims.fail_next_token_calls(1_000);
    let outage = readyz_turns(&proxy, StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(6)).await;
    assert!(outage, "not ready after the token expired with no renewal");
    assert_outage_reported(&proxy).await;

    // Recovery.
    ims.fail_next_token_calls(0);
    let recovered = readyz_turns(&proxy, StatusCode::OK, Duration::from_secs(8)).await;
    assert!(recovered, "ready again once a renewal succeeds");
    proxy.stop().await;
}

// === static credentials ===

/// Static tenants `soon`, `imminent` and `later` whose values come from `SOON`, `IMMINENT` and
/// `LATER` in `jwts`, plus `lapsed` (a past `expires_at`) and `forever` (no known expiry).
async fn start_static_tenants(upstream: &Upstream, jwts: &[(&str, &str)]) -> Proxy {
    let url = upstream.url();
    let toml = format!(
        "{SERVER}{}{}{}{}{}",
        static_tenant_from("soon", &url, "SOON", ""),
        static_tenant_from("imminent", &url, "IMMINENT", ""),
        static_tenant_from("later", &url, "LATER", ""),
        static_tenant_from("lapsed", &url, "PLAIN", "expires_at = \"2020-01-01T00:00:00Z\""),
        static_tenant_from("forever", &url, "PLAIN", ""),
    );
    let mut secrets = jwts.to_vec();
    secrets.push(("PLAIN", STATIC_VALUE));
    Proxy::start_with_env(&toml, &env(&secrets)).await
}

#[tokio::test]
async fn static_credentials_are_reported_a_day_ahead_and_fail_readiness_only_when_about_to_lapse() {
    let upstream = Upstream::start().await;
    // `refresh_before` defaults to 10 min: 5 min left fails readiness, 1 h left is only reported.
    let (soon, imminent, later) = (
        jwt_expiring_in(3600),
        jwt_expiring_in(300),
        jwt_expiring_in(10 * 24 * 3600),
    );
    let jwts = [("SOON", soon.as_str()), ("IMMINENT", &imminent), ("LATER", &later)];
    let proxy = start_static_tenants(&upstream, &jwts).await;

    let answer = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failing_tenants(&answer), ["imminent", "lapsed"]);
    let expiring = tenant_names(&answer, "expiring");
    assert_eq!(expiring, ["soon"], "a day-ahead warning, still ready");
    let reasons = format!("{}{}", answer.json()["failing"], answer.json()["expiring"]);
    assert!(reasons.contains("cannot be renewed"), "{reasons}");
    assert!(
        !reasons.contains(&soon[7..])
            && !reasons.contains(&imminent[7..])
            && !reasons.contains("admin-static-credential")
    );
    assert_eq!(get(&proxy.admin_url("/healthz")).await.status, StatusCode::OK);

    let tenants = get(&proxy.admin_url("/tenants")).await.json();
    let expires_in = |name: &str| tenant_entry(&tenants, name)["token"]["expires_in_s"].clone();
    let soon_s = expires_in("soon").as_u64().expect("seconds");
    assert!((3500..=3600).contains(&soon_s), "{soon_s}");
    assert_eq!(expires_in("forever"), serde_json::Value::Null, "no expiry known");
    proxy.stop().await;
}

// === metrics ===

/// The value of `series` in `text`; panics when it is missing.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
}

/// An IMS tenant `ims` and a static tenant `limited` allowed one request a second, no waiting.
fn ims_and_limited_config(ims: &ImsSandbox, upstream: &Upstream) -> String {
    let limited = r#"rate_limit = { per_second = 1, burst = 1, max_wait = "0s" }"#;
    format!(
        "{SERVER}{}{}",
        ims_tenant("ims", ims, "min_token_age = \"0s\""),
        static_tenant("limited", &upstream.url(), limited),
    )
}

/// On `ims` 3×200, 1×404 from upstream and 1 replay after 401; on `limited` 1×200 and one 429
/// from the proxy.
async fn run_scripted_sequence(proxy: &Proxy, ims: &ImsSandbox) {
    let products = proxy.url("/ims/sandbox-tenant/V1/products");
    for _ in 0..3 {
        assert_eq!(get(&products).await.status, StatusCode::OK);
    }
    assert_eq!(
        get(&proxy.url("/ims/no/such/route")).await.status,
        StatusCode::NOT_FOUND
    );
    ims.revoke_all();
    assert_eq!(get(&products).await.status, StatusCode::OK, "replayed with a new token");
    assert_eq!(get(&proxy.url("/limited/x")).await.status, StatusCode::OK);
    let refused = get(&proxy.url("/limited/x")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers["tokenbroker-error"], "rate_limited");
    // A path that names no tenant: counted with an empty tenant, as the proxy's answer.
    assert_eq!(get(&proxy.url("/no-such-tenant/x")).await.status, StatusCode::NOT_FOUND);
}

/// Every counter and histogram count after [`run_scripted_sequence`].
const SCRIPTED_VALUES: [(&str, f64); 20] = [
    (
        r#"tokenbroker_token_request_duration_seconds_count{tenant="ims",outcome="success"}"#,
        2.0,
    ),
    (
        r#"tokenbroker_token_request_duration_seconds_count{tenant="ims",outcome="failure"}"#,
        0.0,
    ),
    (
        r#"tokenbroker_requests_total{tenant="ims",status="200",source="upstream"}"#,
        4.0,
    ),
    (
        r#"tokenbroker_requests_total{tenant="ims",status="404",source="upstream"}"#,
        1.0,
    ),
    (
        r#"tokenbroker_requests_total{tenant="limited",status="200",source="upstream"}"#,
        1.0,
    ),
    (
        r#"tokenbroker_requests_total{tenant="limited",status="429",source="proxy"}"#,
        1.0,
    ),
    (
        r#"tokenbroker_requests_total{tenant="",status="404",source="proxy"}"#,
        1.0,
    ),
    (r#"tokenbroker_request_duration_seconds_count{tenant="ims"}"#, 5.0),
    (r#"tokenbroker_request_duration_seconds_count{tenant="limited"}"#, 2.0),
    (r#"tokenbroker_upstream_duration_seconds_count{tenant="ims"}"#, 5.0),
    (r#"tokenbroker_upstream_duration_seconds_count{tenant="limited"}"#, 1.0),
    (
        r#"tokenbroker_token_renewals_total{tenant="ims",outcome="success"}"#,
        2.0,
    ),
    (
        r#"tokenbroker_token_renewals_total{tenant="ims",outcome="failure"}"#,
        0.0,
    ),
    (
        r#"tokenbroker_token_renewals_total{tenant="limited",outcome="success"}"#,
        1.0,
    ),
    (
        r#"tokenbroker_ratelimit_wait_seconds_count{tenant="limited",class="standard"}"#,
        1.0,
    ),
    (
        r#"tokenbroker_ratelimit_rejected_total{tenant="limited",class="standard"}"#,
        1.0,
    ),
    (r#"tokenbroker_unauthorized_replays_total{tenant="ims"}"#, 1.0),
    (r#"tokenbroker_unauthorized_replays_total{tenant="limited"}"#, 0.0),
    (r#"tokenbroker_config_reloads_total{outcome="success"}"#, 0.0),
    (r#"tokenbroker_config_reloads_total{outcome="failure"}"#, 0.0),
];

/// Series that must not exist: class series of a tenant without a limiter, or of a class no
/// caller of the tenant can have (no callers: standard only).
const ABSENT: [&str; 6] = [
    r#"tokenbroker_requests_total{tenant="limited",status="429",source="upstream"}"#,
    r#"tokenbroker_token_request_duration_seconds_count{tenant="limited",outcome="success"}"#,
    r#"tokenbroker_ratelimit_wait_seconds_count{tenant="limited",class="batch"}"#,
    r#"tokenbroker_ratelimit_wait_seconds_count{tenant="ims",class="standard"}"#,
    r#"tokenbroker_ratelimit_rejected_total{tenant="limited",class="interactive"}"#,
    r#"tokenbroker_ratelimit_rejected_total{tenant="ims",class="standard"}"#,
];

/// The process-wide families: build, the standard `process_*` ones, the reload gauges.
fn assert_process_families(text: &str) {
    let build = format!(
        r#"tokenbroker_build_info{{version="{}",revision="#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{build} in:\n{text}");
    assert!(value(text, "process_resident_memory_bytes") > 1e6);
    assert!(value(text, "process_open_fds") >= 3.0);
    assert!(value(text, "process_max_fds") >= value(text, "process_open_fds"));
    assert!(value(text, "process_cpu_seconds_total") > 0.0);
    assert!(value(text, "process_start_time_seconds") > 1.6e9);
    assert_eq!(value(text, "tokenbroker_config_last_reload_successful"), 1.0);
    let loaded = value(text, "tokenbroker_config_last_reload_success_timestamp_seconds");
    assert!((unix_now() as f64 - loaded).abs() < 120.0, "{loaded}");
}

/// The gauge, and histograms as real histograms: cumulative buckets ending in +Inf, and a sum.
fn assert_gauge_and_histograms(text: &str) {
    let expires_in = value(text, r#"tokenbroker_token_expires_in_seconds{tenant="ims"}"#);
    assert!(expires_in > 86_000.0 && expires_in <= 86_399.0, "{expires_in}");
    for (series, expected) in [
        (
            r#"tokenbroker_request_duration_seconds_bucket{le="+Inf",tenant="ims"}"#,
            5.0,
        ),
        (
            r#"tokenbroker_request_duration_seconds_bucket{le="60.0",tenant="ims"}"#,
            5.0,
        ),
        (
            r#"tokenbroker_ratelimit_wait_seconds_bucket{le="+Inf",tenant="limited",class="standard"}"#,
            1.0,
        ),
        (
            r#"tokenbroker_ratelimit_wait_seconds_bucket{le="0.0005",tenant="limited",class="standard"}"#,
            1.0,
        ),
    ] {
        assert_eq!(value(text, series), expected, "{series}");
    }
    assert!(
        !text.contains("=\"inf\"") && !text.contains(" inf\n"),
        "infinity is written +Inf in OpenMetrics:\n{text}"
    );
    assert_eq!(
        sample(text, r#"tokenbroker_token_expires_in_seconds{tenant="limited"}"#),
        None,
        "a credential without expiry has no expires_in value"
    );
    assert!(value(text, r#"tokenbroker_upstream_duration_seconds_sum{tenant="ims"}"#) > 0.0);
}

/// Every metric family is declared with its type, and the exposition is terminated.
fn assert_metric_types(text: &str) {
    for (name, kind) in [
        ("tokenbroker_requests", "counter"),
        ("tokenbroker_request_duration_seconds", "histogram"),
        ("tokenbroker_upstream_duration_seconds", "histogram"),
        ("tokenbroker_token_renewals", "counter"),
        ("tokenbroker_token_expires_in_seconds", "gauge"),
        ("tokenbroker_ratelimit_wait_seconds", "histogram"),
        ("tokenbroker_ratelimit_rejected", "counter"),
        ("tokenbroker_unauthorized_replays", "counter"),
        ("tokenbroker_config_reloads", "counter"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} in:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

/// One good reload (`toml` again) and one of a file that is not TOML.
async fn reload_once_then_reject_a_broken_file(proxy: &Proxy, toml: &str) {
    proxy
        .reload_with_env(toml, &ims_and_static_env())
        .await
        .expect("the same config reloads");
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server\n").expect("write");
    let rejected = proxy.reload.reload(tokenbroker::reload::ReloadSource::File(bad)).await;
    assert!(rejected.is_err());
}

/// Every metric the README lists after 3×200, 1×404 from upstream, 1 replay after 401, and on a
/// second tenant 1×200 and one proxy 429.
#[tokio::test]
async fn every_metric_has_the_right_value_after_a_scripted_sequence() {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS");
    let upstream = Upstream::start().await;
    let toml = ims_and_limited_config(&ims, &upstream);
    let proxy = Proxy::start_with_env(&toml, &ims_and_static_env()).await;
    run_scripted_sequence(&proxy, &ims).await;

    let answer = get(&proxy.admin_url("/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text();
    for (series, expected) in SCRIPTED_VALUES {
        assert_eq!(value(&text, series), expected, "{series}");
    }
    for series in ABSENT {
        assert_eq!(sample(&text, series), None, "{series} must not exist");
    }
    assert_process_families(&text);
    assert_gauge_and_histograms(&text);
    assert_metric_types(&text);

    // Reloads are counted by outcome: one good, one rejected.
    reload_once_then_reject_a_broken_file(&proxy, &toml).await;
    let text = proxy.metrics().await;
    assert_reload_counts(&text, 1.0, 1.0);
    assert_eq!(
        value(&text, "tokenbroker_config_last_reload_successful"),
        0.0,
        "the last one was rejected"
    );
    assert_eq!(
        sample(
            &text,
            r#"tokenbroker_token_renewals_total{tenant="ims",outcome="success"}"#
        ),
        Some(2.0),
        "an unchanged tenant keeps its token and its counters across a reload"
    );
    proxy.stop().await;
}

// === /tenants ===

/// `ims` (valid token), `plain` (static, limited, base path `/base`) and `broken` (an IMS tenant
/// whose token endpoint is a closed port).
fn three_tenants_config(ims: &ImsSandbox, upstream: &Upstream) -> String {
    let closed = unused_addr();
    let broken = format!(
        "\n[[tenant]]\nname = \"broken\"\nprovider = \"adobe_ims\"\nupstream = \"{}\"\ntoken_url = \"http://{closed}/ims/token/v3\"\nclient_id = \"x\"\nclient_secret = {{ env = \"IMS_SECRET\" }}\nscopes = [\"openid\"]\n",
        ims.base_url()
    );
    let limited = r#"rate_limit = { per_second = 3, burst = 7, max_wait = "2s" }"#;
    format!(
        "{SERVER}{}{}{broken}",
        ims_tenant("ims", ims, ""),
        static_tenant("plain", &format!("{}/base", upstream.url()), limited),
    )
}

fn assert_ims_entry(entry: &serde_json::Value, ims: &ImsSandbox) {
    assert_eq!(entry["provider"], "adobe_ims");
    assert_eq!(entry["upstream"], ims.base_url());
    assert_eq!(entry["token"]["state"], "valid");
    assert_eq!(entry["token"]["generation"], 1);
    let expires_in = entry["token"]["expires_in_s"].as_u64().expect("seconds");
    assert!((86_000..=86_399).contains(&expires_in), "{expires_in}");
    let now = unix_now();
    let renewed = entry["token"]["last_renewal_unix"].as_u64().expect("a renewal time");
    assert!(renewed <= now && now - renewed < 60, "{renewed} vs {now}");
    assert_eq!(entry["token"]["last_error"], serde_json::Value::Null);
    assert_eq!(entry["limiter"], serde_json::Value::Null, "no limiter configured");
}

fn assert_broken_entry(entry: &serde_json::Value) {
    assert_eq!(entry["token"]["state"], "failed");
    assert_eq!(entry["token"]["expires_in_s"], serde_json::Value::Null);
    let error = entry["token"]["last_error"].as_str().expect("the last error");
    assert!(!error.is_empty());
    assert!(entry["token"]["renewals_failed"].as_u64() >= Some(1));
}

fn assert_plain_entry(entry: &serde_json::Value, upstream: &Upstream) {
    assert_eq!(entry["provider"], "static");
    assert_eq!(entry["upstream"], format!("{}/base", upstream.url()));
    assert_eq!(entry["limiter"]["per_second"], 3);
    assert_eq!(entry["limiter"]["burst"], 7);
    assert_eq!(entry["limiter"]["granted_total"], 1);
    assert_eq!(entry["limiter"]["rejected_total"], 0);
    assert_eq!(
        entry["limiter"]["waiting_by_class"],
        serde_json::json!({ "interactive": 0, "standard": 0, "batch": 0 })
    );
}

#[tokio::test]
async fn tenants_shows_state_but_never_a_token_or_secret() {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS");
    let upstream = Upstream::start().await;
    let proxy = Proxy::start_with_env(&three_tenants_config(&ims, &upstream), &ims_and_static_env()).await;
    assert_eq!(
        get(&proxy.url("/ims/sandbox-tenant/V1/products")).await.status,
        StatusCode::OK
    );
    assert_eq!(get(&proxy.url("/plain/x")).await.status, StatusCode::OK);
    let failed = eventually(Duration::from_secs(5), || async {
        get(&proxy.admin_url("/tenants")).await.json()["tenants"][0]["token"]["state"] == "failed"
    })
    .await;
    assert!(failed, "the tenant with a closed token port reports its failure");

    let answer = get(&proxy.admin_url("/tenants")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/json");
    let json = answer.json();
    let tenants = json["tenants"].as_array().expect("a list");
    let names: Vec<_> = tenants.iter().map(|t| t["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["broken", "ims", "plain"]);
    assert_ims_entry(&tenants[1], &ims);
    assert_broken_entry(&tenants[0]);
    assert_plain_entry(&tenants[2], &upstream);

    let mut secrets = vec![
        sandbox::IMS_CLIENT_SECRET.to_owned(),
        "admin-static-credential".to_owned(),
    ];
    secrets.extend(ims.issued_tokens());
    assert!(ims.issued_tokens().len() == 1);
    assert_no_secret_in("/tenants", &answer.text(), &secrets);
    proxy.stop().await;
}

#[tokio::test]
async fn admin_answers_get_only_on_its_five_paths() {
    let upstream = Upstream::start().await;
    let literal = static_tenant("acme", &upstream.url(), "").replace("{ env = \"STATIC_VALUE\" }", "\"Bearer x\"");
    let proxy = Proxy::start(&format!("{SERVER}{literal}")).await;
    for path in ["/", "/healthz", "/readyz", "/metrics", "/tenants"] {
        let answer = get(&proxy.admin_url(path)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.headers["cache-control"], "no-store", "{path}");
        let post = Request::post(proxy.admin_url(path))
            .body(Full::default())
            .expect("valid request");
        assert_eq!(send(post).await.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
    let metrics = get(&proxy.admin_url("/metrics")).await;
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/openmetrics-text"))
    );
    assert_eq!(get(&proxy.admin_url("/acme/x")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(upstream.started(), 0, "the admin listener never proxies");
    proxy.stop().await;
}
