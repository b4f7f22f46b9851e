//! IMS token endpoint and the ACCS-like API.

use std::time::Duration;

use http::{Method, StatusCode};

use super::{FORM, Reply, form, send};
use crate::sandbox::{ACCS_SCOPES, IMS_CLIENT_ID, IMS_CLIENT_SECRET, ImsOptions, ImsSandbox};

async fn fake() -> ImsSandbox {
    ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS starts")
}

async fn request_token(ims: &ImsSandbox, secret: &str, scope: &str) -> Reply {
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", IMS_CLIENT_ID),
        ("client_secret", secret),
        ("scope", scope),
    ]);
    send(Method::POST, &ims.token_url(), &[FORM], body).await
}

async fn token(ims: &ImsSandbox) -> String {
    let reply = request_token(ims, IMS_CLIENT_SECRET, &ACCS_SCOPES.join(",")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.json()["access_token"].as_str().expect("access_token").to_owned()
}

async fn api_get(ims: &ImsSandbox, path_and_query: &str, token: &str) -> Reply {
    let url = format!("{}{path_and_query}", ims.api_base_url());
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-api-key", IMS_CLIENT_ID),
        ("store", "default"),
    ];
    send(Method::GET, &url, &headers, "").await
}

#[tokio::test]
async fn issues_a_token_whose_claims_carry_milliseconds() {
    let ims = fake().await;
    let reply = request_token(&ims, IMS_CLIENT_SECRET, &ACCS_SCOPES.join(",")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    let body = reply.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86_399);
    let claims = crate::auth::jwt::claims(body["access_token"].as_str().expect("token")).expect("JWT");
    assert_eq!(claims["expires_in"], "86399000");
    let created: u64 = claims["created_at"].as_str().expect("string").parse().expect("ms");
    assert!(
        created.abs_diff(crate::clock::unix_millis()) < 60_000,
        "created_at is unix ms"
    );
    assert_eq!((ims.token_calls(), ims.tokens_issued()), (1, 1));
}

/// Fields to override, expected `error`, expected `error_description`.
type Case = (&'static [(&'static str, &'static str)], &'static str, &'static str);

#[tokio::test]
async fn rejects_bad_credentials_and_fields_like_ims() {
    let ims = fake().await;
    let all = ACCS_SCOPES.join(",");
    let cases: [Case; 5] = [
        (
            &[("client_secret", "wrong")],
            "invalid_client",
            "invalid client_secret parameter",
        ),
        (
            &[("client_id", "someone-else")],
            "invalid_client",
            "invalid client_id parameter",
        ),
        (
            &[("scope", "openid,commerce.everything")],
            "invalid_scope",
            "invalid scope",
        ),
        (
            &[("grant_type", "password")],
            "unsupported_grant_type",
            "unsupported grant_type",
        ),
        (&[("grant_type", "")], "invalid_request", "missing grant_type parameter"),
    ];
    for (overrides, error, description) in cases {
        let mut fields = vec![
            ("grant_type", "client_credentials"),
            ("client_id", IMS_CLIENT_ID),
            ("client_secret", IMS_CLIENT_SECRET),
            ("scope", all.as_str()),
        ];
        for (name, value) in overrides {
            fields.iter_mut().filter(|(n, _)| n == name).for_each(|f| f.1 = value);
        }
        let reply = send(Method::POST, &ims.token_url(), &[FORM], form(&fields)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{overrides:?}");
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": error, "error_description": description})
        );
    }
    assert_eq!((ims.token_calls(), ims.tokens_issued()), (5, 0));
}

#[tokio::test]
async fn accepts_client_secret_basic() {
    use base64::Engine as _;
    let ims = fake().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{IMS_CLIENT_ID}:{IMS_CLIENT_SECRET}"));
    let auth = format!("Basic {basic}");
    let body = form(&[("grant_type", "client_credentials"), ("scope", "openid,commerce.accs")]);
    let reply = send(Method::POST, &ims.token_url(), &[FORM, ("authorization", &auth)], body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn secret_rotation_keeps_issued_tokens_alive() {
    let ims = fake().await;
    let before = token(&ims).await;
    ims.set_valid_secrets(vec![IMS_CLIENT_SECRET.to_owned(), "sandbox-secret-2".to_owned()]);
    assert_eq!(
        request_token(&ims, "sandbox-secret-2", "openid").await.status,
        StatusCode::OK
    );
    ims.set_valid_secrets(vec!["sandbox-secret-2".to_owned()]);
    let old = request_token(&ims, IMS_CLIENT_SECRET, "openid").await;
    assert_eq!(old.json()["error_description"], "invalid client_secret parameter");
    assert_eq!(
        api_get(&ims, "/V1/store/storeViews", &before).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn api_echoes_the_request_and_401s_after_revoke() {
    let ims = fake().await;
    let token = token(&ims).await;
    let reply = api_get(&ims, "/V1/products?searchCriteria[pageSize]=2", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["search_criteria"]["page_size"], 2);
    assert!(
        body.get("sandbox").is_none(),
        "the body is Commerce's shape alone: {body}"
    );
    assert_eq!(reply.echo()["store"], "default");
    assert_eq!(reply.echo()["query"], "searchCriteria[pageSize]=2");
    let recorded = ims.last_api_request().expect("recorded");
    assert_eq!(recorded.path, "/sandbox-tenant/V1/products");
    assert_eq!(recorded.headers["x-api-key"], IMS_CLIENT_ID);

    ims.revoke_all();
    let reply = api_get(&ims, "/V1/products", &token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json()["message"],
        "The consumer isn't authorized to access %resources."
    );
    assert_eq!(ims.api_calls(), 2);
}

#[tokio::test]
async fn api_rejects_expired_tokens_and_missing_api_key() {
    let ims = fake().await;
    ims.set_token_ttl(Duration::ZERO);
    let expired = token(&ims).await;
    assert_eq!(
        api_get(&ims, "/V1/products", &expired).await.status,
        StatusCode::UNAUTHORIZED
    );
    ims.set_token_ttl(Duration::from_secs(60));
    let fresh = token(&ims).await;
    let url = format!("{}/V1/products", ims.api_base_url());
    let auth = format!("Bearer {fresh}");
    let reply = send(Method::GET, &url, &[("authorization", &auth)], "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn post_echoes_body_and_outage_switch_gives_503() {
    let ims = fake().await;
    ims.fail_next_token_calls(1);
    assert_eq!(
        request_token(&ims, IMS_CLIENT_SECRET, "openid").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let token = token(&ims).await;
    let url = format!("{}/V1/products", ims.api_base_url());
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("x-api-key", IMS_CLIENT_ID)];
    let reply = send(Method::POST, &url, &headers, r#"{"product":{"sku":"A"}}"#).await;
    assert_eq!(reply.json()["body"]["product"]["sku"], "A");
    assert_eq!(reply.echo()["body_length"], 23);
    assert_eq!(reply.echo()["method"], "POST");
    assert_eq!(ims.token_calls(), 2);
}

#[tokio::test]
async fn streams_large_bodies_and_sleeps_on_request() {
    let ims = fake().await;
    let token = token(&ims).await;
    let reply = api_get(&ims, "/V1/sandbox/bytes?n=3000001", &token).await;
    assert_eq!(reply.body.len(), 3_000_001);
    assert_eq!(reply.headers["content-length"], "3000001");
    let started = tokio::time::Instant::now();
    let reply = api_get(&ims, "/V1/sandbox/slow?ms=50", &token).await;
    assert_eq!(reply.json()["slept_ms"], 50);
    assert!(started.elapsed() >= Duration::from_millis(50));
}

async fn api_call(ims: &ImsSandbox, method: Method, path: &str, token: &str, body: &str) -> Reply {
    let url = format!("{}{path}", ims.api_base_url());
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-api-key", IMS_CLIENT_ID),
        ("content-type", "application/json"),
    ];
    send(method, &url, &headers, body.to_owned()).await
}

/// The bodies of Adobe's customer REST tutorial (step 2 creates, step 3 updates).
const CREATE: &str = r#"{"customer": {"email": "john.doe@example.com", "firstname": "John", "lastname": "Doe",
    "store_id": 1, "website_id": 1}, "password": "TempPa55word!"}"#;

fn update_body(id: u64) -> String {
    format!(
        r#"{{"customer": {{"id": {id}, "email": "john.doe@example.com", "firstname": "John", "lastname": "Doe-Updated"}}}}"#
    )
}

/// `YYYY-MM-DD HH:MM:SS`, as Commerce writes its dates.
fn is_magento_datetime(value: &serde_json::Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    text.len() == 19 && jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", text).is_ok()
}

#[tokio::test]
async fn customers_are_created_updated_and_read_in_commerce_shapes() {
    let ims = fake().await;
    let token = token(&ims).await;
    let created = api_call(&ims, Method::POST, "/V1/customers", &token, CREATE).await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    let customer = created.json();
    let id = customer["id"].as_u64().expect("a numeric id");
    assert_eq!(customer["group_id"], 1);
    assert!(is_magento_datetime(&customer["created_at"]), "{customer}");
    assert_eq!(customer["updated_at"], customer["created_at"]);
    assert_eq!(customer["created_in"], "Default Store View");
    assert_eq!(
        (&customer["email"], &customer["firstname"], &customer["lastname"]),
        (&"john.doe@example.com".into(), &"John".into(), &"Doe".into())
    );
    assert_eq!((&customer["store_id"], &customer["website_id"]), (&1.into(), &1.into()));
    assert_eq!(customer["addresses"], serde_json::json!([]));
    assert_eq!(customer["disable_auto_group_change"], 0);
    assert!(customer.get("password").is_none(), "the password never comes back");
    assert!(!String::from_utf8_lossy(&created.body).contains("TempPa55word!"));
    assert_eq!(created.echo()["method"], "POST");

    let updated = api_call(
        &ims,
        Method::PUT,
        &format!("/V1/customers/{id}"),
        &token,
        &update_body(id),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let updated = updated.json();
    assert_eq!(updated["id"], id);
    assert_eq!(updated["lastname"], "Doe-Updated");
    assert_eq!(updated["created_at"], customer["created_at"]);
    assert_eq!(updated["store_id"], 1, "fields the update leaves out are kept");
    let read = api_call(&ims, Method::GET, &format!("/V1/customers/{id}"), &token, "").await;
    assert_eq!((read.status, read.json()), (StatusCode::OK, updated));
}

#[tokio::test]
async fn customers_refuse_like_commerce() {
    let ims = fake().await;
    let token = token(&ims).await;
    let unknown = api_call(&ims, Method::GET, "/V1/customers/999", &token, "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let not_found = serde_json::json!({
        "message": "No such entity with %fieldName = %fieldValue",
        "parameters": {"fieldName": "customerId", "fieldValue": 999}
    });
    assert_eq!(unknown.json(), not_found);
    let update_unknown = api_call(&ims, Method::PUT, "/V1/customers/999", &token, &update_body(999)).await;
    assert_eq!(
        (update_unknown.status, update_unknown.json()),
        (StatusCode::NOT_FOUND, not_found)
    );

    assert_eq!(
        api_call(&ims, Method::POST, "/V1/customers", &token, CREATE)
            .await
            .status,
        StatusCode::OK
    );
    let again = api_call(&ims, Method::POST, "/V1/customers", &token, CREATE).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again.json()["message"],
        "A customer with the same email address already exists in an associated website."
    );
    let nameless = r#"{"customer": {"email": "jane@example.com", "firstname": "Jane"}}"#;
    let missing = api_call(&ims, Method::POST, "/V1/customers", &token, nameless).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.json(),
        serde_json::json!({"message": "\"%fieldName\" is required. Enter and try again.",
            "parameters": {"fieldName": "lastname"}})
    );
    let word = api_call(&ims, Method::PUT, "/V1/customers/null", &token, &update_body(1)).await;
    assert_eq!(
        word.status,
        StatusCode::BAD_REQUEST,
        "what the tutorial's step 3 gets without an id"
    );
}

#[test]
fn an_update_moves_updated_at_and_keeps_created_at() {
    use crate::sandbox::ims::customers::{Customers, magento_datetime};
    assert_eq!(magento_datetime(1_769_200_815_000), "2026-01-23 20:40:15");
    let mut customers = Customers::default();
    let body: serde_json::Value = serde_json::from_str(CREATE).expect("JSON");
    let created = customers.create(&body, "2026-01-23 20:40:15").expect("created");
    let id = created["id"].as_u64().expect("id");
    let update: serde_json::Value = serde_json::from_str(&update_body(id)).expect("JSON");
    let updated = customers.update(id, &update, "2026-01-23 20:40:30").expect("updated");
    assert_eq!(
        (updated["created_at"].as_str(), updated["updated_at"].as_str()),
        (Some("2026-01-23 20:40:15"), Some("2026-01-23 20:40:30"))
    );
    assert_eq!(customers.get(id).expect("read"), updated);
}
