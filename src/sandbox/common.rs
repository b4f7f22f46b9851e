//! Pieces every fake shares: the response body type and JSON helpers, the request echo (the
//! `x-sandbox-echo` header), the token registry (which tokens were issued, until when, whether
//! revoked), request recording for tests, bounded body reading, HTTP Basic client authentication
//! and JWT-shaped token minting.
//!
//! Locks here are std `Mutex`es taken for a few field updates and never across an `.await`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Response;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::Instant;

/// The body type of every sandbox response.
pub type Body = BoxBody<Bytes, Infallible>;

/// How much of a request body the echo endpoints keep to reflect back; the rest is only counted,
/// so a benchmark can push gigabytes through without the fake buffering them.
pub(crate) const ECHO_KEEP: usize = 64 * 1024;

/// Largest token-endpoint request body accepted; real token requests are a few hundred bytes.
pub(crate) const TOKEN_BODY_LIMIT: u64 = 64 * 1024;

/// Takes a std lock, tolerating poison: the critical sections here cannot leave broken state.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === responses ===

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The header every API answer carries: what the fake saw of the request (method, path, raw
/// query, body length, and per fake a header such as ACCS's `Store`) as compact JSON, never the
/// token. It rides beside the body so that the body can keep the provider's documented shape.
pub const ECHO_HEADER: &str = "x-sandbox-echo";

/// The echo every fake starts from: method, path, raw query and body length.
pub(crate) fn request_echo(parts: &http::request::Parts, body_len: u64) -> serde_json::Value {
    serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "body_length": body_len,
    })
}

/// `response` with `echo` in its [`ECHO_HEADER`].
pub(crate) fn with_echo(mut response: Response<Body>, echo: &serde_json::Value) -> Response<Body> {
    // The echo holds a URI's path and query and header values that were visible ASCII, and
    // compact JSON adds no line breaks, so this cannot fail in practice; were it to, the answer
    // goes out without its echo rather than not at all.
    if let Ok(value) = HeaderValue::from_str(&echo.to_string()) {
        response.headers_mut().insert(ECHO_HEADER, value);
    }
    response
}

/// The answer to a path a fake does not model: 200 with the request's JSON body reflected as
/// `{"body": ...}` (`null` when it was not JSON or was too long to keep), so tests can check
/// which body reached the upstream, for instance after a replay.
pub(crate) fn body_echo(summary: &BodySummary) -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({"body": summary.json()}))
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().boxed());
    *response.status_mut() = status;
    response
}

pub(crate) fn streamed(len: u64) -> Response<Body> {
    let mut response = Response::new(RepeatBody { remaining: len }.boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response
}

// === impl RepeatBody ===

/// `len` bytes of `x`, produced chunk by chunk from one static buffer: nothing is allocated per
/// chunk, so the fake can feed a multi-gigabyte download at memory speed.
struct RepeatBody {
    remaining: u64,
}

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

impl hyper::body::Body for RepeatBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining).map_or(CHUNK.len(), |r| r.min(CHUNK.len()));
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

// === request bodies ===

/// What the fakes keep of a request body: its length and (up to `ECHO_KEEP`) its start.
#[derive(Debug, Default)]
pub(crate) struct BodySummary {
    pub(crate) len: u64,
    pub(crate) head: Bytes,
}

impl BodySummary {
    /// The body as JSON when it was kept whole and parses; what the echo endpoints reflect.
    pub(crate) fn json(&self) -> serde_json::Value {
        if self.len as usize == self.head.len() {
            serde_json::from_slice(&self.head).unwrap_or(serde_json::Value::Null)
        } else {
            serde_json::Value::Null
        }
    }
}

#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    /// The client went away or sent a malformed body mid-stream.
    Broken,
}

/// Reads `body` to its end, failing once more than `limit` bytes arrived.
pub(crate) async fn read_body(body: Incoming, limit: u64) -> Result<BodySummary, BodyError> {
    read_body_mut(&mut { body }, limit).await
}

/// Like [`read_body`], leaving `body` in place so a caller can [`discard`] the rest of it.
pub(crate) async fn read_body_mut(body: &mut Incoming, limit: u64) -> Result<BodySummary, BodyError> {
    let mut head = BytesMut::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len() as u64;
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        let room = ECHO_KEEP.saturating_sub(head.len());
        head.extend_from_slice(&data[..data.len().min(room)]);
    }
    Ok(BodySummary {
        len,
        head: head.freeze(),
    })
}

/// Reads and drops up to `cap` more bytes, so a client that is still uploading sees the
/// rejection instead of a connection reset; the connection closes if more remain.
pub(crate) async fn discard(body: &mut Incoming, cap: u64) {
    let mut seen = 0u64;
    while seen <= cap {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

// === request inspection ===

/// A request as a fake saw it, for tests that check what the proxy sent upstream.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body_len: u64,
}

impl RecordedRequest {
    pub(crate) fn new(parts: &http::request::Parts, body_len: u64) -> Self {
        Self {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body_len,
        }
    }
}

/// The bearer token of `headers`, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `client_secret_basic` credentials (RFC 6749 2.3.1: each part form-urlencoded, then base64).
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn form_decode(part: &str) -> String {
    form_urlencoded::parse(format!("x={part}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Form fields of a urlencoded body plus the query string (IMS accepts fields in either).
pub(crate) fn form_fields(query: Option<&str>, body: &[u8]) -> HashMap<String, String> {
    let from_query = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
    from_query
        .chain(form_urlencoded::parse(body))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// One query parameter, decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Constant-time string comparison for secrets.
pub(crate) fn secret_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

// === tokens ===

/// A random URL-safe string with 192 bits of entropy.
pub(crate) fn random_string() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// A JWT-shaped token: real header and claims, random bytes where the signature goes (the
/// fakes look tokens up in their registry instead of verifying signatures).
pub(crate) fn mint_jwt(alg: &str, claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": alg, "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    format!("{header}.{payload}.{signature}")
}

/// What a presented token is, from the issuing fake's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenState {
    Valid,
    Expired,
    Revoked,
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct TokenEntry {
    expires_at: Instant,
    revoked: bool,
}

/// Every token a fake issued, with its expiry on tokio's clock.
#[derive(Debug, Default)]
pub(crate) struct TokenRegistry {
    tokens: Mutex<HashMap<String, TokenEntry>>,
}

/// Past this many entries, expired ones are swept on insert so long benchmarks stay bounded.
const REGISTRY_SWEEP_AT: usize = 10_000;

impl TokenRegistry {
    pub(crate) fn insert(&self, token: String, ttl: Duration) {
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= REGISTRY_SWEEP_AT {
            tokens.retain(|_, entry| entry.expires_at > now);
        }
        tokens.insert(
            token,
            TokenEntry {
                expires_at: now + ttl,
                revoked: false,
            },
        );
    }

    pub(crate) fn state(&self, token: &str) -> TokenState {
        match lock(&self.tokens).get(token) {
            None => TokenState::Unknown,
            Some(entry) if entry.revoked => TokenState::Revoked,
            Some(entry) if entry.expires_at <= Instant::now() => TokenState::Expired,
            Some(_) => TokenState::Valid,
        }
    }

    /// Brings `token`'s expiry forward to `deadline` (never extends it).
    pub(crate) fn expire_by(&self, token: &str, deadline: Instant) {
        if let Some(entry) = lock(&self.tokens).get_mut(token) {
            entry.expires_at = entry.expires_at.min(deadline);
        }
    }

    pub(crate) fn revoke_all(&self) {
        lock(&self.tokens).values_mut().for_each(|entry| entry.revoked = true);
    }

    /// Every token still on record (swept ones are gone), for leak tests.
    pub(crate) fn all(&self) -> Vec<String> {
        lock(&self.tokens).keys().cloned().collect()
    }
}

// === counters ===

/// A "fail the next n calls" switch for token endpoints.
#[derive(Debug, Default)]
pub(crate) struct FailSwitch(AtomicUsize);

impl FailSwitch {
    pub(crate) fn arm(&self, n: usize) {
        self.0.store(n, Ordering::SeqCst);
    }

    /// Whether this call should fail, consuming one armed failure.
    pub(crate) fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

pub(crate) fn bump(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn get(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::Relaxed)
}

/// The OAuth error body (`{"error", "error_description"}`) with 400; an empty description is
/// left out, as IdentityServer does.
pub(crate) fn oauth_error(error: &str, description: &str) -> Response<Body> {
    let mut body = serde_json::json!({"error": error});
    if !description.is_empty() {
        body["error_description"] = serde_json::json!(description);
    }
    json(StatusCode::BAD_REQUEST, &body)
}

/// A token request rejected with an OAuth `error` code and description (see [`oauth_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OAuthError(pub(crate) &'static str, pub(crate) &'static str);

impl From<OAuthError> for Response<Body> {
    fn from(OAuthError(error, description): OAuthError) -> Self {
        oauth_error(error, description)
    }
}

/// A token endpoint outage (what `fail_next_token_calls` produces).
pub(crate) fn unavailable() -> Response<Body> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({"error": "temporarily_unavailable"}),
    )
}
