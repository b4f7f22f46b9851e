//! The typed `adobe_commerce` provider block: an integration's OAuth 1.0a credentials and how
//! to sign with them (`validate/providers/adobe_commerce.rs` builds it).

use super::Secret;

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
