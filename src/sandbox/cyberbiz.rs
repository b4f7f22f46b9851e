//! Fake CYBERBIZ App Store API (`docs/providers.md#cyberbiz`). CYBERBIZ has no token endpoint the
//! proxy calls: merchants copy an HS256 JWT from the backend. So the fake mints such tokens on
//! demand (`token()`), and its API enforces what CYBERBIZ documents: at most 5 requests in any
//! second (429 beyond; the fake records the worst 1-second window it saw, so tests can prove the
//! proxy stays under) and at most 2 MB per request (413, the front door's likely answer).
//! An unknown, expired or revoked token gets 401 `{"error":["無權使用該 API"]}`. Past those checks
//! `/shop`, `/v2/product_feeds`, `/v1/products` and `/v1/customers` answer in CYBERBIZ's documented
//! shapes (`cyberbiz/shop.rs`), any other path 200 with the request body reflected, and every such
//! answer (the 401 too) carries the `x-sandbox-echo` header.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;
use tokio::time::Instant;

use super::common::{self, Body, BodyError, TokenState, bump, get, json, lock};
use super::fake::{Fake, FakeCore, FakeState};
use super::server::Handler;
use crate::clock;

mod options;
mod shop;

pub use options::{CYBERBIZ_BODY_LIMIT, CYBERBIZ_DEFAULT_TTL, CYBERBIZ_SHOP_DOMAIN, CYBERBIZ_SHOP_ID, CyberbizOptions};

/// How much of an oversized body is read (and dropped) before answering 413, so ordinary
/// clients get the answer rather than a reset mid-upload.
const DRAIN_CAP: u64 = 64 * 1024 * 1024;

/// The sliding window the request limit applies to.
const WINDOW: Duration = Duration::from_secs(1);

/// A running fake CYBERBIZ; dropping it stops the server.
pub type CyberbizSandbox = Fake<CyberbizState>;

/// Recent request times: `admitted` enforces the limit, `arrived` measures the client.
#[derive(Debug, Default)]
struct Windows {
    admitted: VecDeque<Instant>,
    arrived: VecDeque<Instant>,
    max_arrived: usize,
}

/// What the handle and the request handler share; its own fields beside the common [`FakeCore`].
pub struct CyberbizState {
    core: FakeCore,
    options: CyberbizOptions,
    windows: Mutex<Windows>,
    over_limit: AtomicUsize,
    too_large: AtomicUsize,
}

/// No `TokenEndpoint`: merchants copy tokens by hand, so there are no token calls to count or fail.
impl FakeState for CyberbizState {
    const NAME: &'static str = "CyberbizSandbox";

    fn core(&self) -> &FakeCore {
        &self.core
    }
}

// === impl CyberbizSandbox ===

impl CyberbizSandbox {
    pub async fn start(options: CyberbizOptions) -> io::Result<Self> {
        Self::serve(CyberbizState {
            core: FakeCore::new(options.token_ttl),
            windows: Mutex::new(Windows::default()),
            over_limit: AtomicUsize::new(0),
            too_large: AtomicUsize::new(0),
            options,
        })
        .await
    }

    /// Mints a token as the CYBERBIZ backend would: an HS256 JWT with `iat`, `exp`, `shop_id`,
    /// `shop_domain` and `scopes`, valid for the configured lifetime.
    pub fn token(&self) -> String {
        self.token_with_ttl(self.state.core.ttl())
    }

    pub fn token_with_ttl(&self, ttl: Duration) -> String {
        let now = clock::unix_millis() / 1000;
        let options = &self.state.options;
        let claims = json!({
            "iat": now, "exp": now + ttl.as_secs(), "shop_id": options.shop_id,
            "scopes": options.scopes, "shop_domain": options.shop_domain,
            // Two tokens minted in the same second must still differ.
            "jti": common::random_string(),
        });
        let token = common::mint_jwt("HS256", &claims);
        self.state.core.tokens.insert(token.clone(), ttl);
        token
    }

    /// The most requests that arrived within any 1-second window (admitted or not).
    pub fn max_requests_in_any_second(&self) -> usize {
        lock(&self.state.windows).max_arrived
    }

    /// Requests answered 429 for exceeding 5 per second.
    pub fn requests_over_limit(&self) -> usize {
        get(&self.state.over_limit)
    }

    /// Requests answered 413 for bodies over 2 MB.
    pub fn bodies_too_large(&self) -> usize {
        get(&self.state.too_large)
    }
}

// === API ===

impl Handler for CyberbizState {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        self.core.count_api_call();
        let (parts, mut body) = req.into_parts();
        if declared_length(&parts.headers).is_some_and(|len| len > self.options.body_limit) {
            self.core.record(&parts, 0);
            common::discard(&mut body, DRAIN_CAP).await;
            return self.too_large();
        }
        if !self.admit(Instant::now()) {
            bump(&self.over_limit);
            return json(StatusCode::TOO_MANY_REQUESTS, &json!({"error": "Too Many Requests"}));
        }
        let state = self.core.bearer_state(&parts.headers);
        let summary = match common::read_body_mut(&mut body, self.options.body_limit).await {
            Ok(summary) => summary,
            Err(BodyError::TooLarge) => {
                common::discard(&mut body, DRAIN_CAP).await;
                return self.too_large();
            }
            Err(BodyError::Broken) => return common::empty(StatusCode::BAD_REQUEST),
        };
        self.core.record(&parts, summary.len);
        let response = if state == TokenState::Valid {
            self.route(&parts, &summary)
        } else {
            json(StatusCode::UNAUTHORIZED, &json!({"error": ["無權使用該 API"]}))
        };
        common::with_echo(response, &common::request_echo(&parts, summary.len))
    }
}

impl CyberbizState {
    /// Records an arrival and admits it if fewer than the limit were admitted in the last second.
    fn admit(&self, now: Instant) -> bool {
        let mut windows = lock(&self.windows);
        let recent = |t: &Instant| now.saturating_duration_since(*t) < WINDOW;
        while windows.arrived.front().is_some_and(|t| !recent(t)) {
            windows.arrived.pop_front();
        }
        while windows.admitted.front().is_some_and(|t| !recent(t)) {
            windows.admitted.pop_front();
        }
        windows.arrived.push_back(now);
        windows.max_arrived = windows.max_arrived.max(windows.arrived.len());
        if windows.admitted.len() >= self.options.max_per_second {
            return false;
        }
        windows.admitted.push_back(now);
        true
    }

    fn too_large(&self) -> Response<Body> {
        bump(&self.too_large);
        json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": "Request Entity Too Large"}),
        )
    }

    fn route(&self, parts: &http::request::Parts, summary: &common::BodySummary) -> Response<Body> {
        let query = parts.uri.query();
        match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/shop") => json(StatusCode::OK, &shop::shop_info(&self.options)),
            (&Method::GET, "/v2/product_feeds") => json(StatusCode::OK, &shop::product_feeds(&self.options)),
            (&Method::GET, "/v1/products") => shop::products(&self.options, query),
            (&Method::GET, "/v1/customers") => shop::customers(query),
            _ => common::body_echo(summary),
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}
