//! `provider = "adobe_commerce"`: an integration's four OAuth 1.0a values (all secrets), the
//! signature method and which of Magento's two verifiers to sign for. No preset: the upstream
//! (the store's base URL) is required, and paths pass as sent.

use super::{AdobeCommerceConfig, SignatureMethod};
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::{RawSecret, RawTenant};

pub(crate) fn build(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<AdobeCommerceConfig> {
    let secret = |ctx: &mut Ctx<'_>, key: &str, value: Option<&RawSecret>| {
        let why = "for provider `adobe_commerce` (from the integration in the Magento admin)";
        let value = ctx.required(scope, key, value, why)?;
        ctx.secret(scope, key, value)
    };
    let consumer_key = secret(ctx, "consumer_key", raw.consumer_key.as_ref());
    let consumer_secret = secret(ctx, "consumer_secret", raw.consumer_secret.as_ref());
    let access_token = secret(ctx, "access_token", raw.access_token.as_ref());
    let access_token_secret = secret(ctx, "access_token_secret", raw.access_token_secret.as_ref());
    let signature_method = match raw.signature_method.as_deref() {
        None | Some("HMAC-SHA256") => Some(SignatureMethod::HmacSha256),
        Some("HMAC-SHA1") => Some(SignatureMethod::HmacSha1),
        Some(other) => ctx.reject(
            scope,
            "signature_method",
            format!("`{other}` is not supported; expected HMAC-SHA256 or HMAC-SHA1"),
        ),
    };
    Some(AdobeCommerceConfig {
        consumer_key: consumer_key?,
        consumer_secret: consumer_secret?,
        access_token: access_token?,
        access_token_secret: access_token_secret?,
        signature_method: signature_method?,
        legacy_signing: raw.legacy_signing.unwrap_or(false),
    })
}
