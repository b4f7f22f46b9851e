//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/tenants`, on its own address so that
//! probes and scrapers never share a port (or a caller check) with proxied traffic.
//!
//! Handlers are boring on purpose: a `match` on the path, JSON built from the live snapshot, and
//! never a token or secret (token state is reported as generation, expiry and last error only).

pub mod metrics;
mod process;

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::clock;
use crate::tenant::{Snapshot, Tenant};
use crate::token::Origin;

/// A static credential this close to expiry is reported by `/readyz` (still ready), so operators
/// replace it in time. Readiness itself fails only within the tenant's `refresh_before` of the
/// expiry: failing a whole day early would take a pod out of service for a credential that still
/// works (a 2-hour CYBERBIZ token would never be ready at all).
const STATIC_EXPIRY_WARNING: Duration = Duration::from_secs(24 * 3600);

/// Answers one admin request.
pub(crate) fn handle<B>(snapshot: &Snapshot, registry: &Registry, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"GET only\n"),
        );
    }
    match request.uri().path() {
        "/healthz" => respond(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        "/readyz" => match request.uri().query().and_then(tenant_query) {
            Some(name) => readyz_one(snapshot, &name),
            None => readyz(snapshot),
        },
        "/metrics" => metrics(registry),
        "/tenants" => json_response(
            StatusCode::OK,
            &json!({ "tenants": snapshot_tenants(snapshot), "store": store_state(snapshot) }),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", Bytes::from(value.to_string()))
}

/// Ready when every required tenant holds a valid token that is not about to lapse, and the
/// process is not shutting down. A failing tenant with `required = false` is listed under
/// `failing` (with `"required": false`) without failing readiness, so one broken credential does
/// not take every pod out of its Service; static credentials within a day of expiry are listed
/// under `expiring`.
fn readyz(snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let (mut failing, mut expiring) = (Vec::new(), Vec::new());
    let mut ready = !snapshot.is_shutting_down();
    for tenant in sorted(snapshot) {
        let entry = |reason: String| json!({ "tenant": tenant.config.name.as_str(), "reason": reason, "required": tenant.config.required });
        match readiness(tenant) {
            Readiness::Ready => {}
            Readiness::Expiring(reason) => expiring.push(entry(reason)),
            Readiness::Failing(reason) => {
                ready &= !tenant.config.required;
                failing.push(entry(reason));
            }
        }
    }
    let body = json!({
        "ready": ready,
        "shutting_down": snapshot.is_shutting_down(),
        "failing": failing,
        "expiring": expiring,
        "store": store_state(snapshot),
    });
    json_response(ready_status(ready), &body)
}

/// `/readyz?tenant=NAME`: one tenant's readiness, whether it is required or not (404 for a name
/// that is not configured).
fn readyz_one(snapshot: &Snapshot, name: &str) -> Response<Full<Bytes>> {
    let Some(tenant) = snapshot.tenant(name) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({ "tenant": name, "error": "unknown tenant" }),
        );
    };
    let (ready, state, reason) = match readiness(&tenant) {
        Readiness::Ready => (true, "ready", None),
        Readiness::Expiring(reason) => (true, "expiring", Some(reason)),
        Readiness::Failing(reason) => (false, "failing", Some(reason)),
    };
    let ready = ready && !snapshot.is_shutting_down();
    let body = json!({
        "tenant": name,
        "ready": ready,
        "state": state,
        "reason": reason,
        "required": tenant.config.required,
        "shutting_down": snapshot.is_shutting_down(),
    });
    json_response(ready_status(ready), &body)
}

/// The `tenant` parameter of a query string (tenant names need no percent-decoding: they are
/// `[a-z0-9_-]`).
fn tenant_query(query: &str) -> Option<String> {
    let value = query.split('&').find_map(|pair| pair.strip_prefix("tenant="))?;
    Some(value.to_owned())
}

fn ready_status(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The token store's state. The shared store being unreachable does not fail readiness: every
/// replica keeps serving with the tokens it holds and renews them on its own.
fn store_state(snapshot: &Snapshot) -> Value {
    match snapshot.store().health() {
        None => json!({ "kind": "memory" }),
        Some(health) => {
            let since = health.since_ms() / 1000;
            if health.is_up() {
                json!({ "kind": "redis", "state": "up", "since_unix": since })
            } else {
                json!({ "kind": "redis", "state": "unreachable", "since_unix": since })
            }
        }
    }
}

enum Readiness {
    Ready,
    /// Still serving, but an operator must act soon.
    Expiring(String),
    Failing(String),
}

fn readiness(tenant: &Tenant) -> Readiness {
    let Some(token) = tenant.tokens.usable() else {
        let cause = tenant
            .tokens
            .stats()
            .last_error
            .unwrap_or_else(|| "no token yet".to_owned());
        return Readiness::Failing(format!("no valid token: {cause}"));
    };
    let Some(remaining) = token.expires_at.map(clock::remaining) else {
        return Readiness::Ready;
    };
    if tenant.tokens.renews() || remaining >= STATIC_EXPIRY_WARNING {
        return Readiness::Ready;
    }
    let reason = format!(
        "the static credential expires in {}s and cannot be renewed: replace it",
        remaining.as_secs()
    );
    if remaining < tenant.config.token.refresh_before {
        Readiness::Failing(reason)
    } else {
        Readiness::Expiring(reason)
    }
}

fn metrics(registry: &Registry) -> Response<Full<Bytes>> {
    let mut text = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            Bytes::from_static(b"metrics encoding failed\n"),
        );
    }
    respond(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        Bytes::from(text),
    )
}

fn sorted(snapshot: &Snapshot) -> Vec<&std::sync::Arc<Tenant>> {
    let mut tenants: Vec<_> = snapshot.tenants().collect();
    tenants.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    tenants
}

fn snapshot_tenants(snapshot: &Snapshot) -> Vec<Value> {
    sorted(snapshot)
        .into_iter()
        .map(|tenant| tenant_state(tenant))
        .collect()
}

/// One tenant as `/tenants` shows it: no token, no secret, no header value.
fn tenant_state(tenant: &Tenant) -> Value {
    let stats = tenant.tokens.stats();
    let current = tenant.tokens.usable();
    let state = match (&current, &stats.last_error) {
        (Some(_), _) => "valid",
        (None, Some(_)) => "failed",
        (None, None) => "pending",
    };
    json!({
        "name": tenant.config.name.as_str(),
        "provider": tenant.config.provider.kind(),
        "upstream": tenant.config.upstream.to_string(),
        "token": {
            "state": state,
            "generation": stats.generation,
            "expires_in_s": current.as_ref().and_then(|t| t.expires_at).map(|at| clock::remaining(at).as_secs()),
            "renews": tenant.tokens.renews(),
            "last_renewal_unix": stats.last_renewal.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
            "last_error": stats.last_error,
            "renewals_ok": stats.renewals_ok,
            "renewals_failed": stats.renewals_failed,
            "origin": stats.origin.map(Origin::as_str),
            "adopted": stats.adopted,
            "store_version": stats.store_version,
            "unpublished": stats.unpublished,
        },
        "limiter": tenant.limiter.as_ref().map(|l| l.state()),
    })
}
