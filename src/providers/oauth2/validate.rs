//! `provider = "oauth2"`: any RFC 6749 token endpoint. Its keys depend on each other (the grant
//! decides which credentials are needed, the auth method whether there is a client secret), so
//! each combination is checked here, and a key that the chosen combination would ignore is an
//! error rather than dead configuration.

use std::time::Duration;

use super::{ExpiresInUnit, OAuth2AuthMethod, OAuth2Config, OAuth2Grant, ResponseMapping};
use crate::providers::fields::{client_secrets, optional_text, scopes};
use crate::schema::Secret;
use crate::schema::check::{Ctx, Scope};
use crate::schema::fields::optional;
use crate::schema::raw::{RawResponse, RawTenant};

/// Form parameters the proxy sets itself; `extra_params` may not replace them.
const RESERVED_PARAMS: [&str; 10] = [
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "username",
    "password",
    "refresh_token",
    "client_assertion",
    "client_assertion_type",
    "audience",
];

pub(crate) fn build(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<OAuth2Config> {
    let why = "for provider `oauth2`";
    let token_url = ctx.required(scope, "token_url", raw.token_url.as_ref(), why);
    let token_url = token_url.and_then(|url| ctx.token_url(scope, "token_url", url));
    let client_id = ctx.non_empty(scope, "client_id", raw.client_id.as_ref(), why);
    let auth_method = auth_method(ctx, scope, raw);
    let client_secrets = secrets(ctx, scope, raw);
    let grant = grant(ctx, scope, raw);
    let scopes = scopes(ctx, scope, raw, None);
    let scope_separator = match raw.scope_separator.as_deref() {
        None => Some(" ".to_owned()),
        Some("") => ctx.reject(scope, "scope_separator", "must not be empty"),
        Some(separator) => Some(separator.to_owned()),
    };
    let extra_params = extra_params(ctx, scope, raw);
    let audience = optional_text(ctx, scope, "audience", raw.audience.as_ref());
    let ttl = Duration::from_secs(3600);
    let default_ttl = ctx.positive_duration(scope, "default_ttl", raw.default_ttl.as_ref(), ttl);
    let response = response(ctx, scope, raw.response.as_ref());
    Some(OAuth2Config {
        token_url: token_url?,
        client_id: client_id?.to_owned(),
        client_secrets: client_secrets?,
        grant: grant?,
        scopes: scopes?,
        scope_separator: scope_separator?,
        auth_method: auth_method?,
        extra_params: extra_params?,
        audience: audience?,
        default_ttl: default_ttl?,
        response: response?,
    })
}

/// Client secrets, except with the methods that authenticate without one (where a secret given
/// would go unused).
fn secrets(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<Vec<Secret<String>>> {
    if !matches!(raw.auth_method.as_deref(), Some("private_key_jwt" | "tls_client_auth")) {
        return client_secrets(ctx, scope, raw, None);
    }
    let given = [
        ("client_secret", raw.client_secret.is_some()),
        ("client_secrets", raw.client_secrets.is_some()),
    ];
    let instead = "auth_method = \"client_secret_post\" or \"client_secret_basic\"";
    forbid(ctx, scope, &given, instead).then(Vec::new)
}

fn grant(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<OAuth2Grant> {
    let user = [
        ("username", raw.username.is_some()),
        ("password", raw.password.is_some()),
    ];
    let refresh = [("refresh_token", raw.refresh_token.is_some())];
    match raw.grant.as_deref().unwrap_or("client_credentials") {
        "client_credentials" => {
            let ok = forbid(ctx, scope, &user, "grant = \"password\"")
                & forbid(ctx, scope, &refresh, "grant = \"refresh_token\"");
            ok.then_some(OAuth2Grant::ClientCredentials)
        }
        "password" => {
            let ok = forbid(ctx, scope, &refresh, "grant = \"refresh_token\"");
            let (username, password) = username_password(ctx, scope, raw);
            Some(OAuth2Grant::Password {
                username: username?,
                password: password?,
            })
            .filter(|_| ok)
        }
        "refresh_token" => {
            let ok = forbid(ctx, scope, &user, "grant = \"password\"");
            let token = ctx.required(
                scope,
                "refresh_token",
                raw.refresh_token.as_ref(),
                "with grant = \"refresh_token\"",
            );
            let refresh_token = token.and_then(|t| ctx.secret(scope, "refresh_token", t));
            Some(OAuth2Grant::RefreshToken {
                refresh_token: refresh_token?,
            })
            .filter(|_| ok)
        }
        other => {
            let expected = "\"client_credentials\", \"password\" or \"refresh_token\"";
            ctx.error(scope, "grant", format!("unknown grant `{other}`; expected {expected}"));
            None
        }
    }
}

fn auth_method(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<OAuth2AuthMethod> {
    let key_given = [("private_key", raw.private_key.is_some())];
    let tls_given = [
        ("client_cert", raw.client_cert.is_some()),
        ("client_key", raw.client_key.is_some()),
    ];
    let method = raw.auth_method.as_deref().unwrap_or("client_secret_post");
    let (method, ok) = match method {
        "client_secret_post" | "client_secret_basic" => {
            let instead = format!("auth_method = \"private_key_jwt\" or \"tls_client_auth\" (not {method:?})");
            let ok = forbid(ctx, scope, &key_given, &instead) & forbid(ctx, scope, &tls_given, &instead);
            let method = if method == "client_secret_post" {
                OAuth2AuthMethod::ClientSecretPost
            } else {
                OAuth2AuthMethod::ClientSecretBasic
            };
            (Some(method), ok)
        }
        "private_key_jwt" => {
            let ok = forbid(ctx, scope, &tls_given, "auth_method = \"tls_client_auth\"");
            (private_key_jwt(ctx, scope, raw), ok)
        }
        "tls_client_auth" => {
            let ok = forbid(ctx, scope, &key_given, "auth_method = \"private_key_jwt\"");
            (tls_client_auth(ctx, scope, raw), ok)
        }
        other => {
            let expected = "client_secret_post, client_secret_basic, private_key_jwt or tls_client_auth";
            let message = format!("unknown auth_method `{other}`; expected one of {expected}");
            (ctx.reject(scope, "auth_method", message), false)
        }
    };
    method.filter(|_| ok)
}

fn private_key_jwt(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<OAuth2AuthMethod> {
    let why = "with auth_method = \"private_key_jwt\"";
    let key = ctx.required(scope, "private_key", raw.private_key.as_ref(), why)?;
    let private_key = ctx.secret(scope, "private_key", key)?;
    Some(OAuth2AuthMethod::PrivateKeyJwt {
        private_key: pem_key(ctx, scope, private_key)?,
    })
}

fn tls_client_auth(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<OAuth2AuthMethod> {
    let why = "with auth_method = \"tls_client_auth\"";
    let cert = ctx.required(scope, "client_cert", raw.client_cert.as_ref(), why);
    let key = ctx.required(scope, "client_key", raw.client_key.as_ref(), why);
    let client_cert = cert.and_then(|path| ctx.credential_file(scope, "client_cert", path));
    let client_key = key.and_then(|path| ctx.credential_file(scope, "client_key", path));
    let (client_cert, client_key) = (client_cert?, client_key?);
    let content = ctx.files_digest(&[&client_cert, &client_key]);
    Some(OAuth2AuthMethod::TlsClientAuth {
        client_cert,
        client_key,
        content,
    })
}

/// A PEM private key; checked by shape only, without echoing it.
fn pem_key(ctx: &mut Ctx<'_>, scope: &Scope, key: Secret<String>) -> Option<Secret<String>> {
    let Some(text) = ctx.resolved(&key) else {
        return Some(key);
    };
    if text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----") {
        return Some(key);
    }
    ctx.error(
        scope,
        "private_key",
        "is not a PEM private key (expected -----BEGIN ... PRIVATE KEY-----)",
    );
    None
}

fn extra_params(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut valid = true;
    for (name, value) in raw.extra_params.iter().flatten() {
        if RESERVED_PARAMS.contains(&name.as_str()) {
            let message = "is set by the proxy from its own key and cannot be overridden in extra_params";
            ctx.key_error(scope, &format!("extra_params.{name}"), message);
            valid = false;
        } else {
            params.push((name.clone(), value.clone()));
        }
    }
    valid.then_some(params)
}

fn response(ctx: &mut Ctx<'_>, scope: &Scope, raw: Option<&RawResponse>) -> Option<ResponseMapping> {
    let empty = RawResponse {
        token: None,
        expires_in: None,
        expires_in_unit: None,
        expires_at: None,
    };
    let raw = raw.unwrap_or(&empty);
    let token = field_path(
        ctx,
        scope,
        "response.token",
        raw.token.as_deref().unwrap_or("access_token"),
    );
    let expires_in = field_path(
        ctx,
        scope,
        "response.expires_in",
        raw.expires_in.as_deref().unwrap_or("expires_in"),
    );
    let expires_at = optional(raw.expires_at.as_deref(), |path| {
        field_path(ctx, scope, "response.expires_at", path)
    });
    let unit = match raw.expires_in_unit.as_deref().unwrap_or("s") {
        "s" => Some(ExpiresInUnit::Seconds),
        "ms" => Some(ExpiresInUnit::Millis),
        other => {
            ctx.error(
                scope,
                "response.expires_in_unit",
                format!("unknown unit `{other}`; expected \"s\" or \"ms\""),
            );
            None
        }
    };
    Some(ResponseMapping {
        token: token?,
        expires_in: expires_in?,
        expires_in_unit: unit?,
        expires_at: expires_at?,
    })
}

/// `data.accessToken` → `["data", "accessToken"]`.
fn field_path(ctx: &mut Ctx<'_>, scope: &Scope, key: &str, text: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
    if parts.iter().any(String::is_empty) {
        ctx.error(
            scope,
            key,
            format!("`{text}` is not a dotted field path such as data.accessToken"),
        );
        return None;
    }
    Some(parts)
}

/// Reports each given key that the current choice ignores, pointing at `instead`; true when
/// none was given.
pub(crate) fn forbid(ctx: &mut Ctx<'_>, scope: &Scope, keys: &[(&str, bool)], instead: &str) -> bool {
    let mut ok = true;
    for (key, given) in keys {
        if *given {
            ctx.key_error(scope, key, format!("only used with {instead}"));
            ok = false;
        }
    }
    ok
}

/// `username` and `password` for the resource-owner password grant.
pub(crate) fn username_password(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
) -> (Option<String>, Option<Secret<String>>) {
    let why = "with grant = \"password\"";
    let username = ctx
        .non_empty(scope, "username", raw.username.as_ref(), why)
        .map(str::to_owned);
    let password = ctx.required(scope, "password", raw.password.as_ref(), why);
    let password = password.and_then(|p| ctx.secret(scope, "password", p));
    (username, password)
}
