//! Vantage token grants, one-time refresh tokens and the JwtBearer-style 401.

use http::{Method, StatusCode};

use super::{FORM, Reply, form, send};
use crate::sandbox::{
    VANTAGE_CLIENT_ID, VANTAGE_CLIENT_SECRET, VANTAGE_PASSWORD, VANTAGE_USERNAME, VantageOptions, VantageSandbox,
};

async fn fake() -> VantageSandbox {
    VantageSandbox::start(VantageOptions::default())
        .await
        .expect("fake Vantage starts")
}

async fn grant(vantage: &VantageSandbox, fields: &[(&str, &str)]) -> Reply {
    let mut all = vec![
        ("client_id", VANTAGE_CLIENT_ID),
        ("client_secret", VANTAGE_CLIENT_SECRET),
    ];
    all.extend_from_slice(fields);
    send(Method::POST, &vantage.token_url(), &[FORM], form(&all)).await
}

async fn password_grant(vantage: &VantageSandbox, scope: &str) -> Reply {
    let fields = [
        ("grant_type", "password"),
        ("username", VANTAGE_USERNAME),
        ("password", VANTAGE_PASSWORD),
        ("scope", scope),
    ];
    grant(vantage, &fields).await
}

async fn skills(vantage: &VantageSandbox, token: &str) -> Reply {
    let url = format!("{}/api/publicapi/v1/skills", vantage.base_url());
    send(Method::GET, &url, &[("authorization", &format!("Bearer {token}"))], "").await
}

#[tokio::test]
async fn client_credentials_by_post_or_basic_with_several_secrets() {
    use base64::Engine as _;
    let vantage = fake().await;
    let scope = "openid permissions global.wildcard";
    let reply = grant(&vantage, &[("grant_type", "client_credentials"), ("scope", scope)]).await;
    let body = reply.json();
    assert_eq!(
        (body["token_type"].as_str(), body["scope"].as_str()),
        (Some("Bearer"), Some(scope))
    );
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(skills(&vantage, token).await.status, StatusCode::OK);

    vantage.set_valid_secrets(vec![VANTAGE_CLIENT_SECRET.to_owned(), "second".to_owned()]);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{VANTAGE_CLIENT_ID}:second"));
    let auth = format!("Basic {basic}");
    let body = form(&[("grant_type", "client_credentials")]);
    let url = vantage.tenant_token_url();
    assert_eq!(
        send(Method::POST, &url, &[FORM, ("authorization", &auth)], body)
            .await
            .status,
        StatusCode::OK
    );

    let wrong = send(
        Method::POST,
        &url,
        &[FORM],
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", VANTAGE_CLIENT_ID),
            ("client_secret", "wrong"),
        ]),
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.json()["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_client"))
    );
    assert_eq!(
        (vantage.token_calls(), vantage.grant_calls("client_credentials")),
        (3, 2)
    );
}

#[tokio::test]
async fn refresh_tokens_are_one_time() {
    let vantage = fake().await;
    let first = password_grant(&vantage, "openid permissions global.wildcard offline_access")
        .await
        .json();
    let first_refresh = first["refresh_token"]
        .as_str()
        .expect("offline_access gives a refresh token");
    let refresh = |token: &str| {
        let token = token.to_owned();
        let vantage = &vantage;
        async move { grant(vantage, &[("grant_type", "refresh_token"), ("refresh_token", &token)]).await }
    };
    let second = refresh(first_refresh).await.json();
    let second_refresh = second["refresh_token"].as_str().expect("rotated refresh token");
    assert_ne!(first_refresh, second_refresh);
    assert_eq!(second["scope"], "openid permissions global.wildcard offline_access");

    let reused = refresh(first_refresh).await;
    assert_eq!(
        (reused.status, reused.json()["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(refresh(second_refresh).await.status, StatusCode::OK);
    assert_eq!(
        (vantage.refresh_token_uses(), vantage.refresh_token_reuse_attempts()),
        (2, 1)
    );
    assert_eq!(vantage.grant_calls("refresh_token"), 3);
    assert_eq!(vantage.invalid_grants(), 1, "the reuse is counted as invalid_grant");
}

#[tokio::test]
async fn no_refresh_token_without_offline_access_and_grant_errors() {
    let vantage = fake().await;
    let plain = password_grant(&vantage, "openid permissions global.wildcard")
        .await
        .json();
    assert!(plain.get("refresh_token").is_none());
    let bad_password = grant(
        &vantage,
        &[
            ("grant_type", "password"),
            ("username", VANTAGE_USERNAME),
            ("password", "nope"),
        ],
    )
    .await;
    assert_eq!(bad_password.json()["error"], "invalid_grant");
    let cc_offline = grant(
        &vantage,
        &[("grant_type", "client_credentials"), ("scope", "openid offline_access")],
    )
    .await;
    assert_eq!(cc_offline.json()["error"], "invalid_scope");
    let odd = grant(&vantage, &[("grant_type", "urn:example:odd")]).await;
    assert_eq!(odd.json()["error"], "unsupported_grant_type");
    let unknown_scope = grant(
        &vantage,
        &[("grant_type", "client_credentials"), ("scope", "openid admin")],
    )
    .await;
    assert_eq!(unknown_scope.json()["error"], "invalid_scope");
}

#[tokio::test]
async fn api_answers_401_with_empty_body_and_challenge() {
    let vantage = fake().await;
    let token = password_grant(&vantage, "openid").await.json()["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let url = format!("{}/api/publicapi/v1/transactions/abc", vantage.base_url());
    let ok = send(Method::GET, &url, &[("authorization", &format!("Bearer {token}"))], "").await;
    assert_eq!(ok.json()["id"], "abc");
    vantage.revoke_all();
    let denied = skills(&vantage, &token).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert!(denied.body.is_empty());
    assert_eq!(denied.headers["www-authenticate"], r#"Bearer error="invalid_token""#);
    assert_eq!(vantage.api_calls(), 2);
    assert_eq!(vantage.rejected_api_calls(), 1, "only the revoked token's call");
}

#[tokio::test]
async fn discovery_points_at_the_tenant_token_endpoint() {
    let vantage = fake().await;
    let url = format!(
        "{}/auth2/{}/.well-known/openid-configuration",
        vantage.base_url(),
        crate::sandbox::VANTAGE_TENANT_ID
    );
    let doc = send(Method::GET, &url, &[], "").await.json();
    assert_eq!(doc["token_endpoint"], vantage.tenant_token_url());
}
