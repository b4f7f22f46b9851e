//! `provider = "cyberbiz"`: the CYBERBIZ App Store API, with one API token from the merchant admin
//! (`docs/providers.md#cyberbiz-token`).
//!
//! - `validate.rs`: the tenant's keys → [`CyberbizConfig`];
//! - `token.rs`: the fixed token and its JWT expiry.

mod token;
mod validate;

pub(crate) use token::Cyberbiz;
pub(super) use validate::build;

use std::time::Duration;

use toml::Table;

use super::fingerprint::Fingerprint;
use super::preset::Preset;
use crate::schema::Secret;
use crate::schema::print::masked;
use crate::schema::raw::RawTenant;

/// The keys of a tenant table that belong to this provider.
pub(super) const KEYS: &[&str] = &["token", "app_secret"];

const CYBERBIZ_UPSTREAM: &str = "https://app-store-api.cyberbiz.io";

/// Extra spacing per CYBERBIZ slot (see [`preset`]).
const CYBERBIZ_HEADROOM: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CyberbizConfig {
    pub token: Secret<String>,
    /// The app secret that signs the app's webhooks (README, "Webhooks"). It plays no part in
    /// getting a token, so it is not in the store fingerprint.
    pub app_secret: Option<Secret<String>>,
}

/// CYBERBIZ's one API host, its 5 requests per second, and its 2 MB request cap.
pub(super) fn preset(_raw: &RawTenant) -> Preset {
    Preset {
        upstream: Some(CYBERBIZ_UPSTREAM.to_owned()),
        has_default_upstream: true,
        // 5/s spaced 220 ms instead of 200: any six requests then span 1.1 s at CYBERBIZ, so up
        // to 100 ms of scheduling or network jitter cannot put six in one second (~9 % slower).
        rate_limit: super::preset::limit(5, 1, CYBERBIZ_HEADROOM),
        max_body: Some(2_000_000),
        ..Preset::default()
    }
}

pub(super) fn secrets(c: &CyberbizConfig) -> Vec<&Secret<String>> {
    std::iter::once(&c.token).chain(&c.app_secret).collect()
}

pub(super) fn fingerprint(w: &mut Fingerprint, c: &CyberbizConfig) {
    // The app secret only verifies webhooks: changing it must not orphan the stored token.
    let CyberbizConfig { token, app_secret: _ } = c;
    w.secret("token", token);
}

pub(super) fn print(c: &CyberbizConfig, t: &mut Table) {
    t.insert("token".into(), masked());
    if c.app_secret.is_some() {
        t.insert("app_secret".into(), masked());
    }
}
