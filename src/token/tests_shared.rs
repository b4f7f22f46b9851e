//! The shared-store protocol on paused time: several token managers on one [`FakeShared`] behave
//! like replicas on one Redis key, against one counting IdP whose refresh tokens are single use.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Origin, TokenManager};
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token, TokenHttp};
use crate::config::{CyberbizConfig, ProviderConfig, Secret, TenantName, TokenPolicy};
use crate::store::{FakeShared, Store, StoreKey};

/// One IdP for every replica: numbered tokens, single-use refresh tokens, a call log.
#[derive(Default)]
struct Idp {
    calls: AtomicUsize,
    spent: Mutex<HashSet<String>>,
    double_spends: AtomicUsize,
}

#[derive(Clone)]
struct Replica {
    idp: Arc<Idp>,
    latency: Duration,
    ttl: Duration,
    costly: bool,
}

impl FetchToken for Replica {
    async fn fetch(&self, ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let n = self.idp.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(refresh) = ctx.previous.and_then(|p| p.refresh_token.as_ref()) {
            // A refused refresh token falls back to the primary grant, as the Vantage provider
            // does; the IdP counts the refusal.
            if !self
                .idp
                .spent
                .lock()
                .expect("test lock")
                .insert(refresh.expose().clone())
            {
                self.idp.double_spends.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(self.latency).await;
        let now = Instant::now();
        Ok(Token {
            access: Secret::new(format!("token-{n}")),
            obtained_at: now,
            expires_at: Some(now + self.ttl),
            refresh_token: Some(Secret::new(format!("refresh-{n}"))),
            secret_index: 0,
        })
    }

    fn solo_renewal_costs_peers(&self) -> bool {
        self.costly
    }
}

const TTL: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(60);

fn replica(idp: &Arc<Idp>) -> Replica {
    Replica {
        idp: Arc::clone(idp),
        latency: Duration::from_millis(500),
        ttl: TTL,
        costly: false,
    }
}

fn policy() -> TokenPolicy {
    TokenPolicy {
        refresh_before: Duration::from_secs(60),
        retry_on_unauthorized: true,
        replay_body_limit: 1 << 20,
        min_token_age: Duration::ZERO,
    }
}

fn spawn(source: Replica, store: &FakeShared) -> TokenManager<Replica> {
    let name = TenantName::try_new("t").expect("valid");
    let key = StoreKey::new(
        &name,
        &ProviderConfig::Cyberbiz(CyberbizConfig {
            token: Secret::from("k"),
            app_secret: None,
        }),
    );
    TokenManager::spawn(
        name,
        source,
        TokenHttp::default(),
        policy(),
        (Store::Fake(store.clone()), key, 0),
    )
}

fn replicas(n: usize, source: &Replica, store: &FakeShared) -> Vec<TokenManager<Replica>> {
    (0..n).map(|_| spawn(source.clone(), store)).collect()
}

async fn access(tokens: &TokenManager<Replica>) -> String {
    let current = tokens.current(WAIT).await.expect("a token");
    current.token.access.expose().clone()
}

/// Lets background tasks run for `d` of paused time.
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn replicas_starting_together_make_one_token_call() {
    let (idp, store) = (Arc::new(Idp::default()), FakeShared::default());
    let all = replicas(3, &replica(&idp), &store);
    for tokens in &all {
        assert_eq!(access(tokens).await, "token-0");
    }
    assert_eq!(idp.calls.load(Ordering::SeqCst), 1);
    let origins: Vec<_> = all.iter().map(|t| t.stats().origin).collect();
    assert_eq!(
        origins.iter().filter(|o| **o == Some(Origin::Fetched)).count(),
        1,
        "{origins:?}"
    );
    assert_eq!(
        origins.iter().filter(|o| **o == Some(Origin::Adopted)).count(),
        2,
        "{origins:?}"
    );
    assert!(all.iter().all(|t| t.stats().store_version == Some(1)));
}

#[tokio::test(start_paused = true)]
async fn the_cluster_renews_once_per_lifetime_and_never_redeems_a_refresh_token_twice() {
    let (idp, store) = (Arc::new(Idp::default()), FakeShared::default());
    let all = replicas(3, &replica(&idp), &store);
    access(&all[0]).await;
    for _ in 0..(5 * 60) {
        run_for(Duration::from_secs(10)).await;
        for tokens in &all {
            assert!(tokens.usable().is_some(), "a token is usable at every step");
        }
    }
    // 3,000 s of 600 s tokens renewed at 50-80 % of their life: one call per renewal, cluster-wide.
    let calls = idp.calls.load(Ordering::SeqCst);
    assert!((5..=11).contains(&calls), "{calls} calls");
    assert_eq!(idp.double_spends.load(Ordering::SeqCst), 0);
    let versions: Vec<_> = all.iter().map(|t| t.stats().store_version).collect();
    assert!(
        versions.iter().all(|v| *v == Some(calls as u64)),
        "{versions:?} after {calls} calls"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejected_token_across_replicas_causes_one_renewal_and_all_adopt_it() {
    let (idp, store) = (Arc::new(Idp::default()), FakeShared::default());
    let all = replicas(3, &replica(&idp), &store);
    for tokens in &all {
        access(tokens).await;
    }
    let failing: Vec<u64> = all.iter().map(|t| t.usable().expect("token").generation).collect();
    for (tokens, generation) in all.iter().zip(&failing) {
        assert!(tokens.retire(*generation), "a renewal follows");
    }
    for (tokens, generation) in all.iter().zip(&failing) {
        let newer = tokens.newer_than(*generation, WAIT).await.expect("a newer token");
        assert_eq!(newer.token.access.expose(), "token-1");
    }
    assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
    assert_eq!(idp.double_spends.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_late_commit_after_the_lease_lapsed_is_refused_and_the_newest_version_kept() {
    let (idp, store) = (Arc::new(Idp::default()), FakeShared::default());
    let slow = Replica {
        latency: Duration::from_secs(3),
        ..replica(&idp)
    };
    let tokens = spawn(slow, &store);
    run_for(Duration::from_secs(1)).await; // the first token call is under way, lease held
    // As if the holder were paused past its lease: it lapses, and a peer renews and commits.
    store.expire_lease();
    assert!(store.try_lease("peer", Duration::from_secs(5)).await.expect("up"));
    let peer_token = crate::store::StoredToken::from_token(&Token {
        access: Secret::new("peer-token".into()),
        obtained_at: Instant::now(),
        expires_at: Some(Instant::now() + TTL),
        refresh_token: None,
        secret_index: 0,
    });
    assert!(matches!(
        store.commit("peer", 0, 1, &peer_token).await,
        Ok(crate::store::Commit::Committed(1))
    ));
    // The slow holder's commit is refused; it adopts the peer's newer token.
    assert_eq!(access(&tokens).await, "peer-token");
    let stored = store.stored().expect("a stored token");
    assert_eq!(
        (stored.version, stored.token.access.expose().as_str()),
        (1, "peer-token")
    );
    assert_eq!(store.commits(), (1, 1), "one accepted, one refused");
}

#[tokio::test(start_paused = true)]
async fn with_the_store_down_replicas_renew_alone_and_publish_when_it_returns() {
    let (idp, store) = (Arc::new(Idp::default()), FakeShared::default());
    let all = replicas(2, &replica(&idp), &store);
    for tokens in &all {
        assert_eq!(access(tokens).await, "token-0");
    }
    store.set_up(false);
    // Past the 80 % mark: both renew on their own; neither token lapses.
    for _ in 0..60 {
        run_for(Duration::from_secs(10)).await;
        assert!(all.iter().all(|t| t.usable().is_some()));
    }
    assert!(
        all.iter().all(|t| t.stats().unpublished),
        "renewed while the store was down"
    );
    store.set_up(true);
    run_for(Duration::from_secs(5)).await;
    // One of them published its token over the store's; the other adopted it.
    let stored = store.stored().expect("stored").token.access.expose().clone();
    for tokens in &all {
        assert_eq!(access(tokens).await, stored);
        assert!(!tokens.stats().unpublished);
    }
}

#[tokio::test(start_paused = true)]
async fn costly_solo_renewals_wait_until_near_expiry() {
    let (idp, store) = (Arc::new(Idp::default()), FakeShared::default());
    let costly = Replica {
        costly: true,
        ..replica(&idp)
    };
    let tokens = spawn(costly, &store);
    access(&tokens).await;
    store.set_up(false);
    let start = Instant::now();
    while idp.calls.load(Ordering::SeqCst) < 2 {
        run_for(Duration::from_secs(1)).await;
        assert!(tokens.usable().is_some(), "never lapses");
    }
    // Normal renewal is at 80 % (480 s) at the latest; alone, it waits until 60 s before expiry.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(535) && waited <= Duration::from_secs(545),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_restarted_empty_gets_the_token_back() {
    let (idp, store) = (Arc::new(Idp::default()), FakeShared::default());
    let all = replicas(2, &replica(&idp), &store);
    for tokens in &all {
        access(tokens).await;
    }
    store.set_up(false);
    store.wipe();
    store.set_up(true);
    run_for(Duration::from_secs(2)).await;
    let stored = store.stored().expect("republished");
    assert_eq!(stored.token.access.expose(), "token-0");
    assert_eq!(idp.calls.load(Ordering::SeqCst), 1, "republished, not renewed");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_never_calls_the_idp_while_a_peer_holds_the_lease() {
    let (idp, store) = (Arc::new(Idp::default()), FakeShared::default());
    assert!(store.try_lease("stuck-peer", Duration::from_secs(5)).await.expect("up"));
    let tokens = spawn(replica(&idp), &store);
    // The peer keeps its lease alive for a minute, far past the waiter's bound.
    for _ in 0..30 {
        run_for(Duration::from_secs(2)).await;
        assert!(
            store
                .extend_lease("stuck-peer", Duration::from_secs(5))
                .await
                .expect("up")
        );
        assert_eq!(idp.calls.load(Ordering::SeqCst), 0, "no token call beside the holder");
    }
    store.release_lease("stuck-peer").await.expect("up");
    assert_eq!(access(&tokens).await, "token-0");
}
