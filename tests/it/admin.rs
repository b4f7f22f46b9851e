//! The admin listener end to end (SPEC 6): readiness as tokens come and go, every metric with
//! exact values after a scripted sequence of requests, and `/tenants`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokenbroker::sandbox::{self, ImsOptions, ImsSandbox};

use crate::support::tenants::{SERVER, ims_tenant, static_tenant};
use crate::support::upstream::Upstream;
use crate::support::{Proxy, env, eventually, get, sample, send};

const IMS_SECRET: (&str, &str) = ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET);
const STATIC_VALUE: &str = "Bearer admin-static-credential";

/// A bearer JWT whose `exp` is `secs_from_now` ahead (the static provider reads it, unverified).
fn jwt_expiring_in(secs_from_now: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = serde_json::json!({ "exp": now + secs_from_now }).to_string();
    format!(
        "Bearer {}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

fn failing_tenants(answer: &crate::support::Answer) -> Vec<String> {
    let json = answer.json();
    json["failing"]
        .as_array()
        .unwrap_or_else(|| panic!("a failing list: {json}"))
        .iter()
        .map(|f| f["tenant"].as_str().expect("tenant name").to_owned())
        .collect()
}

#[tokio::test]
async fn readiness_follows_the_token_through_start_and_outage() {
    let ims = ImsSandbox::start(ImsOptions {
        token_ttl: Duration::from_secs(2),
        ..ImsOptions::default()
    })
    .await
    .expect("fake IMS");
    // The first two token calls fail: the proxy starts without a token and retries (1 s, 2 s).
    ims.fail_next_token_calls(2);
    let toml = format!("{SERVER}{}", ims_tenant("adobe", &ims, ""));
    let proxy = Proxy::start_with_env(&toml, &env(&[IMS_SECRET])).await;

    let answer = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.text());
    assert_eq!(failing_tenants(&answer), ["adobe"]);
    assert_eq!(answer.json()["ready"], false);
    assert_eq!(get(&proxy.admin_url("/healthz")).await.status, StatusCode::OK);

    let ready = eventually(Duration::from_secs(8), || async {
        get(&proxy.admin_url("/readyz")).await.status == StatusCode::OK
    })
    .await;
    assert!(ready, "ready once the third token call succeeds");
    assert_eq!(
        get(&proxy.admin_url("/readyz")).await.json()["failing"],
        serde_json::json!([])
    );
    assert_eq!(ims.token_calls(), 3);

    // Outage: every renewal fails; once the 2 s token has expired the tenant is not ready.
    ims.fail_next_token_calls(1_000);
    let outage = eventually(Duration::from_secs(6), || async {
        get(&proxy.admin_url("/readyz")).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(outage, "not ready after the token expired with no renewal");
    let answer = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(failing_tenants(&answer), ["adobe"]);
    let reason = answer.json()["failing"][0]["reason"]
        .as_str()
        .expect("reason")
        .to_owned();
    assert!(reason.contains("no valid token"), "{reason}");
    let metrics = get(&proxy.admin_url("/metrics")).await.text();
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

    // Recovery.
    ims.fail_next_token_calls(0);
    let recovered = eventually(Duration::from_secs(8), || async {
        get(&proxy.admin_url("/readyz")).await.status == StatusCode::OK
    })
    .await;
    assert!(recovered, "ready again once a renewal succeeds");
    proxy.stop().await;
}

#[tokio::test]
async fn static_credentials_are_reported_a_day_ahead_and_fail_readiness_only_when_about_to_lapse() {
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let tenant = |name: &str, value_env: &str, extra: &str| {
        format!(
            "\n[[tenant]]\nname = \"{name}\"\nprovider = \"static\"\nupstream = \"{url}\"\nvalue = {{ env = \"{value_env}\" }}\n{extra}\n"
        )
    };
    let toml = format!(
        "{SERVER}{}{}{}{}{}",
        tenant("soon", "SOON", ""),
        tenant("imminent", "IMMINENT", ""),
        tenant("later", "LATER", ""),
        tenant("lapsed", "PLAIN", "expires_at = \"2020-01-01T00:00:00Z\""),
        tenant("forever", "PLAIN", ""),
    );
    // `refresh_before` defaults to 10 min: 5 min left fails readiness, 1 h left is only reported.
    let (soon, imminent, later) = (
        jwt_expiring_in(3600),
        jwt_expiring_in(300),
        jwt_expiring_in(10 * 24 * 3600),
    );
    let proxy = Proxy::start_with_env(
        &toml,
        &env(&[
            ("SOON", &soon),
            ("IMMINENT", &imminent),
            ("LATER", &later),
            ("PLAIN", STATIC_VALUE),
        ]),
    )
    .await;
    let answer = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failing_tenants(&answer), ["imminent", "lapsed"]);
    let expiring: Vec<String> = answer.json()["expiring"]
        .as_array()
        .expect("expiring list")
        .iter()
        .map(|e| e["tenant"].as_str().expect("tenant name").to_owned())
        .collect();
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
    let expires_in = |name: &str| {
        tenants["tenants"]
            .as_array()
            .expect("tenants")
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["token"]["expires_in_s"].clone())
            .expect("tenant listed")
    };
    let soon_s = expires_in("soon").as_u64().expect("seconds");
    assert!((3500..=3600).contains(&soon_s), "{soon_s}");
    assert_eq!(expires_in("forever"), serde_json::Value::Null, "no expiry known");
    proxy.stop().await;
}

/// Every SPEC 6 metric after 3×200, 1×404 from upstream, 1 replay after 401, and on a second
/// tenant 1×200 and one proxy 429.
#[tokio::test]
async fn every_metric_has_the_right_value_after_a_scripted_sequence() {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS");
    let upstream = Upstream::start().await;
    let limited = r#"rate_limit = { per_second = 1, burst = 1, max_wait = "0s" }"#;
    let toml = format!(
        "{SERVER}{}{}",
        ims_tenant("ims", &ims, "min_token_age = \"0s\""),
        static_tenant("limited", &upstream.url(), limited),
    );
    let proxy = Proxy::start_with_env(&toml, &env(&[IMS_SECRET, ("STATIC_VALUE", STATIC_VALUE)])).await;
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

    let answer = get(&proxy.admin_url("/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text();
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} missing in:\n{text}"));
    for (series, expected) in [
        (r#"tokenbroker_requests_total{tenant="ims",status="200"}"#, 4.0),
        (r#"tokenbroker_requests_total{tenant="ims",status="404"}"#, 1.0),
        (r#"tokenbroker_requests_total{tenant="limited",status="200"}"#, 1.0),
        (r#"tokenbroker_requests_total{tenant="limited",status="429"}"#, 1.0),
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
        (r#"tokenbroker_ratelimit_wait_seconds_count{tenant="limited"}"#, 1.0),
        (r#"tokenbroker_ratelimit_wait_seconds_count{tenant="ims"}"#, 0.0),
        (r#"tokenbroker_ratelimit_rejected_total{tenant="limited"}"#, 1.0),
        (r#"tokenbroker_ratelimit_rejected_total{tenant="ims"}"#, 0.0),
        (r#"tokenbroker_unauthorized_replays_total{tenant="ims"}"#, 1.0),
        (r#"tokenbroker_unauthorized_replays_total{tenant="limited"}"#, 0.0),
        (r#"tokenbroker_config_reloads_total{outcome="success"}"#, 0.0),
        (r#"tokenbroker_config_reloads_total{outcome="failure"}"#, 0.0),
    ] {
        assert_eq!(value(series), expected, "{series}");
    }
    let expires_in = value(r#"tokenbroker_token_expires_in_seconds{tenant="ims"}"#);
    assert!(expires_in > 86_000.0 && expires_in <= 86_399.0, "{expires_in}");
    // Histograms are real histograms: cumulative buckets ending in +Inf, and a sum.
    assert_eq!(
        value(r#"tokenbroker_request_duration_seconds_bucket{le="+Inf",tenant="ims"}"#),
        5.0
    );
    assert_eq!(
        value(r#"tokenbroker_request_duration_seconds_bucket{le="60.0",tenant="ims"}"#),
        5.0
    );
    assert_eq!(
        value(r#"tokenbroker_ratelimit_wait_seconds_bucket{le="+Inf",tenant="limited"}"#),
        1.0
    );
    assert_eq!(
        value(r#"tokenbroker_ratelimit_wait_seconds_bucket{le="0.0005",tenant="limited"}"#),
        1.0
    );
    assert!(
        !text.contains("inf"),
        "infinity is written +Inf in OpenMetrics:\n{text}"
    );
    assert_eq!(
        sample(&text, r#"tokenbroker_token_expires_in_seconds{tenant="limited"}"#),
        None,
        "a credential without expiry has no expires_in value"
    );
    assert!(value(r#"tokenbroker_upstream_duration_seconds_sum{tenant="ims"}"#) > 0.0);
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

    // Reloads are counted by outcome: one good, one rejected.
    proxy
        .reload_with_env(&toml, &env(&[IMS_SECRET, ("STATIC_VALUE", STATIC_VALUE)]))
        .await
        .expect("the same config reloads");
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server\n").expect("write");
    let rejected = proxy.reload.reload(tokenbroker::reload::ReloadSource::File(bad)).await;
    assert!(rejected.is_err());
    let text = get(&proxy.admin_url("/metrics")).await.text();
    assert_eq!(
        sample(&text, r#"tokenbroker_config_reloads_total{outcome="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"tokenbroker_config_reloads_total{outcome="failure"}"#),
        Some(1.0)
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

#[tokio::test]
async fn tenants_shows_state_but_never_a_token_or_secret() {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS");
    let upstream = Upstream::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let broken = format!(
        "\n[[tenant]]\nname = \"broken\"\nprovider = \"adobe_ims\"\nupstream = \"{}\"\ntoken_url = \"http://{closed}/ims/token/v3\"\nclient_id = \"x\"\nclient_secret = {{ env = \"IMS_SECRET\" }}\nscopes = [\"openid\"]\n",
        ims.base_url()
    );
    let limited = r#"rate_limit = { per_second = 3, burst = 7, max_wait = "2s" }"#;
    let toml = format!(
        "{SERVER}{}{}{broken}",
        ims_tenant("ims", &ims, ""),
        static_tenant("plain", &format!("{}/base", upstream.url()), limited),
    );
    let proxy = Proxy::start_with_env(&toml, &env(&[IMS_SECRET, ("STATIC_VALUE", STATIC_VALUE)])).await;
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

    let (broken, ims_state, plain) = (&tenants[0], &tenants[1], &tenants[2]);
    assert_eq!(ims_state["provider"], "adobe_ims");
    assert_eq!(ims_state["upstream"], ims.base_url());
    assert_eq!(ims_state["token"]["state"], "valid");
    assert_eq!(ims_state["token"]["generation"], 1);
    let expires_in = ims_state["token"]["expires_in_s"].as_u64().expect("seconds");
    assert!((86_000..=86_399).contains(&expires_in), "{expires_in}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let renewed = ims_state["token"]["last_renewal_unix"]
        .as_u64()
        .expect("a renewal time");
    assert!(renewed <= now && now - renewed < 60, "{renewed} vs {now}");
    assert_eq!(ims_state["token"]["last_error"], serde_json::Value::Null);
    assert_eq!(ims_state["limiter"], serde_json::Value::Null, "no limiter configured");

    assert_eq!(broken["token"]["state"], "failed");
    assert_eq!(broken["token"]["expires_in_s"], serde_json::Value::Null);
    let error = broken["token"]["last_error"].as_str().expect("the last error");
    assert!(!error.is_empty());
    assert!(broken["token"]["renewals_failed"].as_u64() >= Some(1));

    assert_eq!(plain["provider"], "static");
    assert_eq!(plain["upstream"], format!("{}/base", upstream.url()));
    assert_eq!(plain["limiter"]["per_second"], 3);
    assert_eq!(plain["limiter"]["burst"], 7);
    assert_eq!(plain["limiter"]["granted_total"], 1);
    assert_eq!(plain["limiter"]["rejected_total"], 0);

    let text = answer.text();
    let mut secrets = vec![
        sandbox::IMS_CLIENT_SECRET.to_owned(),
        "admin-static-credential".to_owned(),
    ];
    secrets.extend(ims.issued_tokens());
    assert!(ims.issued_tokens().len() == 1);
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "/tenants leaks a secret or token");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn admin_answers_get_only_on_its_four_paths() {
    let upstream = Upstream::start().await;
    let literal = static_tenant("acme", &upstream.url(), "").replace("{ env = \"STATIC_VALUE\" }", "\"Bearer x\"");
    let proxy = Proxy::start(&format!("{SERVER}{literal}")).await;
    for path in ["/healthz", "/readyz", "/metrics", "/tenants"] {
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
