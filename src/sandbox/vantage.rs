//! Fake ABBYY Vantage (`docs/providers.md#abbyy-vantage`): an IdentityServer-shaped token endpoint
//! and a slice of the public API on one listener.
//!
//! Token side: `POST /auth2/connect/token` and `POST /auth2/<tenant>/connect/token`, form body,
//! client_secret_post or client_secret_basic, several valid secrets. Grants: `client_credentials`,
//! `password` and `refresh_token`; a refresh token is issued only when the original grant asked
//! for `offline_access`, and it is one-time: redeeming it returns a new one and kills the old, and a
//! second redemption is `invalid_grant` (IdentityServer's default rotation). Discovery is served at
//! `/auth2[/<tenant>]/.well-known/openid-configuration`. API side (`vantage/api.rs`): bearer
//! tokens; a bad one gets ASP.NET JwtBearer's empty 401 with `WWW-Authenticate`.

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
use tokio::time::Instant;

use super::common::{self, Body, OAuthError, TOKEN_BODY_LIMIT, bump, get, json, lock, oauth_error};
use super::fake::{Fake, FakeCore, FakeState, TokenEndpoint};
use super::server::Handler;

mod api;
mod grants;

pub const VANTAGE_CLIENT_ID: &str = "sandbox-client";
pub const VANTAGE_CLIENT_SECRET: &str = "sandbox-secret-1";
pub const VANTAGE_USERNAME: &str = "sandbox-user@example.com";
pub const VANTAGE_PASSWORD: &str = "sandbox-password";
pub const VANTAGE_TENANT_ID: &str = "0b5e0f6c-5a5e-4b1e-9d2c-5a4d0b0c0001";
/// The documented token-request scope (space-separated on the wire).
pub const VANTAGE_SCOPES: &[&str] = &["openid", "permissions", "global.wildcard"];
const OFFLINE_ACCESS: &str = "offline_access";

/// How the fake Vantage client and user are set up.
#[derive(Clone)]
pub struct VantageOptions {
    pub client_id: String,
    /// Every currently valid secret (Vantage clients may hold several).
    pub client_secrets: Vec<String>,
    pub username: String,
    pub password: String,
    pub tenant_id: String,
    /// Scopes the client may ask for, besides `offline_access`.
    pub allowed_scopes: Vec<String>,
    /// "Allow Resource Owner Password Credentials Flow".
    pub allow_password_grant: bool,
    /// "Allow issuing refresh tokens" (`allowOfflineAccess`).
    pub allow_offline_access: bool,
    pub token_ttl: Duration,
    /// IdentityServer's default absolute refresh-token lifetime is 30 days.
    pub refresh_token_ttl: Duration,
}

impl Default for VantageOptions {
    fn default() -> Self {
        Self {
            client_id: VANTAGE_CLIENT_ID.to_owned(),
            client_secrets: vec![VANTAGE_CLIENT_SECRET.to_owned()],
            username: VANTAGE_USERNAME.to_owned(),
            password: VANTAGE_PASSWORD.to_owned(),
            tenant_id: VANTAGE_TENANT_ID.to_owned(),
            allowed_scopes: VANTAGE_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            allow_password_grant: true,
            allow_offline_access: true,
            // Short on purpose: the docs' sample says 30 days, but the lifetime is per client and
            // an hour exercises refresh within a demo session.
            token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl fmt::Debug for VantageOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VantageOptions")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("tenant_id", &self.tenant_id)
            .field("token_ttl", &self.token_ttl)
            .finish_non_exhaustive()
    }
}

/// A running fake Vantage; dropping it stops the server.
pub type VantageSandbox = Fake<VantageState>;

/// A refresh token's grant: what a redemption re-issues.
#[derive(Debug, Clone)]
struct RefreshGrant {
    scope: String,
    subject: Option<String>,
    expires_at: Instant,
    used: bool,
}

#[derive(Debug, Default)]
struct Counters {
    client_credentials: AtomicUsize,
    password: AtomicUsize,
    refresh_token: AtomicUsize,
    refresh_token_uses: AtomicUsize,
    refresh_token_reuses: AtomicUsize,
    invalid_grants: AtomicUsize,
}

/// What the handle and the request handler share; its own fields beside the common [`FakeCore`].
pub struct VantageState {
    core: FakeCore,
    options: VantageOptions,
    secrets: Mutex<Vec<String>>,
    refresh_tokens: Mutex<HashMap<String, RefreshGrant>>,
    counters: Counters,
}

impl FakeState for VantageState {
    const NAME: &'static str = "VantageSandbox";

    fn core(&self) -> &FakeCore {
        &self.core
    }

    /// Access tokens plus refresh tokens.
    fn issued_tokens(&self) -> Vec<String> {
        let mut tokens = self.core.tokens.all();
        tokens.extend(lock(&self.refresh_tokens).keys().cloned());
        tokens
    }

    /// Refresh tokens die too: each counts as already redeemed.
    fn revoke_all(&self) {
        self.core.tokens.revoke_all();
        lock(&self.refresh_tokens)
            .values_mut()
            .for_each(|grant| grant.used = true);
    }
}

impl TokenEndpoint for VantageState {}

// === impl VantageSandbox ===

impl VantageSandbox {
    pub async fn start(options: VantageOptions) -> io::Result<Self> {
        Self::serve(VantageState {
            core: FakeCore::new(options.token_ttl),
            secrets: Mutex::new(options.client_secrets.clone()),
            refresh_tokens: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            options,
        })
        .await
    }

    /// The tenant-less token endpoint, `.../auth2/connect/token`.
    pub fn token_url(&self) -> String {
        format!("{}/auth2/connect/token", self.base_url())
    }

    /// The tenant-scoped token endpoint, `.../auth2/<tenant>/connect/token`.
    pub fn tenant_token_url(&self) -> String {
        format!(
            "{}/auth2/{}/connect/token",
            self.base_url(),
            self.state.options.tenant_id
        )
    }

    /// Token calls with the given `grant_type` (`client_credentials`, `password`, `refresh_token`).
    pub fn grant_calls(&self, grant_type: &str) -> usize {
        let c = &self.state.counters;
        match grant_type {
            "client_credentials" => get(&c.client_credentials),
            "password" => get(&c.password),
            "refresh_token" => get(&c.refresh_token),
            _ => 0,
        }
    }

    /// Successful refresh-token redemptions.
    pub fn refresh_token_uses(&self) -> usize {
        get(&self.state.counters.refresh_token_uses)
    }

    /// Attempts to redeem a refresh token that had already been redeemed.
    pub fn refresh_token_reuse_attempts(&self) -> usize {
        get(&self.state.counters.refresh_token_reuses)
    }

    /// Token calls answered `invalid_grant`, whatever the grant: a reused, unknown or expired
    /// refresh token, or a wrong username or password.
    pub fn invalid_grants(&self) -> usize {
        get(&self.state.counters.invalid_grants)
    }

    pub fn set_valid_secrets(&self, secrets: Vec<String>) {
        *lock(&self.state.secrets) = secrets;
    }
}

// === token endpoint ===

impl Handler for VantageState {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let tenant_part = format!("/auth2/{}", self.options.tenant_id);
        let auth_path = path.strip_prefix(&tenant_part).or_else(|| path.strip_prefix("/auth2"));
        match auth_path {
            Some("/connect/token") => self.token(req).await,
            Some("/.well-known/openid-configuration") => self.discovery(&req, &path),
            _ if path.starts_with("/api/publicapi/v1/") => self.api(req).await,
            _ => common::empty(StatusCode::NOT_FOUND),
        }
    }
}

type Fields = HashMap<String, String>;

impl VantageState {
    async fn token(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(outage) = self.core.count_token_call() {
            return outage;
        }
        if req.method() != Method::POST {
            return common::empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        let (parts, body) = req.into_parts();
        let Ok(body) = common::read_body(body, TOKEN_BODY_LIMIT).await else {
            return oauth_error("invalid_request", "request too large");
        };
        let mut fields = common::form_fields(None, &body.head);
        if let Some((id, secret)) = common::basic_credentials(&parts.headers) {
            fields.insert("client_id".to_owned(), id);
            fields.insert("client_secret".to_owned(), secret);
        }
        if !self.client_authenticated(&fields) {
            return json(StatusCode::BAD_REQUEST, &json!({"error": "invalid_client"}));
        }
        let result = match fields.get("grant_type").map(String::as_str) {
            Some("client_credentials") => self.client_credentials(&fields),
            Some("password") => self.password(&fields),
            Some("refresh_token") => self.refresh(&fields),
            Some(_) => Err(OAuthError("unsupported_grant_type", "")),
            None => Err(OAuthError("invalid_request", "grant_type is missing")),
        };
        result.unwrap_or_else(|rejection| {
            if rejection.0 == "invalid_grant" {
                bump(&self.counters.invalid_grants);
            }
            Response::from(rejection)
        })
    }

    fn client_authenticated(&self, fields: &Fields) -> bool {
        let id = fields.get("client_id").map(String::as_str).unwrap_or_default();
        let secret = fields.get("client_secret").map(String::as_str).unwrap_or_default();
        id == self.options.client_id && lock(&self.secrets).iter().any(|s| common::secret_eq(s, secret))
    }

    fn discovery(&self, req: &Request<Incoming>, path: &str) -> Response<Body> {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let issuer = format!(
            "http://{host}{}",
            path.trim_end_matches("/.well-known/openid-configuration")
        );
        json(
            StatusCode::OK,
            &json!({
                "issuer": issuer,
                "token_endpoint": format!("{issuer}/connect/token"),
                "authorization_endpoint": format!("{issuer}/connect/authorize"),
                "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token", "password"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": ["openid", "permissions", "global.wildcard", "offline_access"],
            }),
        )
    }
}
