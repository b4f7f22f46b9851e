//! `provider = "vantage"`: ABBYY Vantage OIDC tokens (client credentials or resource-owner password,
//! optionally with `offline_access` refresh tokens) (`docs/providers.md#abbyy-vantage`).
//!
//! A refresh token is spent by its use, so, as with SHOPLINE, a renewal made alone costs the peers
//! that share the account.
//!
//! - `validate.rs`: the tenant's keys → [`VantageConfig`];
//! - `token.rs`: the token calls.

mod token;
mod validate;

pub(crate) use token::Vantage;
pub(super) use validate::build;

use toml::{Table, Value};

use super::fingerprint::Fingerprint;
use super::preset::Preset;
use crate::schema::Secret;
use crate::schema::print::{list, masked, secrets as masked_secrets, text};
use crate::schema::raw::RawTenant;

/// The keys of a tenant table that belong to this provider.
pub(super) const KEYS: &[&str] = &[
    "base_url",
    "tenant_id",
    "token_url",
    "client_id",
    "client_secret",
    "client_secrets",
    "grant",
    "username",
    "password",
    "scopes",
    "offline_access",
];

/// Where the US cloud serves both the API and the token endpoint.
pub(super) const VANTAGE_BASE_URL: &str = "https://vantage-us.abbyy.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VantageConfig {
    /// Default `https://vantage-us.abbyy.com`.
    pub base_url: http::Uri,
    pub tenant_id: Option<String>,
    /// Resolved token endpoint: `token_url` if set, else derived from `base_url` and `tenant_id`.
    pub token_url: http::Uri,
    pub client_id: String,
    pub client_secrets: Vec<Secret<String>>,
    pub grant: PasswordOrClient,
    /// Default `["openid", "permissions", "global.wildcard"]`.
    pub scopes: Vec<String>,
    pub offline_access: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOrClient {
    ClientCredentials,
    Password { username: String, password: Secret<String> },
}

impl PasswordOrClient {
    pub(super) fn password(&self) -> Option<&Secret<String>> {
        match self {
            Self::Password { password, .. } => Some(password),
            Self::ClientCredentials => None,
        }
    }
}

/// The upstream is the `base_url` (the US cloud by default).
pub(super) fn preset(raw: &RawTenant) -> Preset {
    let base = raw
        .base_url
        .as_deref()
        .unwrap_or(VANTAGE_BASE_URL)
        .trim_end_matches('/');
    Preset {
        // An invalid base_url is reported once, by the provider, not again as upstream.
        upstream: crate::schema::fields::check_http_url(base, false)
            .is_ok()
            .then(|| base.to_owned()),
        has_default_upstream: true,
        ..Preset::default()
    }
}

pub(super) fn secrets(c: &VantageConfig) -> Vec<&Secret<String>> {
    c.client_secrets.iter().chain(c.grant.password()).collect()
}

pub(super) fn fingerprint(w: &mut Fingerprint, c: &VantageConfig) {
    let VantageConfig {
        base_url,
        tenant_id,
        token_url,
        client_id,
        client_secrets,
        grant,
        scopes,
        offline_access,
    } = c;
    w.display("base_url", base_url);
    if let Some(tenant_id) = tenant_id {
        w.text("tenant_id", tenant_id);
    }
    w.display("token_url", token_url);
    w.text("client_id", client_id);
    w.secrets("client_secrets", client_secrets);
    match grant {
        PasswordOrClient::ClientCredentials => w.text("grant", "client_credentials"),
        PasswordOrClient::Password { username, password } => w
            .text("grant", "password")
            .text("grant.username", username)
            .secret("grant.password", password),
    };
    w.texts("scopes", scopes);
    w.flag("offline_access", *offline_access);
}

pub(super) fn print(c: &VantageConfig, t: &mut Table) {
    t.insert("base_url".into(), text(&c.base_url));
    if let Some(id) = &c.tenant_id {
        t.insert("tenant_id".into(), text(id));
    }
    t.insert("token_url".into(), text(&c.token_url));
    t.insert("client_id".into(), text(&c.client_id));
    t.insert("client_secrets".into(), masked_secrets(c.client_secrets.len()));
    match &c.grant {
        PasswordOrClient::ClientCredentials => {
            t.insert("grant".into(), text("client_credentials"));
        }
        PasswordOrClient::Password { username, .. } => {
            t.insert("grant".into(), text("password"));
            t.insert("username".into(), text(username));
            t.insert("password".into(), masked());
        }
    }
    t.insert("scopes".into(), list(&c.scopes));
    t.insert("offline_access".into(), Value::Boolean(c.offline_access));
}
