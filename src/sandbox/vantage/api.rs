//! The fake Vantage public API (`/api/publicapi/v1/...`,
//! `docs/providers.md#vantage-requests-and-rejected-tokens`). A missing, bad, expired or revoked
//! token gets what ASP.NET's JwtBearer handler sends: 401, empty body,
//! `WWW-Authenticate: Bearer error="invalid_token"` (unconfirmed but likely). Every answer carries
//! the `x-sandbox-echo` header; a path the fake does not model answers 200 with the request body
//! reflected.

use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use super::super::common::{self, Body, BodySummary, TokenState, json};
use super::VantageState;

impl VantageState {
    pub(super) async fn api(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, summary) = self.core.receive_api(req).await;
        let state = self.core.bearer_state(&parts.headers);
        let response = if state == TokenState::Valid {
            route(&parts, &summary)
        } else {
            unauthorized(state)
        };
        common::with_echo(response, &common::request_echo(&parts, summary.len))
    }
}

fn route(parts: &http::request::Parts, summary: &BodySummary) -> Response<Body> {
    let route = parts.uri.path().trim_start_matches("/api/publicapi/v1");
    let segments: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["skills"]) => json(StatusCode::OK, &skills()),
        (&Method::GET, ["transactions", id]) => json(StatusCode::OK, &transaction(id)),
        (&Method::POST, ["transactions"]) => json(StatusCode::CREATED, &json!({"transactionId": uuid_like()})),
        _ => common::body_echo(summary),
    }
}

fn unauthorized(state: TokenState) -> Response<Body> {
    let challenge = if state == TokenState::Expired {
        r#"Bearer error="invalid_token", error_description="The token expired""#
    } else {
        r#"Bearer error="invalid_token""#
    };
    let mut response = common::empty(StatusCode::UNAUTHORIZED);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

fn skills() -> serde_json::Value {
    json!([
        {"id": "6b1c4c2e-0d7e-4c55-9f1a-1d6a2c000001", "name": "Invoice", "type": "Document"},
        {"id": "6b1c4c2e-0d7e-4c55-9f1a-1d6a2c000002", "name": "Receipt", "type": "Document"},
        {"id": "6b1c4c2e-0d7e-4c55-9f1a-1d6a2c000003", "name": "Classifier", "type": "Process"}
    ])
}

fn transaction(id: &str) -> serde_json::Value {
    json!({"id": id, "status": "Processed", "skillId": "6b1c4c2e-0d7e-4c55-9f1a-1d6a2c000001",
        "documents": [{"id": uuid_like(), "resultFiles": []}]})
}

fn uuid_like() -> String {
    let b = rand::random::<[u8; 16]>();
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
