//! `[[webhook]]` and `server.webhook_listen`: every route must be able to verify what it receives.
//! A webhook names a tenant whose app secret signs the platform's deliveries (a `shopline` tenant
//! with app credentials, a `cyberbiz` tenant with `app_secret`), or gives its own `secret`,
//! `signature_header` and `encoding` for any other sender; never both. Names are unique path
//! segments and `forward` is an absolute http(s) URL.

use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use crate::config::{
    ProviderConfig, Secret, ShoplineCredentials, SignatureEncoding, TenantConfig, TenantName, WebhookConfig,
    WebhookSender,
};
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::{RawQuantity, RawSecret};

/// One `[[webhook]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub(crate) name: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) secret: Option<RawSecret>,
    pub(crate) signature_header: Option<String>,
    pub(crate) encoding: Option<String>,
    pub(crate) forward: Option<String>,
    pub(crate) max_body: Option<RawQuantity>,
    pub(crate) timeout: Option<RawQuantity>,
}

/// `max_body` when not set: platforms send events of a few KiB; 1 MiB leaves room for a large
/// order while bounding what an unauthenticated sender makes the process hold.
const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// The largest `max_body`: a webhook body is held whole while it is verified.
const MAX_MAX_BODY: u64 = 64 << 20;
/// `timeout` when not set: senders give up on a delivery after a few seconds and retry it, so a
/// forward that takes longer is better answered 503 (and retried) than left hanging.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Every `[[webhook]]`; `None` when any is invalid. `tenants` is `None` when the tenants did not
/// validate: their errors are reported, and webhooks naming them are checked no further.
pub(super) fn webhooks(ctx: &mut Ctx<'_>, tenants: Option<&[TenantConfig]>) -> Option<Vec<WebhookConfig>> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut webhooks = Vec::new();
    let mut all_valid = true;
    for index in 0..ctx.src.len("webhook") {
        let path = format!("webhook.{index}");
        let label = match ctx.src.str_at(&format!("{path}.name")) {
            Some(name) => format!("webhook {name:?}"),
            None => format!("webhook #{}", index + 1),
        };
        let scope = Scope::new(path, label);
        if let Some(name) = ctx.src.str_at(&scope.path_of("name")).map(str::to_owned) {
            if let Some((_, first)) = names.iter().find(|(other, _)| *other == name) {
                ctx.error(
                    &scope,
                    "name",
                    format!("duplicate webhook name (first used by {first})"),
                );
                all_valid = false;
            }
            names.push((name, scope.label().to_owned()));
        }
        let Some(raw) = ctx.section::<RawWebhook>(&scope.path_of(""), scope.label()) else {
            all_valid = false;
            continue;
        };
        match webhook(ctx, &scope, &raw, tenants) {
            Some(webhook) => webhooks.push(webhook),
            None => all_valid = false,
        }
    }
    all_valid.then_some(webhooks)
}

fn webhook(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawWebhook,
    tenants: Option<&[TenantConfig]>,
) -> Option<WebhookConfig> {
    let name = ctx.required(scope, "name", raw.name.as_ref(), "(the route: POST /<name>)");
    let name = name.and_then(|name| match TenantName::try_new(name) {
        Some(_) => Some(name.clone()),
        None => ctx.reject(
            scope,
            "name",
            format!("`{name}` must match [a-z0-9][a-z0-9_-]{{0,62}} (it is a path segment)"),
        ),
    });
    let forward = ctx
        .required(
            scope,
            "forward",
            raw.forward.as_ref(),
            "(where verified deliveries are POSTed)",
        )
        .and_then(|text| ctx.http_url(scope, "forward", text, true));
    let max_body = ctx.size(scope, "max_body", raw.max_body.as_ref(), DEFAULT_MAX_BODY);
    let max_body = match max_body {
        Some(0) => ctx.reject(scope, "max_body", "must be more than 0 bytes"),
        Some(b) if b > MAX_MAX_BODY => ctx.reject(scope, "max_body", "must be at most 64MiB"),
        other => other,
    };
    let timeout = match ctx.positive_duration(scope, "timeout", raw.timeout.as_ref(), DEFAULT_TIMEOUT) {
        Some(t) if t > MAX_TIMEOUT => ctx.reject(scope, "timeout", "must be at most 2m"),
        other => other,
    };
    let verifier = verifier(ctx, scope, raw, tenants);
    let (tenant, sender, secret, signature_header, encoding) = verifier?;
    Some(WebhookConfig {
        name: name?,
        tenant,
        sender,
        secret,
        signature_header,
        encoding,
        forward: forward?,
        max_body: max_body?,
        timeout: timeout?,
    })
}

type Verifier = (
    Option<TenantName>,
    WebhookSender,
    Secret<String>,
    HeaderName,
    SignatureEncoding,
);

/// What verifies: a tenant's app secret, or the webhook's own secret, header and encoding.
fn verifier(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawWebhook, tenants: Option<&[TenantConfig]>) -> Option<Verifier> {
    match (&raw.tenant, &raw.secret) {
        (Some(_), Some(_)) => {
            ctx.key_error(scope, "secret", "give either `tenant` (its app secret verifies) or `secret`, not both");
            None
        }
        (None, None) => ctx.reject(
            scope,
            "",
            "needs `tenant` (a shopline tenant, or a cyberbiz tenant with `app_secret`) or `secret` with `signature_header`",
        ),
        (Some(tenant), None) => {
            for key in ["signature_header", "encoding"] {
                if ctx.src.get(&scope.path_of(key)).is_some() {
                    ctx.key_error(scope, key, "only used with `secret`: a tenant's platform fixes its own");
                }
            }
            from_tenant(ctx, scope, tenant, tenants)
        }
        (None, Some(secret)) => generic(ctx, scope, raw, secret),
    }
}

fn from_tenant(ctx: &mut Ctx<'_>, scope: &Scope, name: &str, tenants: Option<&[TenantConfig]>) -> Option<Verifier> {
    let known = (0..ctx.src.len("tenant")).any(|i| ctx.src.str_at(&format!("tenant.{i}.name")) == Some(name));
    if !known {
        return ctx.reject(scope, "tenant", format!("no tenant is named `{name}`"));
    }
    // The tenant itself is invalid, and said so.
    let tenant = tenants?.iter().find(|t| t.name.as_str() == name)?;
    let found = match &tenant.provider {
        ProviderConfig::Shopline(c) => match &c.credentials {
            ShoplineCredentials::OAuth { app_secret, .. } => Ok((WebhookSender::Shopline, app_secret.clone())),
            ShoplineCredentials::Private { .. } => Err(format!(
                "tenant `{name}` is a private SHOPLINE app (`access_token`) and holds no app secret to verify with; \
                 give the app's `secret` instead"
            )),
        },
        ProviderConfig::Cyberbiz(c) => match &c.app_secret {
            Some(secret) => Ok((WebhookSender::Cyberbiz, secret.clone())),
            None => Err(format!(
                "tenant `{name}` (cyberbiz) has no `app_secret` to verify with; add it to the tenant"
            )),
        },
        other => Err(format!(
            "tenant `{name}` (provider `{}`) holds no webhook secret: only shopline and cyberbiz tenants do; \
             give `secret` and `signature_header` instead",
            other.kind()
        )),
    };
    match found {
        Ok((sender, secret)) => {
            let header = match sender {
                WebhookSender::Shopline => "x-shopline-hmac-sha256",
                _ => "x-cyberbiz-hmac-sha256",
            };
            let header = HeaderName::from_static(header);
            Some((
                Some(tenant.name.clone()),
                sender,
                secret,
                header,
                SignatureEncoding::HexOrBase64,
            ))
        }
        Err(message) => ctx.reject(scope, "tenant", message),
    }
}

fn generic(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawWebhook, secret: &RawSecret) -> Option<Verifier> {
    let secret = ctx.secret(scope, "secret", secret);
    let why = "with `secret` (the header that carries the signature)";
    let header = ctx.non_empty(scope, "signature_header", raw.signature_header.as_ref(), why);
    let header = header.and_then(|text| match HeaderName::from_bytes(text.as_bytes()) {
        Ok(header) => Some(header),
        Err(_) => ctx.reject(scope, "signature_header", format!("`{text}` is not a header name")),
    });
    let encoding = match raw.encoding.as_deref() {
        None | Some("hex") => Some(SignatureEncoding::Hex),
        Some("base64") => Some(SignatureEncoding::Base64),
        Some(other) => ctx.reject(scope, "encoding", format!("`{other}` is not `hex` or `base64`")),
    };
    Some((None, WebhookSender::Generic, secret?, header?, encoding?))
}

/// `server.webhook_listen` without webhooks serves nothing; webhooks without it are never served.
pub(super) fn check_listener(ctx: &mut Ctx<'_>, listen: Option<std::net::SocketAddr>, webhooks: &[WebhookConfig]) {
    let server = Scope::new("server", "[server]");
    match (listen, webhooks.is_empty()) {
        (Some(_), true) => ctx.warn(
            &server,
            "webhook_listen",
            "no [[webhook]] is configured: every request gets 404",
        ),
        (None, false) => ctx.error(
            &Scope::new("webhook.0", "[[webhook]]"),
            "",
            "webhooks are served only on `server.webhook_listen`, which is not set",
        ),
        _ => {}
    }
}
