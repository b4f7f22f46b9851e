//! The provider block of a tenant: which keys each provider takes, its presets (default
//! upstream, rate limit, body cap, rewrite rules), and the shared credential helpers. One file per
//! provider below, mirroring `auth/`, so adding a provider means one file plus a table row.
//!
//! A tenant is one flat TOML table, so a key that belongs to another provider would otherwise be
//! accepted and ignored; [`kind`] rejects it, naming the provider.

mod adobe_commerce;
mod adobe_ims;
mod cyberbiz;
mod oauth2;
mod shopline;
mod static_token;
mod vantage;

use std::num::NonZeroU32;
use std::time::Duration;

use super::fields::check_http_url;
use super::{Ctx, Scope};
use crate::config::raw::RawTenant;
use crate::config::{BatchShare, CallerClass, PerClass, ProviderConfig, RateLimitConfig, Secret};

const PROVIDERS: [&str; 7] = [
    "adobe_ims",
    "shopline",
    "vantage",
    "cyberbiz",
    "adobe_commerce",
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
    ("app_secret", &["shopline", "cyberbiz"]),
    ("code", &["shopline"]),
    ("access_token", &["shopline", "adobe_commerce"]),
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
    ("consumer_key", &["adobe_commerce"]),
    ("consumer_secret", &["adobe_commerce"]),
    ("access_token_secret", &["adobe_commerce"]),
    ("signature_method", &["adobe_commerce"]),
    ("legacy_signing", &["adobe_commerce"]),
];

/// `/rest/V1/...` and `/rest/<store>/V1/...` → `/V1/...`; the store code becomes the `Store` header.
pub(super) const ADOBE_REWRITE: &[(&str, &str)] = &[(
    crate::routing::rewrite::ADOBE_REST_PATTERN,
    crate::routing::rewrite::ADOBE_REST_REPLACE,
)];
const VANTAGE_BASE_URL: &str = "https://vantage-us.abbyy.com";
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
            format!("unknown provider `{name}`; expected one of {}", PROVIDERS.join(", ")),
        );
        return None;
    };
    for (key, _) in ctx.src.keys(&scope.path_of("")) {
        let owners = PROVIDER_KEYS.iter().find(|(k, _)| *k == key).map(|(_, owners)| *owners);
        if owners.is_some_and(|owners| !owners.contains(&kind)) {
            ctx.key_error(scope, &key, format!("not valid for provider `{kind}`"));
        }
    }
    Some(kind)
}

/// Extra spacing per CYBERBIZ slot (see the preset).
const CYBERBIZ_HEADROOM: Duration = Duration::from_millis(20);

pub(super) fn preset(kind: &str, raw: &RawTenant) -> Preset {
    let limit = |per_second: u32, burst: u32, headroom: Duration| {
        Some(RateLimitConfig {
            per_second: NonZeroU32::new(per_second).expect("preset rates are positive"),
            burst: NonZeroU32::new(burst).expect("preset bursts are positive"),
            max_wait: PerClass::all(Duration::from_secs(5)),
            batch_share: BatchShare::DEFAULT,
            headroom,
            lead: CallerClass::Standard,
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
            rate_limit: limit(4, 40, Duration::ZERO),
            ..Preset::default()
        },
        "vantage" => {
            let base = raw
                .base_url
                .as_deref()
                .unwrap_or(VANTAGE_BASE_URL)
                .trim_end_matches('/');
            Preset {
                // An invalid base_url is reported once, by the provider, not again as upstream.
                upstream: check_http_url(base, false).is_ok().then(|| base.to_owned()),
                has_default_upstream: true,
                ..Preset::default()
            }
        }
        "cyberbiz" => Preset {
            upstream: Some(CYBERBIZ_UPSTREAM.to_owned()),
            has_default_upstream: true,
            // 5/s spaced 220 ms instead of 200: any six requests then span 1.1 s at CYBERBIZ, so up
            // to 100 ms of scheduling or network jitter cannot put six in one second (~9 % slower).
            rate_limit: limit(5, 1, CYBERBIZ_HEADROOM),
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
        "adobe_ims" => adobe_ims::build(ctx, scope, raw).map(ProviderConfig::AdobeIms),
        "shopline" => shopline::build(ctx, scope, raw, upstream).map(ProviderConfig::Shopline),
        "vantage" => vantage::build(ctx, scope, raw).map(ProviderConfig::Vantage),
        "cyberbiz" => cyberbiz::build(ctx, scope, raw).map(ProviderConfig::Cyberbiz),
        "adobe_commerce" => adobe_commerce::build(ctx, scope, raw).map(ProviderConfig::AdobeCommerce),
        "oauth2" => oauth2::build(ctx, scope, raw).map(ProviderConfig::OAuth2),
        _ => static_token::build(ctx, scope, raw).map(ProviderConfig::Static),
    }
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
        return Some(default.unwrap_or_default().iter().map(|s| (*s).to_owned()).collect());
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
        Some(text) if text.trim().is_empty() => ctx.reject(scope, key, "must not be empty (omit the key instead)"),
        other => Some(other.cloned()),
    }
}

/// A store subdomain: `open001` in open001.myshopline.com.
fn is_dns_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}
