//! `provider = "adobe_commerce"`: Adobe Commerce on cloud infrastructure or on-premises, and
//! Magento Open Source, through an integration's OAuth 1.0a credentials. There is no token to
//! renew: every request is signed on its own, the way Magento verifies it
//! (`docs/providers.md#adobe-commerce`).
//!
//! - `validate.rs`: the tenant's keys → [`AdobeCommerceConfig`];
//! - `sign.rs`: the per-request signature, with `params.rs` (which parameters are signed, in
//!   which order) and `php.rs` (the PHP functions Magento's verifier calls, done the same way).

pub(crate) mod params;
pub(crate) mod php;
mod sign;
mod validate;

pub(crate) use sign::{AdobeCommerce, Signer};
pub(super) use validate::build;

use toml::{Table, Value};

use super::fingerprint::Fingerprint;
use super::preset::Preset;
use crate::schema::Secret;
use crate::schema::print::{masked, text};
use crate::schema::raw::RawTenant;

/// The keys of a tenant table that belong to this provider.
pub(super) const KEYS: &[&str] = &[
    "consumer_key",
    "consumer_secret",
    "access_token",
    "access_token_secret",
    "signature_method",
    "legacy_signing",
];

/// An integration's OAuth 1.0a credentials (Adobe Commerce on cloud infrastructure or
/// on-premises, Magento Open Source). All four values are secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdobeCommerceConfig {
    pub consumer_key: Secret<String>,
    pub consumer_secret: Secret<String>,
    pub access_token: Secret<String>,
    pub access_token_secret: Secret<String>,
    /// Default `HMAC-SHA256`.
    pub signature_method: SignatureMethod,
    /// Sign as releases whose OAuth code is built on laminas-oauth verify (default false).
    pub legacy_signing: bool,
}

/// `signature_method`: the HMAC Magento accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMethod {
    HmacSha256,
    HmacSha1,
}

impl SignatureMethod {
    /// The `oauth_signature_method` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "HMAC-SHA256",
            Self::HmacSha1 => "HMAC-SHA1",
        }
    }
}

/// Nothing: each store names its upstream, and Magento sets no documented rate limit.
pub(super) fn preset(_raw: &RawTenant) -> Preset {
    Preset::default()
}

pub(super) fn secrets(c: &AdobeCommerceConfig) -> Vec<&Secret<String>> {
    vec![
        &c.consumer_key,
        &c.consumer_secret,
        &c.access_token,
        &c.access_token_secret,
    ]
}

pub(super) fn fingerprint(w: &mut Fingerprint, c: &AdobeCommerceConfig) {
    #[rustfmt::skip]
    let AdobeCommerceConfig { consumer_key, consumer_secret, access_token, access_token_secret, signature_method, legacy_signing } = c;
    w.secret("consumer_key", consumer_key)
        .secret("consumer_secret", consumer_secret);
    w.secret("access_token", access_token)
        .secret("access_token_secret", access_token_secret);
    w.text("signature_method", signature_method.as_str())
        .flag("legacy_signing", *legacy_signing);
}

pub(super) fn print(c: &AdobeCommerceConfig, t: &mut Table) {
    for key in ["consumer_key", "consumer_secret", "access_token", "access_token_secret"] {
        t.insert(key.into(), masked());
    }
    t.insert("signature_method".into(), text(c.signature_method.as_str()));
    t.insert("legacy_signing".into(), Value::Boolean(c.legacy_signing));
}
