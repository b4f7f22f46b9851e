//! What every fake has in common, written once: the [`FakeCore`] state (token registry, token
//! lifetime, outage switch, call counters, last API request) that each provider's state embeds,
//! and the [`Fake`] handle whose methods (`base_url`, `token_calls`, `revoke_all`, ...) tests
//! call on every sandbox alike.
//!
//! Each `XxxSandbox` is `Fake<XxxState>`: the shared accessors live in the generic impl below,
//! the provider's own (`token_url`, `refresh_calls`, ...) in an `impl XxxSandbox` in its file.
//! This keeps one definition per method without a macro or `Deref`, and lets `shutdown(self)`
//! consume the handle. `sandbox` re-exports `Fake` so its shared methods are documented; the
//! traits and `FakeCore` are `pub` only to appear in its signatures, and nothing outside can name
//! them, so no other crate can implement or call them.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use http::request::Parts;
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::common::{self, Body, BodySummary, FailSwitch, RecordedRequest, TokenRegistry, TokenState, bump, get, lock};
use super::server::{Handler, ServerHandle};

/// The state every fake keeps besides its provider's own. Locks are held for one field update.
#[derive(Debug)]
pub struct FakeCore {
    pub(crate) tokens: TokenRegistry,
    ttl: Mutex<Duration>,
    fail: FailSwitch,
    token_calls: AtomicUsize,
    api_calls: AtomicUsize,
    rejected_api_calls: AtomicUsize,
    last_api: Mutex<Option<RecordedRequest>>,
}

impl FakeCore {
    /// A core issuing tokens that live `ttl` until `set_token_ttl` says otherwise.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            tokens: TokenRegistry::default(),
            ttl: Mutex::new(ttl),
            fail: FailSwitch::default(),
            token_calls: AtomicUsize::new(0),
            api_calls: AtomicUsize::new(0),
            rejected_api_calls: AtomicUsize::new(0),
            last_api: Mutex::new(None),
        }
    }

    /// Lifetime of the token about to be issued.
    pub(crate) fn ttl(&self) -> Duration {
        *lock(&self.ttl)
    }

    /// Counts a token-endpoint call; `Some` is the 503 to answer when an armed failure is due.
    pub(crate) fn count_token_call(&self) -> Option<Response<Body>> {
        bump(&self.token_calls);
        self.fail.take().then(common::unavailable)
    }

    pub(crate) fn count_api_call(&self) {
        bump(&self.api_calls);
    }

    /// Counts and records an API request whose whole body is read (its length counted, its start
    /// kept for echoing); what the IMS, SHOPLINE and Vantage APIs do first.
    pub(crate) async fn receive_api(&self, req: Request<Incoming>) -> (Parts, BodySummary) {
        self.count_api_call();
        let (parts, body) = req.into_parts();
        let summary = common::read_body(body, u64::MAX).await.unwrap_or_default();
        self.record(&parts, summary.len);
        (parts, summary)
    }

    /// Keeps `parts` as the last API request, for `last_api_request()`.
    pub(crate) fn record(&self, parts: &Parts, body_len: u64) {
        *lock(&self.last_api) = Some(RecordedRequest::new(parts, body_len));
    }

    /// Counts an API call the fake refused to authenticate.
    pub(crate) fn count_rejected(&self) {
        bump(&self.rejected_api_calls);
    }

    /// What the bearer token of `headers` is to this fake (`Unknown` when there is none); counts
    /// the call as rejected unless the token is valid.
    pub(crate) fn bearer_state(&self, headers: &HeaderMap) -> TokenState {
        let state = common::bearer(headers).map_or(TokenState::Unknown, |token| self.tokens.state(token));
        if state != TokenState::Valid {
            bump(&self.rejected_api_calls);
        }
        state
    }
}

/// A provider's state as the shared [`Fake`] methods see it.
pub trait FakeState: Send + Sync + 'static {
    /// The sandbox's name in `Debug` output.
    const NAME: &'static str;

    fn core(&self) -> &FakeCore;

    /// Every token issued so far; a fake with more kinds of token adds them.
    fn issued_tokens(&self) -> Vec<String> {
        self.core().tokens.all()
    }

    /// Makes every token issued so far answer 401; a fake with more kinds of token kills them too.
    fn revoke_all(&self) {
        self.core().tokens.revoke_all();
    }
}

/// Marks fakes with a token endpoint the proxy calls (all but CYBERBIZ), which get
/// `token_calls` and `fail_next_token_calls`.
pub trait TokenEndpoint: FakeState {}

/// A running fake; dropping it stops the server and closes its connections.
pub struct Fake<S> {
    pub(super) state: Arc<S>,
    server: ServerHandle,
}

impl<S: FakeState> fmt::Debug for Fake<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(S::NAME)
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

impl<S: FakeState> Fake<S> {
    /// Serves `state` on a fresh `127.0.0.1:0` listener.
    pub(crate) async fn serve(state: S) -> io::Result<Self>
    where
        S: Handler,
    {
        let state = Arc::new(state);
        let server = ServerHandle::start(Arc::clone(&state)).await?;
        Ok(Self { state, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT`, standing in for the provider's host.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn api_calls(&self) -> usize {
        get(&self.state.core().api_calls)
    }

    /// API calls whose bearer token this fake did not accept (missing, unknown, expired or
    /// revoked): the 401s it answered, whether or not the proxy replayed them.
    pub fn rejected_api_calls(&self) -> usize {
        get(&self.state.core().rejected_api_calls)
    }

    /// Every token issued so far, so tests can prove none of them leaks.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.issued_tokens()
    }

    /// Every token issued so far answers 401 from now on.
    pub fn revoke_all(&self) {
        self.state.revoke_all();
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        *lock(&self.state.core().ttl) = ttl;
    }

    pub fn last_api_request(&self) -> Option<RecordedRequest> {
        lock(&self.state.core().last_api).clone()
    }

    /// Stops accepting, gives in-flight requests a short grace period, then closes everything.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

impl<S: TokenEndpoint> Fake<S> {
    /// Calls to the token endpoint(s), successful or not.
    pub fn token_calls(&self) -> usize {
        get(&self.state.core().token_calls)
    }

    /// The next `n` token calls answer 503.
    pub fn fail_next_token_calls(&self, n: usize) {
        self.state.core().fail.arm(n);
    }
}
