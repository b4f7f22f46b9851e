//! `provider = "static"`: a fixed credential header. The header must be one the proxy does not
//! manage itself, and the value must be sendable, which is checked without echoing it.

use http::{HeaderName, HeaderValue};

use super::StaticConfig;
use crate::schema::check::{Ctx, Scope};
use crate::schema::fields::FORBIDDEN_HEADERS;
use crate::schema::raw::{RawTenant, RawTime};
use crate::schema::{Secret, units};

pub(crate) fn build(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<StaticConfig> {
    let header = header(ctx, scope, raw.header.as_deref());
    let why = "for provider `static` (the whole header value)";
    let value = ctx.required(scope, "value", raw.value.as_ref(), why);
    let value = value
        .and_then(|v| ctx.secret(scope, "value", v))
        .and_then(|v| sendable(ctx, scope, v));
    let expires_at = match &raw.expires_at {
        None => Some(None),
        Some(RawTime::Datetime(datetime)) => expiry(ctx, scope, &datetime.to_string()),
        Some(RawTime::Text(text)) => expiry(ctx, scope, text),
    };
    Some(StaticConfig {
        header: header?,
        value: value?,
        expires_at: expires_at?,
    })
}

/// `authorization` by default; any other header the proxy does not manage.
fn header(ctx: &mut Ctx<'_>, scope: &Scope, name: Option<&str>) -> Option<HeaderName> {
    let Some(name) = name else {
        return Some(http::header::AUTHORIZATION);
    };
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(header) if header == http::header::AUTHORIZATION => Some(header),
        Ok(header) if FORBIDDEN_HEADERS.contains(&header.as_str()) => {
            ctx.reject(scope, "header", format!("`{name}` is managed by the proxy"))
        }
        Ok(header) => Some(header),
        Err(_) => ctx.reject(scope, "header", format!("`{name}` is not a valid HTTP header name")),
    }
}

fn sendable(ctx: &mut Ctx<'_>, scope: &Scope, value: Secret<String>) -> Option<Secret<String>> {
    if HeaderValue::from_str(value.expose()).is_ok() {
        return Some(value);
    }
    ctx.reject(
        scope,
        "value",
        "is not a valid HTTP header value (control characters or non-ASCII)",
    )
}

fn expiry(ctx: &mut Ctx<'_>, scope: &Scope, text: &str) -> Option<Option<std::time::SystemTime>> {
    match units::parse_rfc3339(text) {
        Ok(at) => Some(Some(at)),
        Err(e) => ctx.reject(scope, "expires_at", e),
    }
}
