//! The shared bucket's bounds against a hostile or broken outside (README, "Behaviour where the
//! spec was silent"): an upstream pause never holds a request past its `max_wait`, an announced
//! pause is capped and garbage is ignored, an error reply from Redis fails one reservation and not
//! the store, and a slow Redis costs its latency, not the quota. Real binaries, a real
//! `redis-server`, the recording upstream; real time, so bounds allow scheduling jitter.

use std::time::Duration;

use http::StatusCode;

use crate::shared_limits::{shared_config, until_mode};
use crate::support::redis::RedisServer;
use crate::support::replicas::{self, all_logs};
use crate::support::tenants::static_tenant_from;
use crate::support::upstream::Upstream;
use crate::support::{Binary, get, sample};

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
