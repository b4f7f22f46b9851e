//! `shopline`: SHOPLINE (myshopline.com) Admin API tokens (`docs/providers.md#shopline`).
//!
//! Public and custom apps (`ShoplineCredentials::OAuth`) get tokens from two signed calls, both
//! `POST` with `Content-Type: application/json` and the headers `appkey`, `timestamp` (unix ms)
//! and `sign = lowercase_hex(HMAC-SHA256(app_secret, raw_body + timestamp))`:
//!
//! ```text
//!   no token held yet and a one-time `code` configured
//!       └─▶ {token_url}/admin/oauth/token/create   body {"code":"…"}
//!           (refused: the code is spent or stale) ──┐
//!   otherwise                                        ▼
//!       └─▶ {token_url}/admin/oauth/token/refresh  empty body, no refresh token at all
//! ```
//!
//! Refresh needs only the app key, the secret and the store, and it rotates *the* store token
//! (the previous one lives five more minutes), which is why the token manager, not this module,
//! decides when it runs. The answer is an envelope `{code, i18nCode, message, data:{accessToken,
//! expireTime, scope}}`; `code != 200` is a rejection even under HTTP 200. Expiry is the earlier of
//! `expireTime` (ISO 8601 with offset; its exact format is unconfirmed) and the JWT `exp`.
//!
//! Private apps (`ShoplineCredentials::Private`) hold a static 3-year token: no network, expiry
//! from its JWT `exp`, and nothing to renew.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue, Uri};
use serde_json::Value;
use sha2::Sha256;

use super::{ShoplineConfig, ShoplineCredentials};
use crate::auth::fixed_token;
use crate::auth::http::sanitize;
use crate::auth::jwt::unsigned;
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token, TokenHttp, jwt};
use crate::clock;
use crate::clock::parse_datetime;
use crate::providers::oauth2::response::{Expiry, Granted};
use crate::schema::Secret;

const CREATE_PATH: &str = "/admin/oauth/token/create";
const REFRESH_PATH: &str = "/admin/oauth/token/refresh";

/// `expireTime` and the JWT `exp` should agree; a bigger gap is worth a warning.
const EXPIRY_DISAGREEMENT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Shopline {
    config: ShoplineConfig,
}

impl Shopline {
    pub(crate) fn new(config: ShoplineConfig) -> Self {
        Self { config }
    }

    /// One signed call to `path` with `body`.
    async fn call(
        &self,
        http: &TokenHttp,
        (app_key, app_secret): (&str, &str),
        path: &str,
        body: String,
    ) -> Result<Token, ProviderError> {
        let timestamp = clock::unix_millis().to_string();
        let headers = signed_headers(app_key, app_secret, &body, &timestamp)?;
        let uri = endpoint(&self.config.token_url, path)?;
        let response = http.post_json(&uri, headers, Bytes::from(body)).await?;
        parse_envelope(&response.body)?.into_token(0, None)
    }
}

impl FetchToken for Shopline {
    async fn fetch(&self, ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let (app_key, app_secret, code) = match &self.config.credentials {
            ShoplineCredentials::Private { access_token } => {
                let expires_at = jwt::exp(access_token.expose()).map(clock::deadline_for_unix_secs);
                return fixed_token(access_token.clone(), expires_at);
            }
            ShoplineCredentials::OAuth {
                app_key,
                app_secret,
                code,
            } => (app_key, app_secret, code),
        };
        let app = (app_key.as_str(), app_secret.expose().as_str());
        if let (Some(code), None) = (code, ctx.previous) {
            match self.call(ctx.http, app, CREATE_PATH, create_body(code.expose())).await {
                Err(error @ ProviderError::Rejected { .. }) => tracing::warn!(
                    %error,
                    "token/create refused (the authorization code is one-time and short-lived); \
                     trying token/refresh"
                ),
                done => return done,
            }
        }
        self.call(ctx.http, app, REFRESH_PATH, String::new()).await
    }

    /// Private-app tokens cannot be renewed: a 401 is passed back.
    fn renews(&self) -> bool {
        matches!(self.config.credentials, ShoplineCredentials::OAuth { .. })
    }

    /// A refresh rotates the store's one token and shortens every other copy to five minutes.
    fn solo_renewal_costs_peers(&self) -> bool {
        true
    }
}

/// `lowercase_hex(HMAC-SHA256(key = app_secret, message = body + timestamp))`.
pub(crate) fn sign(app_secret: &str, body: &str, timestamp: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(body.as_bytes());
    mac.update(timestamp.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The exact bytes of the `token/create` body, which the signature covers.
pub(crate) fn create_body(code: &str) -> String {
    serde_json::json!({ "code": code }).to_string()
}

/// `appkey`, `timestamp`, `sign` (the signature marked sensitive: it authenticates the call).
pub(crate) fn signed_headers(
    app_key: &str,
    app_secret: &str,
    body: &str,
    timestamp: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, ProviderError> {
    let header = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| ProviderError::BadResponse("app_key is not valid in a header".into()))
    };
    let mut sign = header(&sign(app_secret, body, timestamp))?;
    sign.set_sensitive(true);
    Ok(vec![
        (HeaderName::from_static("appkey"), header(app_key)?),
        (HeaderName::from_static("timestamp"), header(timestamp)?),
        (HeaderName::from_static("sign"), sign),
    ])
}

/// `base` (scheme, authority, optional path prefix) + `path`; the base's query is dropped.
fn endpoint(base: &Uri, path: &str) -> Result<Uri, ProviderError> {
    let prefix = base.path().trim_end_matches('/');
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(format!("{prefix}{path}").parse().map_err(|_| bad_url())?);
    Uri::from_parts(parts).map_err(|_| bad_url())
}

fn bad_url() -> ProviderError {
    ProviderError::BadResponse("SHOPLINE token_url cannot take the token path".into())
}

/// Reads the `{code, i18nCode, message, data}` envelope of a 2xx answer.
pub(crate) fn parse_envelope(body: &[u8]) -> Result<Granted, ProviderError> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|_| ProviderError::BadResponse("SHOPLINE token response is not JSON".into()))?;
    let code = json
        .get("code")
        .ok_or_else(|| ProviderError::BadResponse("SHOPLINE token response has no `code`".into()))?;
    if unsigned(code) != Some(200) {
        let text = |key: &str| json.get(key).and_then(Value::as_str).map(sanitize);
        return Err(ProviderError::Rejected {
            status: 200,
            code: text("i18nCode")
                .or_else(|| code.as_str().map(sanitize))
                .unwrap_or_else(|| sanitize(&code.to_string())),
            description: text("message"),
        });
    }
    let data = json.get("data").unwrap_or(&Value::Null);
    let access = data
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::BadResponse("no token at `data.accessToken`".into()))?;
    if let Some(scope) = data.get("scope").and_then(Value::as_str) {
        tracing::debug!(scope, "SHOPLINE token granted");
    }
    let stated = data.get("expireTime").and_then(expire_time);
    let expiry = earlier(stated, jwt::exp(access).map(clock::from_unix_secs));
    Ok(Granted {
        access: Secret::new(access.to_owned()),
        expiry: expiry.map(Expiry::At),
        refresh_token: None,
    })
}

/// `expireTime`: an ISO 8601 string with offset, or (leniently) unix ms or seconds.
fn expire_time(value: &Value) -> Option<SystemTime> {
    match unsigned(value) {
        Some(ms) if ms >= 1_000_000_000_000 => Some(clock::from_unix_millis(ms)),
        Some(secs) => Some(clock::from_unix_secs(secs)),
        None => parse_datetime(value.as_str()?),
    }
}

/// The earlier of the stated expiry and the JWT's: trusting the later one could use a dead token.
fn earlier(stated: Option<SystemTime>, claimed: Option<SystemTime>) -> Option<SystemTime> {
    match (stated, claimed) {
        (Some(a), Some(b)) => {
            let gap = a.duration_since(b).or_else(|_| b.duration_since(a)).unwrap_or_default();
            if gap > EXPIRY_DISAGREEMENT {
                tracing::warn!(
                    ?gap,
                    "SHOPLINE expireTime and the token's JWT exp disagree; using the earlier"
                );
            }
            Some(a.min(b))
        }
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
