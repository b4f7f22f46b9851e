//! `[[tenant]]`: the keys every tenant has (name, upstream, listener, headers, trust roots,
//! rewriting, rate limit, body cap, token overrides). Provider keys are in `providers`/`oauth2`;
//! their presets (default upstream, rate limit, body cap, rewrite rules) are applied here, under
//! whatever the operator wrote.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::{limits, server};
use crate::config::{CallerClass, RateLimitConfig, ServerConfig, TenantConfig, TenantName, TokenPolicy, UpstreamUrl};
use crate::providers::{Preset, ProviderKind};
use crate::routing::rewrite::RewriteRule;
use crate::schema::check::{Ctx, Scope};
use crate::schema::fields::FORBIDDEN_HEADERS;
use crate::schema::fields::{self, optional};
use crate::schema::raw::{RawRateLimit, RawRewrite, RawSecret, RawTenant};

/// Every `[[tenant]]`; `None` when any of them is invalid.
pub(super) fn tenants(
    ctx: &mut Ctx<'_>,
    server: Option<&ServerConfig>,
    token: Option<&TokenPolicy>,
) -> Option<Vec<TenantConfig>> {
    let max_body = server.map_or(server::DEFAULT_MAX_BODY, |s| s.max_body);
    let token = token.cloned().unwrap_or_else(server::default_token_policy);
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut tenants = Vec::new();
    let mut all_valid = true;
    for index in 0..ctx.src.len("tenant") {
        let scope = Scope::tenant(index, ctx.src);
        if let Some(name) = ctx.src.str_at(&scope.path_of("name")) {
            if let Some(first) = seen.insert(name.to_owned(), scope.path_of("")) {
                ctx.error(&scope, "name", format!("duplicate tenant name (first used by {first})"));
                all_valid = false;
            }
        }
        let raw = ctx.section::<RawTenant>(&scope.path_of(""), scope.label());
        match raw.and_then(|raw| tenant(ctx, &scope, &raw, max_body, &token)) {
            Some(tenant) => tenants.push(tenant),
            None => all_valid = false,
        }
    }
    all_valid.then_some(tenants)
}

fn tenant(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
    max_body: u64,
    token: &TokenPolicy,
) -> Option<TenantConfig> {
    let name = tenant_name(ctx, scope, raw);
    let kind = ProviderKind::of_tenant(ctx, scope, raw);
    let preset = kind.map(|kind| kind.preset(raw)).unwrap_or_default();
    let upstream = upstream(ctx, scope, raw, kind, &preset);
    let provider = kind.and_then(|kind| kind.build(ctx, scope, raw, upstream.as_ref()));
    let token = server::tenant_token_policy(ctx, scope, raw, token);
    let rate_limit = rate_limit(ctx, scope, raw.rate_limit.as_ref(), preset.rate_limit);
    let max_body = preset.max_body.unwrap_or(max_body);
    let max_body = ctx.size(scope, "max_body", raw.max_body.as_ref(), max_body);
    let headers = headers(ctx, scope, raw);
    let ca_file = optional(raw.ca_file.as_ref(), |path| ctx.existing_file(scope, "ca_file", path));
    let http2 = http2(ctx, scope, raw.http2, upstream.as_ref());
    let rewrite = rewrite(ctx, scope, raw.rewrite.as_deref(), preset.rewrite);
    let listen = optional(raw.listen.as_ref(), |text| ctx.socket_addr(scope, "listen", text));
    Some(TenantConfig {
        name: name?,
        listen: listen?,
        upstream: upstream.as_ref().map(split_upstream)?,
        provider: provider?,
        token: token?,
        rate_limit: rate_limit?,
        max_body: max_body?,
        headers: headers?,
        ca_file: ca_file?,
        http2: http2?,
        rewrite: rewrite?,
        required: raw.required.unwrap_or(true),
    })
}

/// The tenant's `upstream`, else the provider's default.
fn upstream(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
    kind: Option<ProviderKind>,
    preset: &Preset,
) -> Option<http::Uri> {
    match (raw.upstream.as_ref().or(preset.upstream.as_ref()), kind) {
        (Some(text), _) => {
            let uri = ctx.http_url(scope, "upstream", text, false)?;
            if uri.scheme_str() == Some("http") && !uri.host().is_some_and(fields::is_loopback_host) {
                ctx.warn(
                    scope,
                    "upstream",
                    format!(
                        "`{text}` is plain http to a non-loopback host: the credential would cross the network in clear"
                    ),
                );
            }
            Some(uri)
        }
        (None, Some(kind)) if !preset.has_default_upstream => ctx.reject(
            scope,
            "",
            format!("`upstream` is required for provider `{}`", kind.name()),
        ),
        // No provider, or a default that could not be built (its own key is reported).
        (None, _) => None,
    }
}

/// `http2` (default `true`): whether an https upstream is offered `h2` in ALPN. On plain http it
/// would mean nothing, so it is refused there rather than silently ignored.
fn http2(ctx: &mut Ctx<'_>, scope: &Scope, raw: Option<bool>, upstream: Option<&http::Uri>) -> Option<bool> {
    let Some(http2) = raw else {
        return Some(true);
    };
    if upstream.and_then(http::Uri::scheme) == Some(&http::uri::Scheme::HTTP) {
        return ctx.reject(
            scope,
            "http2",
            "only used with an https upstream; plain http is always HTTP/1.1",
        );
    }
    Some(http2)
}

fn tenant_name(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<TenantName> {
    let name = ctx.required(
        scope,
        "name",
        raw.name.as_ref(),
        "(the first path segment that selects the tenant)",
    )?;
    let parsed = TenantName::try_new(name);
    if parsed.is_none() {
        ctx.error(
            scope,
            "name",
            format!("`{name}` must match [a-z0-9][a-z0-9_-]{{0,62}} (lower case, it is a path segment)"),
        );
    }
    parsed
}

/// `https://host/base/` → scheme, authority and `/base`.
fn split_upstream(uri: &http::Uri) -> UpstreamUrl {
    UpstreamUrl {
        scheme: uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTPS),
        authority: uri
            .authority()
            .cloned()
            .expect("http_url checked that the URL has an authority"),
        base_path: uri.path().trim_end_matches('/').to_owned(),
    }
}

/// `Some(None)`: no limit; `None`: invalid.
fn rate_limit(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: Option<&RawRateLimit>,
    preset: Option<RateLimitConfig>,
) -> Option<Option<RateLimitConfig>> {
    let table = match raw {
        None => return Some(preset),
        Some(RawRateLimit::Switch(false)) => return Some(None),
        Some(RawRateLimit::Switch(true)) => {
            ctx.error(
                scope,
                "rate_limit",
                "`true` says nothing about the rate; write { per_second = N } or `false`",
            );
            return None;
        }
        Some(RawRateLimit::Limit(table)) => table,
    };
    let per_second = ctx.required(
        scope,
        "rate_limit.per_second",
        table.per_second.as_ref(),
        "in a rate_limit table",
    );
    let per_second = per_second.and_then(|n| positive_u32(ctx, scope, "rate_limit.per_second", *n));
    let burst = match table.burst {
        Some(n) => positive_u32(ctx, scope, "rate_limit.burst", n),
        None => per_second,
    };
    let max_wait = limits::max_wait(ctx, scope, table.max_wait.as_ref());
    let batch_share = limits::batch_share(ctx, scope, table.batch_share.as_ref());
    Some(Some(RateLimitConfig {
        per_second: per_second?,
        burst: burst?,
        max_wait: max_wait?,
        batch_share: batch_share?,
        // The provider counts as strictly whoever chose the rate.
        headroom: preset.map_or(Duration::ZERO, |p| p.headroom),
        // Set once the callers are known (`limits::lead_classes`).
        lead: CallerClass::Standard,
    }))
}

fn positive_u32(ctx: &mut Ctx<'_>, scope: &Scope, key: &str, value: i64) -> Option<NonZeroU32> {
    let parsed = u32::try_from(value).ok().and_then(NonZeroU32::new);
    if parsed.is_none() {
        ctx.error(
            scope,
            key,
            format!("`{value}` must be a whole number from 1 to {}", u32::MAX),
        );
    }
    parsed
}

fn headers(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let mut headers = Vec::new();
    let mut valid = true;
    for (name, value) in raw.headers.iter().flatten() {
        let key = format!("headers.{name}");
        match header(ctx, scope, &key, name, value) {
            Some(pair) => headers.push(pair),
            None => valid = false,
        }
    }
    valid.then_some(headers)
}

fn header(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    key: &str,
    name: &str,
    raw: &RawSecret,
) -> Option<(HeaderName, HeaderValue)> {
    let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
        ctx.key_error(scope, key, format!("`{name}` is not a valid HTTP header name"));
        return None;
    };
    if FORBIDDEN_HEADERS.contains(&header_name.as_str()) {
        ctx.key_error(
            scope,
            key,
            format!("`{name}` is managed by the proxy and cannot be set here"),
        );
        return None;
    }
    // Fixed headers often carry API keys: `{ env }`/`{ file }` work, a literal is not warned about.
    let value = match raw {
        RawSecret::Literal(value) => value.clone(),
        reference => ctx.secret(scope, key, reference)?.expose().clone(),
    };
    let Ok(mut header_value) = HeaderValue::from_str(&value) else {
        ctx.error(
            scope,
            key,
            "is not a valid HTTP header value (control characters or non-ASCII)",
        );
        return None;
    };
    // Keeps the value out of `Debug` output (`http` prints "Sensitive").
    header_value.set_sensitive(true);
    Some((header_name, header_value))
}

/// The operator's rules, or the provider preset when `rewrite` is absent (`[]` disables it).
fn rewrite(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: Option<&[RawRewrite]>,
    preset: &'static [(&'static str, &'static str)],
) -> Option<Vec<RewriteRule>> {
    let Some(raw) = raw else {
        return Some(
            preset
                .iter()
                .map(|(pattern, replace)| preset_rule(ctx, pattern, replace))
                .collect(),
        );
    };
    let rules: Vec<_> = raw
        .iter()
        .enumerate()
        .map(|(index, rule)| rewrite_rule(ctx, scope, index, rule))
        .collect();
    rules.into_iter().collect()
}

fn rewrite_rule(ctx: &mut Ctx<'_>, scope: &Scope, index: usize, raw: &RawRewrite) -> Option<RewriteRule> {
    let key = format!("rewrite.{index}");
    let (Some(pattern), Some(replace)) = (&raw.pattern, &raw.replace) else {
        return ctx.reject(scope, &key, "a rewrite rule needs both `match` and `replace`");
    };
    match ctx.regex(pattern) {
        Ok(regex) => Some(RewriteRule::new(regex, replace.clone())),
        Err(e) => {
            // regex's message is multi-line with a caret diagram; its last line says what is wrong.
            let reason = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned();
            ctx.reject(
                scope,
                &format!("{key}.match"),
                format!("invalid regular expression: {reason}"),
            )
        }
    }
}

fn preset_rule(ctx: &mut Ctx<'_>, pattern: &str, replace: &str) -> RewriteRule {
    RewriteRule::new(
        ctx.regex(pattern).expect("provider presets are valid regexes (tested)"),
        replace.to_owned(),
    )
}
