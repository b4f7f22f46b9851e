//! The real provider protocols end to end (each provider's facts are in docs/providers.md): the
//! proxy against each sandbox fake over real sockets, asserting what the fake saw (secrets tried,
//! signed calls, grants redeemed, headers upstream). `tokenbroker demo` has its own module.

use std::time::Duration;

use http::StatusCode;
use tokenbroker::sandbox::{
    self, ImsOptions, ImsSandbox, ShoplineOptions, ShoplineSandbox, VantageOptions, VantageSandbox,
};
use tokio::time::Instant;

use crate::sandboxed::{SERVER, adobe_tenant, shopline_tenant, start_proxy, vantage_tenant};
use crate::support::{Binary, Proxy, env, eventually, get, sample};

const ORG_ID: &str = "ABCDEF0123456789ABCDEF01@AdobeOrg";

#[tokio::test]
async fn adobe_rotates_to_the_second_secret_and_sends_the_accs_headers() {
    // The credential was rotated at Adobe: only the new secret is valid now.
    let ims = ImsSandbox::start(ImsOptions {
        client_secrets: vec!["new-secret".to_owned()],
        ..ImsOptions::default()
    })
    .await
    .expect("start the IMS fake");
    let extra =
        format!("client_secrets = [{{ env = \"OLD_SECRET\" }}, {{ env = \"NEW_SECRET\" }}]\norg_id = \"{ORG_ID}\"");
    let toml = format!("{SERVER}{}", adobe_tenant("adobe", &ims, &ims.base_url(), &extra));
    let proxy = Proxy::start_with_env(
        &toml,
        &env(&[("OLD_SECRET", "old-secret"), ("NEW_SECRET", "new-secret")]),
    )
    .await;

    let answer = get(&proxy.url("/adobe/rest/default/V1/products?searchCriteria[pageSize]=3")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(ims.token_calls(), 2, "the old secret was refused, the new one accepted");
    assert_eq!(ims.tokens_issued(), 1);
    assert_eq!(answer.json()["items"].as_array().map(Vec::len), Some(3));

    let seen = ims.last_api_request().expect("the API was called");
    assert_eq!(
        seen.path,
        format!("/{}/V1/products", sandbox::ACCS_TENANT_ID),
        "preset rewrite"
    );
    assert_eq!(
        seen.query.as_deref(),
        Some("searchCriteria[pageSize]=3"),
        "query byte for byte"
    );
    assert_eq!(seen.headers["store"], "default", "the store code travels as a header");
    assert_eq!(seen.headers["x-api-key"], sandbox::IMS_CLIENT_ID);
    assert_eq!(seen.headers["x-gw-ims-org-id"], ORG_ID);

    // Without a store code the preset still strips /rest and sends no Store header.
    assert_eq!(
        get(&proxy.url("/adobe/rest/V1/store/storeViews")).await.status,
        StatusCode::OK
    );
    let seen = ims.last_api_request().expect("the API was called");
    assert_eq!(seen.path, format!("/{}/V1/store/storeViews", sandbox::ACCS_TENANT_ID));
    assert!(seen.headers.get("store").is_none());
    assert_eq!(ims.token_calls(), 2, "the token is reused");
    proxy.stop().await;
}

/// The real binary's config: `adobe` with `client_secrets = [secrets]` and `scopes = [scopes]`,
/// renewing on any 401 (`min_token_age = "0s"`).
fn rotation_config(ims: &ImsSandbox, secrets: &str, scopes: &str) -> String {
    format!(
        "{SERVER}\n[[tenant]]\nname = \"adobe\"\nprovider = \"adobe_ims\"\nupstream = \"{}\"\n\
         token_url = \"{}\"\nclient_id = \"{}\"\nscopes = [{scopes}]\nclient_secrets = [{secrets}]\n\
         min_token_age = \"0s\"\n",
        ims.api_base_url(),
        ims.token_url(),
        sandbox::IMS_CLIENT_ID,
    )
}

/// Replaces the binary's config with `toml` and reloads it (SIGHUP); waits for the `count`th
/// successful reload.
async fn reload(binary: &Binary, toml: &str, count: f64) {
    binary.replace_config(toml);
    binary.signal("HUP");
    let series = r#"tokenbroker_config_reloads_total{outcome="success"}"#;
    let applied = eventually(Duration::from_secs(5), || async {
        sample(&binary.metrics().await, series) == Some(count)
    })
    .await;
    assert!(applied, "reload {count} applied:\n{}", binary.logs());
}

/// One API call through `adobe`, answered 200; then the token calls IMS has seen.
async fn call(binary: &Binary, ims: &ImsSandbox) -> usize {
    let answer = get(&binary.url("/adobe/rest/V1/store/storeViews")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    ims.token_calls()
}

#[tokio::test]
async fn adobe_keeps_to_the_working_secret_across_renewals_and_reloads() {
    // Adobe rotated the credential: only the second configured secret is valid.
    let ims = ImsSandbox::start(ImsOptions {
        client_secrets: vec!["new-secret".to_owned()],
        ..ImsOptions::default()
    })
    .await
    .expect("start the IMS fake");
    let (old_new, new_newer) = (
        r#"{ env = "OLD" }, { env = "NEW" }"#,
        r#"{ env = "NEW" }, { env = "NEWER" }"#,
    );
    let (scopes, fewer_scopes) = (r#""openid", "AdobeID", "commerce.accs""#, r#""openid", "AdobeID""#);
    let secrets = [("OLD", "old-secret"), ("NEW", "new-secret"), ("NEWER", "newer-secret")];
    let binary = Binary::start(&rotation_config(&ims, old_new, scopes), &secrets);
    assert_eq!(
        call(&binary, &ims).await,
        2,
        "the old secret refused, the new one accepted"
    );
    // A renewal (the API refuses the token) starts from the secret that worked.
    ims.revoke_all();
    assert_eq!(call(&binary, &ims).await, 3, "renewed with the new secret at once");
    // A reload that replaces the token manager (other scopes) but keeps the list: the same.
    reload(&binary, &rotation_config(&ims, old_new, fewer_scopes), 1.0).await;
    assert_eq!(call(&binary, &ims).await, 4, "after a reload keeping the secrets");
    // A reload that changes the list: the working secret is found by value, now first.
    reload(&binary, &rotation_config(&ims, new_newer, fewer_scopes), 2.0).await;
    assert_eq!(call(&binary, &ims).await, 5, "after a reload moving the working secret");
    assert_eq!(ims.tokens_issued(), 4);
}

const SHOP_PATH: &str = "/shop/admin/openapi/v20230901/products/products.json";

#[tokio::test]
async fn shopline_creates_with_the_code_then_renews_with_signed_refresh() {
    let shop = ShoplineSandbox::start(ShoplineOptions::default())
        .await
        .expect("start the SHOPLINE fake");
    let extra =
        "app_secret = { env = \"SHOPLINE_SECRET\" }\ncode = { env = \"SHOPLINE_CODE\" }\nmin_token_age = \"100ms\"";
    let proxy = start_proxy(&[shopline_tenant("shop", &shop, &shop.base_url(), extra)]).await;

    let answer = get(&proxy.url(SHOP_PATH)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        (shop.create_calls(), shop.refresh_calls()),
        (1, 0),
        "first token by signed token/create"
    );
    let first = shop.current_token().expect("the store issued a token");

    // The store's tokens are revoked; the next request meets a 401 on a token past min_token_age.
    tokio::time::sleep(Duration::from_millis(200)).await;
    shop.revoke_all();
    let answer = get(&proxy.url(SHOP_PATH)).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "replayed with the renewed token: {}",
        answer.text()
    );
    assert_eq!(
        (shop.create_calls(), shop.refresh_calls()),
        (1, 1),
        "renewed by signed token/refresh"
    );
    let renewed = shop.current_token().expect("the store issued a token");
    assert_ne!(first, renewed);
    // New requests carry the new token at once.
    let seen = shop.last_api_request().expect("the API was called");
    assert_eq!(seen.headers["authorization"], format!("Bearer {renewed}").as_str());
    proxy.stop().await;
}

#[tokio::test]
async fn shopline_with_a_wrong_app_secret_answers_token_unavailable() {
    let shop = ShoplineSandbox::start(ShoplineOptions::default())
        .await
        .expect("start the SHOPLINE fake");
    let extra = "app_secret = { env = \"WRONG_SECRET\" }\ncode = { env = \"SHOPLINE_CODE\" }";
    let toml = format!("{SERVER}{}", shopline_tenant("shop", &shop, &shop.base_url(), extra));
    let secrets = env(&[
        ("WRONG_SECRET", "not-the-app-secret"),
        ("SHOPLINE_CODE", sandbox::SHOPLINE_AUTH_CODE),
    ]);
    let proxy = Proxy::start_with_env(&toml, &secrets).await;

    let answer = get(&proxy.url(SHOP_PATH)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.text());
    assert_eq!(answer.headers["tokenbroker-error"], "token_unavailable");
    let detail = answer.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        detail.contains("SIGN_ERROR"),
        "the cause is the refused signature: {detail}"
    );
    assert!(!detail.contains("not-the-app-secret"), "no secret in the error body");
    // token/create was tried with the code, then token/refresh: both refused, nothing issued.
    assert_eq!((shop.create_calls(), shop.refresh_calls()), (1, 1));
    assert_eq!(shop.current_token(), None, "the fake refused every signature");
    assert_eq!(shop.api_calls(), 0, "nothing reached the API without a token");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vantage_renews_with_the_refresh_token_and_falls_back_to_the_password_grant() {
    // 2 s tokens: renewal every ~1 s (50 % of the lifetime).
    let vantage = VantageSandbox::start(VantageOptions {
        token_ttl: Duration::from_secs(2),
        ..VantageOptions::default()
    })
    .await
    .expect("start the Vantage fake");
    let extra = format!(
        "grant = \"password\"\nusername = \"{}\"\npassword = {{ env = \"VANTAGE_PASSWORD\" }}\noffline_access = true\n\
         refresh_before = \"1h\"\nmin_token_age = \"1ms\"",
        sandbox::VANTAGE_USERNAME
    );
    let proxy = start_proxy(&[vantage_tenant("vantage", &vantage, &vantage.base_url(), &extra)]).await;
    let url = proxy.url("/vantage/api/publicapi/v1/skills");
    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(vantage.grant_calls("password"), 1);

    let deadline = Instant::now() + Duration::from_secs(5);
    while vantage.refresh_token_uses() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(vantage.refresh_token_uses() >= 1, "renewed with the refresh token");
    assert_eq!(vantage.grant_calls("password"), 1, "not with the password");
    assert_eq!(
        vantage.refresh_token_reuse_attempts(),
        0,
        "each refresh token redeemed once"
    );
    assert_eq!(get(&url).await.status, StatusCode::OK);

    // Revocation kills the refresh token too: the next renewal must fall back to the password.
    vantage.revoke_all();
    let answer = get(&url).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(vantage.grant_calls("password"), 2, "fell back to the primary grant");
    assert!(
        vantage.refresh_token_reuse_attempts() >= 1,
        "the dead refresh token was tried first"
    );
    proxy.stop().await;
}
