//! `provider = "vantage"`: ABBYY Vantage OIDC. The token endpoint is derived from `base_url`
//! and `tenant_id` unless `token_url` replaces it.

use super::VANTAGE_BASE_URL;
use super::{PasswordOrClient, VantageConfig};
use crate::providers::fields::{client_secrets, optional_text, scopes};
use crate::providers::oauth2::{forbid, username_password};
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::RawTenant;

const VANTAGE_SCOPES: [&str; 3] = ["openid", "permissions", "global.wildcard"];

pub(crate) fn build(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<VantageConfig> {
    let why = "for provider `vantage`";
    let base_text = raw
        .base_url
        .as_deref()
        .unwrap_or(VANTAGE_BASE_URL)
        .trim_end_matches('/');
    let base_url = ctx.http_url(scope, "base_url", base_text, false);
    let tenant_id = optional_text(ctx, scope, "tenant_id", raw.tenant_id.as_ref());
    if let Some(Some(id)) = &tenant_id {
        if !id.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)) {
            ctx.error(
                scope,
                "tenant_id",
                "must be a plain identifier (it becomes a URL path segment)",
            );
        }
    }
    let derived = match &tenant_id {
        Some(Some(id)) => format!("{base_text}/auth2/{id}/connect/token"),
        _ => format!("{base_text}/auth2/connect/token"),
    };
    let token_url = match (&raw.token_url, &base_url) {
        (Some(text), _) => ctx.token_url(scope, "token_url", text),
        (None, Some(_)) => ctx.token_url(scope, "base_url", &derived),
        // base_url is invalid and already reported.
        (None, None) => None,
    };
    let client_id = ctx.non_empty(scope, "client_id", raw.client_id.as_ref(), why);
    let client_secrets = client_secrets(ctx, scope, raw, None);
    let grant = password_or_client(ctx, scope, raw);
    let scopes = scopes(ctx, scope, raw, Some(&VANTAGE_SCOPES));
    Some(VantageConfig {
        base_url: base_url?,
        tenant_id: tenant_id?,
        token_url: token_url?,
        client_id: client_id?.to_owned(),
        client_secrets: client_secrets?,
        grant: grant?,
        scopes: scopes?,
        offline_access: raw.offline_access.unwrap_or(false),
    })
}

/// `grant = "client_credentials"` (default) or `"password"` with `username` and `password`.
fn password_or_client(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<PasswordOrClient> {
    match raw.grant.as_deref().unwrap_or("client_credentials") {
        "client_credentials" => forbid(
            ctx,
            scope,
            &[
                ("username", raw.username.is_some()),
                ("password", raw.password.is_some()),
            ],
            "grant = \"password\"",
        )
        .then_some(PasswordOrClient::ClientCredentials),
        "password" => {
            let (username, password) = username_password(ctx, scope, raw);
            Some(PasswordOrClient::Password {
                username: username?,
                password: password?,
            })
        }
        other => {
            ctx.error(
                scope,
                "grant",
                format!("unknown grant `{other}`; expected \"client_credentials\" or \"password\""),
            );
            None
        }
    }
}
