//! `provider = "static"`: a fixed credential header (`header`, default `authorization`, and its
//! whole `value`), for APIs whose keys do not expire or are rotated by hand.
//!
//! - `validate.rs`: the tenant's keys → [`StaticConfig`];
//! - `token.rs`: the fixed credential and its expiry.

mod token;
mod validate;

pub(crate) use token::StaticToken;
pub(super) use validate::build;

use std::time::SystemTime;

use http::HeaderName;
use toml::Table;

use super::fingerprint::Fingerprint;
use super::preset::Preset;
use crate::schema::Secret;
use crate::schema::print::{masked, text};
use crate::schema::raw::RawTenant;
use crate::schema::units::format_rfc3339;

/// The keys of a tenant table that belong to this provider.
pub(super) const KEYS: &[&str] = &["header", "value", "expires_at"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConfig {
    /// Default `authorization`.
    pub header: HeaderName,
    /// The whole header value, e.g. `Bearer abc`.
    pub value: Secret<String>,
    /// Explicit expiry; otherwise read from a JWT value when there is one.
    pub expires_at: Option<SystemTime>,
}

/// Nothing: a static tenant names its upstream and sets its own limits.
pub(super) fn preset(_raw: &RawTenant) -> Preset {
    Preset::default()
}

pub(super) fn secrets(c: &StaticConfig) -> Vec<&Secret<String>> {
    vec![&c.value]
}

pub(super) fn fingerprint(w: &mut Fingerprint, c: &StaticConfig) {
    let StaticConfig {
        header,
        value,
        expires_at,
    } = c;
    w.text("header", header.as_str());
    w.secret("value", value);
    if let Some(at) = expires_at {
        w.instant("expires_at", *at);
    }
}

pub(super) fn print(c: &StaticConfig, t: &mut Table) {
    t.insert("header".into(), text(&c.header));
    t.insert("value".into(), masked());
    if let Some(at) = c.expires_at {
        t.insert("expires_at".into(), text(&format_rfc3339(at)));
    }
}
