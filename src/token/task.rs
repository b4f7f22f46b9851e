//! The background task of a token manager: obtain, install, sleep until renewal (or a 401, or a
//! word from the shared store), repeat. The only caller of `Provider::fetch`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::shared::{self, Renewal};
use super::{CallFailure, CurrentToken, Inner, Obtained, Origin, TokenSource, TokenStats, refresh};
use crate::auth::{FetchCtx, ProviderError, Token};
use crate::clock;
use crate::store::{SharedSlot, StoredToken};
use crate::telemetry::traces::FetchSpan;

/// With a shared store, how often a replica looks at it unasked: a backup for a missed
/// announcement, far inside SHOPLINE's five-minute grace.
const STORE_POLL: Duration = Duration::from_secs(15);

/// A task that ran this long before it panicked was healthy: its restart backoff starts over.
const HEALTHY_RUN: Duration = refresh::BACKOFF_CAP;

/// Why the task woke up.
enum Wake {
    /// Renewal is due, or a 401 retired the current token.
    Renew,
    /// The shared store has news: an announcement, a reconnection, or the slow poll.
    Store,
}

/// The shared store's signals, watched while the task sleeps.
struct StoreSignals {
    renewed: watch::Receiver<u64>,
    reconnected: watch::Receiver<u64>,
}

impl<P: TokenSource> Inner<P> {
    /// The task as spawned: [`Self::run`], restarted after a panic. A panic (a bug, or an answer
    /// no check foresaw) must not leave the tenant without a task: waiting requests would hang
    /// until their timeout, forever. So it is caught, logged without its message (which could
    /// quote anything), counted, reported to waiters at once (a fast 503), and the task restarts
    /// after the usual backoff, keeping the token it held.
    pub(super) async fn supervise(self: Arc<Self>) {
        let mut restarts: u32 = 0;
        loop {
            let started = Instant::now();
            let run = std::panic::AssertUnwindSafe(Arc::clone(&self).run());
            // `run` never returns; only a panic ends it.
            let _ = run.catch_unwind().await;
            if started.elapsed() >= HEALTHY_RUN {
                restarts = 0;
            }
            restarts = restarts.saturating_add(1);
            self.after_panic(restarts);
            tokio::time::sleep(refresh::backoff(restarts, rand::random())).await;
        }
    }

    fn after_panic(&self, restarts: u32) {
        tracing::error!(tenant = %self.tenant, restarts, "the token task panicked; restarting it");
        self.note_failure(CallFailure::TaskRestarted, |stats| stats.task_restarts += 1);
    }

    /// A token call that ended without a token (a failure, or a panic): the figures count it, and
    /// every request waiting on the call learns its cause at once.
    fn note_failure(&self, failure: CallFailure, count: impl FnOnce(&mut TokenStats)) {
        count(&mut self.stats_mut());
        self.status.send_modify(|s| {
            s.fetching = false;
            s.completed += 1;
            s.last_error = Some(failure);
        });
    }

    /// The figures, even after a panic while they were held (they are plain counters).
    pub(super) fn stats_mut(&self) -> std::sync::MutexGuard<'_, TokenStats> {
        self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn run(self: Arc<Self>) {
        let mut failures: u32 = 0;
        let mut sync = shared::Sync::default();
        let mut signals = self.shared.as_ref().map(|slot| StoreSignals {
            renewed: slot.renewed(),
            reconnected: slot.reconnected(),
        });
        loop {
            let previous = self.current.load_full();
            self.status.send_modify(|s| s.fetching = true);
            let mut next_wake = match self.renew(previous.as_deref(), &mut sync).await {
                Renewal::Got(obtained) => match self.install(obtained, &sync) {
                    Ok(current) => {
                        failures = 0;
                        self.renewal_due(&current)
                    }
                    Err(error) => {
                        failures += 1;
                        self.record_failure(&error, failures)
                    }
                },
                Renewal::Failed(error) => {
                    failures += 1;
                    self.record_failure(&error, failures)
                }
                Renewal::Postponed(at) => {
                    self.status.send_modify(|s| s.fetching = false);
                    Some(at)
                }
            };
            if let Some(signals) = signals.as_mut() {
                signals.renewed.mark_unchanged();
                signals.reconnected.mark_unchanged();
            }
            while let Wake::Store = self.sleep_until(next_wake, signals.as_mut()).await {
                next_wake = self.sync_with_store(&mut sync).await.unwrap_or(next_wake);
            }
        }
    }

    /// One renewal: through the shared store when there is one, else from the in-process store
    /// or the token endpoint.
    async fn renew(&self, previous: Option<&CurrentToken>, sync: &mut shared::Sync) -> Renewal {
        if let Some(slot) = &self.shared {
            let rejected = previous.is_some_and(|p| self.retire_requested.load(Ordering::Acquire) >= p.generation);
            return shared::renew(self, slot, sync, previous, rejected).await;
        }
        if let Some(stored) = self.adoptable(previous).await {
            return Renewal::Got(Obtained {
                token: stored,
                origin: Origin::Adopted,
            });
        }
        match self.fetch(previous.map(|p| &p.token)).await {
            Ok(token) => {
                self.store.put(&self.key, StoredToken::from_token(&token)).await;
                Renewal::Got(Obtained {
                    token,
                    origin: Origin::Fetched,
                })
            }
            Err(error) => Renewal::Failed(error),
        }
    }

    /// Adopts a peer's token, or publishes ours; returns the new renewal time if it adopted.
    async fn sync_with_store(&self, sync: &mut shared::Sync) -> Option<Option<Instant>> {
        let slot: &SharedSlot = self.shared.as_ref()?;
        let current = self.current.load_full();
        let Some(obtained) = shared::sync(self, slot, sync, current.as_deref()).await else {
            let mut stats = self.stats_mut();
            stats.store_version = (sync.version > 0).then_some(sync.version);
            stats.unpublished = sync.unpublished;
            return None;
        };
        let current = self.install(obtained, sync).ok()?;
        Some(self.renewal_due(&current))
    }

    /// A token in the in-process store that is newer than ours and not yet due for renewal:
    /// adopting it after a reload saves a token call.
    async fn adoptable(&self, previous: Option<&CurrentToken>) -> Option<Token> {
        let stored = self.store.get(&self.key).await?.to_token();
        let same = previous.is_some_and(|p| p.token.access == stored.access);
        let expires_at = stored.expires_at;
        let due = expires_at.map(|at| {
            let lifetime = at.saturating_duration_since(stored.obtained_at);
            refresh::renewal_at(
                stored.obtained_at,
                at,
                refresh::refresh_delay(lifetime, self.policy.refresh_before, 1.0),
            )
        });
        let fresh = due.is_none_or(|due| Instant::now() < due);
        (!same && fresh && self.source.renews()).then_some(stored)
    }

    /// One token call, renewing from `previous` (its refresh token, for the grants that have one).
    pub(super) async fn fetch(&self, previous: Option<&Token>) -> Result<Token, ProviderError> {
        let span = FetchSpan::start(self.tenant.as_str());
        let started = Instant::now();
        let fetched = self
            .source
            .fetch(FetchCtx {
                http: &self.http,
                previous,
                first_secret: self.first_secret.load(Ordering::Relaxed),
            })
            .await;
        let durations = &self.call_durations;
        let histogram = if fetched.is_ok() {
            &durations.success
        } else {
            &durations.failure
        };
        histogram.observe(started.elapsed());
        if let Some(span) = span {
            let traced = span.end(fetched.as_ref().err().map(ToString::to_string));
            *self.last_fetch.lock().unwrap_or_else(PoisonError::into_inner) = Some(traced);
        }
        fetched
    }

    fn install(&self, obtained: Obtained, sync: &shared::Sync) -> Result<Arc<CurrentToken>, ProviderError> {
        let Obtained { token, origin } = obtained;
        let (header_name, header_value) = self.source.credential_header(&token)?;
        let generation = self.current.load().as_ref().map_or(0, |c| c.generation) + 1;
        let fetch_span = match origin {
            Origin::Fetched => self.last_fetch.lock().unwrap_or_else(PoisonError::into_inner).take(),
            Origin::Adopted => None,
        };
        let current = Arc::new(CurrentToken {
            generation,
            header_name,
            header_value,
            obtained_at: token.obtained_at,
            expires_at: token.expires_at,
            fetch_span,
            token,
        });
        self.current.store(Some(Arc::clone(&current)));
        // The next fetch starts from the secret that worked (a peer's, for an adopted token: the
        // store key covers the secret list, so its index means the same here).
        (self.first_secret).store(current.token.secret_index, Ordering::Relaxed);
        {
            let mut stats = self.stats_mut();
            stats.generation = generation;
            match origin {
                Origin::Fetched => stats.renewals_ok += 1,
                Origin::Adopted => stats.adopted += 1,
            }
            stats.origin = Some(origin);
            stats.store_version = (self.shared.is_some() && sync.version > 0).then_some(sync.version);
            stats.unpublished = sync.unpublished;
            stats.last_renewal = Some(clock::system_now());
        }
        let expires_in = current.expires_at.map(|at| clock::remaining(at).as_secs());
        let origin = origin.as_str();
        tracing::info!(tenant = %self.tenant, generation, origin, expires_in_s = expires_in, "token obtained");
        self.status.send_modify(|s| {
            s.fetching = false;
            s.completed += 1;
            s.last_error = None;
        });
        Ok(current)
    }

    /// When the installed token should be renewed; `None` = only when a 401 asks.
    fn renewal_due(&self, current: &CurrentToken) -> Option<Instant> {
        let expires_at = current.expires_at?;
        if !self.source.renews() {
            // Static credentials: wake at expiry to report it; there is nothing to renew.
            return Some(expires_at);
        }
        let lifetime = expires_at.saturating_duration_since(current.obtained_at);
        let delay = refresh::refresh_delay(lifetime, self.policy.refresh_before, rand::random());
        Some(refresh::renewal_at(current.obtained_at, expires_at, delay))
    }

    fn record_failure(&self, error: &ProviderError, failures: u32) -> Option<Instant> {
        tracing::warn!(tenant = %self.tenant, attempt = failures, %error, "token call failed");
        self.note_failure(CallFailure::Provider(error.clone()), |stats| stats.renewals_failed += 1);
        if matches!(error, ProviderError::Expired) {
            return None;
        }
        let mut delay = refresh::backoff(failures, rand::random());
        if let ProviderError::Throttled {
            retry_after: Some(after),
        } = error
        {
            // Already capped where it is read; capped again so no caller can park the task.
            delay = delay.max((*after).min(refresh::BACKOFF_CAP));
        }
        Some(Instant::now() + delay)
    }

    /// Sleeps until `until`, a 401 that retires the current generation, or news from the store.
    async fn sleep_until(&self, until: Option<Instant>, mut signals: Option<&mut StoreSignals>) -> Wake {
        loop {
            let store_news = async {
                match signals.as_deref_mut() {
                    Some(s) => tokio::select! {
                        _ = s.renewed.changed() => {}
                        _ = s.reconnected.changed() => {}
                        () = tokio::time::sleep(STORE_POLL) => {}
                    },
                    None => std::future::pending().await,
                }
            };
            let due = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = due => return Wake::Renew,
                () = store_news => return Wake::Store,
                () = self.wake.notified() => {}
            }
            // A stale wake-up (for a generation already replaced) is ignored.
            let current = self.current.load().as_ref().map_or(0, |c| c.generation);
            if self.retire_requested.load(Ordering::Acquire) >= current {
                return Wake::Renew;
            }
        }
    }
}
