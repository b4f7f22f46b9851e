//! Signature vectors, envelope parsing and the signed calls against a verifying loopback server.

use std::time::UNIX_EPOCH;

use serde_json::json;

use super::*;
use crate::auth::testing::{Canned, FakeEndpoint, Received, fetch, ok, test_http};

const APP_SECRET: &str = "app-secret-xyz";

fn oauth_config(token_url: Uri, code: Option<&str>) -> ShoplineConfig {
    ShoplineConfig {
        handle: "open001".into(),
        credentials: ShoplineCredentials::OAuth {
            app_key: "ak-1".into(),
            app_secret: Secret::from(APP_SECRET),
            code: code.map(Secret::from),
        },
        token_url,
    }
}

fn success(token: &str) -> Canned {
    ok(json!({
        "code": 200, "i18nCode": "SUCCESS", "message": null,
        "data": {"accessToken": token, "expireTime": "2099-01-10T20:00:00.123+08:00", "scope": "read_products,write_products"}
    }))
}

/// Answers like SHOPLINE: 200 envelope when `sign` matches `body + timestamp`, else an error.
fn verifying(request: &Received, token: &str) -> Canned {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let body = std::str::from_utf8(&request.body).unwrap_or("");
    let fresh = header("timestamp")
        .parse::<u64>()
        .is_ok_and(|ts| clock::unix_millis().abs_diff(ts) < 60_000);
    let signed = header("sign") == sign(APP_SECRET, body, header("timestamp"));
    if fresh && signed && header("appkey") == "ak-1" && header("content-type") == "application/json" {
        success(token)
    } else {
        ok(json!({"code": 401, "i18nCode": "SIGN_ERROR", "message": "sign invalid", "data": null}))
    }
}

// === pure pieces ===

#[test]
fn refresh_signature_is_the_hmac_of_the_timestamp_alone() {
    // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",b"1700000000000",hashlib.sha256).hexdigest())'
    assert_eq!(
        sign("secret", "", "1700000000000"),
        "4fe2ce12fd6bec5e0648b23bfbff158ba5fc18b3a214b4c207314671448a95e1"
    );
}

#[test]
fn create_signature_covers_the_exact_body_then_the_timestamp() {
    let body = create_body("abc123");
    assert_eq!(body, r#"{"code":"abc123"}"#);
    // python3 -c 'import hmac,hashlib;print(hmac.new(b"app-secret-xyz",b"{\"code\":\"abc123\"}1700000000000",hashlib.sha256).hexdigest())'
    assert_eq!(
        sign(APP_SECRET, &body, "1700000000000"),
        "44c63dc9f53781973c664a194625c5b3a815b2d57b260aafa012ae406ba659d4"
    );
}

#[test]
fn signed_headers_are_appkey_timestamp_and_sensitive_sign() {
    let headers = signed_headers("ak-1", "secret", "", "1700000000000").expect("headers");
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["appkey", "timestamp", "sign"]);
    assert_eq!(headers[1].1, "1700000000000");
    assert_eq!(
        headers[2].1,
        "4fe2ce12fd6bec5e0648b23bfbff158ba5fc18b3a214b4c207314671448a95e1"
    );
    assert!(headers[2].1.is_sensitive());
}

#[test]
fn endpoints_append_the_token_path_to_the_base() {
    let join = |base: &str| {
        endpoint(&base.parse().expect("uri"), REFRESH_PATH)
            .expect("joined")
            .to_string()
    };
    assert_eq!(
        join("https://open001.myshopline.com"),
        "https://open001.myshopline.com/admin/oauth/token/refresh"
    );
    assert_eq!(
        join("http://127.0.0.1:8080/"),
        "http://127.0.0.1:8080/admin/oauth/token/refresh"
    );
    assert_eq!(
        join("http://egress:81/shopline/?x=1"),
        "http://egress:81/shopline/admin/oauth/token/refresh"
    );
}

#[test]
fn envelope_reads_token_and_expire_time_with_offset() {
    let body = json!({"code": 200, "data": {"accessToken": "opaque", "expireTime": "2024-01-10T20:00:00.123+08:00"}});
    let granted = parse_envelope(body.to_string().as_bytes()).expect("granted");
    assert_eq!(granted.access.expose(), "opaque");
    // 2024-01-10T12:00:00.123Z
    let expected = UNIX_EPOCH + Duration::from_millis(1_704_888_000_123);
    assert_eq!(granted.expiry, Some(Expiry::At(expected)));
    assert!(granted.refresh_token.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_far_future_expire_time_gives_a_token_of_a_year() {
    let year = crate::clock::MAX_TOKEN_LIFETIME;
    let huge_jwt = jwt::encode_unsigned(&json!({"exp": 10_000_000_000_000_000_000_u64}));
    for expire_time in [
        json!("9999-12-31T23:59:59Z"),
        json!(u64::MAX),
        json!("184467440737095516150"),
    ] {
        let body = json!({"code": 200, "data": {"accessToken": huge_jwt, "expireTime": expire_time}});
        let granted = parse_envelope(body.to_string().as_bytes()).expect("granted");
        let token = granted.into_token(0, None).expect("used");
        assert_eq!(token.expires_at, Some(token.obtained_at + year), "{expire_time}");
    }
}

#[test]
fn envelope_takes_the_earlier_of_expire_time_and_jwt_exp() {
    let jwt = jwt::encode_unsigned(&json!({"exp": 1_704_880_000, "iss": "ysoul"}));
    let body = json!({"code": "200", "data": {"accessToken": jwt, "expireTime": "2024-01-10T20:00:00+08:00"}});
    let granted = parse_envelope(body.to_string().as_bytes()).expect("granted");
    assert_eq!(
        granted.expiry,
        Some(Expiry::At(UNIX_EPOCH + Duration::from_secs(1_704_880_000)))
    );
    // Unparsable expireTime: the JWT alone.
    let body = json!({"code": 200, "data": {"accessToken": jwt, "expireTime": "2024-01-10"}});
    let granted = parse_envelope(body.to_string().as_bytes()).expect("granted");
    assert_eq!(
        granted.expiry,
        Some(Expiry::At(UNIX_EPOCH + Duration::from_secs(1_704_880_000)))
    );
}

#[test]
fn envelope_errors_under_http_200_are_rejections() {
    let body = json!({"code": 40001, "i18nCode": "REQUEST_FREQUENTLY", "message": "too frequent", "data": null});
    let error = parse_envelope(body.to_string().as_bytes()).expect_err("rejected");
    let ProviderError::Rejected {
        status,
        code,
        description,
    } = error
    else {
        panic!("not Rejected")
    };
    assert_eq!(
        (status, code.as_str(), description.as_deref()),
        (200, "REQUEST_FREQUENTLY", Some("too frequent"))
    );

    let error = parse_envelope(br#"{"code":500}"#).expect_err("rejected");
    assert!(matches!(error, ProviderError::Rejected { ref code, .. } if code == "500"));
    for body in [
        &br#"{"data":{"accessToken":"t"}}"#[..],
        br#"{"code":200,"data":{}}"#,
        b"not json",
    ] {
        assert!(matches!(parse_envelope(body), Err(ProviderError::BadResponse(_))));
    }
}

// === private apps ===

#[tokio::test]
async fn private_apps_read_the_jwt_and_never_call_out() {
    let exp = clock::unix_millis() / 1000 + 3 * 365 * 86_400;
    let access = jwt::encode_unsigned(&json!({"exp": exp, "iss": "ysoul"}));
    let shopline = Shopline::new(ShoplineConfig {
        handle: "open001".into(),
        credentials: ShoplineCredentials::Private {
            access_token: Secret::new(access.clone()),
        },
        // Nothing listens on port 1: any call would fail.
        token_url: "http://127.0.0.1:1".parse().expect("uri"),
    });
    assert!(!shopline.renews());
    let token = fetch(&shopline, None).await.expect("token");
    assert_eq!(token.access.expose(), &access);
    let left = token.expires_at.expect("expiry") - token.obtained_at;
    assert!(left > Duration::from_secs(3 * 365 * 86_400 - 10), "{left:?}");
    assert!(!format!("{shopline:?}").contains(&access));
}

// === on the wire ===

#[tokio::test]
async fn creates_with_the_code_first_then_refreshes_with_an_empty_signed_body() {
    let store = FakeEndpoint::start(|n, req| verifying(req, if n == 0 { "t1" } else { "t2" })).await;
    let shopline = Shopline::new(oauth_config(store.uri(""), Some("code-1")));
    assert!(shopline.renews());
    let http = test_http();
    let first = shopline
        .fetch(FetchCtx {
            http: &http,
            previous: None,
            first_secret: 0,
        })
        .await
        .expect("created");
    assert_eq!(first.access.expose(), "t1");
    let second = shopline
        .fetch(FetchCtx {
            http: &http,
            previous: Some(&first),
            first_secret: 0,
        })
        .await
        .expect("refreshed");
    assert_eq!(second.access.expose(), "t2");
    let got = store.received();
    assert_eq!(
        (got[0].path.as_str(), &got[0].body[..]),
        (CREATE_PATH, &br#"{"code":"code-1"}"#[..])
    );
    assert_eq!((got[1].path.as_str(), &got[1].body[..]), (REFRESH_PATH, &b""[..]));
    assert!(got.iter().all(|r| r.headers.get("authorization").is_none()));
}

#[tokio::test]
async fn a_refused_code_falls_back_to_refresh() {
    let store = FakeEndpoint::start(|_, req| match req.path.as_str() {
        CREATE_PATH => ok(json!({"code": 400, "i18nCode": "CODE_INVALID", "message": "code used"})),
        _ => verifying(req, "t-refreshed"),
    })
    .await;
    let shopline = Shopline::new(oauth_config(store.uri(""), Some("spent")));
    let token = fetch(&shopline, None).await.expect("token");
    assert_eq!(token.access.expose(), "t-refreshed");
    assert_eq!(store.received().len(), 2);
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_by_the_verifying_server() {
    let store = FakeEndpoint::start(|_, req| verifying(req, "never")).await;
    let mut config = oauth_config(store.uri(""), None);
    config.credentials = ShoplineCredentials::OAuth {
        app_key: "ak-1".into(),
        app_secret: Secret::from("wrong-secret"),
        code: None,
    };
    let error = fetch(&Shopline::new(config), None).await.expect_err("bad signature");
    assert!(
        matches!(&error, ProviderError::Rejected { code, .. } if code == "SIGN_ERROR"),
        "{error:?}"
    );
    assert!(!error.to_string().contains("wrong-secret"));
}
