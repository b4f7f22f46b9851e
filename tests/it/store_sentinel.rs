//! The shared store behind Sentinel (README, "Redis topologies") through a failover: a primary,
//! its replica and three real `redis-sentinel`s; the primary is SIGKILLed under traffic. The
//! replicas keep serving, share again on the promoted primary within the sentinels' failover time
//! plus a few seconds, and SHOPLINE's refresh (which shortens every other copy's life) is made
//! once per token throughout. The numbers are printed for the record.

use std::time::Duration;

use http::StatusCode;
use tokenbroker::sandbox::{self, ShoplineOptions, ShoplineSandbox};
use tokio::time::Instant;

use crate::sandboxed::{SERVER, shopline_tenant};
use crate::shared_limits::limiters;
use crate::support::redis_sentinel::{DOWN_AFTER, RedisSentinel};
use crate::support::replicas::{self, all_logs, steady};
use crate::support::tenants::static_tenant_from;
use crate::support::upstream::Upstream;
use crate::support::{Binary, get};

const SHOP_PATH: &str = "/shop/admin/openapi/v20230901/products/products.json";
/// SHOPLINE tokens are renewed at half their life: 10 s after each, well after the failover
/// below (a renewal that falls due while the store is unreachable is made by each replica
/// alone, as late as is safe: README, "Redis topologies", states that worst case).
const TTL: Duration = Duration::from_secs(20);

/// Whether every replica sees the store up and the limiter of `t` shared.
async fn all_shared(nodes: &[Binary]) -> bool {
    for node in nodes {
        if get(&node.admin_url("/tenants")).await.json()["store"]["state"] != "up" {
            return false;
        }
    }
    limiters(nodes, "t").await.iter().all(|l| l["mode"] == "shared")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_costs_seconds_of_fallback_and_no_request_or_extra_refresh() {
    let mut deployment = RedisSentinel::start();
    let shop = ShoplineSandbox::start(ShoplineOptions {
        token_ttl: TTL,
        grace: Duration::from_secs(2),
        rate_per_second: 100_000,
        burst: 100_000,
        ..ShoplineOptions::default()
    })
    .await
    .expect("start the SHOPLINE fake");
    let upstream = Upstream::start().await;
    let secrets =
        "app_secret = { env = \"SHOPLINE_SECRET\" }\ncode = { env = \"SHOPLINE_CODE\" }\nmin_token_age = \"0s\"";
    let limit = "rate_limit = { per_second = 500, burst = 50, max_wait = \"5s\" }";
    let toml = format!(
        "{SERVER}{}{}{}",
        deployment.store_toml(),
        shopline_tenant("shop", &shop, &shop.base_url(), secrets),
        static_tenant_from("t", &upstream.url(), "VALUE", limit)
    );
    let envs = [
        ("REDIS_URL", "redis://127.0.0.1"),
        ("SHOPLINE_SECRET", sandbox::SHOPLINE_APP_SECRET),
        ("SHOPLINE_CODE", sandbox::SHOPLINE_AUTH_CODE),
        ("VALUE", "Bearer static-token"),
    ];
    let nodes = replicas::start(3, &toml, &envs);
    let started = Instant::now();
    let length = Duration::from_secs(14);
    let drivers = steady(&nodes, &[SHOP_PATH, "/t/ok"], started + length);
    let (mut seen, mut call_times) = (0, Vec::new());
    let mut killed: Option<(Instant, u16)> = None;
    let (mut promoted, mut recovered) = (None, None);
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = shop.create_calls() + shop.refresh_calls();
        call_times.extend(std::iter::repeat_n(Instant::now(), now.saturating_sub(seen)));
        seen = now;
        match killed {
            None if started.elapsed() > Duration::from_secs(2) && all_shared(&nodes).await => {
                killed = Some((Instant::now(), deployment.kill_primary()));
            }
            Some((at, old)) => {
                if promoted.is_none() && deployment.primary_port() != old {
                    promoted = Some(at.elapsed());
                }
                if promoted.is_some() && recovered.is_none() && all_shared(&nodes).await {
                    recovered = Some(at.elapsed());
                }
            }
            None => {}
        }
    }
    let mut statuses = Vec::new();
    for driver in drivers {
        statuses.extend(driver.await.expect("a traffic task"));
    }
    let failed: Vec<_> = statuses.iter().filter(|s| **s != StatusCode::OK).collect();
    let gaps: Vec<_> = call_times.windows(2).map(|w| w[1] - w[0]).collect();
    let refreshes = shop.refresh_calls();
    eprintln!(
        "sentinel failover: {} requests, {} failed; sentinels promoted after {promoted:?}, replicas shared again after {recovered:?}; \
         SHOPLINE: {} create, {refreshes} refreshes, gaps {gaps:?}",
        statuses.len(),
        failed.len(),
        shop.create_calls()
    );
    assert!(killed.is_some(), "the primary was killed\n{}", all_logs(&nodes));
    assert!(
        failed.is_empty() && statuses.len() > 500,
        "{failed:?}\n{}",
        all_logs(&nodes)
    );
    let promoted = promoted.expect("the sentinels promoted the replica");
    let recovered = recovered.unwrap_or_else(|| panic!("never shared again after the failover\n{}", all_logs(&nodes)));
    assert!(
        recovered <= promoted + DOWN_AFTER + Duration::from_secs(3),
        "shared again {recovered:?} after the kill, {promoted:?} after which the sentinels had promoted"
    );
    assert_eq!(
        shop.rejected_api_calls(),
        0,
        "no 401 at the store\n{}",
        all_logs(&nodes)
    );
    assert_eq!(shop.create_calls(), 1, "the one-time code redeemed once");
    assert_eq!(
        refreshes,
        1,
        "one refresh, shared on the promoted primary\n{}",
        all_logs(&nodes)
    );
    assert!(
        gaps.iter().all(|gap| *gap >= TTL.mul_f64(0.4)),
        "a token was refreshed twice: gaps between token calls {gaps:?}\n{}",
        all_logs(&nodes)
    );
}

/// Every member of `<prefix>:replicas` on the server at `port`, with its last heartbeat (unix ms).
async fn heartbeats(server: &crate::support::redis::RedisServer) -> Vec<(String, u64)> {
    let mut conn = server.connection().await;
    redis::cmd("ZRANGE")
        .arg("tokenbroker:replicas")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_demoted_alive_answers_readonly_and_the_sentinels_are_asked_again() {
    let deployment = RedisSentinel::start();
    let upstream = Upstream::start().await;
    let limit = "rate_limit = { per_second = 500, burst = 50, max_wait = \"5s\" }";
    let toml = format!(
        "{SERVER}{}{}",
        deployment.store_toml(),
        static_tenant_from("t", &upstream.url(), "VALUE", limit)
    );
    let envs = [("REDIS_URL", "redis://127.0.0.1"), ("VALUE", "Bearer static-token")];
    let nodes = replicas::start(3, &toml, &envs);
    let old = deployment.primary_port();
    let ready = Instant::now() + Duration::from_secs(10);
    while !all_shared(&nodes).await {
        assert!(
            Instant::now() < ready,
            "shared before the failover\n{}",
            all_logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A manual failover: the old primary stays up and becomes a replica, so the replicas'
    // connections to it stay open and their writes are answered -READONLY.
    let sentinel = deployment.addresses()[0]
        .rsplit_once(':')
        .map(|(_, p)| p.parse::<u16>())
        .expect("port")
        .expect("a port");
    crate::support::redis_cluster::cli(
        sentinel,
        &["SENTINEL", "FAILOVER", crate::support::redis_sentinel::MASTER_NAME],
    );
    let switched = Instant::now();
    let deadline = switched + Duration::from_secs(20);
    while deployment.primary_port() == old {
        assert!(Instant::now() < deadline, "the sentinels did not fail over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted_after = switched.elapsed();
    // Sentinel would demote the old primary on its next look at it (an INFO every 10 s); the
    // test does it at once, as Sentinel will, so that its writes get -READONLY now.
    let new = deployment.primary_port().to_string();
    crate::support::redis_cluster::cli(old, &["REPLICAOF", "127.0.0.1", &new]);
    let since_ms = tokenbroker_now_ms();
    // Each replica beats every 2 s; its beat on the new primary shows it moved there.
    let mut moved = Vec::new();
    while Instant::now() < deadline {
        moved = heartbeats(deployment.primary())
            .await
            .into_iter()
            .filter(|(_, at)| *at >= since_ms)
            .collect();
        if moved.len() == 3 && all_shared(&nodes).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "manual failover: promoted after {promoted_after:?}; all three replicas writing to the new primary after {:?}",
        switched.elapsed()
    );
    assert_eq!(
        moved.len(),
        3,
        "every replica writes to the promoted primary: {moved:?}\n{}",
        all_logs(&nodes)
    );
    assert!(all_shared(&nodes).await, "{:?}", limiters(&nodes, "t").await);
    let answer = get(&nodes[0].url("/t/ok")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_ne!(deployment.primary_port(), old);
}

fn tokenbroker_now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}
