//! Fake Adobe IMS token endpoint plus an ACCS-like Commerce REST API on the same listener
//! (`docs/providers.md#adobe-ims`).
//!
//! Token side: `POST /ims/token/v3`, form fields (body or query) `grant_type=client_credentials`,
//! `client_id`, `client_secret`, comma-separated `scope`, or client_secret_basic. Errors are 400
//! `{"error","error_description"}` with IMS's own descriptions; the token is a JWT whose claims
//! carry `created_at`/`expires_in` as millisecond strings while the JSON `expires_in` is seconds.
//! API side (`ims/api.rs`): `/<tenant-id>/V1/...` needs `Authorization: Bearer` and
//! `x-api-key: <client_id>`; a bad token gets Magento's guest 401. It serves the products list,
//! the store views and an in-memory customers resource (`ims/customers.rs`) in Commerce's shapes;
//! `/V1/sandbox/bytes` and `/V1/sandbox/slow` exist for streaming and timeout tests.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use super::common::{self, Body, OAuthError, TOKEN_BODY_LIMIT, bump, get, json, lock, oauth_error};
use super::fake::{Fake, FakeCore, FakeState, TokenEndpoint};
use super::server::Handler;
use crate::clock;

pub(super) mod api;
pub(super) mod customers;

/// Demo client id; also the `x-api-key` the API expects.
pub const IMS_CLIENT_ID: &str = "sandbox-client";
/// Demo client secret (the first of the credential's two slots).
pub const IMS_CLIENT_SECRET: &str = "sandbox-secret-1";
/// Demo ACCS tenant id, the first path segment of every API call.
pub const ACCS_TENANT_ID: &str = "sandbox-tenant";
/// The scopes ACCS documents as required; the fake's default allowed set.
pub const ACCS_SCOPES: &[&str] = &[
    "openid",
    "AdobeID",
    "email",
    "profile",
    "additional_info.roles",
    "additional_info.projectedProductContext",
    "commerce.accs",
];
/// IMS's typical lifetime: the v3 response says `expires_in: 86399` (seconds).
pub const IMS_DEFAULT_TTL: Duration = Duration::from_secs(86_399);

/// How the fake IMS credential and ACCS tenant are set up.
#[derive(Clone)]
pub struct ImsOptions {
    pub client_id: String,
    /// Up to two valid secrets, as on a real S2S credential.
    pub client_secrets: Vec<String>,
    /// Scopes bound to the credential; asking for any other is `invalid_scope`.
    pub allowed_scopes: Vec<String>,
    pub token_ttl: Duration,
    pub tenant_id: String,
    /// Whether API calls must carry `x-api-key: <client_id>` (unconfirmed for ACCS:
    /// `docs/providers.md#accs-requests`).
    pub require_api_key: bool,
}

impl Default for ImsOptions {
    fn default() -> Self {
        Self {
            client_id: IMS_CLIENT_ID.to_owned(),
            client_secrets: vec![IMS_CLIENT_SECRET.to_owned()],
            allowed_scopes: ACCS_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            token_ttl: IMS_DEFAULT_TTL,
            tenant_id: ACCS_TENANT_ID.to_owned(),
            require_api_key: true,
        }
    }
}

impl fmt::Debug for ImsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImsOptions")
            .field("client_id", &self.client_id)
            .field("client_secrets", &format_args!("[{} x ***]", self.client_secrets.len()))
            .field("allowed_scopes", &self.allowed_scopes)
            .field("token_ttl", &self.token_ttl)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

/// A running fake IMS + ACCS; dropping it stops the server.
pub type ImsSandbox = Fake<ImsState>;

/// What the handle and the request handler share; its own fields beside the common [`FakeCore`].
pub struct ImsState {
    core: FakeCore,
    client_id: String,
    tenant_id: String,
    allowed_scopes: Vec<String>,
    require_api_key: bool,
    secrets: Mutex<Vec<String>>,
    tokens_issued: AtomicUsize,
    customers: Mutex<customers::Customers>,
}

impl FakeState for ImsState {
    const NAME: &'static str = "ImsSandbox";

    fn core(&self) -> &FakeCore {
        &self.core
    }
}

impl TokenEndpoint for ImsState {}

// === impl ImsSandbox ===

impl ImsSandbox {
    pub async fn start(options: ImsOptions) -> io::Result<Self> {
        Self::serve(ImsState {
            core: FakeCore::new(options.token_ttl),
            client_id: options.client_id,
            tenant_id: options.tenant_id,
            allowed_scopes: options.allowed_scopes,
            require_api_key: options.require_api_key,
            secrets: Mutex::new(options.client_secrets),
            tokens_issued: AtomicUsize::new(0),
            customers: Mutex::new(customers::Customers::default()),
        })
        .await
    }

    pub fn token_url(&self) -> String {
        format!("{}/ims/token/v3", self.base_url())
    }

    /// The ACCS API base including the tenant id: `http://127.0.0.1:PORT/<tenant-id>`.
    pub fn api_base_url(&self) -> String {
        format!("{}/{}", self.base_url(), self.state.tenant_id)
    }

    /// Tokens actually issued.
    pub fn tokens_issued(&self) -> usize {
        get(&self.state.tokens_issued)
    }

    /// Replaces the valid secrets (rotation); tokens already issued stay valid, as on IMS.
    pub fn set_valid_secrets(&self, secrets: Vec<String>) {
        *lock(&self.state.secrets) = secrets;
    }
}

// === token endpoint ===

impl Handler for ImsState {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path() == "/ims/token/v3" {
            return self.token(req).await;
        }
        let tenant_prefix = format!("/{}/V1/", self.tenant_id);
        if req.uri().path().starts_with(&tenant_prefix) {
            return self.api(req).await;
        }
        customers::magento_error(StatusCode::NOT_FOUND, "Request does not match any route.")
    }
}

impl ImsState {
    async fn token(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(outage) = self.core.count_token_call() {
            return outage;
        }
        if req.method() != Method::POST {
            return oauth_error("invalid_request", "method not allowed");
        }
        let (parts, body) = req.into_parts();
        let Ok(body) = common::read_body(body, TOKEN_BODY_LIMIT).await else {
            return oauth_error("invalid_request", "request body too large or broken");
        };
        let mut fields = common::form_fields(parts.uri.query(), &body.head);
        if let Some((id, secret)) = common::basic_credentials(&parts.headers) {
            fields.insert("client_id".to_owned(), id);
            fields.insert("client_secret".to_owned(), secret);
        }
        match self.check_token_request(&fields) {
            Ok(scope) => self.issue(&scope),
            Err(rejection) => rejection.into(),
        }
    }

    /// Validates in IMS's order: client, secret, grant, scope. Returns the granted scope.
    fn check_token_request(&self, fields: &HashMap<String, String>) -> Result<String, OAuthError> {
        let field = |name: &str| fields.get(name).map(String::as_str).filter(|v| !v.is_empty());
        if field("client_id") != Some(self.client_id.as_str()) {
            return Err(OAuthError("invalid_client", "invalid client_id parameter"));
        }
        let secret = field("client_secret").unwrap_or_default();
        if !lock(&self.secrets).iter().any(|valid| common::secret_eq(valid, secret)) {
            return Err(OAuthError("invalid_client", "invalid client_secret parameter"));
        }
        match field("grant_type") {
            None => {
                return Err(OAuthError("invalid_request", "missing grant_type parameter"));
            }
            Some("client_credentials") => {}
            Some(_) => {
                return Err(OAuthError("unsupported_grant_type", "unsupported grant_type"));
            }
        }
        let Some(scope) = field("scope") else {
            return Err(OAuthError("invalid_request", "missing scope parameter"));
        };
        if scope
            .split(',')
            .any(|s| !self.allowed_scopes.iter().any(|a| a == s.trim()))
        {
            return Err(OAuthError("invalid_scope", "invalid scope"));
        }
        Ok(scope.to_owned())
    }

    fn issue(&self, scope: &str) -> Response<Body> {
        let ttl = self.core.ttl();
        let claims = json!({
            "id": common::random_string(),
            "type": "access_token",
            "client_id": self.client_id,
            "as": "ims-na1",
            "scope": scope,
            // IMS puts milliseconds, as strings, inside the token
            // (`docs/providers.md#ims-token-lifetime-and-units`).
            "created_at": clock::unix_millis().to_string(),
            "expires_in": ttl.as_millis().to_string(),
        });
        let token = common::mint_jwt("RS256", &claims);
        self.core.tokens.insert(token.clone(), ttl);
        bump(&self.tokens_issued);
        json(
            StatusCode::OK,
            &json!({"access_token": token, "token_type": "bearer", "expires_in": ttl.as_secs()}),
        )
    }
}
