//! SHOPLINE signed token endpoints, grace period, single-use codes and the leaky bucket.

use std::time::Duration;

use http::{Method, StatusCode};

use super::{Reply, send};
use crate::sandbox::shopline::{bucket::LeakyBucket, iso8601_utc};
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

/// `products.json` with `query`, on a store that does not throttle.
async fn products_with(store: &ShoplineSandbox, token: &str, query: &str) -> Reply {
    let url = format!(
        "{}/admin/openapi/v20230901/products/products.json{query}",
        store.base_url()
    );
    send(Method::GET, &url, &[("authorization", &format!("Bearer {token}"))], "").await
}

/// The `link` header's URLs by `rel`.
fn links(reply: &Reply) -> Vec<(String, String)> {
    let Some(link) = reply.headers.get("link") else {
        return Vec::new();
    };
    link.to_str()
        .expect("ASCII")
        .split(", ")
        .map(|entry| {
            let (url, rel) = entry.split_once(">; rel=").expect("<url>; rel=\"...\"");
            (rel.trim_matches('"').to_owned(), url.trim_start_matches('<').to_owned())
        })
        .collect()
}

fn ids(reply: &Reply) -> Vec<String> {
    let products = reply.json()["products"].as_array().cloned().unwrap_or_default();
    products
        .iter()
        .map(|p| p["id"].as_str().expect("string ids").to_owned())
        .collect()
}

#[tokio::test]
async fn products_come_in_the_documented_shape_and_page_by_link() {
    let store = fake(ShoplineOptions::default()).await;
    let token = refresh(&store).await;
    let all = products_with(&store, &token, "").await;
    assert_eq!(all.status, StatusCode::OK);
    assert!(all.headers.get("link").is_none(), "one page holds the whole catalogue");
    let every = ids(&all);
    assert_eq!(every.len(), 5);
    let first = &all.json()["products"][0];
    assert!(first["id"].as_str().is_some_and(|id| id.len() == 26), "{first}");
    assert_eq!(first["options"][0]["values"], serde_json::json!(["S", "M"]));
    assert_eq!(first["variants"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["variants"][0]["product_id"], first["id"]);
    assert_eq!(first["images"][0]["src"], first["image"]["src"]);
    assert!(first["created_at"].as_str().is_some_and(|t| t.ends_with("+00:00")));

    let mut pages = vec![products_with(&store, &token, "?limit=2").await];
    while let Some((_, next)) = links(pages.last().expect("a page"))
        .into_iter()
        .find(|(rel, _)| rel == "next")
    {
        assert!(
            next.starts_with(&store.base_url()),
            "absolute URLs on the store's own host: {next}"
        );
        let (_, query) = next.split_once('?').expect("a query");
        assert!(query.starts_with("limit=2&page_info="), "{query}");
        pages.push(products_with(&store, &token, &format!("?{query}")).await);
    }
    let rels: Vec<Vec<String>> = pages
        .iter()
        .map(|p| links(p).into_iter().map(|(rel, _)| rel).collect())
        .collect();
    assert_eq!(rels, [vec!["next"], vec!["next", "previous"], vec!["previous"]]);
    let paged: Vec<String> = pages.iter().flat_map(ids).collect();
    assert_eq!(paged, every, "three pages of 2, 2 and 1, in order, none twice");

    let (_, previous) = links(&pages[2])
        .into_iter()
        .find(|(rel, _)| rel == "previous")
        .expect("previous");
    let (_, query) = previous.split_once('?').expect("a query");
    assert_eq!(
        ids(&products_with(&store, &token, &format!("?{query}")).await),
        ids(&pages[1])
    );
    let bad = products_with(&store, &token, "?page_info=not-a-cursor").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn products_keep_only_the_asked_fields_across_pages() {
    let store = fake(ShoplineOptions::default()).await;
    let token = refresh(&store).await;
    let reply = products_with(&store, &token, "?limit=4&fields=id,title").await;
    let first = reply.json()["products"][0].clone();
    let keys: Vec<&String> = first.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["id", "title"]);
    let (_, next) = links(&reply).into_iter().next().expect("a next page");
    assert!(next.contains("fields=id%2Ctitle"), "{next}");
    let (_, query) = next.split_once('?').expect("a query");
    let last = products_with(&store, &token, &format!("?{query}")).await;
    assert_eq!(ids(&last).len(), 1);
    assert!(last.json()["products"][0].get("variants").is_none());
    assert_eq!(reply.echo()["query"], "limit=4&fields=id,title");
}
