//! `TokenManager`: one tenant's current upstream token, obtained and renewed in the background.
//!
//! ```text
//!   request path                          background task (one per tenant)
//!   ────────────                          ────────────────────────────────
//!   current() ── ArcSwap load ──▶ valid?   loop {
//!        │ no (first use / expired)          fetch (the only caller of Provider::fetch)
//!        ▼                                    ok  → install (generation + 1), sleep until refresh_at
//!   wait on `status` (bounded) ◀── notify ──  err → record, back off 1 s … 60 s
//!                                           }   woken early by retire(generation) after a 401
//! ```
//!
//! The task is supervised: a panic in it is caught, logged, counted and answered to waiting
//! requests at once, and the task restarts with backoff (`task.rs`), so no answer from outside can
//! leave a tenant without one.
//!
//! Single flight is structural: only the task fetches, so 500 waiting requests cause one token
//! call. The request path never locks: it loads an `Arc<CurrentToken>` whose header value was built
//! once when the token arrived. A 401 retires a token only if it is still the current generation
//! and older than `min_token_age`, so a burst of 401s causes one renewal, and a caller hitting a
//! forbidden endpoint in a loop causes none.

pub(crate) mod refresh;
mod shared;
mod task;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fuzz;
#[cfg(test)]
mod tests_shared;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::auth::{FetchToken, ProviderError, Token, TokenHttp};
use crate::config::{TenantName, TokenPolicy};
use crate::providers::Provider;
use crate::store::{SharedSlot, Store, StoreKey};

/// A provider the manager can drive: [`Provider`] in the product, counting fakes in tests. What
/// it needs besides fetching (the credential header, whether it renews, what a lone renewal costs
/// the peers) is part of [`FetchToken`].
pub(crate) trait TokenSource: FetchToken + 'static {}

impl<P: FetchToken + 'static> TokenSource for P {}

/// The token requests use now, with its header prepared.
#[derive(Debug)]
pub(crate) struct CurrentToken {
    /// Increases by one with every token installed; a 401 names the generation it saw.
    pub generation: u64,
    pub header_name: HeaderName,
    /// Marked sensitive, so hyper's HPACK never indexes it.
    pub header_value: HeaderValue,
    pub obtained_at: Instant,
    pub expires_at: Option<Instant>,
    /// The traced token call that produced it, when this process made one while traces are
    /// exported: requests that waited for it link to that trace.
    pub fetch_span: Option<opentelemetry::trace::SpanContext>,
    token: Token,
}

impl CurrentToken {
    pub(crate) fn is_valid_at(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// Why no token could be handed out. The message never holds a token or secret.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TokenUnavailable {
    /// The last token call ended without a token, and none is under way.
    #[error(transparent)]
    Failed(CallFailure),
    /// The token held lapsed and no call replaced it (a credential that cannot be renewed).
    #[error("the token expired")]
    Expired,
    /// A reload or shutdown retired the tenant while the request waited.
    #[error("the tenant is shutting down")]
    ShuttingDown,
    /// No token came within the request's wait.
    #[error("no token after waiting {0:?}")]
    Timeout(Duration),
}

impl TokenUnavailable {
    /// Whether the proxy itself, not the IdP, is why: a restarting token task or a retired tenant.
    pub(crate) fn is_internal(&self) -> bool {
        matches!(self, Self::ShuttingDown | Self::Failed(CallFailure::TaskRestarted))
    }
}

/// Why the last token call ended without a token.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallFailure {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the token task failed and is restarting")]
    TaskRestarted,
}

/// Progress of the background task, published to waiting requests.
#[derive(Debug, Clone, Default)]
struct Status {
    /// Attempts finished so far (successful or not).
    completed: u64,
    fetching: bool,
    /// Why the last call failed; `None` once one succeeds. The one copy: [`TokenStats`] shows it.
    last_error: Option<CallFailure>,
}

/// Where the current token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// This process called the token endpoint.
    Fetched,
    /// Taken from the store: a peer's renewal, or this process's own before a reload.
    Adopted,
}

impl Origin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Fetched => "fetched",
            Self::Adopted => "adopted",
        }
    }
}

/// A token and where it came from, on its way to being installed.
struct Obtained {
    token: Token,
    origin: Origin,
}

/// Figures for `/tenants` and metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenStats {
    pub generation: u64,
    pub origin: Option<Origin>,
    /// With a shared store: the version the current token has there.
    pub store_version: Option<u64>,
    /// With a shared store: the current token was renewed while the store was unreachable and
    /// is not in it yet.
    pub unpublished: bool,
    /// Tokens taken from the store instead of a token call.
    pub adopted: u64,
    pub renewals_ok: u64,
    pub renewals_failed: u64,
    /// Times the background task panicked and was restarted.
    pub task_restarts: u64,
    pub last_renewal: Option<SystemTime>,
    /// Why the last token call failed, read from the task's status when the figures are taken.
    pub last_error: Option<String>,
}

struct Inner<P> {
    tenant: TenantName,
    source: P,
    store: Store,
    key: StoreKey,
    /// With a shared store, this credential set's place in it.
    shared: Option<SharedSlot>,
    http: TokenHttp,
    policy: TokenPolicy,
    current: ArcSwapOption<CurrentToken>,
    status: watch::Sender<Status>,
    /// Highest generation a 401 asked to retire; dedupes concurrent retirements.
    retire_requested: AtomicU64,
    /// Index into `client_secrets` that fetches try first: the last that worked.
    first_secret: AtomicUsize,
    wake: Notify,
    stats: Mutex<TokenStats>,
    /// How long token calls took, by outcome (`tokenbroker_token_request_duration_seconds`).
    call_durations: CallDurations,
    /// The latest traced token call, for the token it produces (see [`CurrentToken::fetch_span`]).
    last_fetch: Mutex<Option<opentelemetry::trace::SpanContext>>,
}

/// Token endpoint call durations, by outcome.
#[derive(Debug, Default)]
pub(crate) struct CallDurations {
    pub success: crate::metrics::AtomicHistogram,
    pub failure: crate::metrics::AtomicHistogram,
}

/// One tenant's token. Dropping it stops the background task.
pub(crate) struct TokenManager<P: TokenSource = Provider> {
    inner: Arc<Inner<P>>,
    task: tokio::task::JoinHandle<()>,
}

impl<P: TokenSource> Drop for TokenManager<P> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<P: TokenSource> std::fmt::Debug for TokenManager<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("tenant", &self.inner.tenant)
            .finish_non_exhaustive()
    }
}

impl<P: TokenSource> TokenManager<P> {
    /// Starts the background task, which fetches the first token at once, trying `client_secrets`
    /// from index `first_secret` (the one that worked for the manager this one replaces, after a
    /// reload; see [`Self::secret_index`]).
    pub(crate) fn spawn(
        tenant: TenantName,
        source: P,
        http: TokenHttp,
        policy: TokenPolicy,
        (store, key, first_secret): (Store, StoreKey, usize),
    ) -> Self {
        // Static credentials have nothing to share: only renewing sources use the shared store.
        let shared = source.renews().then(|| store.shared(&key)).flatten();
        let inner = Arc::new(Inner {
            tenant,
            source,
            store,
            key,
            shared,
            http,
            policy,
            current: ArcSwapOption::empty(),
            status: watch::Sender::new(Status {
                fetching: true,
                ..Status::default()
            }),
            retire_requested: AtomicU64::new(0),
            first_secret: AtomicUsize::new(first_secret),
            wake: Notify::new(),
            stats: Mutex::new(TokenStats::default()),
            call_durations: CallDurations::default(),
            last_fetch: Mutex::new(None),
        });
        let task = tokio::spawn(Arc::clone(&inner).supervise());
        Self { inner, task }
    }

    /// Index into `client_secrets` of the secret the next fetch tries first: the last that worked
    /// (or the one the manager started from).
    pub(crate) fn secret_index(&self) -> usize {
        self.inner.first_secret.load(Ordering::Relaxed)
    }

    /// The current token if it is valid now: lock-free, no waiting.
    pub(crate) fn usable(&self) -> Option<Arc<CurrentToken>> {
        self.inner.usable()
    }

    /// The current token, waiting up to `limit` for a first fetch that is under way.
    pub(crate) async fn current(&self, limit: Duration) -> Result<Arc<CurrentToken>, TokenUnavailable> {
        if let Some(token) = self.inner.usable() {
            return Ok(token);
        }
        self.inner.wait(limit, |_| true).await
    }

    /// Whether the credential can be renewed at all: false for static credentials, which a 401
    /// cannot help. The one answer every other module asks for.
    pub(crate) fn renews(&self) -> bool {
        self.inner.source.renews()
    }

    // The 401 rule lives in the next two functions: an upstream 401 means the token was rejected
    // (every provider signals it so: ACCS's Magento and gateway bodies, Vantage's
    // `WWW-Authenticate`, SHOPLINE and CYBERBIZ); the manager renews it once, and the request is
    // replayed once with the new token if its body was kept. A 401 on a token younger than
    // `min_token_age`, or on a static credential, is passed back as it is.

    /// Whether a request body should be kept in memory so that a 401 can replay it: only when
    /// replays are on, the credential renews, and the body is known to fit `replay_body_limit`
    /// (`declared` is its Content-Length; without one, only an empty body qualifies).
    pub(crate) fn keeps_body_for_replay(&self, declared: Option<u64>, empty: bool) -> bool {
        let policy = &self.inner.policy;
        let fits = match declared {
            Some(length) => length <= policy.replay_body_limit,
            None => empty,
        };
        fits && policy.retry_on_unauthorized && self.renews()
    }

    /// After the upstream answered `status` to a request sent with `generation`: on a rejected
    /// token, asks for a renewal and, when the request kept what a replay needs (`replay`), waits
    /// up to `limit` for the newer token to replay with, and hands both back. `None`: pass the
    /// response back as it is.
    pub(crate) async fn after_response<R>(
        &self,
        status: StatusCode,
        generation: u64,
        replay: Option<R>,
        limit: Duration,
    ) -> Option<(R, Arc<CurrentToken>)> {
        let rejected = status == StatusCode::UNAUTHORIZED && self.inner.policy.retry_on_unauthorized;
        // Renew even when nothing can be replayed: the next request gets the new token.
        if !(rejected && self.retire(generation)) {
            return None;
        }
        let replay = replay?;
        let newer = self.newer_than(generation, limit).await.ok()?;
        Some((replay, newer))
    }

    /// The upstream rejected `generation`. Returns whether a renewal will follow (so the request can
    /// wait for [`Self::newer_than`] and replay), or `false` when the 401 must be passed back.
    pub(crate) fn retire(&self, generation: u64) -> bool {
        let inner = &self.inner;
        let Some(current) = inner.current.load_full() else {
            return false;
        };
        if !inner.source.renews() || current.generation != generation {
            // Already replaced: a newer token is there to replay with.
            return inner.source.renews() && current.generation > generation;
        }
        if current.obtained_at.elapsed() < inner.policy.min_token_age {
            return false;
        }
        if inner.retire_requested.fetch_max(generation, Ordering::AcqRel) < generation {
            tracing::info!(tenant = %inner.tenant, generation, "upstream rejected the token; renewing");
            inner.wake.notify_one();
        }
        true
    }

    /// Waits up to `limit` for a token newer than `generation`.
    pub(crate) async fn newer_than(
        &self,
        generation: u64,
        limit: Duration,
    ) -> Result<Arc<CurrentToken>, TokenUnavailable> {
        self.inner.wait(limit, |t| t.generation > generation).await
    }

    /// How long this tenant's token calls took, by outcome.
    pub(crate) fn call_durations(&self) -> &CallDurations {
        &self.inner.call_durations
    }

    pub(crate) fn stats(&self) -> TokenStats {
        let mut stats = self.inner.stats_mut().clone();
        stats.last_error = self.inner.status.borrow().last_error.as_ref().map(ToString::to_string);
        stats
    }
}

// === impl Inner ===

impl<P: TokenSource> Inner<P> {
    fn usable(&self) -> Option<Arc<CurrentToken>> {
        let guard = self.current.load();
        match guard.as_ref() {
            Some(token) if token.is_valid_at(Instant::now()) => Some(Arc::clone(token)),
            _ => None,
        }
    }

    /// Waits for a valid token accepted by `want`, for an attempt in progress to finish, or fails
    /// at once with the last error when no attempt is under way (never hangs a request on backoff).
    async fn wait(
        &self,
        limit: Duration,
        want: impl Fn(&CurrentToken) -> bool,
    ) -> Result<Arc<CurrentToken>, TokenUnavailable> {
        let deadline = Instant::now() + limit;
        let mut status = self.status.subscribe();
        let started = status.borrow().completed;
        loop {
            if let Some(token) = self.usable().filter(|t| want(t)) {
                return Ok(token);
            }
            {
                let now = status.borrow_and_update();
                if !now.fetching && (now.completed > started || now.last_error.is_some()) {
                    return Err(now
                        .last_error
                        .clone()
                        .map_or(TokenUnavailable::Expired, TokenUnavailable::Failed));
                }
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(TokenUnavailable::ShuttingDown),
                Err(_) => return Err(TokenUnavailable::Timeout(limit)),
            }
        }
    }
}
