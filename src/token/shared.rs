//! Renewal with a shared store: one renewer for the cluster, the others adopt its token.
//!
//! ```text
//!   renew ─▶ read ─▶ newer, not due? ─yes─▶ adopt (no token call)
//!              │ no
//!              ▼
//!            SET lease NX PX ─held by a peer─▶ wait (announcement, or 250 ms poll) ─▶ read again
//!              │ ours
//!              ▼
//!            read again ─▶ token call (lease extended every ttl/3) ─▶ fenced commit ─▶ release
//! ```
//!
//! - The store is asked only here and in [`sync`]: at startup, when renewal is due, after a 401,
//!   when a peer announces a commit, after a reconnection, and on a slow poll. Requests never wait
//!   on it.
//! - A waiter never calls the token endpoint because a wait ran long: it tries for the lease again,
//!   so a single-use refresh token (Vantage) is only ever redeemed under the lease.
//! - Store down: renew alone, before the token lapses. Where every solo renewal costs the peers
//!   (SHOPLINE shortens their copies, Vantage rotates the refresh token), as late as is safe. A
//!   token renewed alone is *unpublished*: it is committed over the store's as soon as the store
//!   answers, because it is the newest (its refresh token is the only one still valid).

use std::time::Duration;

use tokio::time::Instant;

use super::{CurrentToken, Inner, Obtained, Origin, TokenSource, refresh};
use crate::auth::{ProviderError, Token};
use crate::store::{Commit, SharedSlot, StoreDown, StoredToken, Versioned};

/// The renewal lease's life: a holder that dies frees it this long after its last extension.
pub(super) const LEASE_TTL: Duration = Duration::from_secs(5);
/// Backup for a missed announcement while a peer holds the lease.
const HOLDER_POLL: Duration = Duration::from_millis(250);
/// While the store is down, how often a postponed renewal tries it again.
const STORE_RETRY: Duration = Duration::from_secs(2);
/// A solo renewal that costs the peers is made this long before expiry (or a tenth of the
/// lifetime, whichever is longer): room for a slow token call and one retry.
const LATE_MARGIN: Duration = Duration::from_secs(30);

/// What this replica knows about its token's place in the store.
#[derive(Debug, Default)]
pub(super) struct Sync {
    /// The store version the current token was committed or adopted as (0: none yet).
    pub(super) version: u64,
    /// The current token was renewed while the store was unreachable and is not in it yet.
    pub(super) unpublished: bool,
}

/// The outcome of one renewal attempt.
pub(super) enum Renewal {
    Got(Obtained),
    Failed(ProviderError),
    /// The store is down and the current token is good until then: try again at that instant.
    Postponed(Instant),
}

/// A renewal (due, first token, or `rejected` by the upstream), coordinated through `slot`.
pub(super) async fn renew<P: TokenSource>(
    inner: &Inner<P>,
    slot: &SharedSlot,
    sync: &mut Sync,
    previous: Option<&CurrentToken>,
    rejected: bool,
) -> Renewal {
    let mut renewed = slot.renewed();
    let mut waiting_since = Instant::now();
    loop {
        let Ok(stored) = slot.read().await else {
            return solo(inner, sync, previous, rejected).await;
        };
        if let Some(found) = stored.filter(|s| adoptable(inner, sync, s, previous)) {
            return Renewal::Got(adopt(sync, &found));
        }
        let owner = owner_id();
        match slot.try_lease(&owner, LEASE_TTL).await {
            Err(StoreDown) => return solo(inner, sync, previous, rejected).await,
            Ok(true) => return under_lease(inner, slot, sync, previous, &owner).await,
            Ok(false) => {}
        }
        renewed.mark_unchanged();
        let _ = tokio::time::timeout(HOLDER_POLL, renewed.changed()).await;
        if waiting_since.elapsed() > holder_bound(inner) {
            // The holder outlived its longest honest hold (and its lease keeps being extended):
            // keep waiting for the lease rather than renew beside it.
            tracing::warn!(tenant = %inner.tenant, "a peer has held the renewal lease unusually long; still waiting for it");
            waiting_since = Instant::now();
        }
    }
}

/// Holding the lease: read again, call the token endpoint, commit fenced, release.
async fn under_lease<P: TokenSource>(
    inner: &Inner<P>,
    slot: &SharedSlot,
    sync: &mut Sync,
    previous: Option<&CurrentToken>,
    owner: &str,
) -> Renewal {
    let stored = match slot.read().await {
        Ok(stored) => stored,
        Err(StoreDown) => {
            let _ = slot.release_lease(owner).await;
            return solo(inner, sync, previous, true).await;
        }
    };
    if let Some(found) = stored.clone().filter(|s| adoptable(inner, sync, s, previous)) {
        let _ = slot.release_lease(owner).await;
        return Renewal::Got(adopt(sync, &found));
    }
    let read_version = stored.as_ref().map_or(0, |s| s.version);
    // Renew from the newest token: ours if only we hold it, else the store's (its refresh token
    // is the one not yet redeemed).
    let base: Option<Token> = match (&stored, sync.unpublished) {
        (Some(found), false) if found.version >= sync.version => Some(found.token.to_token()),
        _ => previous.map(|p| p.token.clone()),
    };
    let fetched = extending_lease(slot, owner, inner.fetch(base.as_ref())).await;
    let token = match fetched {
        Ok(token) => token,
        Err(error) => {
            let _ = slot.release_lease(owner).await;
            return Renewal::Failed(error);
        }
    };
    let version = read_version.max(sync.version) + 1;
    let committed = slot
        .commit(owner, read_version, version, &StoredToken::from_token(&token))
        .await;
    let _ = slot.release_lease(owner).await;
    Renewal::Got(after_commit(inner, slot, sync, committed, read_version, token).await)
}

async fn after_commit<P: TokenSource>(
    inner: &Inner<P>,
    slot: &SharedSlot,
    sync: &mut Sync,
    committed: Result<Commit, StoreDown>,
    read_version: u64,
    token: Token,
) -> Obtained {
    match committed {
        Ok(Commit::Committed(version)) => {
            *sync = Sync {
                version,
                unpublished: false,
            };
        }
        Ok(rejected) => {
            // Our lease lapsed (a pause, a slow call) or someone committed since our read: the
            // store keeps its newer version. Adopt it if it is there; otherwise the lease's new
            // holder is about to commit, and its announcement will replace what we got.
            tracing::warn!(tenant = %inner.tenant, outcome = ?rejected, "late token commit rejected by the store");
            if let Ok(Some(found)) = slot.read().await
                && found.version > read_version.max(sync.version)
            {
                return adopt(sync, &found);
            }
            sync.unpublished = false;
        }
        Err(StoreDown) => {
            tracing::warn!(tenant = %inner.tenant, "token renewed but the store is unreachable; it is committed when the store answers");
            sync.unpublished = true;
        }
    }
    Obtained {
        token,
        origin: Origin::Fetched,
    }
}

/// The store is unreachable: renew alone (now, or as late as is safe when that costs the peers).
async fn solo<P: TokenSource>(
    inner: &Inner<P>,
    sync: &mut Sync,
    previous: Option<&CurrentToken>,
    rejected: bool,
) -> Renewal {
    if !rejected
        && inner.source.solo_renewal_costs_peers()
        && let Some(at) = previous.and_then(late_renewal_at)
        && Instant::now() < at
    {
        return Renewal::Postponed(at.min(Instant::now() + STORE_RETRY));
    }
    match inner.fetch(previous.map(|p| &p.token)).await {
        Ok(token) => {
            sync.unpublished = true;
            Renewal::Got(Obtained {
                token,
                origin: Origin::Fetched,
            })
        }
        Err(error) => Renewal::Failed(error),
    }
}

/// After an announcement, a reconnection or a poll: adopt a newer stored token, or put ours
/// there when only we hold it (renewed alone, or the store came back empty).
pub(super) async fn sync<P: TokenSource>(
    inner: &Inner<P>,
    slot: &SharedSlot,
    sync: &mut Sync,
    current: Option<&CurrentToken>,
) -> Option<Obtained> {
    let stored = slot.read().await.ok()?;
    if let Some(found) = stored.clone().filter(|s| adoptable(inner, sync, s, current)) {
        return Some(adopt(sync, &found));
    }
    let current = current.filter(|c| c.is_valid_at(Instant::now()))?;
    if let Some(older) = stored.as_ref().filter(|s| s.version < sync.version) {
        tracing::warn!(
            tenant = %inner.tenant,
            stored = older.version,
            held = sync.version,
            "the store holds an older token version than this replica (rolled back?); replacing it"
        );
    }
    if needs_publishing(sync, stored.as_ref()) {
        publish(inner, slot, sync, current).await;
    }
    None
}

/// Commits the token only we hold, under the lease.
async fn publish<P: TokenSource>(inner: &Inner<P>, slot: &SharedSlot, sync: &mut Sync, current: &CurrentToken) {
    let owner = owner_id();
    if !matches!(slot.try_lease(&owner, LEASE_TTL).await, Ok(true)) {
        return; // a peer is renewing or publishing; its announcement follows
    }
    if let Ok(stored) = slot.read().await
        && needs_publishing(sync, stored.as_ref())
    {
        let read_version = stored.map_or(0, |s| s.version);
        let version = read_version.max(sync.version) + 1;
        let token = StoredToken::from_token(&current.token);
        if let Ok(Commit::Committed(version)) = slot.commit(&owner, read_version, version, &token).await {
            tracing::info!(tenant = %inner.tenant, version, "token published to the shared store");
            *sync = Sync {
                version,
                unpublished: false,
            };
        }
    }
    let _ = slot.release_lease(&owner).await;
}

/// A stored token worth adopting instead of a token call: a later store version than ours (a
/// record rolled back to an older version, still valid ciphertext, is never taken), another token
/// than ours, not yet due for renewal, and, when ours was renewed alone, issued after ours (two
/// replicas that renewed alone during an outage settle on the newer token).
fn adoptable<P: TokenSource>(
    inner: &Inner<P>,
    sync: &Sync,
    stored: &Versioned,
    current: Option<&CurrentToken>,
) -> bool {
    let later = stored.version > sync.version;
    let different = current.is_none_or(|c| c.token.access != stored.token.access);
    let newer =
        || current.is_none_or(|c| stored.token.obtained_at_ms > StoredToken::from_token(&c.token).obtained_at_ms);
    later && different && (!sync.unpublished || newer()) && not_due(inner, &stored.token.to_token())
}

/// Whether the store lacks the token this replica holds: renewed alone, the store came back
/// empty, or it holds an older version than ours (rolled back), which ours then replaces.
fn needs_publishing(sync: &Sync, stored: Option<&Versioned>) -> bool {
    sync.unpublished || stored.is_none_or(|s| s.version < sync.version)
}

fn not_due<P: TokenSource>(inner: &Inner<P>, token: &Token) -> bool {
    token.expires_at.is_none_or(|at| {
        let lifetime = at.saturating_duration_since(token.obtained_at);
        let delay = refresh::refresh_delay(lifetime, inner.policy.refresh_before, 1.0);
        Instant::now() < refresh::renewal_at(token.obtained_at, at, delay)
    })
}

fn adopt(sync: &mut Sync, found: &Versioned) -> Obtained {
    *sync = Sync {
        version: found.version,
        unpublished: false,
    };
    Obtained {
        token: found.token.to_token(),
        origin: Origin::Adopted,
    }
}

/// When a solo renewal that costs the peers is due: near real expiry.
fn late_renewal_at(current: &CurrentToken) -> Option<Instant> {
    let expires_at = current.expires_at?;
    let lifetime = expires_at.saturating_duration_since(current.obtained_at);
    Some(
        expires_at
            .checked_sub(LATE_MARGIN.max(lifetime / 10))
            .unwrap_or(current.obtained_at),
    )
}

/// The longest a holder honestly keeps the lease: one token call plus a lease's life.
fn holder_bound<P: TokenSource>(inner: &Inner<P>) -> Duration {
    inner.http.timeout() + LEASE_TTL * 2
}

/// Runs `work` while extending `owner`'s lease every third of its life.
async fn extending_lease<T>(slot: &SharedSlot, owner: &str, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    let mut held = true;
    loop {
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep(LEASE_TTL / 3), if held => {
                if let Ok(false) = slot.extend_lease(owner, LEASE_TTL).await {
                    tracing::warn!("the renewal lease lapsed during the token call; its commit will be refused");
                    held = false;
                }
            }
        }
    }
}

/// A lease owner value: unique per attempt, so a holder never mistakes a successor's lease for its own.
fn owner_id() -> String {
    format!("{}-{:032x}", std::process::id(), rand::random::<u128>())
}
