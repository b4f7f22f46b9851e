//! SHOPLINE signed token endpoints, grace period, single-use codes and the leaky bucket.

use std::time::Duration;

use http::{Method, StatusCode};

use super::{Reply, send};
use crate::sandbox::shopline::{api::LeakyBucket, iso8601_utc};
use crate::sandbox::{
    SHOPLINE_APP_KEY, SHOPLINE_APP_SECRET, SHOPLINE_AUTH_CODE, ShoplineOptions, ShoplineSandbox, shopline_sign,
};

async fn fake(options: ShoplineOptions) -> ShoplineSandbox {
    ShoplineSandbox::start(options).await.expect("fake SHOPLINE starts")
}

/// A token call signed with `secret` at `timestamp` (ms).
async fn signed(store: &ShoplineSandbox, action: &str, body: &str, secret: &str, timestamp: u64) -> Reply {
    let url = format!("{}/admin/oauth/token/{action}", store.base_url());
    let timestamp = timestamp.to_string();
    let sign = shopline_sign(secret, body.as_bytes(), &timestamp);
    let headers = [
        ("content-type", "application/json"),
        ("appkey", SHOPLINE_APP_KEY),
        ("timestamp", timestamp.as_str()),
        ("sign", sign.as_str()),
    ];
    send(Method::POST, &url, &headers, body.to_owned()).await
}

async fn refresh(store: &ShoplineSandbox) -> String {
    let reply = signed(store, "refresh", "", SHOPLINE_APP_SECRET, crate::clock::unix_millis()).await;
    assert_eq!(reply.json()["code"], 200, "{:?}", reply.body);
    reply.json()["data"]["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned()
}

async fn products(store: &ShoplineSandbox, token: &str) -> Reply {
    let url = format!(
        "{}/admin/openapi/v20230901/products/products.json?limit=2",
        store.base_url()
    );
    send(Method::GET, &url, &[("authorization", &format!("Bearer {token}"))], "").await
}

#[tokio::test]
async fn create_accepts_a_correct_signature_and_a_code_only_once() {
    let store = fake(ShoplineOptions::default()).await;
    let body = format!(r#"{{"code":"{SHOPLINE_AUTH_CODE}"}}"#);
    let now = crate::clock::unix_millis();
    let reply = signed(&store, "create", &body, SHOPLINE_APP_SECRET, now).await;
    let envelope = reply.json();
    assert_eq!(
        (envelope["code"].as_u64(), envelope["i18nCode"].as_str()),
        (Some(200), Some("SUCCESS"))
    );
    let token = envelope["data"]["accessToken"].as_str().expect("token");
    let exp = crate::auth::jwt::exp(token).expect("JWT exp");
    assert!((exp * 1000).abs_diff(now + 36_000_000) < 60_000, "lives 10 h");
    assert!(
        envelope["data"]["expireTime"]
            .as_str()
            .is_some_and(|t| t.ends_with("+00:00"))
    );
    assert_eq!(products(&store, token).await.status, StatusCode::OK);

    let again = signed(&store, "create", &body, SHOPLINE_APP_SECRET, now).await.json();
    assert_eq!(again["i18nCode"], "CODE_INVALID");
    assert_eq!((store.create_calls(), store.token_calls()), (2, 2));
}

#[tokio::test]
async fn rejects_wrong_signature_stale_timestamp_and_wrong_appkey() {
    let store = fake(ShoplineOptions::default()).await;
    let now = crate::clock::unix_millis();
    let wrong = signed(&store, "refresh", "", "not-the-secret", now).await;
    assert_eq!(wrong.json()["i18nCode"], "SIGN_ERROR");
    assert_ne!(wrong.json()["code"], 200);
    let eleven_minutes_ago = now - 11 * 60 * 1000;
    let stale = signed(&store, "refresh", "", SHOPLINE_APP_SECRET, eleven_minutes_ago).await;
    assert_eq!(stale.json()["i18nCode"], "TIMESTAMP_EXPIRED");
    // A signature over a different body (`{}` instead of empty) must not verify either.
    let url = format!("{}/admin/oauth/token/refresh", store.base_url());
    let ts = now.to_string();
    let sign = shopline_sign(SHOPLINE_APP_SECRET, b"", &ts);
    let tampered = [
        ("appkey", SHOPLINE_APP_KEY),
        ("timestamp", ts.as_str()),
        ("sign", sign.as_str()),
    ];
    assert_eq!(
        send(Method::POST, &url, &tampered, "{}").await.json()["i18nCode"],
        "SIGN_ERROR"
    );
    let other_app = [("appkey", "other"), ("timestamp", ts.as_str()), ("sign", sign.as_str())];
    assert_eq!(
        send(Method::POST, &url, &other_app, "").await.json()["i18nCode"],
        "APPKEY_INVALID"
    );
    assert_eq!((store.refresh_calls(), store.current_token()), (4, None));
}

#[tokio::test]
async fn refresh_keeps_the_previous_token_valid_for_the_grace_period() {
    let store = fake(ShoplineOptions::default()).await;
    let first = refresh(&store).await;
    let second = refresh(&store).await;
    assert_ne!(first, second);
    assert_eq!(
        products(&store, &first).await.status,
        StatusCode::OK,
        "still in its 5-minute grace"
    );
    assert_eq!(products(&store, &second).await.status, StatusCode::OK);

    store.set_grace(Duration::ZERO);
    let third = refresh(&store).await;
    let reply = products(&store, &second).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["errors"], "ACCESS_TOKEN is expired!");
    assert!(reply.headers.contains_key("traceid"));
    assert_eq!(store.current_token(), Some(third));
    assert_eq!(store.refresh_calls(), 3);
}

#[tokio::test]
async fn api_throttles_beyond_the_bucket_and_can_lock_the_store() {
    let options = ShoplineOptions {
        burst: 3,
        lock_after_throttled: Some(2),
        ..ShoplineOptions::default()
    };
    let store = fake(options).await;
    let token = refresh(&store).await;
    for _ in 0..3 {
        assert_eq!(products(&store, &token).await.status, StatusCode::OK);
    }
    let throttled = products(&store, &token).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.json()["errors"], "Too many request");
    assert_eq!(throttled.headers["retry-after"], "1");
    assert_eq!(products(&store, &token).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(products(&store, &token).await.status, StatusCode::LOCKED);
    assert_eq!((store.throttled_calls(), store.api_calls()), (2, 6));
    let arrivals = store.api_arrivals();
    assert_eq!(
        arrivals.len(),
        6,
        "every API call is timed, throttled and locked ones too"
    );
    assert!(arrivals.windows(2).all(|w| w[0] <= w[1]), "in arrival order");
    store.set_locked(false);
    assert_eq!(
        products(&store, "unknown").await.json()["errors"],
        "ACCESS_TOKEN is invalid!"
    );
}

#[tokio::test(start_paused = true)]
async fn leaky_bucket_admits_a_burst_then_four_per_second() {
    let mut bucket = LeakyBucket::new(4, 40);
    let start = tokio::time::Instant::now();
    assert!((0..40).all(|_| bucket.admit(start).is_ok()));
    assert_eq!(bucket.admit(start), Err(Duration::from_millis(250)));
    tokio::time::advance(Duration::from_millis(250)).await;
    assert!(bucket.admit(tokio::time::Instant::now()).is_ok());
    assert!(bucket.admit(tokio::time::Instant::now()).is_err());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!((0..40).all(|_| bucket.admit(tokio::time::Instant::now()).is_ok()));
}

#[test]
fn expire_time_is_iso_8601_with_milliseconds() {
    assert_eq!(iso8601_utc(1_760_987_888_465), "2025-10-20T19:18:08.465+00:00");
    assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00.000+00:00");
    assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000+00:00");
}
