//! `adobe_ims`: Adobe IMS server-to-server (OAuth client credentials) tokens for Adobe Commerce as
//! a Cloud Service (`docs/providers.md#adobe-ims`).
//!
//! The wire: `POST {token_url}` (default `https://ims-na1.adobelogin.com/ims/token/v3`), form
//! `grant_type=client_credentials`, `client_id`, `client_secret`, `scope` with the scopes
//! **comma**-separated. A credential holds up to two secrets for zero-downtime rotation; they are
//! tried in order and only a `400 invalid_client` moves on to the next (Adobe's own tooling does
//! the same). No refresh token exists: renewing is asking again.
//!
//! Units trap (`docs/providers.md#ims-token-lifetime-and-units`): the v3 JSON `expires_in` is
//! **seconds**; the JWT's own `created_at`/`expires_in` claims are **milliseconds**. The response
//! wins; the claims are only a fallback, computed as Adobe's library does
//! (`created_at + expires_in` in ms), never mixed.
//!
//! Upstream calls also carry `x-api-key: <client_id>` and, with an org, `x-gw-ims-org-id`.

use http::{HeaderName, HeaderValue};

use super::AdobeImsConfig;
use crate::auth::jwt::unsigned;
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token, jwt};
use crate::clock;
use crate::providers::oauth2::response::{Expiry, standard_mapping};
use crate::providers::oauth2::{Grant, SecretPlacement, grant_form, join_scopes, request_with_secrets};

#[derive(Debug)]
pub(crate) struct AdobeIms {
    config: AdobeImsConfig,
    /// `x-api-key` and `x-gw-ims-org-id`, built once (neither is a secret).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl AdobeIms {
    pub(crate) fn new(config: AdobeImsConfig) -> Self {
        let headers = upstream_headers(&config);
        Self { config, headers }
    }
}

impl FetchToken for AdobeIms {
    async fn fetch(&self, ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let config = &self.config;
        let form = grant_form(Grant::ClientCredentials, join_scopes(&config.scopes, ","));
        let client = (config.client_id.as_str(), config.client_secrets.as_slice());
        let mapping = standard_mapping();
        let (mut granted, index) = request_with_secrets(
            ctx.http,
            &config.token_url,
            &form,
            client,
            ctx.first_secret,
            SecretPlacement::Form,
            &mapping,
        )
        .await?;
        if granted.expiry.is_none() {
            granted.expiry = claims_expiry(granted.access.expose());
        }
        granted.into_token(index, None)
    }

    /// `x-api-key` (the client id) and `x-gw-ims-org-id`, which ACCS requires on every call.
    fn upstream_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.headers.clone()
    }
}

fn upstream_headers(config: &AdobeImsConfig) -> Vec<(HeaderName, HeaderValue)> {
    let pairs = [
        ("x-api-key", Some(&config.client_id)),
        ("x-gw-ims-org-id", config.org_id.as_ref()),
    ];
    pairs
        .into_iter()
        .filter_map(|(name, value)| {
            let value = HeaderValue::from_str(value?)
                .inspect_err(|_| tracing::warn!(header = name, "value not valid in a header; not sent"))
                .ok()?;
            Some((HeaderName::from_static(name), value))
        })
        .collect()
}

/// Expiry from an IMS JWT's `created_at + expires_in`, both milliseconds (numbers or strings).
fn claims_expiry(token: &str) -> Option<Expiry> {
    let claims = jwt::claims(token)?;
    let created_at = unsigned(claims.get("created_at")?)?;
    let expires_in = unsigned(claims.get("expires_in")?)?;
    Some(Expiry::At(clock::from_unix_millis(
        created_at.saturating_add(expires_in),
    )))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::auth::testing::{FakeEndpoint, fetch, ok};
    use crate::schema::Secret;

    fn config(token_url: http::Uri, secrets: &[&str]) -> AdobeImsConfig {
        AdobeImsConfig {
            client_id: "cid".into(),
            client_secrets: secrets.iter().map(|s| Secret::from(*s)).collect(),
            scopes: ["openid", "AdobeID", "commerce.accs"].map(String::from).to_vec(),
            token_url,
            org_id: Some("ORG@AdobeOrg".into()),
        }
    }

    fn invalid_secret() -> crate::auth::testing::Canned {
        let body = json!({"error": "invalid_client", "error_description": "invalid client_secret parameter"});
        (400, vec![("x-debug-id", "dbg-1".to_owned())], body.to_string())
    }

    #[tokio::test]
    async fn rotates_to_the_second_secret_on_invalid_client() {
        let idp = FakeEndpoint::start(|_, req| match req.field("client_secret").as_deref() {
            Some("second") => ok(json!({"access_token": "at", "token_type": "bearer", "expires_in": 86399})),
            _ => invalid_secret(),
        })
        .await;
        let ims = AdobeIms::new(config(idp.uri("/ims/token/v3"), &["first", "second"]));
        let before = tokio::time::Instant::now();
        let token = fetch(&ims, None).await.expect("token");
        assert_eq!(token.secret_index, 1);
        assert_eq!(token.access.expose(), "at");
        let lifetime = token.expires_at.expect("expiry") - before;
        assert!(lifetime > Duration::from_secs(86_390) && lifetime <= Duration::from_secs(86_400));
        let got = idp.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].path, "/ims/token/v3");
        let fields = |secret: &str| {
            [
                ("grant_type", "client_credentials"),
                ("scope", "openid,AdobeID,commerce.accs"),
                ("client_id", "cid"),
                ("client_secret", secret),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec()
        };
        assert_eq!((got[0].form(), got[1].form()), (fields("first"), fields("second")));
    }

    #[tokio::test]
    async fn all_secrets_rejected_reports_the_debug_id() {
        let idp = FakeEndpoint::start(|_, _| invalid_secret()).await;
        let ims = AdobeIms::new(config(idp.uri("/t"), &["first", "second"]));
        let error = fetch(&ims, None).await.expect_err("rejected");
        let text = error.to_string();
        assert!(text.contains("invalid_client") && text.contains("dbg-1"), "{text}");
        assert!(!text.contains("first") && !text.contains("second"), "{text}");
        assert_eq!(idp.received().len(), 2);
    }

    #[tokio::test]
    async fn throttling_is_not_a_reason_to_try_another_secret() {
        let idp = FakeEndpoint::start(|_, _| (429, vec![("retry-after", "30".to_owned())], "{}".into())).await;
        let ims = AdobeIms::new(config(idp.uri("/t"), &["first", "second"]));
        let error = fetch(&ims, None).await.expect_err("throttled");
        assert!(matches!(error, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(30)));
        assert_eq!(idp.received().len(), 1);
    }

    #[tokio::test]
    async fn without_expires_in_the_jwt_millisecond_claims_give_the_expiry() {
        let created_ms = crate::clock::unix_millis();
        let access = jwt::encode_unsigned(&json!({"created_at": created_ms.to_string(), "expires_in": "86400000"}));
        let idp = FakeEndpoint::start(move |_, _| ok(json!({"access_token": access}))).await;
        let ims = AdobeIms::new(config(idp.uri("/t"), &["only"]));
        let before = tokio::time::Instant::now();
        let token = fetch(&ims, None).await.expect("token");
        let lifetime = token.expires_at.expect("expiry") - before;
        // 24 h, not 24,000 h (ms read as s) nor 86 s (s read as ms).
        assert!(
            lifetime > Duration::from_secs(86_390) && lifetime <= Duration::from_secs(86_400),
            "{lifetime:?}"
        );
    }

    #[test]
    fn claims_expiry_reads_numbers_and_strings_in_ms() {
        let at = |claims| claims_expiry(&jwt::encode_unsigned(&claims));
        let expected = Some(Expiry::At(UNIX_EPOCH + Duration::from_millis(1_700_086_400_000)));
        assert_eq!(
            at(json!({"created_at": "1700000000000", "expires_in": "86400000"})),
            expected
        );
        assert_eq!(
            at(json!({"created_at": 1_700_000_000_000_u64, "expires_in": 86_400_000})),
            expected
        );
        assert_eq!(at(json!({"created_at": "1700000000000"})), None);
        assert_eq!(claims_expiry("opaque"), None);
    }

    #[test]
    fn upstream_headers_carry_client_id_and_org() {
        let uri: http::Uri = "https://ims.example/t".parse().expect("uri");
        let ims = AdobeIms::new(config(uri.clone(), &["s"]));
        let headers: Vec<(String, String)> = ims
            .upstream_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().expect("ascii").to_owned()))
            .collect();
        assert_eq!(
            headers,
            [
                ("x-api-key".into(), "cid".into()),
                ("x-gw-ims-org-id".into(), "ORG@AdobeOrg".into())
            ]
        );
        let mut no_org = config(uri, &["s"]);
        no_org.org_id = None;
        assert_eq!(AdobeIms::new(no_org).upstream_headers().len(), 1);
    }

    #[test]
    fn debug_shows_no_secret() {
        let ims = AdobeIms::new(config("https://ims.example/t".parse().expect("uri"), &["hunter2"]));
        assert!(!format!("{ims:?}").contains("hunter2"));
    }
}
