//! `provider = "adobe_ims"`: Adobe IMS server-to-server (OAuth client credentials) for Adobe
//! Commerce as a Cloud Service. IMS is an OAuth token endpoint with house rules: comma-joined
//! scopes, two client secrets tried in turn, and the `x-api-key` and `x-gw-ims-org-id` headers
//! that every API call carries (`docs/providers.md#adobe-ims`).
//!
//! - `validate.rs`: the tenant's keys → [`AdobeImsConfig`];
//! - `token.rs`: the token call, and the headers added upstream.

mod token;
mod validate;

pub(crate) use token::AdobeIms;
pub(super) use validate::build;

use toml::Table;

use super::fingerprint::Fingerprint;
use super::preset::Preset;
use crate::schema::Secret;
use crate::schema::print::{list, secrets as masked_secrets, text};
use crate::schema::raw::RawTenant;

/// The keys of a tenant table that belong to this provider.
pub(super) const KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "client_secrets",
    "scopes",
    "token_url",
    "org_id",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdobeImsConfig {
    pub client_id: String,
    /// One or two; tried in order on `400 invalid_client`.
    pub client_secrets: Vec<Secret<String>>,
    /// Sent comma-separated.
    pub scopes: Vec<String>,
    /// Default `https://ims-na1.adobelogin.com/ims/token/v3`.
    pub token_url: http::Uri,
    pub org_id: Option<String>,
}

/// No default upstream (each ACCS instance has its own); the REST paths are rewritten.
pub(super) fn preset(_raw: &RawTenant) -> Preset {
    Preset {
        rewrite: super::preset::ADOBE_REWRITE,
        ..Preset::default()
    }
}

pub(super) fn secrets(c: &AdobeImsConfig) -> Vec<&Secret<String>> {
    c.client_secrets.iter().collect()
}

pub(super) fn fingerprint(w: &mut Fingerprint, c: &AdobeImsConfig) {
    let AdobeImsConfig {
        client_id,
        client_secrets,
        scopes,
        token_url,
        org_id,
    } = c;
    w.text("client_id", client_id);
    w.secrets("client_secrets", client_secrets);
    w.texts("scopes", scopes);
    w.display("token_url", token_url);
    if let Some(org_id) = org_id {
        w.text("org_id", org_id);
    }
}

pub(super) fn print(c: &AdobeImsConfig, t: &mut Table) {
    t.insert("client_id".into(), text(&c.client_id));
    t.insert("client_secrets".into(), masked_secrets(c.client_secrets.len()));
    t.insert("scopes".into(), list(&c.scopes));
    t.insert("token_url".into(), text(&c.token_url));
    if let Some(org) = &c.org_id {
        t.insert("org_id".into(), text(org));
    }
}
