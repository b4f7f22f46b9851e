//! The fake store's Admin REST API (`docs/providers.md#shopline-requests` and the sections after
//! it); its per-store leaky bucket is `bucket.rs`.
//!
//! Order of checks: store lock (423), bearer token (401 with SHOPLINE's `errors` body), then the
//! bucket (429 `{"errors":"Too many request"}`), because the bucket belongs to an (app, store)
//! pair and only an authenticated call can be attributed to one. Every response has `traceId`
//! and the `x-sandbox-echo` header. `products/products.json` answers from the catalogue
//! (`catalog.rs`); any other path answers 200 with the request body reflected.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;
use tokio::time::Instant;

use super::super::common::{self, Body, BodySummary, TokenState, bump, json, lock};
use super::{ShoplineState, catalog, trace_id};

impl ShoplineState {
    pub(super) async fn api(&self, req: Request<Incoming>) -> Response<Body> {
        lock(&self.arrivals).push(Instant::now());
        let (parts, summary) = self.core.receive_api(req).await;
        let mut response = self.api_response(&parts, &summary);
        response.headers_mut().insert("traceId", trace_id());
        common::with_echo(response, &common::request_echo(&parts, summary.len))
    }

    fn api_response(&self, parts: &http::request::Parts, summary: &BodySummary) -> Response<Body> {
        if self.locked.load(Ordering::SeqCst) {
            return json(StatusCode::LOCKED, &json!({"errors": "Store is locked"}));
        }
        match self.core.bearer_state(&parts.headers) {
            TokenState::Valid => {}
            TokenState::Expired => return unauthorized("ACCESS_TOKEN is expired!"),
            TokenState::Revoked | TokenState::Unknown => {
                return unauthorized("ACCESS_TOKEN is invalid!");
            }
        }
        if let Err(wait) = lock(&self.bucket).admit(Instant::now()) {
            return self.throttled(wait);
        }
        if parts.method == Method::GET && parts.uri.path().ends_with("/products/products.json") {
            return catalog::products_page(&own_url(parts), parts.uri.query());
        }
        common::body_echo(summary)
    }

    fn throttled(&self, wait: Duration) -> Response<Body> {
        bump(&self.throttled);
        if let Some(limit) = self.options.lock_after_throttled {
            if common::get(&self.throttled) >= limit {
                self.locked.store(true, Ordering::SeqCst);
            }
        }
        let mut response = json(StatusCode::TOO_MANY_REQUESTS, &json!({"errors": "Too many request"}));
        if self.options.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

fn unauthorized(message: &str) -> Response<Body> {
    json(StatusCode::UNAUTHORIZED, &json!({"errors": message}))
}

/// The URL this request reached, without its query: the base of the `link` header's URLs, as
/// SHOPLINE builds them from its own host (`https://<handle>.myshopline.com/...`).
fn own_url(parts: &http::request::Parts) -> String {
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            let host = parts.headers.get(http::header::HOST)?;
            host.to_str().ok().map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("http://{host}{}", parts.uri.path())
}
