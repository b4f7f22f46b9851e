//! The provider block of a tenant: which keys each provider takes, its presets (default
//! upstream, rate limit, body cap, rewrite rules) and the typed config of `adobe_ims`,
//! `shopline`, `vantage`, `cyberbiz` and `static` (`oauth2` has its own file).
//!
//! A tenant is one flat TOML table, so a key that belongs to another provider would otherwise be
//! accepted and ignored; [`kind`] rejects it, naming the provider.

use std::num::NonZeroU32;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::{Ctx, Scope, oauth2};
use crate::config::raw::{RawTenant, RawTime};
use crate::config::{
    AdobeImsConfig, CyberbizConfig, PasswordOrClient, ProviderConfig, RateLimitConfig, Secret,
    ShoplineConfig, ShoplineCredentials, StaticConfig, VantageConfig, units,
};

const PROVIDERS: [&str; 6] = [
    "adobe_ims",
    "shopline",
    "vantage",
    "cyberbiz",
    "oauth2",
    "static",
];

/// Every provider-specific key, and the providers that take it.
const PROVIDER_KEYS: &[(&str, &[&str])] = &[
    ("client_id", &["adobe_ims", "vantage", "oauth2"]),
    ("client_secret", &["adobe_ims", "vantage", "oauth2"]),
    ("client_secrets", &["adobe_ims", "vantage", "oauth2"]),
    ("scopes", &["adobe_ims", "vantage", "oauth2"]),
    ("token_url", &["adobe_ims", "shopline", "vantage", "oauth2"]),
    ("org_id", &["adobe_ims"]),
    ("handle", &["shopline"]),
    ("app_key", &["shopline"]),
    ("app_secret", &["shopline"]),
    ("code", &["shopline"]),
    ("access_token", &["shopline"]),
    ("base_url", &["vantage"]),
    ("tenant_id", &["vantage"]),
    ("grant", &["vantage", "oauth2"]),
    ("username", &["vantage", "oauth2"]),
    ("password", &["vantage", "oauth2"]),
    ("offline_access", &["vantage"]),
    ("token", &["cyberbiz"]),
    ("refresh_token", &["oauth2"]),
    ("scope_separator", &["oauth2"]),
    ("auth_method", &["oauth2"]),
    ("private_key", &["oauth2"]),
    ("client_cert", &["oauth2"]),
    ("client_key", &["oauth2"]),
    ("extra_params", &["oauth2"]),
    ("audience", &["oauth2"]),
    ("default_ttl", &["oauth2"]),
    ("response", &["oauth2"]),
    ("header", &["static"]),
    ("value", &["static"]),
    ("expires_at", &["static"]),
];

const ADOBE_TOKEN_URL: &str = "https://ims-na1.adobelogin.com/ims/token/v3";
/// `/rest/V1/...` and `/rest/<store>/V1/...` → `/V1/...`; the store code becomes the `Store` header.
pub(super) const ADOBE_REWRITE: &[(&str, &str)] =
    &[(r"^/rest(?:/(?P<store>[A-Za-z0-9_]+))?(/V1/.*)$", "$2")];
const VANTAGE_BASE_URL: &str = "https://vantage-us.abbyy.com";
const VANTAGE_SCOPES: [&str; 3] = ["openid", "permissions", "global.wildcard"];
const CYBERBIZ_UPSTREAM: &str = "https://app-store-api.cyberbiz.io";

/// What a provider sets when the tenant does not.
#[derive(Default)]
pub(super) struct Preset {
    /// `None` with `has_default_upstream` when the default depends on a key that is invalid.
    pub(super) upstream: Option<String>,
    pub(super) has_default_upstream: bool,
    pub(super) rate_limit: Option<RateLimitConfig>,
    pub(super) max_body: Option<u64>,
    pub(super) rewrite: &'static [(&'static str, &'static str)],
}

/// The `provider` of a tenant, after rejecting keys that belong to other providers.
pub(super) fn kind(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<&'static str> {
    let name = ctx.required(
        scope,
        "provider",
        raw.provider.as_ref(),
        &format!("(one of {})", PROVIDERS.join(", ")),
    )?;
    let Some(kind) = PROVIDERS.iter().copied().find(|p| p == name) else {
        ctx.error(
            scope,
            "provider",
            format!(
                "unknown provider `{name}`; expected one of {}",
                PROVIDERS.join(", ")
            ),
        );
        return None;
    };
    for (key, _) in ctx.src.keys(&scope.path_of("")) {
        let owners = PROVIDER_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, owners)| *owners);
        if owners.is_some_and(|owners| !owners.contains(&kind)) {
            ctx.key_error(scope, &key, format!("not valid for provider `{kind}`"));
        }
    }
    Some(kind)
}

pub(super) fn preset(kind: &str, raw: &RawTenant) -> Preset {
    let limit = |per_second: u32, burst: u32| {
        Some(RateLimitConfig {
            per_second: NonZeroU32::new(per_second).expect("preset rates are positive"),
            burst: NonZeroU32::new(burst).expect("preset bursts are positive"),
            max_wait: Duration::from_secs(5),
        })
    };
    match kind {
        "adobe_ims" => Preset {
            rewrite: ADOBE_REWRITE,
            ..Preset::default()
        },
        "shopline" => Preset {
            upstream: raw
                .handle
                .as_deref()
                .filter(|h| is_dns_label(h))
                .map(|h| format!("https://{h}.myshopline.com")),
            has_default_upstream: true,
            rate_limit: limit(4, 40),
            ..Preset::default()
        },
        "vantage" => Preset {
            upstream: Some(
                raw.base_url
                    .as_deref()
                    .unwrap_or(VANTAGE_BASE_URL)
                    .trim_end_matches('/')
                    .to_owned(),
            ),
            has_default_upstream: true,
            ..Preset::default()
        },
        "cyberbiz" => Preset {
            upstream: Some(CYBERBIZ_UPSTREAM.to_owned()),
            has_default_upstream: true,
            rate_limit: limit(5, 1),
            max_body: Some(2_000_000),
            ..Preset::default()
        },
        _ => Preset::default(),
    }
}

/// The typed provider block. `upstream` is `None` when it was invalid (already reported).
pub(super) fn build(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    kind: &str,
    raw: &RawTenant,
    upstream: Option<&http::Uri>,
) -> Option<ProviderConfig> {
    match kind {
        "adobe_ims" => adobe_ims(ctx, scope, raw).map(ProviderConfig::AdobeIms),
        "shopline" => shopline(ctx, scope, raw, upstream).map(ProviderConfig::Shopline),
        "vantage" => vantage(ctx, scope, raw).map(ProviderConfig::Vantage),
        "cyberbiz" => cyberbiz(ctx, scope, raw).map(ProviderConfig::Cyberbiz),
        "oauth2" => oauth2::oauth2(ctx, scope, raw).map(ProviderConfig::OAuth2),
        _ => static_token(ctx, scope, raw).map(ProviderConfig::Static),
    }
}

fn adobe_ims(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<AdobeImsConfig> {
    let why = "for provider `adobe_ims`";
    let client_id = ctx.non_empty(scope, "client_id", raw.client_id.as_ref(), why);
    let client_secrets = client_secrets(ctx, scope, raw, Some(2));
    let scopes = scopes(ctx, scope, raw, None);
    if let Some(list) = &scopes {
        if list.is_empty() {
            ctx.error(scope, "", "`scopes` is required for provider `adobe_ims` (IMS refuses a token request without scope)");
        } else if !list.iter().any(|s| s == "commerce.accs") {
            ctx.warn(scope, "scopes", "does not include `commerce.accs`, which the Adobe Commerce (ACCS) REST API requires");
        }
    }
    let token_url = ctx.token_url(
        scope,
        "token_url",
        raw.token_url.as_deref().unwrap_or(ADOBE_TOKEN_URL),
    );
    let org_id = optional_text(ctx, scope, "org_id", raw.org_id.as_ref());
    Some(AdobeImsConfig {
        client_id: client_id?.to_owned(),
        client_secrets: client_secrets?,
        scopes: scopes.filter(|s| !s.is_empty())?,
        token_url: token_url?,
        org_id: org_id?,
    })
}

fn shopline(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
    upstream: Option<&http::Uri>,
) -> Option<ShoplineConfig> {
    let handle = ctx.non_empty(
        scope,
        "handle",
        raw.handle.as_ref(),
        "for provider `shopline` (the store subdomain)",
    );
    if handle.is_some_and(|h| !is_dns_label(h)) {
        ctx.error(scope, "handle", "must be the store subdomain: letters, digits and `-` (`open001` for open001.myshopline.com)");
    }
    let credentials = shopline_credentials(ctx, scope, raw);
    if raw.token_url.is_some() && raw.access_token.is_some() {
        ctx.key_error(
            scope,
            "token_url",
            "not used with `access_token` (a private app has no token endpoint)",
        );
    }
    // The token endpoint defaults to the store itself.
    let token_url = match (&raw.token_url, upstream) {
        (Some(text), _) => ctx.token_url(scope, "token_url", text),
        (None, Some(upstream)) => ctx.token_url(scope, "upstream", &upstream.to_string()),
        (None, None) => None,
    };
    Some(ShoplineConfig {
        handle: handle.filter(|h| is_dns_label(h))?.to_owned(),
        credentials: credentials?,
        token_url: token_url.filter(|_| raw.token_url.is_none() || raw.access_token.is_none())?,
    })
}

/// `access_token` (private app) or `app_key` + `app_secret` (+ one-time `code`), never both.
fn shopline_credentials(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
) -> Option<ShoplineCredentials> {
    match (&raw.access_token, &raw.app_key, &raw.app_secret) {
        (Some(access_token), None, None) => {
            if raw.code.is_some() {
                ctx.key_error(
                    scope,
                    "code",
                    "only used with `app_key`/`app_secret`, not with `access_token`",
                );
                return None;
            }
            Some(ShoplineCredentials::Private {
                access_token: ctx.secret(scope, "access_token", access_token)?,
            })
        }
        (None, Some(app_key), Some(app_secret)) => {
            let app_key = ctx.non_empty(scope, "app_key", Some(app_key), "");
            let app_secret = ctx.secret(scope, "app_secret", app_secret);
            let code = ctx.opt_secret(scope, "code", raw.code.as_ref());
            Some(ShoplineCredentials::OAuth {
                app_key: app_key?.to_owned(),
                app_secret: app_secret?,
                code: code?,
            })
        }
        (Some(_), _, _) => {
            ctx.key_error(
                scope,
                "access_token",
                "give either `access_token` (private app) or `app_key` + `app_secret`, not both",
            );
            None
        }
        (None, None, None) => {
            ctx.error(scope, "", "provider `shopline` needs `app_key` + `app_secret`, or `access_token` for a private app");
            None
        }
        (None, _, _) => {
            ctx.error(scope, "", "`app_key` and `app_secret` go together");
            None
        }
    }
}

fn vantage(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<VantageConfig> {
    let why = "for provider `vantage`";
    let base_text = raw
        .base_url
        .as_deref()
        .unwrap_or(VANTAGE_BASE_URL)
        .trim_end_matches('/');
    let base_url = ctx.http_url(scope, "base_url", base_text, false);
    let tenant_id = optional_text(ctx, scope, "tenant_id", raw.tenant_id.as_ref());
    if let Some(Some(id)) = &tenant_id {
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
        {
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
    let token_url = ctx.token_url(
        scope,
        "token_url",
        raw.token_url.as_deref().unwrap_or(&derived),
    );
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
fn password_or_client(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
) -> Option<PasswordOrClient> {
    match raw.grant.as_deref().unwrap_or("client_credentials") {
        "client_credentials" => oauth2::forbid(
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
            let (username, password) = oauth2::username_password(ctx, scope, raw);
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

fn cyberbiz(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<CyberbizConfig> {
    let token = ctx.required(
        scope,
        "token",
        raw.token.as_ref(),
        "for provider `cyberbiz` (the API token from the merchant admin)",
    )?;
    Some(CyberbizConfig {
        token: ctx.secret(scope, "token", token)?,
    })
}

fn static_token(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<StaticConfig> {
    let header = match raw.header.as_deref() {
        None => Some(http::header::AUTHORIZATION),
        Some(name) => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) if header != http::header::HOST && !is_hop_by_hop(&header) => Some(header),
            Ok(_) => {
                (
                    ctx.error(scope, "header", format!("`{name}` is managed by the proxy")),
                    None,
                )
                    .1
            }
            Err(_) => {
                (
                    ctx.error(
                        scope,
                        "header",
                        format!("`{name}` is not a valid HTTP header name"),
                    ),
                    None,
                )
                    .1
            }
        },
    };
    let value = ctx.required(
        scope,
        "value",
        raw.value.as_ref(),
        "for provider `static` (the whole header value)",
    );
    let value = value.and_then(|v| ctx.secret(scope, "value", v));
    if value
        .as_ref()
        .is_some_and(|v| HeaderValue::from_str(v.expose()).is_err())
    {
        ctx.error(
            scope,
            "value",
            "is not a valid HTTP header value (control characters or non-ASCII)",
        );
    }
    let expires_at = match &raw.expires_at {
        None => Some(None),
        Some(time) => {
            let text = match time {
                RawTime::Datetime(datetime) => datetime.to_string(),
                RawTime::Text(text) => text.clone(),
            };
            units::parse_rfc3339(&text)
                .map(Some)
                .map_err(|e| ctx.error(scope, "expires_at", e))
                .ok()
        }
    };
    Some(StaticConfig {
        header: header?,
        value: value.filter(|v| HeaderValue::from_str(v.expose()).is_ok())?,
        expires_at: expires_at?,
    })
}

/// `client_secret` or `client_secrets` (at most `max`); required.
pub(super) fn client_secrets(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
    max: Option<usize>,
) -> Option<Vec<Secret<String>>> {
    match (&raw.client_secret, &raw.client_secrets) {
        (Some(one), None) => Some(vec![ctx.secret(scope, "client_secret", one)?]),
        (None, Some(list)) if list.is_empty() || max.is_some_and(|max| list.len() > max) => {
            let bound = max.map_or("at least one".to_owned(), |max| format!("one to {max}"));
            ctx.error(
                scope,
                "client_secrets",
                format!("must hold {bound} secrets (tried in order on invalid_client)"),
            );
            None
        }
        (None, Some(list)) => {
            let resolved: Vec<_> = list
                .iter()
                .enumerate()
                .map(|(i, s)| ctx.secret(scope, &format!("client_secrets.{i}"), s))
                .collect();
            resolved.into_iter().collect()
        }
        (Some(_), Some(_)) => {
            ctx.key_error(
                scope,
                "client_secrets",
                "give `client_secret` or `client_secrets`, not both",
            );
            None
        }
        (None, None) => {
            ctx.error(
                scope,
                "",
                "`client_secret` (or `client_secrets` for rotation) is required",
            );
            None
        }
    }
}

/// `scopes`: `default` (or empty) when absent; each a single non-empty token.
pub(super) fn scopes(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
    default: Option<&[&str]>,
) -> Option<Vec<String>> {
    let Some(list) = &raw.scopes else {
        return Some(
            default
                .unwrap_or_default()
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        );
    };
    let mut valid = true;
    for (index, item) in list.iter().enumerate() {
        if item.is_empty() || item.chars().any(char::is_whitespace) {
            ctx.error(
                scope,
                &format!("scopes.{index}"),
                "a scope must be one non-empty word; list several as separate strings",
            );
            valid = false;
        }
    }
    valid.then(|| list.clone())
}

/// An optional free-text key that, when given, must not be blank.
pub(super) fn optional_text(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    key: &str,
    raw: Option<&String>,
) -> Option<Option<String>> {
    match raw {
        Some(text) if text.trim().is_empty() => {
            (
                ctx.error(scope, key, "must not be empty (omit the key instead)"),
                None,
            )
                .1
        }
        other => Some(other.cloned()),
    }
}

fn is_dns_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ]
    .contains(&name.as_str())
}
