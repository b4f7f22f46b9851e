//! TokenManager behaviour under paused time, against a counting fake source (no sockets, so
//! auto-advancing time cannot fire a timeout early).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{CallFailure, TokenManager, TokenUnavailable};
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token, TokenHttp};
use crate::config::{Secret, TenantName, TokenPolicy};
use crate::store::{MemoryStore, Store, StoreKey};

/// Answers each fetch from a script (then repeats the last entry), after `latency`.
struct Fake {
    calls: Arc<AtomicUsize>,
    fetched_at: Arc<Mutex<Vec<Instant>>>,
    script: Mutex<VecDeque<Result<Duration, ProviderError>>>,
    latency: Duration,
    renews: bool,
    /// The call (0-based) that panics instead of answering.
    panic_on: Option<usize>,
}

impl Fake {
    fn new(script: Vec<Result<Duration, ProviderError>>) -> Self {
        Self {
            calls: Arc::default(),
            fetched_at: Arc::default(),
            script: Mutex::new(script.into()),
            latency: Duration::from_millis(50),
            renews: true,
            panic_on: None,
        }
    }
}

impl FetchToken for Fake {
    async fn fetch(&self, _ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.fetched_at.lock().expect("test lock").push(Instant::now());
        tokio::time::sleep(self.latency).await;
        assert_ne!(self.panic_on, Some(n), "a scripted panic in the token call");
        let next = {
            let mut script = self.script.lock().expect("test lock");
            if script.len() > 1 {
                script.pop_front()
            } else {
                script.front().cloned()
            }
        };
        let ttl = next.expect("script is not empty")?;
        let now = Instant::now();
        Ok(Token {
            access: Secret::new(format!("token-{n}")),
            obtained_at: now,
            expires_at: Some(now + ttl),
            refresh_token: None,
            secret_index: 0,
        })
    }

    fn renews(&self) -> bool {
        self.renews
    }
}

fn policy() -> TokenPolicy {
    TokenPolicy {
        refresh_before: Duration::from_secs(600),
        retry_on_unauthorized: true,
        replay_body_limit: 1 << 20,
        min_token_age: Duration::from_secs(30),
    }
}

fn manager(fake: Fake) -> Arc<TokenManager<Fake>> {
    let name = TenantName::try_new("t").expect("valid");
    let store = Store::Memory(MemoryStore::default());
    let key = StoreKey::new(
        &name,
        &crate::config::ProviderConfig::Cyberbiz(crate::config::CyberbizConfig {
            token: Secret::from("k"),
            app_secret: None,
        }),
    );
    Arc::new(TokenManager::spawn(
        name,
        fake,
        TokenHttp::default(),
        policy(),
        (store, key, 0),
    ))
}

const HOUR: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn concurrent_first_requests_share_one_fetch() {
    let fake = Fake::new(vec![Ok(HOUR)]);
    let calls = Arc::clone(&fake.calls);
    let tokens = manager(fake);
    let waiters: Vec<_> = (0..500)
        .map(|_| {
            let tokens = Arc::clone(&tokens);
            tokio::spawn(async move { tokens.current(WAIT).await })
        })
        .collect();
    for waiter in waiters {
        let token = waiter.await.expect("task").expect("token arrives");
        assert_eq!(token.generation, 1);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn renews_in_the_background_and_requests_never_wait() {
    let fake = Fake::new(vec![Ok(HOUR)]);
    let (calls, fetched_at) = (Arc::clone(&fake.calls), Arc::clone(&fake.fetched_at));
    let tokens = manager(fake);
    let start = Instant::now();
    tokens.current(WAIT).await.expect("first token");
    // Walk through three lifetimes in 10 s steps: a token is usable at every step.
    for _ in 0..(3 * 360) {
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(tokens.usable().is_some(), "a valid token at every instant");
    }
    let at = fetched_at.lock().expect("test lock").clone();
    assert!(calls.load(Ordering::SeqCst) >= 4, "renewed at least three times");
    // First renewal: lifetime 1 h, refresh_before 10 min → 50 min less ≤10 % jitter (45–50 min),
    // clamped to at most 80 % (48 min); the 10 s steps add up to 10 s.
    let first = at[1] - start;
    let (earliest, latest) = (Duration::from_secs(45 * 60), Duration::from_secs(48 * 60 + 11));
    assert!(first >= earliest && first <= latest, "{first:?}");
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_the_token_serves_until_real_expiry() {
    let outage = ProviderError::Unreachable("connection refused".into());
    let mut script = vec![Ok(Duration::from_secs(100))];
    script.extend(std::iter::repeat_n(Err(outage), 20));
    let fake = Fake::new(script);
    let fetched_at = Arc::clone(&fake.fetched_at);
    let tokens = manager(fake);
    let first = tokens.current(WAIT).await.expect("first token");
    let expires_at = first.expires_at.expect("expiring token");
    // Until the real expiry the old token keeps serving, whatever the IdP does.
    while Instant::now() + Duration::from_secs(1) < expires_at {
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(tokens.usable().map(|t| t.generation), Some(1));
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    let error = tokens.current(WAIT).await.expect_err("expired during the outage");
    assert!(
        matches!(
            &error,
            TokenUnavailable::Failed(CallFailure::Provider(ProviderError::Unreachable(_)))
        ),
        "{error}"
    );
    // Retries after the first renewal attempt: 1, 2, 4, 8 s … each scaled into [80 %, 100 %].
    let at = fetched_at.lock().expect("test lock").clone();
    for (i, pair) in at[1..].windows(2).take(4).enumerate() {
        // Less the fake's 50 ms latency; the 10 ms steps add at most 20 ms.
        let gap = pair[1] - pair[0] - Duration::from_millis(50);
        let base = Duration::from_secs(1 << i);
        assert!(
            gap >= base.mul_f64(0.8) && gap <= base + Duration::from_millis(20),
            "retry {i}: {gap:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_401s_retires_once_and_every_request_gets_the_new_token() {
    let fake = Fake::new(vec![Ok(HOUR)]);
    let calls = Arc::clone(&fake.calls);
    let tokens = manager(fake);
    let first = tokens.current(WAIT).await.expect("first token");
    tokio::time::advance(Duration::from_secs(60)).await;
    let replays: Vec<_> = (0..100)
        .map(|_| {
            let tokens = Arc::clone(&tokens);
            tokio::spawn(async move {
                assert!(tokens.retire(1), "a renewal follows");
                tokens.newer_than(1, WAIT).await
            })
        })
        .collect();
    for replay in replays {
        assert_eq!(replay.await.expect("task").expect("new token").generation, 2);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "exactly one renewal");
    // A late 401 for the retired generation finds the new one already there: no further renewal.
    assert!(tokens.retire(first.generation));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_401_on_a_young_token_or_a_static_one_is_passed_back() {
    let fake = Fake::new(vec![Ok(HOUR)]);
    let calls = Arc::clone(&fake.calls);
    let tokens = manager(fake);
    tokens.current(WAIT).await.expect("first token");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(!tokens.retire(1), "younger than min_token_age");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let mut fixed = Fake::new(vec![Ok(HOUR)]);
    fixed.renews = false;
    let tokens = manager(fixed);
    tokens.current(WAIT).await.expect("static token");
    tokio::time::advance(Duration::from_secs(120)).await;
    assert!(!tokens.retire(1), "static credentials cannot be renewed");
}

#[tokio::test(start_paused = true)]
async fn a_failing_first_fetch_answers_waiters_with_the_cause() {
    let fake = Fake::new(vec![Err(ProviderError::Rejected {
        status: 400,
        code: "invalid_client".into(),
        description: None,
    })]);
    let tokens = manager(fake);
    let error = tokens.current(WAIT).await.expect_err("no token");
    assert!(
        matches!(&error, TokenUnavailable::Failed(CallFailure::Provider(ProviderError::Rejected { code, .. })) if code == "invalid_client"),
        "{error}"
    );
    // While the task backs off, requests fail fast instead of hanging.
    let started = Instant::now();
    tokens.current(WAIT).await.expect_err("still no token");
    assert!(started.elapsed() < Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn a_renewal_replaces_the_token_at_once_and_a_held_one_is_unaffected() {
    // SHOPLINE: new requests switch to the new token the moment it arrives; a request already
    // sent holds its own `Arc` and keeps the old header (valid upstream for the grace period).
    let fake = Fake::new(vec![Ok(HOUR)]);
    let (calls, fetched_at) = (Arc::clone(&fake.calls), Arc::clone(&fake.fetched_at));
    let tokens = manager(fake);
    let held = tokens.current(WAIT).await.expect("first token");
    let old_header = held.header_value.clone();
    while fetched_at.lock().expect("test lock").len() < 2 {
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // The renewal call is in flight (50 ms): requests go on with generation 1, without waiting.
    tokio::time::advance(Duration::from_millis(40)).await;
    assert_eq!(tokens.usable().map(|t| t.generation), Some(1));
    tokio::time::advance(Duration::from_millis(10)).await;
    // No more time passes: the background task only needs a turn on the scheduler.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let now = tokens.usable().expect("a valid token");
    assert_eq!(now.generation, 2, "replaced as soon as the renewal answered");
    assert_ne!(now.header_value, old_header);
    assert_eq!(tokens.current(WAIT).await.expect("token").generation, 2);
    // The held token is untouched and still valid until its own expiry.
    assert_eq!((held.generation, &held.header_value), (1, &old_header));
    assert!(held.is_valid_at(Instant::now()));
    // Its late 401 finds the newer token: replay, no second renewal.
    assert!(tokens.retire(held.generation));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_throttled_renewal_waits_at_least_retry_after() {
    let throttled = ProviderError::Throttled {
        retry_after: Some(Duration::from_secs(20)),
    };
    let fake = Fake::new(vec![Ok(Duration::from_secs(100)), Err(throttled), Ok(HOUR)]);
    let fetched_at = Arc::clone(&fake.fetched_at);
    let tokens = manager(fake);
    tokens.current(WAIT).await.expect("first token");
    while fetched_at.lock().expect("test lock").len() < 3 {
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let at = fetched_at.lock().expect("test lock").clone();
    // The plain first backoff would be about 1 s; the IdP asked for 20 (the 100 ms steps add a
    // little on top, never take anything off).
    let gap = at[2] - at[1] - Duration::from_millis(50);
    assert!(
        gap >= Duration::from_secs(20) && gap <= Duration::from_millis(20_500),
        "{gap:?}"
    );
    // The renewal was due at 50 s (100 s lifetime, clamped to 50 %); 20 s later is still before
    // the first token's expiry, so it never lapsed.
    tokio::time::advance(Duration::from_millis(100)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(tokens.usable().map(|t| t.generation), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_token_call_restarts_the_task_and_the_next_request_is_served() {
    let mut fake = Fake::new(vec![Ok(HOUR)]);
    fake.panic_on = Some(0);
    let calls = Arc::clone(&fake.calls);
    let tokens = manager(fake);
    // The request waiting for the first token is told at once, not after its whole wait.
    let started = Instant::now();
    let error = tokens.current(WAIT).await.expect_err("the first call panicked");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(
        matches!(error, TokenUnavailable::Failed(CallFailure::TaskRestarted)),
        "{error}"
    );
    assert!(error.is_internal());
    assert_eq!(tokens.stats().task_restarts, 1);
    // The task restarts after the first backoff (at most 1 s) and serves the next request.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let token = tokens.current(WAIT).await.expect("served by the restarted task");
    assert_eq!(token.header_value, "Bearer token-1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // And it goes on renewing as usual.
    tokio::time::sleep(HOUR).await;
    assert!(tokens.usable().is_some_and(|t| t.generation > token.generation));
    assert_eq!(tokens.stats().task_restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn an_absurd_retry_after_is_waited_out_within_the_backoff_ceiling() {
    let throttled = ProviderError::Throttled {
        retry_after: Some(Duration::MAX),
    };
    let fake = Fake::new(vec![Err(throttled), Ok(HOUR)]);
    let fetched_at = Arc::clone(&fake.fetched_at);
    let tokens = manager(fake);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let at = fetched_at.lock().expect("test lock").clone();
    assert_eq!(at.len(), 2, "retried within the minute");
    assert!(tokens.usable().is_some());
    assert_eq!(tokens.stats().task_restarts, 0, "no overflow on the way");
}
