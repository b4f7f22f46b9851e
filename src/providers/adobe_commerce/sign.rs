//! `adobe_commerce`: Adobe Commerce on cloud infrastructure or on-premises, and Magento Open
//! Source, through an integration's OAuth 1.0a credentials. The access token never expires and
//! there is no token call: [`AdobeCommerce::fetch`] only hands the token manager a credential that
//! is always ready. What the provider does is sign every upstream request, each attempt afresh
//! (Magento refuses a nonce it has seen), exactly as Magento verifies it.
//!
//! ```text
//!  per tenant:  Signer { HMAC key = enc(consumer_secret)&enc(token_secret), header parts }
//!  per request: Signer::prepare(method, path, query, form body) ─▶ Prepared { base string
//!               around the nonce and the timestamp }            (params.rs, php.rs)
//!  per attempt: Prepared::authorization() ─▶ fresh nonce + timestamp ─▶ HMAC ─▶ `OAuth ...`
//! ```
//!
//! The signature is the only secret-derived value formatted, and only into the header value.

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use http::{HeaderName, HeaderValue, Method};
use ring::hmac;

pub(crate) use super::params::Rules;
use super::params::{Param, compare, request_params};
use super::php::{rawurlencode, rawurlencoded};
use super::{AdobeCommerceConfig, SignatureMethod};
use crate::auth::fixed_token;
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token, sensitive_header};
use crate::clock;
use crate::schema::UpstreamUrl;

#[derive(Debug)]
pub(crate) struct AdobeCommerce {
    config: AdobeCommerceConfig,
}

impl AdobeCommerce {
    pub(crate) fn new(config: AdobeCommerceConfig) -> Self {
        Self { config }
    }

    /// The tenant's signer for requests to `upstream`.
    pub(crate) fn signer(&self, upstream: &UpstreamUrl) -> Signer {
        Signer::new(&self.config, upstream)
    }
}

impl FetchToken for AdobeCommerce {
    /// Nothing to fetch: the integration's access token does not expire.
    async fn fetch(&self, _ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        fixed_token(self.config.access_token.clone(), None)
    }

    /// Never sent: each request is signed on its own (`Signer`); the scheme alone stands in.
    fn credential_header(&self, _token: &Token) -> Result<(HeaderName, HeaderValue), ProviderError> {
        sensitive_header(http::header::AUTHORIZATION, "OAuth".to_owned())
    }

    fn renews(&self) -> bool {
        false
    }
}

/// What signs a tenant's requests: the HMAC key and the fixed parts of the header, built once.
pub(crate) struct Signer {
    rules: Rules,
    method: SignatureMethod,
    key: hmac::Key,
    consumer_key: String,
    token: String,
    /// `scheme://host[:port]` as the upstream sees the request (`Host` drops a default port).
    origin: (String, String),
    /// The protocol parameters, encoded once (the nonce's and timestamp's values are left empty:
    /// they are filled in per attempt).
    protocol: [Param; 6],
}

/// The key material never reaches `Debug`.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("rules", &self.rules)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

const NONCE: &str = "oauth_nonce";
const TIMESTAMP: &str = "oauth_timestamp";

impl Signer {
    pub(crate) fn new(config: &AdobeCommerceConfig, upstream: &UpstreamUrl) -> Self {
        let mut key = rawurlencoded(config.consumer_secret.expose());
        key.push('&');
        rawurlencode(config.access_token_secret.expose(), &mut key);
        let algorithm = match config.signature_method {
            SignatureMethod::HmacSha256 => hmac::HMAC_SHA256,
            SignatureMethod::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        };
        let default_port = if upstream.scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        let host = match upstream.authority.port_u16() {
            Some(port) if port == default_port => upstream.authority.host(),
            _ => upstream.authority.as_str(),
        };
        let protocol = [
            Param::new("oauth_consumer_key", config.consumer_key.expose()),
            Param::new(NONCE, ""),
            Param::new("oauth_signature_method", config.signature_method.as_str()),
            Param::new(TIMESTAMP, ""),
            Param::new("oauth_token", config.access_token.expose()),
            Param::new("oauth_version", "1.0"),
        ];
        Self {
            protocol,
            rules: if config.legacy_signing {
                Rules::Legacy
            } else {
                Rules::Current
            },
            method: config.signature_method,
            key: hmac::Key::new(algorithm, key.as_bytes()),
            consumer_key: config.consumer_key.expose().clone(),
            token: config.access_token.expose().clone(),
            origin: (upstream.scheme.as_str().to_owned(), host.to_owned()),
        }
    }

    /// Everything of one request's signature but its nonce and timestamp. `path` is the path as
    /// sent upstream; `form` the body when it is `application/x-www-form-urlencoded`.
    pub(crate) fn prepare(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        query: Option<&str>,
        form: Option<&[u8]>,
    ) -> Prepared {
        let own = request_params(self.rules, query, form);
        let mut list: Vec<&Param> = own.iter().chain(&self.protocol).collect();
        list.sort_by(|a, b| compare(self.rules, a, b));
        let url = super::params::base_url(self.rules, &self.origin.0, &self.origin.1, path);
        let mut parts = [
            String::with_capacity(256),
            String::with_capacity(128),
            String::with_capacity(128),
        ];
        let mut part = 0;
        parts[0].push_str(method.as_str());
        parts[0].push('&');
        rawurlencode(&url, &mut parts[0]);
        parts[0].push('&');
        for (index, param) in list.iter().enumerate() {
            let out = &mut parts[part];
            if index > 0 {
                out.push_str("%26");
            }
            rawurlencode(&param.name, out);
            out.push_str("%3D");
            match param.raw_name.as_str() {
                NONCE | TIMESTAMP => part += 1,
                _ => rawurlencode(&param.value, out),
            }
        }
        let [head, mid, tail] = parts;
        Prepared {
            signer: Arc::clone(self),
            head,
            mid,
            tail,
        }
    }
}

/// One request's signature base string, split where the nonce and the timestamp go.
pub(crate) struct Prepared {
    signer: Arc<Signer>,
    head: String,
    mid: String,
    tail: String,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prepared")
    }
}

impl Prepared {
    /// A fresh `Authorization: OAuth ...` value: new nonce, the current time, its signature.
    pub(crate) fn authorization(&self) -> HeaderValue {
        // Both on the stack: 32 hex digits of 128 random bits, and the Unix time in seconds.
        let mut nonce = [0u8; 32];
        let random = rand::random::<u128>();
        for (index, digit) in nonce.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((random >> (4 * index)) & 0xF) as usize];
        }
        let mut timestamp = [0u8; 20];
        let mut seconds = clock::unix_millis() / 1000;
        let mut start = timestamp.len();
        loop {
            start -= 1;
            timestamp[start] = b'0' + (seconds % 10) as u8;
            seconds /= 10;
            if seconds == 0 {
                break;
            }
        }
        self.authorization_with(
            std::str::from_utf8(&nonce).expect("hex digits"),
            std::str::from_utf8(&timestamp[start..]).expect("decimal digits"),
        )
    }

    /// The header for a given nonce and timestamp (tests pin signatures with it).
    pub(crate) fn authorization_with(&self, nonce: &str, timestamp: &str) -> HeaderValue {
        let signer = &self.signer;
        let mut context = hmac::Context::with_key(&signer.key);
        for piece in [&self.head, nonce, &self.mid, timestamp, &self.tail] {
            context.update(piece.as_bytes());
        }
        let tag = context.sign();
        let mut signature = [0u8; 44];
        let length = base64::engine::general_purpose::STANDARD
            .encode_slice(tag.as_ref(), &mut signature)
            .expect("a SHA-256 digest fits 44 base64 characters");
        let signature = std::str::from_utf8(&signature[..length]).expect("base64 is ASCII");
        let mut value = String::with_capacity(256 + signer.consumer_key.len() + signer.token.len());
        let fields = [
            ("oauth_consumer_key", signer.consumer_key.as_str()),
            (NONCE, nonce),
            ("oauth_signature", signature),
            ("oauth_signature_method", signer.method.as_str()),
            (TIMESTAMP, timestamp),
            ("oauth_token", signer.token.as_str()),
            ("oauth_version", "1.0"),
        ];
        value.push_str("OAuth ");
        for (index, (name, field)) in fields.into_iter().enumerate() {
            if index > 0 {
                value.push_str(", ");
            }
            value.push_str(name);
            value.push_str("=\"");
            rawurlencode(field, &mut value);
            value.push('"');
        }
        let mut header = HeaderValue::try_from(value).expect("the header is percent-encoded ASCII");
        header.set_sensitive(true);
        header
    }
}
