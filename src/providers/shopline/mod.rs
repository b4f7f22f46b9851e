//! `provider = "shopline"`: SHOPLINE Admin API tokens for one store, from app credentials (signed
//! token/create and token/refresh) or a private app's fixed token (`docs/providers.md#shopline`).
//!
//! A refresh rotates *the* store's token and shortens every other copy to five minutes, so a
//! renewal made alone costs the peers that share the account: the token manager renews SHOPLINE
//! as late as is safe when it cannot coordinate.
//!
//! - `validate.rs`: the tenant's keys → [`ShoplineConfig`];
//! - `token.rs`: the signed token calls.

mod token;
mod validate;

pub(crate) use token::Shopline;
#[cfg(test)]
pub(crate) use token::parse_envelope;
pub(super) use validate::build;

use toml::Table;

use super::fingerprint::Fingerprint;
use super::preset::Preset;
use crate::schema::Secret;
use crate::schema::print::{masked, text};
use crate::schema::raw::RawTenant;

/// The keys of a tenant table that belong to this provider.
pub(super) const KEYS: &[&str] = &["handle", "app_key", "app_secret", "code", "access_token", "token_url"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShoplineConfig {
    /// Store subdomain (`open001` for `open001.myshopline.com`).
    pub handle: String,
    pub credentials: ShoplineCredentials,
    /// Base to which `/admin/oauth/token/refresh` and `/create` are appended. Default: the upstream.
    pub token_url: http::Uri,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShoplineCredentials {
    /// Public and custom apps: signed `token/create` (with a one-time `code`) and `token/refresh`.
    OAuth {
        app_key: String,
        app_secret: Secret<String>,
        code: Option<Secret<String>>,
    },
    /// Private apps: a static token whose expiry is read from the JWT.
    Private { access_token: Secret<String> },
}

/// The store's own host, and SHOPLINE's documented 40-request bucket refilled at 4 per second.
pub(super) fn preset(raw: &RawTenant) -> Preset {
    Preset {
        upstream: raw
            .handle
            .as_deref()
            .filter(|h| is_dns_label(h))
            .map(|h| format!("https://{h}.myshopline.com")),
        has_default_upstream: true,
        rate_limit: super::preset::limit(4, 40, std::time::Duration::ZERO),
        ..Preset::default()
    }
}

pub(super) fn secrets(c: &ShoplineConfig) -> Vec<&Secret<String>> {
    match &c.credentials {
        ShoplineCredentials::OAuth { app_secret, code, .. } => std::iter::once(app_secret).chain(code).collect(),
        ShoplineCredentials::Private { access_token } => vec![access_token],
    }
}

pub(super) fn fingerprint(w: &mut Fingerprint, c: &ShoplineConfig) {
    let ShoplineConfig {
        handle,
        credentials,
        token_url,
    } = c;
    w.text("handle", handle);
    match credentials {
        ShoplineCredentials::OAuth {
            app_key,
            app_secret,
            code,
        } => {
            w.text("credentials", "oauth");
            w.text("credentials.app_key", app_key);
            w.secret("credentials.app_secret", app_secret);
            if let Some(code) = code {
                w.secret("credentials.code", code);
            }
        }
        ShoplineCredentials::Private { access_token } => {
            w.text("credentials", "private");
            w.secret("credentials.access_token", access_token);
        }
    }
    w.display("token_url", token_url);
}

pub(super) fn print(c: &ShoplineConfig, t: &mut Table) {
    t.insert("handle".into(), text(&c.handle));
    t.insert("token_url".into(), text(&c.token_url));
    match &c.credentials {
        ShoplineCredentials::OAuth { app_key, code, .. } => {
            t.insert("app_key".into(), text(app_key));
            t.insert("app_secret".into(), masked());
            if code.is_some() {
                t.insert("code".into(), masked());
            }
        }
        ShoplineCredentials::Private { .. } => {
            t.insert("access_token".into(), masked());
        }
    }
}

/// A store subdomain: `open001` in open001.myshopline.com.
pub(super) fn is_dns_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}
