//! Caller classes in the local limiter, on paused time: order between classes, FIFO within one,
//! batch's share of contended slots, per-class `max_wait`, and cancellation.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::local::LocalLimiter as Limiter;
use crate::config::{BatchShare, CallerClass, PerClass, RateLimitConfig};

use CallerClass::{Batch, Interactive, Standard};

const BOUND: Duration = Duration::from_secs(600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// 10/s (one slot per 100 ms), burst 1, its one slot already taken.
fn drained(max_wait: PerClass<Duration>, share: BatchShare) -> Arc<Limiter> {
    let limiter = Arc::new(Limiter::new(RateLimitConfig {
        per_second: NonZeroU32::new(10).expect("non-zero"),
        burst: NonZeroU32::MIN,
        max_wait,
        batch_share: share,
        headroom: Duration::ZERO,
        lead: CallerClass::Standard,
    }));
    assert_eq!(limiter.acquire().now_or_never(), Some(Ok(Duration::ZERO)));
    limiter
}

/// Spawns one acquirer per class, in order, each joining the queue before the next starts.
/// Each task yields its label and when (since `start`) it got its slot.
async fn queue(
    limiter: &Arc<Limiter>,
    classes: &[CallerClass],
    start: Instant,
) -> Vec<JoinHandle<(usize, CallerClass, Duration)>> {
    let mut tasks = Vec::new();
    for (label, class) in classes.iter().copied().enumerate() {
        let limiter = Arc::clone(limiter);
        tasks.push(tokio::spawn(async move {
            limiter.acquire_as(class).await.expect("a slot within max_wait");
            (label, class, start.elapsed())
        }));
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
    }
    tasks
}

async fn in_grant_order(tasks: Vec<JoinHandle<(usize, CallerClass, Duration)>>) -> Vec<(usize, CallerClass, Duration)> {
    let mut done = Vec::new();
    for task in tasks {
        let outcome = timeout(BOUND, task).await.expect("bounded").expect("no panic");
        done.push(outcome);
    }
    done.sort_by_key(|(_, _, at)| *at);
    done
}

#[tokio::test(start_paused = true)]
async fn higher_classes_are_served_first_and_fifo_within_a_class() {
    let limiter = drained(PerClass::all(ms(10_000)), BatchShare::DEFAULT);
    let start = Instant::now();
    let classes = [Batch, Standard, Interactive, Batch, Interactive, Standard];
    let done = in_grant_order(queue(&limiter, &classes, start).await).await;
    let order: Vec<usize> = done.iter().map(|(label, _, _)| *label).collect();
    // The first batch request was head when the others arrived; it gives the slot up.
    assert_eq!(order, [2, 4, 1, 5, 0, 3]);
    let times: Vec<Duration> = done.iter().map(|(_, _, at)| *at).collect();
    assert_eq!(
        times,
        [ms(100), ms(200), ms(300), ms(400), ms(500), ms(600)],
        "one slot per period"
    );
    assert_eq!(limiter.state().waiting_by_class, PerClass::all(0));
}

#[tokio::test(start_paused = true)]
async fn batch_keeps_its_share_under_a_steady_stream_of_interactive_requests() {
    let limiter = drained(
        PerClass::all(ms(600_000)),
        BatchShare::from_fraction(0.25).expect("valid"),
    );
    let start = Instant::now();
    let mut classes = vec![Batch; 20];
    classes.extend([Interactive; 40]);
    let done = in_grant_order(queue(&limiter, &classes, start).await).await;
    let first_40: Vec<CallerClass> = done.iter().take(40).map(|(_, class, _)| *class).collect();
    let batch = first_40.iter().filter(|c| **c == Batch).count();
    // One slot in 4 while interactive waits: 10 of the first 40.
    assert_eq!(batch, 10, "{first_40:?}");
    for window in first_40.chunks(4) {
        assert_eq!(window.iter().filter(|c| **c == Batch).count(), 1, "{first_40:?}");
    }
    let batch_labels: Vec<usize> = done
        .iter()
        .filter(|(_, c, _)| *c == Batch)
        .map(|(l, _, _)| *l)
        .collect();
    assert_eq!(batch_labels, (0..20).collect::<Vec<_>>(), "FIFO within batch");
}

#[tokio::test(start_paused = true)]
async fn each_class_has_its_own_max_wait() {
    let waits = PerClass {
        interactive: ms(50),
        standard: ms(5_000),
        batch: ms(120_000),
    };
    let limiter = drained(waits, BatchShare::DEFAULT);
    let refused = limiter.acquire_as(Interactive).now_or_never().expect("refused at once");
    assert_eq!(refused.map_err(|r| r.retry_after), Err(ms(100)));
    let start = Instant::now();
    let batch = timeout(BOUND, limiter.acquire_as(Batch)).await.expect("bounded");
    assert_eq!(batch, Ok(ms(100)));
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_gives_its_place_back_in_any_class() {
    let limiter = drained(PerClass::all(ms(10_000)), BatchShare::DEFAULT);
    let start = Instant::now();
    let tasks = queue(&limiter, &[Batch, Standard], start).await;
    // An interactive request that gives up after 50 ms: the slot at 100 ms is not lost.
    assert!(timeout(ms(50), limiter.acquire_as(Interactive)).await.is_err());
    assert_eq!(
        limiter.state().waiting_by_class,
        PerClass {
            interactive: 0,
            standard: 1,
            batch: 1
        }
    );
    let done = in_grant_order(tasks).await;
    let times: Vec<(usize, Duration)> = done.iter().map(|(l, _, at)| (*l, *at)).collect();
    assert_eq!(times, [(1, ms(100)), (0, ms(200))]);
    // A cancelled head hands its turn on as well.
    let head = {
        let limiter = Arc::clone(&limiter);
        tokio::spawn(async move { limiter.acquire_as(Interactive).await })
    };
    tokio::task::yield_now().await;
    let start = Instant::now();
    let tasks = queue(&limiter, &[Batch], start).await;
    head.abort();
    let done = in_grant_order(tasks).await;
    assert_eq!(done[0].2, ms(100), "the aborted head's slot goes to the next waiter");
}
