//! A fake Adobe Commerce (on cloud infrastructure or on-premises) / Magento Open Source store
//! that verifies OAuth 1.0a signatures the way Magento does (`docs/providers.md#adobe-commerce`):
//! the `Authorization: OAuth ...` parameters, the consumer and token, a nonce never seen before
//! for the consumer, a timestamp within [`TIMESTAMP_WINDOW`] of now, and the HMAC over the base
//! string built from its own view of the request (scheme, `Host`, the path as received, the
//! query, a form body), under the current rules or, with `legacy_signing`, the laminas-era ones.
//! A failure is Magento's 401 `{"message": ...}`.
//!
//! Behind it, the Commerce REST API under `/rest[/<store_code>]/V1/...`: the customers resource
//! of Adobe's customer tutorial, the products list and the store views, shared with the ACCS
//! fake (`ims/customers.rs`, `ims/api.rs`); any other path reflects the request body.

use std::collections::HashSet;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use http::request::Parts;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use ring::hmac;

use super::common::{self, Body, BodySummary, json, lock};
use super::fake::{Fake, FakeCore, FakeState};
use super::ims::api::{products, store_views};
use super::ims::customers::magento_error;
use super::ims::customers::{self, Customers};
use super::server::Handler;
use crate::clock;
use crate::providers::adobe_commerce::params::{self, Param, Rules, is_protocol};
use crate::providers::adobe_commerce::php::{rawurldecode, rawurlencode, rawurlencoded};

/// The sandbox integration's four values.
pub const MAGENTO_CONSUMER_KEY: &str = "sandbox-consumer-key-0123456789ab";
pub const MAGENTO_CONSUMER_SECRET: &str = "sandbox-consumer-secret-0123456789";
pub const MAGENTO_ACCESS_TOKEN: &str = "sandbox-access-token-0123456789abcd";
pub const MAGENTO_ACCESS_TOKEN_SECRET: &str = "sandbox-token-secret-0123456789abcd";
/// How far a request's `oauth_timestamp` may be from the fake's clock, either way (the common
/// account of Magento's window).
pub const TIMESTAMP_WINDOW: Duration = Duration::from_secs(600);

/// How the fake verifies.
#[derive(Debug, Clone, Default)]
pub struct MagentoOptions {
    /// Verify as laminas-era releases do (`legacy_signing = true` on the proxy's side).
    pub legacy_signing: bool,
}

/// What the fake keeps: the nonces it saw and the customers it holds.
pub struct MagentoState {
    core: FakeCore,
    rules: Rules,
    nonces: Mutex<HashSet<String>>,
    customers: Mutex<Customers>,
    rejections: Mutex<Vec<String>>,
}

pub type MagentoSandbox = Fake<MagentoState>;

impl MagentoSandbox {
    pub async fn start(options: MagentoOptions) -> io::Result<Self> {
        Self::serve(MagentoState {
            core: FakeCore::new(Duration::MAX),
            rules: if options.legacy_signing {
                Rules::Legacy
            } else {
                Rules::Current
            },
            nonces: Mutex::default(),
            customers: Mutex::default(),
            rejections: Mutex::default(),
        })
        .await
    }

    /// The `message` of every 401 answered so far, oldest first.
    pub fn rejections(&self) -> Vec<String> {
        lock(&self.state.rejections).clone()
    }

    /// Nonces accepted so far.
    pub fn nonces_seen(&self) -> usize {
        lock(&self.state.nonces).len()
    }
}

impl FakeState for MagentoState {
    const NAME: &'static str = "MagentoSandbox";

    fn core(&self) -> &FakeCore {
        &self.core
    }

    /// No token is issued: the integration's access token is configured, and never leaks.
    fn issued_tokens(&self) -> Vec<String> {
        vec![MAGENTO_ACCESS_TOKEN.to_owned(), MAGENTO_ACCESS_TOKEN_SECRET.to_owned()]
    }
}

impl Handler for MagentoState {
    async fn handle(self: std::sync::Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let (parts, summary) = self.core.receive_api(req).await;
        let response = match self.verify(&parts, &summary) {
            Ok(()) => route(&self.customers, &parts, &summary),
            Err(message) => {
                self.core.count_rejected();
                lock(&self.rejections).push(message.clone());
                magento_error(StatusCode::UNAUTHORIZED, &message)
            }
        };
        common::with_echo(response, &common::request_echo(&parts, summary.len))
    }
}

/// `/rest/V1/...`, `/rest/<store_code>/V1/...`.
fn route(customers: &Mutex<Customers>, parts: &Parts, body: &BodySummary) -> Response<Body> {
    let path = parts.uri.path().strip_prefix("/rest").unwrap_or_default();
    let v1 = match path.find("/V1/") {
        Some(at) if at == 0 || !path[1..at].contains('/') => &path[at..],
        _ => return magento_error(StatusCode::NOT_FOUND, "Request does not match any route."),
    };
    if let Some(rest) = v1.strip_prefix("/V1/customers")
        && let Some(answer) = customers::route(customers, &parts.method, rest, body)
    {
        return answer;
    }
    match (&parts.method, v1) {
        (&Method::GET, "/V1/products") => json(StatusCode::OK, &products(parts.uri.query())),
        (&Method::GET, "/V1/store/storeViews") => json(StatusCode::OK, &store_views()),
        _ => common::body_echo(body),
    }
}

// === verification ===

/// The protocol parameters of an `Authorization` value, as Magento's request helper reads them:
/// after `OAuth ` (any case), split on `,`, each `name="value"` whose name is a protocol
/// parameter, name and value `rawurldecode`d, the quotes trimmed.
fn protocol_params(header: &str) -> Vec<(String, String)> {
    let Some(at) = header.to_ascii_lowercase().find("oauth ") else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = Vec::new();
    for piece in header[at + "oauth ".len()..].split(',') {
        if let Some((name, value)) = piece.trim().split_once('=')
            && is_protocol(name)
        {
            let name = rawurldecode(name);
            found.retain(|(n, _)| *n != name);
            found.push((name, rawurldecode(value.trim_matches('"'))));
        }
    }
    found
}

impl MagentoState {
    fn verify(&self, parts: &Parts, body: &BodySummary) -> Result<(), String> {
        let header = parts.headers.get(http::header::AUTHORIZATION);
        let oauth = protocol_params(header.and_then(|v| v.to_str().ok()).unwrap_or_default());
        let get = |name: &str| oauth.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        for required in [
            "oauth_consumer_key",
            "oauth_signature",
            "oauth_signature_method",
            "oauth_nonce",
            "oauth_timestamp",
            "oauth_token",
        ] {
            if get(required).is_none() {
                return Err(format!(
                    "oauth_problem=parameter_absent&oauth_parameters_absent={required}"
                ));
            }
        }
        if get("oauth_version").is_some_and(|v| v != "1.0") {
            return Err("oauth_problem=version_rejected".to_owned());
        }
        let algorithm = match get("oauth_signature_method") {
            Some("HMAC-SHA256") => hmac::HMAC_SHA256,
            Some("HMAC-SHA1") => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            _ => return Err("oauth_problem=signature_method_rejected".to_owned()),
        };
        if !common::secret_eq(get("oauth_consumer_key").unwrap_or_default(), MAGENTO_CONSUMER_KEY) {
            return Err("A consumer having the specified key does not exist.".to_owned());
        }
        self.check_timestamp_and_nonce(get("oauth_timestamp"), get("oauth_nonce"))?;
        if !common::secret_eq(get("oauth_token").unwrap_or_default(), MAGENTO_ACCESS_TOKEN) {
            return Err("Specified token does not exist.".to_owned());
        }
        let expected = self.signature(parts, body, &oauth, algorithm);
        if !common::secret_eq(get("oauth_signature").unwrap_or_default(), &expected) {
            return Err("The signature is invalid. Verify and try again.".to_owned());
        }
        Ok(())
    }

    /// The timestamp is a number within the window; the nonce is new for the consumer (and is
    /// remembered before the signature is checked, as Magento does).
    fn check_timestamp_and_nonce(&self, timestamp: Option<&str>, nonce: Option<&str>) -> Result<(), String> {
        let now = clock::unix_millis() / 1000;
        let fresh = timestamp
            .and_then(|t| t.parse::<u64>().ok())
            .is_some_and(|t| now.abs_diff(t) <= TIMESTAMP_WINDOW.as_secs());
        if !fresh {
            return Err("The timestamp is invalid. Verify and try again.".to_owned());
        }
        let nonce = nonce.unwrap_or_default();
        if !lock(&self.nonces).insert(nonce.to_owned()) {
            return Err(format!(
                "The nonce is already being used by the consumer with ID {MAGENTO_CONSUMER_KEY}."
            ));
        }
        Ok(())
    }

    /// The signature Magento computes for the request as it received it.
    fn signature(
        &self,
        parts: &Parts,
        body: &BodySummary,
        oauth: &[(String, String)],
        algorithm: hmac::Algorithm,
    ) -> String {
        let content_type = parts.headers.get(http::header::CONTENT_TYPE);
        let form = content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/x-www-form-urlencoded"));
        let form = form.then_some(&body.head[..]);
        let mut list = params::request_params(self.rules, parts.uri.query(), form);
        let signed = oauth.iter().filter(|(name, _)| name != "oauth_signature");
        list.extend(signed.map(|(name, value)| Param::new(name, value)));
        list.sort_by(|a, b| params::compare(self.rules, a, b));
        let joined: Vec<String> = list.iter().map(|p| format!("{}={}", p.name, p.value)).collect();
        let host = (parts.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()))
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let url = params::base_url(self.rules, "http", host, parts.uri.path());
        let mut base = parts.method.as_str().to_owned();
        base.push('&');
        rawurlencode(&url, &mut base);
        base.push('&');
        rawurlencode(&joined.join("&"), &mut base);
        let mut key = rawurlencoded(MAGENTO_CONSUMER_SECRET);
        key.push('&');
        rawurlencode(MAGENTO_ACCESS_TOKEN_SECRET, &mut key);
        let tag = hmac::sign(&hmac::Key::new(algorithm, key.as_bytes()), base.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }
}
