//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/tenants` and the status page at `/`,
//! on its own address so that probes and scrapers never share a port (or a caller check) with
//! proxied traffic.
//!
//! Handlers are boring on purpose: a `match` on the path, JSON (or the page's HTML) built from the
//! live snapshot through one [`view`], and never a token or secret (token state is reported as
//! generation, expiry and last error only).

pub(crate) mod metrics;
mod process;
mod status;
mod view;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::tenant::Snapshot;
use view::Readiness;

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
        "/" => status_page(snapshot),
        "/healthz" => respond(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        "/readyz" => match request.uri().query().and_then(tenant_query) {
            Some(name) => readyz_one(snapshot, &name),
            None => readyz(snapshot),
        },
        "/metrics" => metrics(registry),
        "/tenants" => tenants(snapshot),
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
    let tenants = view::tenants(snapshot);
    let ready = view::ready(snapshot, &tenants);
    for tenant in tenants {
        let entry = |reason: String| json!({ "tenant": tenant.name, "reason": reason, "required": tenant.required });
        match tenant.readiness {
            Readiness::Ready => {}
            Readiness::Expiring(reason) => expiring.push(entry(reason)),
            Readiness::Failing(reason) => failing.push(entry(reason)),
        }
    }
    let body = json!({
        "ready": ready,
        "shutting_down": snapshot.is_shutting_down(),
        "failing": failing,
        "expiring": expiring,
        "store": view::store(snapshot).to_json(),
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
    let tenant = view::tenant_view(&tenant);
    let (ready, state, reason) = match tenant.readiness {
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
        "required": tenant.required,
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

/// `/tenants`: every tenant (no token, no secret, no header value) and the store.
fn tenants(snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let tenants: Vec<Value> = view::tenants(snapshot).iter().map(view::TenantView::to_json).collect();
    json_response(
        StatusCode::OK,
        &json!({
            "tenants": tenants,
            "store": view::store(snapshot).to_json(),
            "webhooks": snapshot.webhooks().view(),
        }),
    )
}

/// `/`: the status page, from the same view as `/tenants` and `/readyz`.
fn status_page(snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let tenants = view::tenants(snapshot);
    let reloads = snapshot.reloads().read();
    let page = status::Page {
        tenants: &tenants,
        store: view::store(snapshot),
        reloads: &reloads,
        ready: view::ready(snapshot, &tenants),
        shutting_down: snapshot.is_shutting_down(),
        version: process::VERSION,
        revision: process::REVISION,
        now_unix: view::unix_secs(crate::clock::system_now()).unwrap_or(0),
    };
    let mut response = respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from(status::render(&page)),
    );
    for (name, value) in status::HEADERS {
        response
            .headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    response
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
