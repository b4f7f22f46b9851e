//! `provider = "oauth2"`: any RFC 6749 token endpoint, with the grant, client authentication
//! (secret post or basic, RFC 7523 `private_key_jwt`, RFC 8705 `tls_client_auth`) and response
//! mapping that the endpoint needs (`docs/providers.md#generic-oauth2`).
//!
//! Adobe IMS and ABBYY Vantage are OAuth endpoints with house rules; they build their requests
//! from the form and response pieces here.
//!
//! - `validate.rs`: the tenant's keys → [`OAuth2Config`];
//! - `token.rs`: the token request and its client authentication (`assertion.rs` signs the JWT);
//! - `response.rs`: where the token and its lifetime sit in an answer.

mod assertion;
pub(crate) mod response;
mod token;
mod validate;

pub(crate) use token::{
    Form, Grant, OAuth2, SecretPlacement, grant_form, is_invalid_grant, join_scopes, keep_refresh_token,
    request_with_secrets,
};
pub(super) use validate::build;
pub(crate) use validate::{forbid, username_password};

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::fingerprint::Fingerprint;
use super::preset::Preset;
use crate::schema::print::{duration, list, masked, text};
use crate::schema::raw::RawTenant;
use crate::schema::{KeyDigest, Secret};

/// The keys of a tenant table that belong to this provider.
pub(super) const KEYS: &[&str] = &[
    "token_url",
    "client_id",
    "client_secret",
    "client_secrets",
    "grant",
    "username",
    "password",
    "refresh_token",
    "scopes",
    "scope_separator",
    "auth_method",
    "private_key",
    "client_cert",
    "client_key",
    "extra_params",
    "audience",
    "default_ttl",
    "response",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    pub token_url: http::Uri,
    pub client_id: String,
    /// Empty only with `private_key_jwt` or `tls_client_auth`.
    pub client_secrets: Vec<Secret<String>>,
    pub grant: OAuth2Grant,
    /// Empty: no `scope` parameter at all.
    pub scopes: Vec<String>,
    /// Default `" "`.
    pub scope_separator: String,
    pub auth_method: OAuth2AuthMethod,
    pub extra_params: Vec<(String, String)>,
    pub audience: Option<String>,
    /// Lifetime assumed when the response carries no expiry. Default 1 h.
    pub default_ttl: Duration,
    pub response: ResponseMapping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuth2Grant {
    ClientCredentials,
    Password { username: String, password: Secret<String> },
    RefreshToken { refresh_token: Secret<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuth2AuthMethod {
    ClientSecretPost,
    ClientSecretBasic,
    /// RFC 7523: a JWT signed with this PEM key.
    PrivateKeyJwt {
        private_key: Secret<String>,
    },
    /// RFC 8705: mutual TLS to the token endpoint.
    TlsClientAuth {
        client_cert: PathBuf,
        client_key: PathBuf,
        /// A digest of both files' content as validation read them. A reload compares configs
        /// to decide whether a tenant's credentials changed; with paths alone, a certificate
        /// rotated in place would keep the old identity until a restart.
        content: KeyDigest,
    },
}

/// Where the token and its lifetime sit in a non-standard response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMapping {
    /// Dotted path split on `.`; default `["access_token"]`.
    pub token: Vec<String>,
    /// Default `["expires_in"]`.
    pub expires_in: Vec<String>,
    pub expires_in_unit: ExpiresInUnit,
    /// Absolute expiry (unix seconds, or RFC 3339) instead of `expires_in`.
    pub expires_at: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiresInUnit {
    Seconds,
    Millis,
}

/// Nothing: a generic endpoint's API names its upstream and sets its own limits.
pub(super) fn preset(_raw: &RawTenant) -> Preset {
    Preset::default()
}

pub(super) fn secrets(c: &OAuth2Config) -> Vec<&Secret<String>> {
    let grant = match &c.grant {
        OAuth2Grant::Password { password, .. } => Some(password),
        OAuth2Grant::RefreshToken { refresh_token } => Some(refresh_token),
        OAuth2Grant::ClientCredentials => None,
    };
    let key = match &c.auth_method {
        OAuth2AuthMethod::PrivateKeyJwt { private_key } => Some(private_key),
        _ => None,
    };
    c.client_secrets.iter().chain(grant).chain(key).collect()
}

/// The client key file of `tls_client_auth`, whose bytes the sealing material covers (a path alone
/// is known to anyone holding the configuration).
pub(super) fn sealed_key_file(c: &OAuth2Config) -> Option<&Path> {
    match &c.auth_method {
        OAuth2AuthMethod::TlsClientAuth { client_key, .. } => Some(client_key),
        _ => None,
    }
}

pub(super) fn fingerprint(w: &mut Fingerprint, c: &OAuth2Config) {
    let OAuth2Config {
        token_url,
        client_id,
        client_secrets,
        grant,
        scopes,
        scope_separator,
        auth_method,
        extra_params,
        audience,
        default_ttl,
        response,
    } = c;
    w.display("token_url", token_url);
    w.text("client_id", client_id);
    w.secrets("client_secrets", client_secrets);
    oauth2_grant(w, grant);
    w.texts("scopes", scopes);
    w.text("scope_separator", scope_separator);
    oauth2_auth_method(w, auth_method);
    let pairs = extra_params.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]);
    w.list("extra_params", pairs);
    if let Some(audience) = audience {
        w.text("audience", audience);
    }
    w.duration("default_ttl", *default_ttl);
    response_mapping(w, response);
}

fn oauth2_grant(w: &mut Fingerprint, grant: &OAuth2Grant) {
    match grant {
        OAuth2Grant::ClientCredentials => w.text("grant", "client_credentials"),
        OAuth2Grant::Password { username, password } => w
            .text("grant", "password")
            .text("grant.username", username)
            .secret("grant.password", password),
        OAuth2Grant::RefreshToken { refresh_token } => w
            .text("grant", "refresh_token")
            .secret("grant.refresh_token", refresh_token),
    };
}

fn oauth2_auth_method(w: &mut Fingerprint, method: &OAuth2AuthMethod) {
    match method {
        OAuth2AuthMethod::ClientSecretPost => w.text("auth_method", "client_secret_post"),
        OAuth2AuthMethod::ClientSecretBasic => w.text("auth_method", "client_secret_basic"),
        OAuth2AuthMethod::PrivateKeyJwt { private_key } => w
            .text("auth_method", "private_key_jwt")
            .secret("auth_method.private_key", private_key),
        OAuth2AuthMethod::TlsClientAuth {
            client_cert,
            client_key,
            ..
        } => w
            .text("auth_method", "tls_client_auth")
            .path("auth_method.client_cert", client_cert)
            .path("auth_method.client_key", client_key),
    };
}

fn response_mapping(w: &mut Fingerprint, response: &ResponseMapping) {
    let ResponseMapping {
        token,
        expires_in,
        expires_in_unit,
        expires_at,
    } = response;
    w.texts("response.token", token);
    w.texts("response.expires_in", expires_in);
    let unit = match expires_in_unit {
        ExpiresInUnit::Seconds => "seconds",
        ExpiresInUnit::Millis => "millis",
    };
    w.text("response.expires_in_unit", unit);
    if let Some(expires_at) = expires_at {
        w.texts("response.expires_at", expires_at);
    }
}

pub(super) fn print(c: &OAuth2Config, t: &mut Table) {
    t.insert("token_url".into(), text(&c.token_url));
    t.insert("client_id".into(), text(&c.client_id));
    if !c.client_secrets.is_empty() {
        t.insert(
            "client_secrets".into(),
            Value::Array(vec![masked(); c.client_secrets.len()]),
        );
    }
    match &c.grant {
        OAuth2Grant::ClientCredentials => {
            t.insert("grant".into(), text("client_credentials"));
        }
        OAuth2Grant::Password { username, .. } => {
            t.insert("grant".into(), text("password"));
            t.insert("username".into(), text(username));
            t.insert("password".into(), masked());
        }
        OAuth2Grant::RefreshToken { .. } => {
            t.insert("grant".into(), text("refresh_token"));
            t.insert("refresh_token".into(), masked());
        }
    }
    if !c.scopes.is_empty() {
        t.insert("scopes".into(), list(&c.scopes));
    }
    t.insert("scope_separator".into(), text(&c.scope_separator));
    print_auth_method(&c.auth_method, t);
    if !c.extra_params.is_empty() {
        let params = c.extra_params.iter().map(|(k, v)| (k.clone(), text(v)));
        t.insert("extra_params".into(), Value::Table(params.collect()));
    }
    if let Some(audience) = &c.audience {
        t.insert("audience".into(), text(audience));
    }
    t.insert("default_ttl".into(), duration(c.default_ttl));
    t.insert("response".into(), Value::Table(print_response(&c.response)));
}

fn print_auth_method(method: &OAuth2AuthMethod, t: &mut Table) {
    match method {
        OAuth2AuthMethod::ClientSecretPost => {
            t.insert("auth_method".into(), text("client_secret_post"));
        }
        OAuth2AuthMethod::ClientSecretBasic => {
            t.insert("auth_method".into(), text("client_secret_basic"));
        }
        OAuth2AuthMethod::PrivateKeyJwt { .. } => {
            t.insert("auth_method".into(), text("private_key_jwt"));
            t.insert("private_key".into(), masked());
        }
        OAuth2AuthMethod::TlsClientAuth {
            client_cert,
            client_key,
            ..
        } => {
            t.insert("auth_method".into(), text("tls_client_auth"));
            t.insert("client_cert".into(), text(&client_cert.display()));
            t.insert("client_key".into(), text(&client_key.display()));
        }
    }
}

fn print_response(mapping: &ResponseMapping) -> Table {
    let mut response = Table::new();
    response.insert("token".into(), text(&mapping.token.join(".")));
    response.insert("expires_in".into(), text(&mapping.expires_in.join(".")));
    let unit = match mapping.expires_in_unit {
        ExpiresInUnit::Seconds => "s",
        ExpiresInUnit::Millis => "ms",
    };
    response.insert("expires_in_unit".into(), text(unit));
    if let Some(at) = &mapping.expires_at {
        response.insert("expires_at".into(), text(&at.join(".")));
    }
    response
}
