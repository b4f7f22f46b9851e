//! Fake SHOPLINE store (myshopline.com flavour, `docs/providers.md#shopline`): the signed OAuth
//! token endpoints and a slice of the Admin REST API on one listener.
//!
//! Token side: `POST /admin/oauth/token/create` (`{"code":...}`, each code single-use) and
//! `POST /admin/oauth/token/refresh` (no body), authenticated by the `appkey`, `timestamp` (ms,
//! at most 10 minutes off) and `sign` headers, where `sign` is lowercase hex
//! HMAC-SHA256(app_secret, raw_body + timestamp), checked in constant time. There is one current
//! token per store: issuing a new one leaves the previous valid for a grace period (5 minutes on
//! SHOPLINE), then it answers 401. API side (`shopline/api.rs`): `/admin/openapi/<version>/...`
//! with a bearer token and the per-store leaky bucket (4/s, capacity 40) answering 429 beyond it;
//! `products/products.json` pages a small catalogue by `link` header (`shopline/catalog.rs`).

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;
use sha2::Sha256;
use tokio::time::Instant;

use super::common::{self, Body, TOKEN_BODY_LIMIT, bump, get, json, lock};
use super::fake::{Fake, FakeCore, FakeState, TokenEndpoint};
use super::server::Handler;
use crate::clock;

pub(super) mod api;
pub(super) mod bucket;
mod catalog;

pub const SHOPLINE_HANDLE: &str = "sandbox-store";
pub const SHOPLINE_APP_KEY: &str = "sandbox-app-key";
pub const SHOPLINE_APP_SECRET: &str = "sandbox-app-secret";
/// An authorization code the default fake accepts once for `token/create`.
pub const SHOPLINE_AUTH_CODE: &str = "sandbox-code";
/// OAuth tokens live 10 hours (`docs/providers.md#shopline-token-response`).
pub const SHOPLINE_DEFAULT_TTL: Duration = Duration::from_secs(10 * 3600);
/// The previous token keeps working this long after a refresh
/// (`docs/providers.md#shopline-one-token-per-store`).
pub const SHOPLINE_GRACE: Duration = Duration::from_secs(5 * 60);
/// SHOPLINE rejects signed requests whose timestamp is further off than this
/// (`docs/providers.md#sandbox-fakes`).
const TIMESTAMP_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The `sign` header value for a token call: lowercase hex HMAC-SHA256(app_secret, body + timestamp).
pub fn shopline_sign(app_secret: &str, body: &[u8], timestamp: &str) -> String {
    hex::encode(signer(app_secret, body, timestamp).finalize().into_bytes())
}

fn signer(app_secret: &str, body: &[u8], timestamp: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac
}

/// How the fake store and app are set up.
#[derive(Clone)]
pub struct ShoplineOptions {
    pub handle: String,
    pub app_key: String,
    pub app_secret: String,
    /// Authorization codes `token/create` accepts, each once.
    pub codes: Vec<String>,
    pub token_ttl: Duration,
    /// How long the previous token survives a refresh.
    pub grace: Duration,
    /// Leaky bucket drain rate, requests per second.
    pub rate_per_second: u32,
    /// Leaky bucket capacity.
    pub burst: u32,
    /// Send `Retry-After` on 429. SHOPLINE documents none; on by default for the demo's benefit.
    pub retry_after: bool,
    /// Lock the store (423) after this many throttled requests, as SHOPLINE does on repeat abuse.
    pub lock_after_throttled: Option<usize>,
}

impl Default for ShoplineOptions {
    fn default() -> Self {
        Self {
            handle: SHOPLINE_HANDLE.to_owned(),
            app_key: SHOPLINE_APP_KEY.to_owned(),
            app_secret: SHOPLINE_APP_SECRET.to_owned(),
            codes: vec![SHOPLINE_AUTH_CODE.to_owned()],
            token_ttl: SHOPLINE_DEFAULT_TTL,
            grace: SHOPLINE_GRACE,
            rate_per_second: 4,
            burst: 40,
            retry_after: true,
            lock_after_throttled: None,
        }
    }
}

impl fmt::Debug for ShoplineOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShoplineOptions")
            .field("handle", &self.handle)
            .field("app_key", &self.app_key)
            .field("token_ttl", &self.token_ttl)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// A running fake SHOPLINE store; dropping it stops the server.
pub type ShoplineSandbox = Fake<ShoplineState>;

/// What the handle and the request handler share; its own fields beside the common [`FakeCore`].
pub struct ShoplineState {
    core: FakeCore,
    options: ShoplineOptions,
    grace: Mutex<Duration>,
    codes: Mutex<HashSet<String>>,
    current: Mutex<Option<String>>,
    bucket: Mutex<bucket::LeakyBucket>,
    /// When each API call's head arrived (tokio clock), admitted or not.
    arrivals: Mutex<Vec<Instant>>,
    locked: AtomicBool,
    create_calls: AtomicUsize,
    refresh_calls: AtomicUsize,
    throttled: AtomicUsize,
}

impl FakeState for ShoplineState {
    const NAME: &'static str = "ShoplineSandbox";

    fn core(&self) -> &FakeCore {
        &self.core
    }
}

impl TokenEndpoint for ShoplineState {}

// === impl ShoplineSandbox ===

impl ShoplineSandbox {
    pub async fn start(options: ShoplineOptions) -> io::Result<Self> {
        Self::serve(ShoplineState {
            core: FakeCore::new(options.token_ttl),
            grace: Mutex::new(options.grace),
            codes: Mutex::new(options.codes.iter().cloned().collect()),
            current: Mutex::new(None),
            bucket: Mutex::new(bucket::LeakyBucket::new(options.rate_per_second, options.burst)),
            arrivals: Mutex::new(Vec::new()),
            locked: AtomicBool::new(false),
            create_calls: AtomicUsize::new(0),
            refresh_calls: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
            options,
        })
        .await
    }

    pub fn handle(&self) -> &str {
        &self.state.options.handle
    }

    pub fn app_key(&self) -> &str {
        &self.state.options.app_key
    }

    pub fn app_secret(&self) -> &str {
        &self.state.options.app_secret
    }

    pub fn create_calls(&self) -> usize {
        get(&self.state.create_calls)
    }

    pub fn refresh_calls(&self) -> usize {
        get(&self.state.refresh_calls)
    }

    /// API calls answered 429 by the leaky bucket.
    pub fn throttled_calls(&self) -> usize {
        get(&self.state.throttled)
    }

    /// When each API call arrived (admitted, throttled or refused), in arrival order: the
    /// witness for rate assertions over any window, which one worst-second figure cannot give.
    pub fn api_arrivals(&self) -> Vec<Instant> {
        lock(&self.state.arrivals).clone()
    }

    /// The store's current token, for tests that talk to the API directly.
    pub fn current_token(&self) -> Option<String> {
        lock(&self.state.current).clone()
    }

    /// How long the previous token survives later refreshes.
    pub fn set_grace(&self, grace: Duration) {
        *lock(&self.state.grace) = grace;
    }

    /// Makes `code` acceptable (once) to `token/create`.
    pub fn add_code(&self, code: &str) {
        lock(&self.state.codes).insert(code.to_owned());
    }

    /// Locks or unlocks the store; a locked store answers 423 to every API call.
    pub fn set_locked(&self, locked: bool) {
        self.state.locked.store(locked, Ordering::SeqCst);
    }
}

// === token endpoints ===

impl Handler for ShoplineState {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/admin/oauth/token/create" => self.token(req, Grant::Create).await,
            "/admin/oauth/token/refresh" => self.token(req, Grant::Refresh).await,
            path if path.starts_with("/admin/openapi/") => self.api(req).await,
            _ => json(StatusCode::NOT_FOUND, &json!({"errors": "Not Found"})),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Create,
    Refresh,
}

impl ShoplineState {
    async fn token(&self, req: Request<Incoming>, grant: Grant) -> Response<Body> {
        bump(if grant == Grant::Create {
            &self.create_calls
        } else {
            &self.refresh_calls
        });
        if let Some(outage) = self.core.count_token_call() {
            return outage;
        }
        if req.method() != Method::POST {
            return envelope_error(405, "METHOD_NOT_ALLOWED", "method not allowed");
        }
        let (parts, body) = req.into_parts();
        let Ok(body) = common::read_body(body, TOKEN_BODY_LIMIT).await else {
            return envelope_error(400, "PARAM_ERROR", "request body too large or broken");
        };
        if let Err(rejection) = self.verify_signed(&parts.headers, &body.head) {
            return rejection.into();
        }
        if grant == Grant::Create && !self.redeem_code(&body.head) {
            return envelope_error(400, "CODE_INVALID", "code is invalid or has been used");
        }
        self.issue()
    }

    /// Checks `appkey`, the timestamp window and the signature, in that order.
    fn verify_signed(&self, headers: &HeaderMap, body: &Bytes) -> Result<(), EnvelopeError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !common::secret_eq(header("appkey"), &self.options.app_key) {
            return Err(EnvelopeError(400, "APPKEY_INVALID", "appkey is invalid"));
        }
        let timestamp = header("timestamp");
        let fresh = timestamp
            .parse::<u64>()
            .is_ok_and(|ts| clock::unix_millis().abs_diff(ts) <= TIMESTAMP_WINDOW.as_millis() as u64);
        if !fresh {
            return Err(EnvelopeError(
                400,
                "TIMESTAMP_EXPIRED",
                "timestamp is invalid or expired",
            ));
        }
        let sign = hex::decode(header("sign")).unwrap_or_default();
        let mac = signer(&self.options.app_secret, body, timestamp);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&sign)
            .map_err(|_| EnvelopeError(400, "SIGN_ERROR", "sign verification failed"))
    }

    fn redeem_code(&self, body: &Bytes) -> bool {
        let code = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned));
        code.is_some_and(|code| lock(&self.codes).remove(&code))
    }

    /// Mints the store's new current token; the previous one dies after the grace period.
    fn issue(&self) -> Response<Body> {
        let ttl = self.core.ttl();
        let grace = *lock(&self.grace);
        let now_ms = clock::unix_millis();
        let expires_ms = now_ms + ttl.as_millis() as u64;
        let claims = json!({
            "appKey": self.options.app_key, "sellerId": "2000000001", "storeId": "1600000001",
            "version": "V2", "timestamp": now_ms, "iss": "ysoul", "exp": expires_ms / 1000,
        });
        let token = common::mint_jwt("HS512", &claims);
        self.core.tokens.insert(token.clone(), ttl);
        let previous = lock(&self.current).replace(token.clone());
        if let Some(previous) = previous {
            self.core.tokens.expire_by(&previous, Instant::now() + grace);
        }
        let data = json!({
            "accessToken": token,
            "expireTime": iso8601_utc(expires_ms),
            "scope": "read_products,write_products,read_orders",
        });
        json(
            StatusCode::OK,
            &json!({"code": 200, "i18nCode": "SUCCESS", "message": null, "data": data}),
        )
    }
}

/// SHOPLINE's failure envelope. The HTTP status is 200 with `code != 200`, the case every observed
/// client guards against (the exact failure shape is unconfirmed:
/// `docs/providers.md#shopline-token-response`).
fn envelope_error(code: u16, i18n_code: &str, message: &str) -> Response<Body> {
    json(
        StatusCode::OK,
        &json!({"code": code, "i18nCode": i18n_code, "message": message, "data": null}),
    )
}

/// A signed token call rejected: `code`, `i18nCode` and `message` of the failure envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EnvelopeError(u16, &'static str, &'static str);

impl From<EnvelopeError> for Response<Body> {
    fn from(EnvelopeError(code, i18n_code, message): EnvelopeError) -> Self {
        envelope_error(code, i18n_code, message)
    }
}

/// `2025-10-20T19:18:08.465+00:00` for unix milliseconds (the format third parties observed).
pub(super) fn iso8601_utc(unix_ms: u64) -> String {
    let (days, ms_of_day) = (unix_ms / 86_400_000, unix_ms % 86_400_000);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}+00:00")
}

fn trace_id() -> HeaderValue {
    HeaderValue::from_str(&hex::encode(rand::random::<[u8; 12]>())).expect("hex is a valid header value")
}
