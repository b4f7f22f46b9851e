//! The Magento fake's verifier against the proxy's signer, under both rule sets: what the signer
//! signs for a rule set passes that verifier; the other rule set's signature and a plain RFC 5849
//! signature fail it for a query where the rules differ (twelve filter groups, `+` and `%20`, a
//! repeated key); replayed nonces and stale timestamps are refused.

use std::sync::Arc;

use base64::Engine;
use http::Method;
use ring::hmac;

use super::*;
use crate::clock;
use crate::config::{AdobeCommerceConfig, Secret, SignatureMethod, UpstreamUrl};
use crate::providers::adobe_commerce::Signer;
use crate::providers::adobe_commerce::php::rawurlencoded;
use crate::sandbox::{
    MAGENTO_ACCESS_TOKEN, MAGENTO_ACCESS_TOKEN_SECRET, MAGENTO_CONSUMER_KEY, MAGENTO_CONSUMER_SECRET, MagentoOptions,
    MagentoSandbox,
};

/// Twelve filter groups (`[1]` and `[10]` order differently by raw bytes, encoded bytes and
/// natural order), values with `+` and `%20`, a repeated key, a bare flag and `a=b=c`.
pub(super) fn search_query() -> String {
    let mut query = String::new();
    for group in 0..12 {
        let filter = format!("searchCriteria[filter_groups][{group}][filters][0]");
        query.push_str(&format!(
            "{filter}[field]=name&{filter}[value]=Tee+{group}%20blue&{filter}[condition_type]=like&"
        ));
    }
    query + "searchCriteria[pageSize]=2&dup=1&dup=2&flag&e=b=c"
}

async fn fake(legacy_signing: bool) -> MagentoSandbox {
    MagentoSandbox::start(MagentoOptions { legacy_signing })
        .await
        .expect("start the Magento fake")
}

fn signer(fake: &MagentoSandbox, legacy: bool) -> Arc<Signer> {
    let config = AdobeCommerceConfig {
        consumer_key: Secret::from(MAGENTO_CONSUMER_KEY),
        consumer_secret: Secret::from(MAGENTO_CONSUMER_SECRET),
        access_token: Secret::from(MAGENTO_ACCESS_TOKEN),
        access_token_secret: Secret::from(MAGENTO_ACCESS_TOKEN_SECRET),
        signature_method: SignatureMethod::HmacSha256,
        legacy_signing: legacy,
    };
    let upstream = UpstreamUrl {
        scheme: http::uri::Scheme::HTTP,
        authority: fake.addr().to_string().parse().expect("an authority"),
        base_path: String::new(),
    };
    Arc::new(Signer::new(&config, &upstream))
}

async fn signed_get(fake: &MagentoSandbox, header: &str, path: &str, query: &str) -> Reply {
    let url = format!("{}{path}?{query}", fake.base_url());
    send(Method::GET, &url, &[("authorization", header)], "").await
}

fn authorization(signer: &Arc<Signer>, method: &Method, path: &str, query: &str, form: Option<&[u8]>) -> String {
    let prepared = signer.prepare(method, path, Some(query), form);
    prepared.authorization().to_str().expect("ASCII").to_owned()
}

const PRODUCTS: &str = "/rest/default/V1/products";

#[tokio::test]
async fn each_verifier_accepts_its_own_rules_and_refuses_the_others_for_this_query() {
    let query = search_query();
    for legacy in [false, true] {
        let fake = fake(legacy).await;
        let own = authorization(&signer(&fake, legacy), &Method::GET, PRODUCTS, &query, None);
        let answer = signed_get(&fake, &own, PRODUCTS, &query).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "legacy {legacy}: {:?}",
            fake.rejections()
        );
        assert_eq!(answer.json()["items"].as_array().map(Vec::len), Some(2));
        let other = authorization(&signer(&fake, !legacy), &Method::GET, PRODUCTS, &query, None);
        let answer = signed_get(&fake, &other, PRODUCTS, &query).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "legacy {legacy}");
        assert_eq!(
            answer.json(),
            serde_json::json!({"message": "The signature is invalid. Verify and try again."})
        );
    }
}

/// A textbook RFC 5849 signature: every pair (repeats too), `+` as a space, names and values
/// encoded, sorted as encoded bytes, the URL normalised.
fn rfc5849(fake: &MagentoSandbox, path: &str, query: &str) -> String {
    let nonce = format!("{:032x}", rand::random::<u128>());
    let timestamp = (clock::unix_millis() / 1000).to_string();
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(n, v)| (rawurlencoded(&n), rawurlencoded(&v)))
        .collect();
    for (name, value) in [
        ("oauth_consumer_key", MAGENTO_CONSUMER_KEY),
        ("oauth_nonce", &nonce),
        ("oauth_signature_method", "HMAC-SHA256"),
        ("oauth_timestamp", &timestamp),
        ("oauth_token", MAGENTO_ACCESS_TOKEN),
        ("oauth_version", "1.0"),
    ] {
        pairs.push((name.to_owned(), rawurlencoded(value)));
    }
    pairs.sort();
    let joined: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let url = format!("http://{}{path}", fake.addr());
    let base = format!("GET&{}&{}", rawurlencoded(&url), rawurlencoded(&joined.join("&")));
    let key = format!("{MAGENTO_CONSUMER_SECRET}&{MAGENTO_ACCESS_TOKEN_SECRET}");
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()), base.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    format!(
        "OAuth oauth_consumer_key=\"{MAGENTO_CONSUMER_KEY}\", oauth_nonce=\"{nonce}\", oauth_signature=\"{}\", \
         oauth_signature_method=\"HMAC-SHA256\", oauth_timestamp=\"{timestamp}\", oauth_token=\"{MAGENTO_ACCESS_TOKEN}\", \
         oauth_version=\"1.0\"",
        rawurlencoded(&signature)
    )
}

#[tokio::test]
async fn an_rfc_5849_signature_passes_only_where_magentos_rules_agree_with_it() {
    for legacy in [false, true] {
        let fake = fake(legacy).await;
        let plain = "searchCriteria[pageSize]=2";
        let answer = signed_get(&fake, &rfc5849(&fake, PRODUCTS, plain), PRODUCTS, plain).await;
        assert_eq!(answer.status, StatusCode::OK, "the control: {:?}", fake.rejections());
        let query = search_query();
        let answer = signed_get(&fake, &rfc5849(&fake, PRODUCTS, &query), PRODUCTS, &query).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "legacy {legacy}");
    }
}

#[tokio::test]
async fn a_nonce_is_accepted_once_and_a_stale_timestamp_never() {
    let fake = fake(false).await;
    let header = authorization(&signer(&fake, false), &Method::GET, PRODUCTS, "", None);
    assert_eq!(signed_get(&fake, &header, PRODUCTS, "").await.status, StatusCode::OK);
    let again = signed_get(&fake, &header, PRODUCTS, "").await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(
        again.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("nonce is already being used"))
    );

    let stale = (clock::unix_millis() / 1000 - 601).to_string();
    let prepared = signer(&fake, false).prepare(&Method::GET, PRODUCTS, Some(""), None);
    let header = prepared.authorization_with("0123456789abcdef0123456789abcdef", &stale);
    let answer = signed_get(&fake, header.to_str().expect("ASCII"), PRODUCTS, "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.json()["message"],
        "The timestamp is invalid. Verify and try again."
    );
    assert_eq!(fake.rejected_api_calls(), 2);
}

#[tokio::test]
async fn form_bodies_are_verified_and_json_bodies_are_not_signed() {
    for legacy in [false, true] {
        let fake = fake(legacy).await;
        let signer = signer(&fake, legacy);
        let path = "/rest/V1/sandbox/echo";
        let body = b"name=J+Doe&note=a%20b&dup=1&dup=2&k=body";
        let header = authorization(&signer, &Method::POST, path, "k=query", Some(body));
        let url = format!("{}{path}?k=query", fake.base_url());
        let answer = send(Method::POST, &url, &[("authorization", &header), FORM], &body[..]).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "legacy {legacy}: {:?}",
            fake.rejections()
        );
        let unsigned = authorization(&signer, &Method::POST, path, "k=query", None);
        let answer = send(Method::POST, &url, &[("authorization", &unsigned), FORM], &body[..]).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "the body's fields are signed");
        let json = ("content-type", "application/json");
        let put = authorization(&signer, &Method::PUT, path, "k=query", None);
        let answer = send(Method::PUT, &url, &[("authorization", &put), json], "{\"a\":\"b=c\"}").await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "legacy {legacy}: {:?}",
            fake.rejections()
        );
    }
}
