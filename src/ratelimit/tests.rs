//! Limiter tests on paused tokio time: every wait is driven by `time::advance` or the runtime's
//! auto-advance, and every await is bounded so a broken limiter fails instead of hanging.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, advance, timeout};

use super::RateLimited;
use super::local::LocalLimiter as Limiter;
use crate::config::{BatchShare, CallerClass, PerClass, RateLimitConfig};

/// Far beyond any wait in these tests; with paused time a hang hits it instantly.
const BOUND: Duration = Duration::from_secs(600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn limiter(per_second: u32, burst: u32, max_wait: Duration) -> Arc<Limiter> {
    limiter_with_headroom(per_second, burst, max_wait, Duration::ZERO)
}

fn limiter_with_headroom(per_second: u32, burst: u32, max_wait: Duration, headroom: Duration) -> Arc<Limiter> {
    Arc::new(Limiter::new(RateLimitConfig {
        per_second: NonZeroU32::new(per_second).expect("test rates are non-zero"),
        burst: NonZeroU32::new(burst).expect("test bursts are non-zero"),
        max_wait: PerClass::all(max_wait),
        batch_share: BatchShare::DEFAULT,
        headroom,
        lead: CallerClass::Standard,
    }))
}

async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} must finish"))
}

/// Lets every spawned task run until it blocks.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// One completed `acquire`: arrival index, time since the test start, outcome.
type Outcome = (usize, Duration, Result<Duration, RateLimited>);

/// Spawns `n` acquirers at once (in index order) and collects outcomes in completion order.
async fn run_concurrently(limiter: &Arc<Limiter>, n: usize) -> Vec<Outcome> {
    let start = Instant::now();
    let log = Arc::new(StdMutex::new(Vec::new()));
    let tasks: Vec<JoinHandle<()>> = (0..n)
        .map(|i| {
            let (limiter, log) = (Arc::clone(limiter), Arc::clone(&log));
            tokio::spawn(async move {
                let outcome = limiter.acquire().await;
                log.lock().expect("log lock").push((i, start.elapsed(), outcome));
            })
        })
        .collect();
    for task in tasks {
        bounded("every acquirer", task)
            .await
            .expect("acquirer task must not panic");
    }
    let log = log.lock().expect("log lock");
    log.clone()
}

fn grant_times(outcomes: &[Outcome]) -> Vec<Duration> {
    outcomes
        .iter()
        .filter(|(_, _, r)| r.is_ok())
        .map(|(_, at, _)| *at)
        .collect()
}

/// The quota's promise on sorted grant times: at most `burst + rate * t` slots by time t, and at
/// most `burst + rate` in any 1-second window.
fn assert_quota(grants: &[Duration], per_second: u32, burst: u32) {
    for (k, at) in grants.iter().enumerate() {
        let allowed = f64::from(burst) + f64::from(per_second) * at.as_secs_f64();
        assert!(
            (k + 1) as f64 <= allowed + 1e-9,
            "grant #{k} at {at:?} exceeds the quota"
        );
        let in_window = grants.iter().filter(|t| **t >= *at && **t < *at + ms(1000)).count();
        let cap = (burst + per_second) as usize;
        assert!(
            in_window <= cap,
            "{in_window} grants in the second from {at:?} (cap {cap})"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn burst_passes_immediately_without_awaiting() {
    let limiter = limiter(10, 5, ms(2000));
    for i in 0..5 {
        let outcome = limiter.acquire().now_or_never();
        assert_eq!(outcome, Some(Ok(Duration::ZERO)), "request {i} of the burst");
    }
    assert_eq!(limiter.state().granted_total, 5);
}

#[tokio::test(start_paused = true)]
async fn fast_path_does_not_touch_the_queue() {
    let limiter = limiter(10, 2, ms(2000));
    assert_eq!(limiter.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
    assert_eq!(
        limiter.queue.joined_total(),
        0,
        "a free slot must not go through the queue"
    );
}

#[tokio::test(start_paused = true)]
async fn request_after_the_burst_waits_exactly_one_period() {
    let limiter = limiter(10, 3, ms(2000));
    for _ in 0..3 {
        assert_eq!(bounded("burst", limiter.acquire()).await, Ok(Duration::ZERO));
    }
    let start = Instant::now();
    assert_eq!(bounded("4th request", limiter.acquire()).await, Ok(ms(100)));
    assert_eq!(start.elapsed(), ms(100));
    let state = limiter.state();
    assert_eq!(
        (state.waiting, state.waited_total, state.granted_total),
        (0, ms(100), 4)
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_are_served_fifo_within_the_quota() {
    let limiter = limiter(10, 5, ms(10_000));
    let outcomes = run_concurrently(&limiter, 25).await;
    let order: Vec<usize> = outcomes.iter().map(|(i, _, _)| *i).collect();
    assert_eq!(
        order,
        (0..25).collect::<Vec<_>>(),
        "slots must go first come, first served"
    );
    let grants = grant_times(&outcomes);
    assert_eq!(grants.len(), 25, "max_wait is long enough for all");
    assert_quota(&grants, 10, 5);
    // 5 at once, then one every 100 ms: the last of 25 at 2 s, not later.
    assert_eq!(grants.last(), Some(&ms(2000)));
}

#[tokio::test(start_paused = true)]
async fn cyberbiz_requests_are_spaced_200ms_apart() {
    let limiter = limiter(5, 1, ms(10_000));
    let grants = grant_times(&run_concurrently(&limiter, 20).await);
    assert_eq!(grants.len(), 20);
    for (k, pair) in grants.windows(2).enumerate() {
        assert_eq!(pair[1] - pair[0], ms(200), "gap after grant #{k}");
    }
    assert_quota(&grants, 5, 1);
}

#[tokio::test(start_paused = true)]
async fn headroom_widens_every_slot() {
    // The CYBERBIZ preset: 5/s plus 20 ms, so any six grants span 1.1 s, not 1.0 s.
    let limiter = limiter_with_headroom(5, 1, ms(10_000), ms(20));
    let grants = grant_times(&run_concurrently(&limiter, 12).await);
    for (k, pair) in grants.windows(2).enumerate() {
        assert_eq!(pair[1] - pair[0], ms(220), "gap after grant #{k}");
    }
    for six in grants.windows(6) {
        assert_eq!(six[5] - six[0], ms(1100));
    }
}

#[tokio::test(start_paused = true)]
async fn excess_is_rejected_at_once_with_an_honest_retry_after() {
    let limiter = limiter(10, 2, ms(250));
    let start = Instant::now();
    let outcomes = run_concurrently(&limiter, 6).await;
    let by_index = |i: usize| outcomes.iter().find(|o| o.0 == i).expect("every index reports");
    assert_eq!(by_index(0).2, Ok(Duration::ZERO));
    assert_eq!(by_index(1).2, Ok(Duration::ZERO));
    assert_eq!(by_index(2).2, Ok(ms(100)));
    assert_eq!(by_index(3).2, Ok(ms(200)));
    for i in [4, 5] {
        let (_, at, outcome) = by_index(i);
        // The 5th slot comes at 300 ms > 250 ms: say so now, not after holding for 250 ms.
        assert_eq!(*at, Duration::ZERO, "request {i} must be rejected without waiting");
        assert_eq!(*outcome, Err(RateLimited { retry_after: ms(300) }));
    }
    // The estimate was right: at 300 ms a slot is free at once.
    advance(ms(300) - start.elapsed()).await;
    assert_eq!(limiter.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
}

#[tokio::test(start_paused = true)]
async fn aborted_head_of_queue_consumes_no_slot() {
    let limiter = limiter(10, 1, ms(10_000));
    let start = Instant::now();
    assert_eq!(limiter.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
    let spawn = |l: &Arc<Limiter>| {
        let l = Arc::clone(l);
        tokio::spawn(async move { (l.acquire().await, start.elapsed()) })
    };
    let head = spawn(&limiter);
    let next = spawn(&limiter);
    settle().await;
    assert_eq!(limiter.state().waiting, 2);
    advance(ms(50)).await;
    head.abort(); // the caller disconnected mid-wait
    let (outcome, at) = bounded("next waiter", next).await.expect("task must not panic");
    assert_eq!((outcome, at), (Ok(ms(100)), ms(100)), "it gets the head's slot on time");
    assert_eq!(limiter.state().waiting, 0);
    assert_eq!(limiter.state().granted_total, 2);
}

#[tokio::test(start_paused = true)]
async fn dropped_waiters_consume_no_slot() {
    let limiter = limiter(10, 1, ms(10_000));
    let start = Instant::now();
    assert_eq!(limiter.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
    // A head dropped after 1 ms leaves the 100 ms slot free.
    assert!(
        timeout(ms(1), limiter.acquire()).await.is_err(),
        "1 ms is too short for a slot"
    );
    let l = Arc::clone(&limiter);
    let head = tokio::spawn(async move { (l.acquire().await, start.elapsed()) });
    settle().await;
    // A waiter behind the head, dropped while on the queue, leaves the 200 ms slot free.
    assert!(
        timeout(ms(1), limiter.acquire()).await.is_err(),
        "1 ms is too short for a slot"
    );
    let l = Arc::clone(&limiter);
    let last = tokio::spawn(async move { (l.acquire().await, start.elapsed()) });
    let head = bounded("head", head).await.expect("task must not panic");
    let last = bounded("last", last).await.expect("task must not panic");
    assert_eq!(head, (Ok(ms(99)), ms(100)));
    assert_eq!(last, (Ok(ms(198)), ms(200)));
    assert_eq!((limiter.state().waiting, limiter.state().granted_total), (0, 3));
}

#[tokio::test(start_paused = true)]
async fn pause_holds_the_next_request() {
    let limiter = limiter(10, 10, ms(5000));
    limiter.pause_for(ms(1000));
    assert_eq!(limiter.state().paused_for, Some(ms(1000)));
    let start = Instant::now();
    assert_eq!(bounded("paused request", limiter.acquire()).await, Ok(ms(1000)));
    assert_eq!(start.elapsed(), ms(1000));
    assert_eq!(limiter.state().paused_for, None);
}

#[tokio::test(start_paused = true)]
async fn shorter_later_pause_does_not_shorten_a_longer_one() {
    let limiter = limiter(10, 10, ms(5000));
    limiter.pause_for(ms(2000));
    limiter.pause_for(ms(500));
    assert_eq!(bounded("paused request", limiter.acquire()).await, Ok(ms(2000)));
}

#[tokio::test(start_paused = true)]
async fn pause_holds_requests_already_queued() {
    let limiter = limiter(10, 1, ms(5000));
    let start = Instant::now();
    assert_eq!(limiter.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
    let l = Arc::clone(&limiter);
    let queued = tokio::spawn(async move { (l.acquire().await, start.elapsed()) });
    settle().await;
    advance(ms(50)).await;
    limiter.pause_for(ms(1000)); // upstream 429 while it waits for its 100 ms slot
    let outcome = bounded("queued request", queued).await.expect("task must not panic");
    assert_eq!(outcome, (Ok(ms(1050)), ms(1050)));
}

#[tokio::test(start_paused = true)]
async fn pause_beyond_max_wait_rejects_with_the_remaining_pause() {
    let limiter = limiter(10, 10, ms(2000));
    limiter.pause_for(ms(5000));
    advance(ms(1000)).await;
    let outcome = limiter.acquire().now_or_never();
    assert_eq!(
        outcome,
        Some(Err(RateLimited { retry_after: ms(4000) })),
        "rejected at once"
    );
}

#[tokio::test(start_paused = true)]
async fn pause_set_while_queued_rejects_a_waiter_it_would_outlast() {
    let limiter = limiter(10, 1, ms(2000));
    let start = Instant::now();
    assert_eq!(limiter.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
    let l = Arc::clone(&limiter);
    let queued = tokio::spawn(async move { (l.acquire().await, start.elapsed()) });
    settle().await;
    advance(ms(50)).await;
    limiter.pause_for(ms(3000)); // ends at 3050 ms, past the waiter's 2000 ms deadline
    let outcome = bounded("queued request", queued).await.expect("task must not panic");
    // It notices on waking for its slot at 100 ms, not at its deadline.
    assert_eq!(outcome, (Err(RateLimited { retry_after: ms(2950) }), ms(100)));
}

#[tokio::test(start_paused = true)]
async fn state_serializes_for_the_admin_endpoint() {
    let limiter = limiter(5, 1, ms(2000));
    limiter.pause_for(ms(1500));
    let json = serde_json::to_value(limiter.state()).expect("state serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "per_second": 5, "burst": 1, "max_wait_s": 2.0, "waiting": 0, "paused_for_s": 1.5,
            "waiting_by_class": { "interactive": 0, "standard": 0, "batch": 0 },
            "granted_total": 0, "waited_total_s": 0.0,
            "mode": "local", "divided_by": null,
        })
    );
}

#[tokio::test(start_paused = true)]
async fn newcomer_at_a_slot_boundary_does_not_overtake_the_queue() {
    let limiter = limiter(10, 1, ms(5000));
    let start = Instant::now();
    assert_eq!(limiter.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
    let l = Arc::clone(&limiter);
    let head = tokio::spawn(async move { (l.acquire().await, start.elapsed()) });
    settle().await;
    // The head's slot is due at 100 ms; a request arriving at that instant must not take it.
    // (`advance` fires the head's timer, but the current-thread runtime has not polled the head
    // yet when `advance` returns, so without the waiter check the newcomer would win the slot.)
    advance(ms(100)).await;
    assert_eq!(limiter.acquire().now_or_never(), None, "the newcomer must queue");
    let head = bounded("head", head).await.expect("task must not panic");
    assert_eq!(head, (Ok(ms(100)), ms(100)));
}

#[tokio::test(start_paused = true)]
async fn a_share_divides_the_rate_and_the_burst_by_the_replicas() {
    let config = RateLimitConfig {
        per_second: NonZeroU32::new(6).expect("non-zero"),
        burst: NonZeroU32::new(7).expect("non-zero"),
        max_wait: PerClass::all(ms(60_000)),
        batch_share: BatchShare::DEFAULT,
        headroom: Duration::ZERO,
        lead: CallerClass::Standard,
    };
    let share = Limiter::share_of(config, 3);
    // burst 7 / 3 = 2 at once, then one slot per 3 / 6 s = 500 ms.
    for _ in 0..2 {
        assert_eq!(share.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
    }
    let start = Instant::now();
    for n in 1..=3u32 {
        share.acquire().await.expect("a slot within max_wait");
        assert_eq!(start.elapsed(), ms(500) * n);
    }
    // A share never drops below one slot of burst.
    let thin = Limiter::share_of(config, 20);
    assert_eq!(thin.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
    assert!(thin.acquire().now_or_never().is_none(), "the second waits");
}
