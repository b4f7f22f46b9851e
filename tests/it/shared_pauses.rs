//! The shared bucket's bounds against a hostile or broken outside (README, "Behaviour where the
//! spec was silent"): an upstream pause never holds a request past its `max_wait`, an announced
//! pause is capped and garbage is ignored, an error reply from Redis fails one reservation and not
//! the store, and a slow Redis costs its latency, not the quota (one RESERVE call per batch of
//! waiting requests). Real binaries, a real `redis-server` (behind a relay that delays every chunk
//! for the slow case), the recording upstream; real time, so bounds allow scheduling jitter.

use std::time::Duration;

use http::StatusCode;
use tokenbroker::store::Reservation;
use tokio::time::Instant;

use crate::rate_limit::{assert_our_429, fire};
use crate::shared_limits::{ask, bucket_on, shared_config, until_mode};
use crate::support::redis::RedisServer;
use crate::support::relay::Relay;
use crate::support::replicas::{self, all_logs};
use crate::support::tenants::static_tenant_from;
use crate::support::upstream::Upstream;
use crate::support::{Binary, eventually, get, sample};

/// One replica sharing `redis` for a static tenant `t` with `limit`, on `redis_url` (the server's
/// own URL, or a relay in front of it).
async fn replica(redis_url: &str, upstream: &Upstream, limit: &str) -> Binary {
    let tenant = static_tenant_from("t", &upstream.url(), "VALUE", &format!("rate_limit = {limit}"));
    let envs = [("REDIS_URL", redis_url), ("VALUE", "Bearer static-token")];
    let mut nodes = replicas::start(1, &shared_config(&tenant), &envs);
    until_mode(&nodes, "t", "shared", Duration::from_secs(5)).await;
    nodes.remove(0)
}

async fn store_state(node: &Binary) -> serde_json::Value {
    get(&node.admin_url("/tenants")).await.json()["store"]["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_from_redis_fails_one_reservation_and_leaves_the_store_up() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let node = replica(
        &redis.url(),
        &upstream,
        r#"{ per_second = 50, burst = 50, max_wait = "2s" }"#,
    )
    .await;
    let first = get(&node.url("/t/first")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let keys = redis.keys().await;
    let bucket = keys.iter().find(|k| k.ends_with(":bucket")).expect("the bucket key");

    // The bucket's key now holds a hash: every RESERVE gets WRONGTYPE from Redis.
    let mut conn = redis.connection().await;
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(bucket)
        .ignore()
        .cmd("HSET")
        .arg(bucket)
        .arg("planted")
        .arg("1")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("plant a hash");
    for i in 0..5 {
        let answer = get(&node.url(&format!("/t/broken/{i}"))).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(
            store_state(&node).await,
            "up",
            "one error reply marked the store down\n{}",
            node.logs()
        );
    }
    let metrics = get(&node.admin_url("/metrics")).await.text();
    let errors = sample(&metrics, r#"tokenbroker_store_errors_total{op="bucket"}"#).expect("the counter");
    assert!(errors >= 5.0, "{errors} bucket errors counted");
    let logs = node.logs();
    assert!(logs.contains("refused a command"), "{logs}");
    assert!(
        !logs.contains("unreachable;"),
        "{}",
        all_logs(std::slice::from_ref(&node))
    );
    assert!(
        !logs.contains("planted"),
        "the error's text (it quotes keys) was logged"
    );
}

/// The key prefix (`<prefix>:{<tenant>:<fingerprint>}`) of the one bucket in `redis`.
async fn bucket_base(redis: &RedisServer) -> String {
    let keys = redis.keys().await;
    let bucket = keys.iter().find(|k| k.ends_with(":bucket")).expect("the bucket key");
    bucket.trim_end_matches(":bucket").to_owned()
}

async fn command(redis: &RedisServer, args: &[&str]) {
    let mut conn = redis.connection().await;
    let _: redis::Value = redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(&mut conn)
        .await
        .expect("the test's command");
}

/// A GET that must answer within `limit` (a request held longer fails the test, not hangs it).
async fn get_within(url: &str, limit: Duration) -> (crate::support::Answer, Duration) {
    let began = Instant::now();
    let answer = tokio::time::timeout(limit, get(url))
        .await
        .unwrap_or_else(|_| panic!("no answer within {limit:?}"));
    (answer, began.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_request_is_answered_by_its_max_wait_when_a_long_pause_comes() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let tenant = static_tenant_from(
        "t",
        &upstream.url(),
        "VALUE",
        r#"rate_limit = { per_second = 1, burst = 1, max_wait = "3s" }"#,
    );
    let url = redis.url();
    let envs = [("REDIS_URL", url.as_str()), ("VALUE", "Bearer static-token")];
    let nodes = replicas::start(2, &shared_config(&tenant), &envs);
    until_mode(&nodes, "t", "shared", Duration::from_secs(5)).await;

    // The first request's 429 (Retry-After: 30) comes back after 300 ms; the second, on the other
    // replica, has reserved the +1 s slot by then and learns of the pause from the announcement.
    let throttled_url = nodes[0].url("/t/status/429?delay_ms=300&retry_after=30");
    let throttled = tokio::spawn(async move { get(&throttled_url).await });
    let started = eventually(Duration::from_secs(5), || async { upstream.started() == 1 }).await;
    assert!(started, "the first request never reached the upstream");
    let second_url = nodes[1].url("/t/second");
    let second = tokio::spawn(async move { get_within(&second_url, Duration::from_secs(8)).await });
    let answer = throttled.await.expect("the throttled request");
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "30");

    let (answer, took) = second.await.expect("the second request");
    let retry_after = assert_our_429(&answer);
    assert!(
        took <= Duration::from_millis(3_300),
        "held {took:?}, past its 3 s max_wait\n{}",
        all_logs(&nodes)
    );
    // Refused when the announcement came (about 300 ms in), not at its +1 s slot.
    assert!(took < Duration::from_millis(800), "refused only after {took:?}");
    assert!(
        (28..=30).contains(&retry_after),
        "Retry-After {retry_after}, not the pause's rest"
    );
    assert!(upstream.recorded().iter().all(|r| r.target != "/second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_and_stored_pauses_are_capped_and_garbage_is_ignored() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let node = replica(
        &redis.url(),
        &upstream,
        r#"{ per_second = 10, burst = 10, max_wait = "2s" }"#,
    )
    .await;
    let first = get(&node.url("/t/first")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let base = bucket_base(&redis).await;
    let channel = format!("{base}:pause-for");

    // Garbage, announced or stored, is ignored; the store stays up.
    for junk in ["soon", "-5", "1e9", ""] {
        command(&redis, &["PUBLISH", &channel, junk]).await;
    }
    command(&redis, &["SET", &format!("{base}:pause"), "garbage"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (answer, took) = get_within(&node.url("/t/after-garbage"), Duration::from_secs(3)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}\n{}", answer.text(), node.logs());
    assert!(took < Duration::from_millis(500), "held {took:?}");
    assert_eq!(store_state(&node).await, "up");

    // A pause stored for the year 5138 is cut to the cap: refused at once, Retry-After <= 60 s.
    command(&redis, &["SET", &format!("{base}:pause"), "99999999999999999"]).await;
    let (answer, took) = get_within(&node.url("/t/stored"), Duration::from_secs(3)).await;
    let retry_after = assert_our_429(&answer);
    assert!((55..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    command(&redis, &["DEL", &format!("{base}:pause")]).await;

    // A bucket whose stored time is absurd refuses, but its Retry-After is capped at what a full
    // bucket (10 slots of 100 ms) behind the longest pause (60 s) could ask: 61 s.
    command(&redis, &["SET", &format!("{base}:bucket"), "99999999999999999"]).await;
    let (answer, _) = get_within(&node.url("/t/absurd-bucket"), Duration::from_secs(3)).await;
    let retry_after = assert_our_429(&answer);
    assert!(retry_after <= 61, "Retry-After {retry_after}");
    command(&redis, &["DEL", &format!("{base}:bucket")]).await;

    // An announced pause of u64::MAX µs is cut to the cap too.
    command(&redis, &["PUBLISH", &channel, "18446744073709551615"]).await;
    let capped = eventually(Duration::from_secs(2), || async {
        let tenants = get(&node.admin_url("/tenants")).await.json();
        let paused = crate::support::tenant_entry(&tenants, "t")["limiter"]["paused_for_s"].as_f64();
        paused.is_some_and(|s| s > 55.0 && s <= 60.0)
    })
    .await;
    assert!(capped, "the announced pause was not capped at 60 s\n{}", node.logs());
    let (answer, took) = get_within(&node.url("/t/announced"), Duration::from_secs(3)).await;
    let retry_after = assert_our_429(&answer);
    assert!((55..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_costs_its_latency_not_the_quota() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let target = format!("127.0.0.1:{}", redis.port()).parse().expect("an address");
    let relay = Relay::start(target, Duration::from_millis(50)).await;
    let node = replica(
        &format!("redis://127.0.0.1:{}", relay.port()),
        &upstream,
        r#"{ per_second = 50, burst = 50, max_wait = "1s" }"#,
    )
    .await;

    // 40 at once, within the burst of 50: every one is due now, whatever the round trip.
    let began = Instant::now();
    let answers = fire((0..40).map(|i| node.url(&format!("/t/burst/{i}"))).collect()).await;
    let took = began.elapsed();
    let ok = answers.iter().filter(|(a, _)| a.status == StatusCode::OK).count();
    let statuses: Vec<u16> = answers.iter().map(|(a, _)| a.status.as_u16()).collect();
    assert_eq!(ok, 40, "{statuses:?} in {took:?}\n{}", node.logs());
    assert!(took < Duration::from_secs(1), "the burst took {took:?}");
    assert_eq!(upstream.recorded().len(), 40);
}

#[tokio::test]
async fn script_batch_answers_each_request_as_if_they_had_asked_in_turn() {
    let redis = RedisServer::start();
    let (_store, bucket, _base) = bucket_on(&redis).await;
    let period = Duration::from_millis(100);
    let long = Duration::from_secs(60);
    // Burst 2: slots at +0, +0, +100, +200 ms, … all computed at one instant of Redis's clock.
    let max_waits = [long, long, long, Duration::from_millis(150), long];
    let answers = bucket
        .reserve_batch(&ask(period, 2, long), &max_waits)
        .await
        .expect("redis answers");
    let ms = Duration::from_millis;
    assert_eq!(
        answers,
        [
            Reservation::Granted(ms(0)),
            Reservation::Granted(ms(0)),
            Reservation::Granted(ms(100)),
            // Beyond its 150 ms: refused, and the +200 ms slot stays for the next one.
            Reservation::Refused(ms(200)),
            Reservation::Granted(ms(200)),
        ]
    );
}
