//! `[[webhook]]`: a route on the webhook listener that verifies a platform's signed deliveries
//! with a secret the broker holds, and forwards the verified ones inward (README, "Webhooks").
//!
//! The secret is copied out of the tenant at validation, so a webhook is self-contained: a reload
//! that changes a tenant's app secret changes what its webhooks accept in the same swap, and a
//! webhook never reaches a tenant's token or upstream.

use std::fmt;
use std::time::Duration;

use http::HeaderName;

use super::Secret;

/// One `[[webhook]]`, validated.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The route: `POST /<name>` on `server.webhook_listen`. Same shape as a tenant name.
    pub name: String,
    /// The tenant whose app secret verifies, when one does (`None` for the generic form).
    pub tenant: Option<super::TenantName>,
    /// Who signs: decides the signature header, the encodings accepted and the delivery identity.
    pub sender: WebhookSender,
    /// The HMAC-SHA256 key.
    pub secret: Secret<String>,
    /// The header carrying the signature (lowercase).
    pub signature_header: HeaderName,
    /// How the signature is written.
    pub encoding: SignatureEncoding,
    /// Where a verified delivery is POSTed (absolute http or https URL).
    pub forward: http::Uri,
    /// Largest body accepted, in bytes; more gets 413 before anything is forwarded. Default 1 MiB.
    pub max_body: u64,
    /// The whole forward exchange, up to the target's response head. Default 10 s.
    pub timeout: Duration,
}

/// Whose deliveries a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookSender {
    /// `X-Shopline-Hmac-Sha256`; deliveries are told apart by `X-Shopline-Webhook-Id`.
    Shopline,
    /// `X-Cyberbiz-Hmac-Sha256`; no delivery id exists, so the event header and a body hash do.
    Cyberbiz,
    /// Any other sender (`secret`, `signature_header`, `encoding`); not de-duplicated, since
    /// nothing says two equal bodies are one delivery.
    Generic,
}

impl WebhookSender {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shopline => "shopline",
            Self::Cyberbiz => "cyberbiz",
            Self::Generic => "generic",
        }
    }
}

/// How a signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    /// Hex in either case.
    Hex,
    Base64,
    /// Either: the platform's documentation and its production traffic disagree (SHOPLINE and
    /// CYBERBIZ deliveries).
    HexOrBase64,
}

impl SignatureEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hex => "hex",
            Self::Base64 => "base64",
            Self::HexOrBase64 => "hex or base64",
        }
    }
}

impl fmt::Display for WebhookSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl WebhookConfig {
    /// This webhook as `check --print` shows it: the keys that give it, the secret as `mask`.
    pub(super) fn effective(&self, mask: &str) -> toml::Table {
        use toml::Value;
        let text = |v: &dyn fmt::Display| Value::String(v.to_string());
        let mut t = toml::Table::new();
        t.insert("name".into(), text(&self.name));
        match &self.tenant {
            Some(tenant) => {
                t.insert("tenant".into(), text(tenant));
            }
            None => {
                t.insert("secret".into(), text(&mask));
                t.insert("signature_header".into(), text(&self.signature_header));
                t.insert("encoding".into(), text(&self.encoding.as_str()));
            }
        }
        t.insert("forward".into(), text(&self.forward));
        t.insert(
            "max_body".into(),
            text(&crate::schema::units::format_size(self.max_body)),
        );
        t.insert(
            "timeout".into(),
            text(&crate::schema::units::format_duration(self.timeout)),
        );
        t
    }
}
