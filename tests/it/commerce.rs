//! `adobe_commerce` end to end: the in-process proxy signs every request for the Magento fake,
//! which verifies it as Magento does, under the current rules and the laminas-era ones
//! (`legacy_signing`). Queries where the rule sets and RFC 5849 order parameters differently,
//! `+` and `%20`, a repeated key, a form POST and a JSON PUT, a 401 passed back untouched, and a
//! form body over the cap.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tokenbroker::sandbox::{
    MAGENTO_ACCESS_TOKEN, MAGENTO_ACCESS_TOKEN_SECRET, MAGENTO_CONSUMER_KEY, MAGENTO_CONSUMER_SECRET, MagentoOptions,
    MagentoSandbox,
};

use crate::sandboxed::SERVER;
use crate::support::{Proxy, env, get, raw_status_line, send};

/// A proxy with tenant `commerce` on a Magento fake; `extra` is added to the tenant.
async fn start(legacy: bool, extra: &str) -> (MagentoSandbox, Proxy) {
    let magento = MagentoSandbox::start(MagentoOptions { legacy_signing: legacy })
        .await
        .expect("start the Magento fake");
    let toml = format!(
        "{SERVER}\n[[tenant]]\nname = \"commerce\"\nprovider = \"adobe_commerce\"\nupstream = \"{}\"\n\
         consumer_key = {{ env = \"CK\" }}\nconsumer_secret = {{ env = \"CS\" }}\n\
         access_token = {{ env = \"AT\" }}\naccess_token_secret = {{ env = \"ATS\" }}\n\
         legacy_signing = {legacy}\n{extra}\n",
        magento.base_url()
    );
    let secrets = env(&[
        ("CK", MAGENTO_CONSUMER_KEY),
        ("CS", MAGENTO_CONSUMER_SECRET),
        ("AT", MAGENTO_ACCESS_TOKEN),
        ("ATS", MAGENTO_ACCESS_TOKEN_SECRET),
    ]);
    let proxy = Proxy::start_with_env(&toml, &secrets).await;
    (magento, proxy)
}

/// Twelve filter groups (`[1]`, `[10]`, `[2]` sort three ways: raw bytes, encoded bytes, natural
/// order), values with `+` and `%20`, a repeated key, a bare flag and `a=b=c`.
fn search_query() -> String {
    let mut query = String::new();
    for group in 0..12 {
        let filter = format!("searchCriteria[filter_groups][{group}][filters][0]");
        query.push_str(&format!(
            "{filter}[field]=name&{filter}[value]=Tee+{group}%20blue&{filter}[condition_type]=like&"
        ));
    }
    query + "searchCriteria[pageSize]=3&dup=1&dup=2&flag&e=b=c"
}

#[tokio::test]
async fn a_search_with_twelve_filter_groups_passes_both_verifiers() {
    for legacy in [false, true] {
        let (magento, proxy) = start(legacy, "").await;
        let query = search_query();
        let answer = get(&proxy.url(&format!("/commerce/rest/default/V1/products?{query}"))).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "legacy {legacy}: {:?}",
            magento.rejections()
        );
        assert_eq!(answer.json()["items"].as_array().map(Vec::len), Some(3));
        let seen = magento.last_api_request().expect("the store was called");
        assert_eq!(seen.path, "/rest/default/V1/products", "no path preset");
        assert_eq!(seen.query.as_deref(), Some(query.as_str()), "the query byte for byte");
        let authorization = seen.headers["authorization"].to_str().expect("ASCII");
        assert!(
            authorization.starts_with("OAuth oauth_consumer_key=\""),
            "{authorization}"
        );
        // Every request gets its own nonce: the same search again passes too.
        let again = get(&proxy.url(&format!("/commerce/rest/default/V1/products?{query}"))).await;
        assert_eq!(again.status, StatusCode::OK, "{:?}", magento.rejections());
        assert_eq!((magento.nonces_seen(), magento.rejected_api_calls()), (2, 0));
        proxy.stop().await;
    }
}

fn request(method: Method, url: &str, content_type: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request")
}

#[tokio::test]
async fn a_form_post_and_the_customer_tutorials_json_calls_pass_both_verifiers() {
    for legacy in [false, true] {
        let (magento, proxy) = start(legacy, "").await;
        let form = "name=J+Doe&note=a%20b&dup=1&dup=2&k=body";
        let url = proxy.url("/commerce/rest/V1/sandbox/echo?k=query&x=a+b");
        let answer = send(request(Method::POST, &url, "application/x-www-form-urlencoded", form)).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "legacy {legacy}: {:?}",
            magento.rejections()
        );
        assert_eq!(
            answer.sandbox_echo()["body_length"],
            form.len(),
            "the body went as it came"
        );

        let create = json!({"customer": {"email": "jd@example.com", "firstname": "J", "lastname": "Doe"},
            "password": "TempPa55word!"});
        let url = proxy.url("/commerce/rest/default/V1/customers");
        let created = send(request(Method::POST, &url, "application/json", &create.to_string())).await;
        assert_eq!(created.status, StatusCode::OK, "{:?}", magento.rejections());
        let id = created.json()["id"].as_u64().expect("an id");
        let update = json!({"customer": {"id": id, "email": "jd@example.com", "firstname": "J",
            "lastname": "Doe-Updated"}});
        let url = proxy.url(&format!("/commerce/rest/default/V1/customers/{id}"));
        let updated = send(request(Method::PUT, &url, "application/json", &update.to_string())).await;
        assert_eq!(updated.status, StatusCode::OK, "{:?}", magento.rejections());
        assert_eq!(updated.json()["lastname"], "Doe-Updated");
        assert_eq!(magento.rejected_api_calls(), 0);
        proxy.stop().await;
    }
}

#[tokio::test]
async fn a_401_is_passed_back_once_without_renewal_or_replay() {
    let (magento, proxy) = start(false, "").await;
    // The fake knows the integration's secrets; a proxy holding another consumer secret signs
    // with the wrong key.
    let toml = format!(
        "{SERVER}\n[[tenant]]\nname = \"commerce\"\nprovider = \"adobe_commerce\"\nupstream = \"{}\"\n\
         consumer_key = \"{MAGENTO_CONSUMER_KEY}\"\nconsumer_secret = \"rotated-away\"\n\
         access_token = \"{MAGENTO_ACCESS_TOKEN}\"\naccess_token_secret = \"{MAGENTO_ACCESS_TOKEN_SECRET}\"\n",
        magento.base_url()
    );
    proxy.stop().await;
    let proxy = Proxy::start(&toml).await;
    let answer = get(&proxy.url("/commerce/rest/V1/store/storeViews")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.json(),
        json!({"message": "The signature is invalid. Verify and try again."}),
        "Magento's own answer"
    );
    assert_eq!(magento.api_calls(), 1, "no replay");
    let metrics = proxy.metrics().await;
    assert!(!metrics.contains("rotated-away"));
    let counted = r#"tokenbroker_requests_total{tenant="commerce",status="401",source="upstream"} 1"#;
    assert!(metrics.contains(counted), "counted as the upstream's 401:\n{metrics}");
    assert!(!metrics.contains(r#"tokenbroker_unauthorized_replays_total{tenant="commerce"} 1"#));
    assert_eq!(
        get(&proxy.admin_url("/readyz")).await.status,
        StatusCode::OK,
        "a credential that never expires keeps the tenant ready, 401s or not"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_chunked_form_over_the_cap_gets_413_and_nothing_goes_unsigned() {
    let (magento, proxy) = start(false, "max_body = \"64B\"").await;
    let chunk = "a=".to_owned() + &"x".repeat(98);
    let raw = format!(
        "POST /commerce/rest/V1/sandbox/echo HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let status = raw_status_line(proxy.addr, &raw).await;
    assert!(status.contains(" 413 "), "{status}");
    assert_eq!(magento.api_calls(), 0, "nothing was sent unsigned");
    proxy.stop().await;
}
