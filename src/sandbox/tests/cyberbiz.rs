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
