//! The ACCS-like Commerce REST API behind the fake IMS (`docs/providers.md#accs-requests`):
//! `/<tenant-id>/V1/...` with `Authorization: Bearer` and `x-api-key`. Documented calls answer in
//! Commerce's shapes: the products list, the store views and the customers resource
//! (`customers.rs`). Every answer carries the `x-sandbox-echo` header (path, raw query, `Store`
//! header, body length; never the token) so tests can check rewriting and header injection; a
//! path the fake does not model answers 200 with the request body reflected. `/V1/sandbox/bytes?n=`
//! streams `n` bytes without buffering and `/V1/sandbox/slow?ms=` answers late, for benchmarks and
//! timeout tests.

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use super::super::common::{self, Body, BodySummary, TokenState, json};
use super::ImsState;
use super::customers;

/// Upper bound on `/V1/sandbox/slow?ms=`, so a typo cannot park a connection for hours.
const MAX_SLOW: Duration = Duration::from_secs(60);

impl ImsState {
    pub(super) async fn api(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, summary) = self.core.receive_api(req).await;
        let response = match self.authorize(&parts.headers) {
            Some(denied) => denied,
            None => self.route(&parts, &summary).await,
        };
        common::with_echo(response, &echo(&parts, &summary))
    }

    async fn route(&self, parts: &http::request::Parts, summary: &BodySummary) -> Response<Body> {
        let path = parts.uri.path();
        let query = parts.uri.query();
        let route = path.strip_prefix(&format!("/{}", self.tenant_id)).unwrap_or(path);
        if let Some(rest) = route.strip_prefix("/V1/customers") {
            if let Some(answer) = customers::route(&self.customers, &parts.method, rest, summary) {
                return answer;
            }
        }
        match (&parts.method, route) {
            (&Method::GET, "/V1/sandbox/bytes") => common::streamed(
                common::query_param(query, "n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            ),
            (&Method::GET, "/V1/sandbox/slow") => {
                let ms = common::query_param(query, "ms")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms).min(MAX_SLOW)).await;
                json(StatusCode::OK, &json!({"slept_ms": ms}))
            }
            (&Method::GET, "/V1/products") => json(StatusCode::OK, &products(query)),
            (&Method::GET, "/V1/store/storeViews") => json(StatusCode::OK, &store_views()),
            _ => common::body_echo(summary),
        }
    }

    /// `None` when the caller may proceed; otherwise the rejection.
    fn authorize(&self, headers: &HeaderMap) -> Option<Response<Body>> {
        let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if self.require_api_key && api_key != Some(self.client_id.as_str()) {
            // Adobe I/O gateway shape; that ACCS sits behind such a gateway is unconfirmed.
            let body = json!({"error_code": "403000", "message": "Api Key is invalid"});
            return Some(json(StatusCode::FORBIDDEN, &body));
        }
        let valid = self.core.bearer_state(headers) == TokenState::Valid;
        (!valid).then(unauthorized)
    }
}

/// Magento's guest response, used for missing, bad, expired and revoked tokens alike.
fn unauthorized() -> Response<Body> {
    let body = json!({
        "message": "The consumer isn't authorized to access %resources.",
        "parameters": {"resources": "Magento_Catalog::products"}
    });
    json(StatusCode::UNAUTHORIZED, &body)
}

/// What the API reflects so tests can see what the proxy sent upstream (never the token).
fn echo(parts: &http::request::Parts, summary: &BodySummary) -> serde_json::Value {
    let mut echo = common::request_echo(parts, summary.len);
    echo["store"] = json!(parts.headers.get("store").and_then(|v| v.to_str().ok()));
    echo
}

/// `searchCriteria[pageSize]` (default 2, at most 50) of the 120 products Commerce would have.
pub(crate) fn products(query: Option<&str>) -> serde_json::Value {
    let page_size: usize = common::query_param(query, "searchCriteria[pageSize]")
        .and_then(|n| n.parse().ok())
        .unwrap_or(2)
        .min(50);
    let items: Vec<_> = (1..=page_size)
        .map(|i| {
            json!({"id": i, "sku": format!("SB-{i:04}"), "name": format!("Sandbox tee {i}"),
            "price": 19.9, "status": 1, "type_id": "simple"})
        })
        .collect();
    json!({
        "items": items,
        "search_criteria": {"filter_groups": [], "page_size": page_size, "current_page": 1},
        "total_count": 120,
    })
}

pub(crate) fn store_views() -> serde_json::Value {
    json!([
        {"id": 0, "code": "admin", "name": "Admin", "website_id": 0, "store_group_id": 0, "is_active": 1},
        {"id": 1, "code": "default", "name": "Default Store View", "website_id": 1,
         "store_group_id": 1, "is_active": 1}
    ])
}
