//! The class rules of the shared bucket's RESERVE script, through the crate's API on a real
//! `redis-server` (README, "Caller classes"): the lead class reserves ahead, the lower classes take
//! only a slot that is due, batch gives way to waiting `standard` requests and still gets its
//! share.

use std::time::Duration;

use tokenbroker::config::CallerClass::{self, Batch, Interactive, Standard};
use tokenbroker::store::{Ask, RedisBucket, Reservation};
use tokio::time::Instant;

use crate::shared_limits::bucket_on;
use crate::support::redis::RedisServer;

const PERIOD: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(60);

/// An ask on a tenant whose lead class is interactive, burst 1, batch one slot in `every`.
fn ask(class: CallerClass, every: u32) -> Ask {
    Ask {
        period: PERIOD,
        burst: 1,
        max_wait: LONG,
        class,
        ahead: class == Interactive,
        batch_every: every,
    }
}

async fn reserve(bucket: &RedisBucket, class: CallerClass) -> Reservation {
    bucket.reserve(&ask(class, 10)).await.expect("redis answers")
}

fn granted(answer: Reservation) -> Duration {
    match answer {
        Reservation::Granted(wait) => wait,
        other => panic!("expected a slot, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lower_class_takes_only_a_due_slot_and_reserves_nothing_ahead() {
    let redis = RedisServer::start();
    let (_store, bucket, base) = bucket_on(&redis).await;
    assert_eq!(
        granted(reserve(&bucket, Batch).await),
        Duration::ZERO,
        "the burst's slot is due"
    );
    let before = redis.get(&format!("{base}:bucket")).await;
    let Reservation::NotDue(after) = reserve(&bucket, Batch).await else {
        panic!("batch reserved a slot that is not due");
    };
    assert!(after <= PERIOD && after > Duration::ZERO, "ask again after {after:?}");
    assert_eq!(
        redis.get(&format!("{base}:bucket")).await,
        before,
        "a not-due answer moved the bucket"
    );
    assert!(
        redis.get(&format!("{base}:waiting:batch")).await.is_some(),
        "batch's wait is not marked"
    );
    // The interactive request is not pushed behind it: it gets the very next slot.
    let wait = granted(reserve(&bucket, Interactive).await);
    assert!(wait <= PERIOD, "interactive waits {wait:?}, more than one slot");
    // Once due, batch gets a slot (after the interactive one).
    tokio::time::sleep(after).await;
    let next = reserve(&bucket, Batch).await;
    assert!(
        matches!(next, Reservation::NotDue(_)),
        "the due slot went to interactive: {next:?}"
    );
}

#[tokio::test]
async fn many_batch_asks_never_push_the_lead_class_past_one_slot() {
    let redis = RedisServer::start();
    let (_store, bucket, _base) = bucket_on(&redis).await;
    let began = Instant::now();
    let mut batch_slots = 0;
    let mut worst = Duration::ZERO;
    // 1.5 s of a batch poller that asks whenever told, and an interactive request every 250 ms.
    let mut next_interactive = began;
    while began.elapsed() < Duration::from_millis(1_500) {
        if Instant::now() >= next_interactive {
            worst = worst.max(granted(reserve(&bucket, Interactive).await));
            next_interactive += Duration::from_millis(250);
            continue;
        }
        match reserve(&bucket, Batch).await {
            Reservation::Granted(_) => batch_slots += 1,
            Reservation::NotDue(after) => tokio::time::sleep(after.min(Duration::from_millis(20))).await,
            Reservation::Refused(wait) => panic!("refused within a minute's max_wait: {wait:?}"),
        }
    }
    assert!(worst <= PERIOD, "an interactive request waited {worst:?}");
    // 15 slots in 1.5 s, 6 of them interactive: batch takes the rest, only when due.
    assert!((7..=11).contains(&batch_slots), "batch got {batch_slots} slots");
}

#[tokio::test]
async fn batch_gives_way_to_a_waiting_standard_request() {
    let redis = RedisServer::start();
    let (_store, bucket, base) = bucket_on(&redis).await;
    granted(reserve(&bucket, Interactive).await);
    // Standard asks while nothing is due: its wait is marked for every replica to see.
    let Reservation::NotDue(after) = reserve(&bucket, Standard).await else {
        panic!("standard reserved ahead");
    };
    assert!(redis.get(&format!("{base}:waiting:standard")).await.is_some());
    tokio::time::sleep(after).await;
    // The slot is due, but standard waits: batch (on any replica) gives way.
    assert!(matches!(reserve(&bucket, Batch).await, Reservation::NotDue(_)));
    let wait = granted(reserve(&bucket, Standard).await);
    assert!(
        wait <= Duration::from_millis(1),
        "the due slot is standard's, now: {wait:?}"
    );
}

#[tokio::test]
async fn while_batch_waits_every_nth_slot_is_set_aside_for_it() {
    let redis = RedisServer::start();
    let (_store, bucket, base) = bucket_on(&redis).await;
    let every = 4;
    granted(bucket.reserve(&ask(Interactive, every)).await.expect("redis answers"));
    // Batch asks and is told to wait: it is now known to be waiting.
    let answer = bucket.reserve(&ask(Batch, every)).await.expect("redis answers");
    assert!(matches!(answer, Reservation::NotDue(_)), "{answer:?}");
    // Interactive takes slots ahead; after `every - 1` of them, the next slot is batch's.
    let mut waits = Vec::new();
    for _ in 0..every - 1 {
        waits.push(granted(
            bucket.reserve(&ask(Interactive, every)).await.expect("redis answers"),
        ));
    }
    let aside = redis.get(&format!("{base}:batch-slot")).await;
    assert!(
        aside.is_some(),
        "no slot set aside after {} interactive grants",
        every - 1
    );
    let next_interactive = granted(bucket.reserve(&ask(Interactive, every)).await.expect("redis answers"));
    let batch = granted(bucket.reserve(&ask(Batch, every)).await.expect("redis answers"));
    let last = waits.last().copied().unwrap_or_default();
    assert!(
        batch > last && batch < next_interactive,
        "the set-aside slot ({batch:?}) lies between interactive's {last:?} and {next_interactive:?}"
    );
    assert!(
        redis.get(&format!("{base}:batch-slot")).await.is_none(),
        "the slot was claimed"
    );
}
