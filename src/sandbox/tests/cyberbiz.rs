//! CYBERBIZ tokens, the 5-per-second window and the 2 MB body limit.

use http::{Method, StatusCode};

use super::send;
use crate::sandbox::{CYBERBIZ_BODY_LIMIT, CyberbizOptions, CyberbizSandbox};

async fn fake(options: CyberbizOptions) -> CyberbizSandbox {
    CyberbizSandbox::start(options).await.expect("fake CYBERBIZ starts")
}

#[tokio::test]
async fn minted_tokens_open_the_api_and_unknown_ones_get_401() {
    let shop = fake(CyberbizOptions::default()).await;
    let token = shop.token();
    let claims = crate::auth::jwt::claims(&token).expect("JWT");
    let (iat, exp) = (
        claims["iat"].as_u64().expect("iat"),
        claims["exp"].as_u64().expect("exp"),
    );
    assert_eq!(exp - iat, 7200);
    assert_eq!(claims["shop_domain"], "sandbox.cyberbiz.co");
    let url = format!("{}/v1/products", shop.base_url());
    let ok = send(Method::GET, &url, &[("authorization", &format!("Bearer {token}"))], "").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers["x-page"], "1");
    let denied = send(Method::GET, &url, &[("authorization", "Bearer forged")], "").await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(denied.json(), serde_json::json!({"error": ["無權使用該 API"]}));
}

#[tokio::test]
async fn more_than_five_requests_in_a_second_get_429() {
    let shop = fake(CyberbizOptions::default()).await;
    let auth = format!("Bearer {}", shop.token());
    let url = format!("{}/shop", shop.base_url());
    let started = tokio::time::Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(send(Method::GET, &url, &[("authorization", &auth)], "").await.status);
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(ok + limited, 7);
    assert!(ok <= 5 || started.elapsed().as_secs() >= 1, "{statuses:?}");
    if started.elapsed().as_millis() < 1000 {
        assert_eq!((ok, limited, shop.requests_over_limit()), (5, 2, 2));
        assert_eq!(shop.max_requests_in_any_second(), 7);
    }
}

#[tokio::test]
async fn bodies_over_two_megabytes_get_413() {
    let options = CyberbizOptions {
        max_per_second: 1000,
        ..CyberbizOptions::default()
    };
    let shop = fake(options).await;
    let auth = format!("Bearer {}", shop.token());
    let url = format!("{}/v1/products", shop.base_url());
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let at_limit = vec![b' '; CYBERBIZ_BODY_LIMIT as usize];
    let reply = send(Method::POST, &url, &headers, at_limit).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.echo()["body_length"], CYBERBIZ_BODY_LIMIT);
    let over = vec![b' '; CYBERBIZ_BODY_LIMIT as usize + 1];
    assert_eq!(
        send(Method::POST, &url, &headers, over).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(shop.bodies_too_large(), 1);
    assert_eq!(shop.last_api_request().map(|r| r.method), Some(Method::POST));
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused() {
    let shop = fake(CyberbizOptions::default()).await;
    let url = format!("{}/v2/product_feeds", shop.base_url());
    let expired = shop.token_with_ttl(std::time::Duration::ZERO);
    let reply = send(
        Method::GET,
        &url,
        &[("authorization", &format!("Bearer {expired}"))],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let token = shop.token();
    shop.revoke_all();
    let reply = send(Method::GET, &url, &[("authorization", &format!("Bearer {token}"))], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(shop.api_calls(), 2);
}

/// A shop that does not throttle, and a GET with its token.
async fn unthrottled() -> (CyberbizSandbox, String) {
    let shop = fake(CyberbizOptions {
        max_per_second: 1000,
        ..CyberbizOptions::default()
    })
    .await;
    let token = shop.token();
    (shop, token)
}

async fn get(shop: &CyberbizSandbox, token: &str, path: &str) -> super::Reply {
    let url = format!("{}{path}", shop.base_url());
    send(Method::GET, &url, &[("authorization", &format!("Bearer {token}"))], "").await
}

#[tokio::test]
async fn feeds_and_shop_come_in_the_documented_envelopes() {
    let (shop, token) = unthrottled().await;
    let feeds = get(&shop, &token, "/v2/product_feeds").await;
    assert_eq!(feeds.status, StatusCode::OK);
    let feeds = feeds.json()["product_feeds"]
        .as_array()
        .cloned()
        .expect("product_feeds");
    assert_eq!(feeds.len(), 4);
    for feed in &feeds {
        let keys: Vec<&String> = feed.as_object().expect("an object").keys().collect();
        assert_eq!(keys, ["mime_type", "name", "url"], "{feed}");
    }
    let info = get(&shop, &token, "/shop").await.json()["shop_info"].clone();
    assert_eq!(info["id"], 7109);
    assert_eq!(info["primary_domain"], "sandbox.cyberbiz.co");
    assert_eq!(info["currency"], "TWD");
}

#[tokio::test]
async fn lists_are_bare_arrays_paged_with_x_headers() {
    let (shop, token) = unthrottled().await;
    let first = get(&shop, &token, "/v1/customers?per_page=2").await;
    assert_eq!(first.json().as_array().map(Vec::len), Some(2));
    let header = |reply: &super::Reply, name: &str| reply.headers[name].to_str().expect("ASCII").to_owned();
    assert_eq!(
        [
            "x-page",
            "x-per-page",
            "x-total",
            "x-total-pages",
            "x-next-page",
            "x-prev-page"
        ]
        .map(|h| header(&first, h)),
        ["1", "2", "3", "2", "2", ""]
    );
    let second = get(&shop, &token, "/v1/customers?per_page=2&page=2").await;
    let customer = &second.json()[0];
    assert_eq!(customer["id"], 3);
    assert!(
        customer["created_at"]
            .as_str()
            .is_some_and(|t| t.len() == 19 && !t.contains('T'))
    );
    assert_eq!(
        (header(&second, "x-next-page"), header(&second, "x-prev-page")),
        (String::new(), "1".to_owned())
    );
    let products = get(&shop, &token, "/v1/products").await.json();
    assert_eq!(products[0]["product_variants"][0]["product_id"], products[0]["id"]);
    assert!(products[0]["price"].is_f64(), "money is a float: {}", products[0]);
}
