//! What the admin endpoints show of a snapshot, computed once here and rendered twice: as JSON
//! (`/tenants`, `/readyz`) and as HTML (the status page, [`super::status`]).
//!
//! One view keeps the page and the API from disagreeing, and keeps what they may show in one
//! place: a [`TenantView`] holds a token's expiry and statistics but never the token itself (nor
//! a header value or a secret), so neither rendering can leak one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use std::sync::atomic::Ordering::Relaxed;

use crate::clock;
use crate::config::CallerClass;
use crate::ratelimit::LimiterState;
use crate::tenant::{Snapshot, Tenant};
use crate::token::{CurrentToken, Origin, TokenStats};

/// A static credential this close to expiry is reported by `/readyz` (still ready), so operators
/// replace it in time. Readiness itself fails only within the tenant's `refresh_before` of the
/// expiry: failing a whole day early would take a pod out of service for a credential that still
/// works (a 2-hour CYBERBIZ token would never be ready at all).
const STATIC_EXPIRY_WARNING: Duration = Duration::from_secs(24 * 3600);

/// One tenant as the admin endpoints show it.
#[derive(Debug)]
pub(super) struct TenantView {
    pub(super) name: String,
    pub(super) provider: &'static str,
    pub(super) upstream: String,
    pub(super) required: bool,
    /// `valid`, `failed` (no usable token, and an error) or `pending` (no token yet).
    pub(super) state: &'static str,
    /// Left on the current token; `None` without a token, or for one that never expires.
    pub(super) expires_in: Option<Duration>,
    pub(super) renews: bool,
    pub(super) stats: TokenStats,
    pub(super) readiness: Readiness,
    pub(super) limiter: Option<LimiterView>,
}

/// A tenant's limiter as `/tenants` and the status page show it: its state, and the requests it
/// turned away, all classes together (the tenant's metrics count them by class, once).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(super) struct LimiterView {
    #[serde(flatten)]
    pub(super) state: LimiterState,
    pub(super) rejected_total: u64,
}

/// Whether a tenant can serve, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Readiness {
    Ready,
    /// Still serving, but an operator must act soon.
    Expiring(String),
    Failing(String),
}

/// The token store, as `/readyz`, `/tenants` and the status page show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoreView {
    /// In this process only.
    Memory,
    /// The shared store, up or unreachable since `since_unix` (seconds).
    Redis { up: bool, since_unix: u64 },
}

/// Every tenant of `snapshot`, sorted by name.
pub(super) fn tenants(snapshot: &Snapshot) -> Vec<TenantView> {
    snapshot.tenants().map(|tenant| tenant_view(tenant)).collect()
}

/// One tenant's view; the token is read once, so its state, expiry and readiness agree.
pub(super) fn tenant_view(tenant: &Tenant) -> TenantView {
    let stats = tenant.tokens.stats();
    let current = tenant.tokens.usable();
    let state = match (&current, &stats.last_error) {
        (Some(_), _) => "valid",
        (None, Some(_)) => "failed",
        (None, None) => "pending",
    };
    TenantView {
        name: tenant.config.name.as_str().to_owned(),
        provider: tenant.config.provider.kind().name(),
        upstream: tenant.config.upstream.to_string(),
        required: tenant.config.required,
        state,
        expires_in: current.as_ref().and_then(|t| t.expires_at).map(clock::remaining),
        renews: tenant.tokens.renews(),
        readiness: readiness(tenant, current.as_deref(), &stats),
        stats,
        limiter: tenant.limiter.as_ref().map(|limiter| LimiterView {
            state: limiter.state(),
            rejected_total: CallerClass::ALL
                .iter()
                .map(|class| tenant.metrics.ratelimit_rejected.by(*class).load(Relaxed))
                .sum(),
        }),
    }
}

/// Ready when no required tenant is failing and the process is not shutting down (what
/// `/readyz` answers and the status page shows).
pub(super) fn ready(snapshot: &Snapshot, tenants: &[TenantView]) -> bool {
    !snapshot.is_shutting_down()
        && (tenants.iter()).all(|t| !t.required || !matches!(t.readiness, Readiness::Failing(_)))
}

fn readiness(tenant: &Tenant, current: Option<&CurrentToken>, stats: &TokenStats) -> Readiness {
    let Some(token) = current else {
        let cause = stats.last_error.as_deref().unwrap_or("no token yet");
        return Readiness::Failing(format!("no valid token: {cause}"));
    };
    let Some(remaining) = token.expires_at.map(clock::remaining) else {
        return Readiness::Ready;
    };
    if tenant.tokens.renews() || remaining >= STATIC_EXPIRY_WARNING {
        return Readiness::Ready;
    }
    let reason = format!(
        "the static credential expires in {}s and cannot be renewed: replace it",
        remaining.as_secs()
    );
    if remaining < tenant.config.token.refresh_before {
        Readiness::Failing(reason)
    } else {
        Readiness::Expiring(reason)
    }
}

/// The token store's state. The shared store being unreachable does not fail readiness: every
/// replica keeps serving with the tokens it holds and renews them on its own.
pub(super) fn store(snapshot: &Snapshot) -> StoreView {
    match snapshot.store().health() {
        None => StoreView::Memory,
        Some(health) => StoreView::Redis {
            up: health.is_up(),
            since_unix: health.since_ms() / 1000,
        },
    }
}

/// Seconds since the Unix epoch of a wall-clock time (`None` before 1970).
pub(super) fn unix_secs(at: SystemTime) -> Option<u64> {
    at.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

// === JSON ===

impl TenantView {
    /// One tenant as `/tenants` shows it: no token, no secret, no header value.
    pub(super) fn to_json(&self) -> Value {
        let stats = &self.stats;
        json!({
            "name": self.name,
            "provider": self.provider,
            "upstream": self.upstream,
            "token": {
                "state": self.state,
                "generation": stats.generation,
                "expires_in_s": self.expires_in.map(|d| d.as_secs()),
                "renews": self.renews,
                "last_renewal_unix": stats.last_renewal.and_then(unix_secs),
                "last_error": stats.last_error,
                "renewals_ok": stats.renewals_ok,
                "renewals_failed": stats.renewals_failed,
                "origin": stats.origin.map(Origin::as_str),
                "adopted": stats.adopted,
                "store_version": stats.store_version,
                "unpublished": stats.unpublished,
            },
            "limiter": self.limiter,
        })
    }
}

impl StoreView {
    pub(super) fn to_json(self) -> Value {
        match self {
            Self::Memory => json!({ "kind": "memory" }),
            Self::Redis { up, since_unix } => {
                let state = if up { "up" } else { "unreachable" };
                json!({ "kind": "redis", "state": state, "since_unix": since_unix })
            }
        }
    }
}
