//! Sharing works (README, "Several replicas"): several real binaries on one real `redis-server`
//! make one token call per lifetime between them, adopt each other's tokens in time for
//! SHOPLINE's grace and Vantage's single-use refresh tokens, and leave nothing in clear in Redis.
//! Token lifetimes are seconds long, so every renewal below really happens.

use std::time::Duration;

use http::StatusCode;
use tokenbroker::sandbox::{self, ShoplineOptions, ShoplineSandbox, VantageOptions, VantageSandbox};
use tokio::time::Instant;

use crate::sandboxed::{
    IMS_SECRET_LINE, SERVER, SlowRelay, adobe_tenant, ims_with_ttl, shopline_tenant, vantage_tenant,
};
use crate::support::redis::RedisServer;
use crate::support::replicas::{self, REDIS_STORE, all_logs};
use crate::support::topology::{SharedRedis, on_each_topology};
use crate::support::upstream::{TokenEndpoint, Upstream};
use crate::support::{Binary, assert_no_secret_in, eventually, get, tenant_entry};

/// The demo secrets the sandbox tenants read, plus the store's URL.
fn sandbox_envs(redis_url: &str) -> Vec<(&str, &str)> {
    vec![
        ("REDIS_URL", redis_url),
        ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET),
        ("SHOPLINE_SECRET", sandbox::SHOPLINE_APP_SECRET),
        ("SHOPLINE_CODE", sandbox::SHOPLINE_AUTH_CODE),
        ("VANTAGE_SECRET", sandbox::VANTAGE_CLIENT_SECRET),
        ("VANTAGE_PASSWORD", sandbox::VANTAGE_PASSWORD),
    ]
}

fn shared_config(tenants: &str) -> String {
    format!("{SERVER}{REDIS_STORE}{tenants}")
}

/// As [`shared_config`], on `redis`'s topology.
fn shared_config_on(redis: &SharedRedis, tenants: &str) -> String {
    format!("{SERVER}{}{tenants}", redis.store_toml())
}

/// Each replica's `/tenants` entry for `tenant`, in replica order.
async fn token_views(replicas: &[Binary], tenant: &str) -> Vec<serde_json::Value> {
    let mut views = Vec::new();
    for replica in replicas {
        let tenants = get(&replica.admin_url("/tenants")).await.json();
        views.push(tenant_entry(&tenants, tenant)["token"].clone());
    }
    views
}

/// GETs `path` on every replica, `loops` callers each, for `length`; every status answered.
async fn traffic(replicas: &[Binary], path: &str, loops: usize, length: Duration) -> Vec<StatusCode> {
    let deadline = Instant::now() + length;
    let drivers: Vec<_> = replicas
        .iter()
        .flat_map(|r| std::iter::repeat_n(r.url(path), loops))
        .map(|url| {
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while Instant::now() < deadline {
                    statuses.push(get(&url).await.status);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                statuses
            })
        })
        .collect();
    let mut all = Vec::new();
    for driver in drivers {
        all.extend(driver.await.expect("a traffic task"));
    }
    all
}

fn assert_all_ok(statuses: &[StatusCode], replicas: &[Binary]) {
    let failed: Vec<_> = statuses.iter().filter(|s| **s != StatusCode::OK).collect();
    assert!(
        failed.is_empty() && statuses.len() > 100,
        "{} of {} requests failed: {failed:?}\n{}",
        failed.len(),
        statuses.len(),
        all_logs(replicas)
    );
}

/// The instants `count` went up, sampled every 10 ms until `until` (the caller's traffic runs
/// meanwhile): when a fake's token endpoint was called.
async fn call_times(count: impl Fn() -> usize, until: Instant) -> Vec<Instant> {
    let (mut seen, mut times) = (count(), Vec::new());
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = count();
        times.extend(std::iter::repeat_n(Instant::now(), now.saturating_sub(seen)));
        seen = now;
    }
    times
}

on_each_topology! {
async fn cold_burst_on_three_replicas_makes_one_token_call(topology: Topology) {
    let redis = SharedRedis::start(topology);
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    // Each token call takes 500 ms, so the burst below arrives while the first is in flight.
    let relay = SlowRelay::start(ims.base_url(), Duration::from_millis(500)).await;
    let toml = shared_config_on(&redis, &adobe_tenant("adobe", &ims, &relay.url, IMS_SECRET_LINE));
    let url = redis.url();
    let replicas = replicas::start(3, &toml, &sandbox_envs(&url));

    let burst: Vec<_> = (0..150)
        .map(|i| {
            let url = replicas[i % 3].url("/adobe/V1/products");
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in burst {
        statuses.push(request.await.expect("a request task"));
    }
    assert_all_ok(&statuses, &replicas);
    assert_eq!(
        ims.tokens_issued(),
        1,
        "one token for the cluster\n{}",
        all_logs(&replicas)
    );
    assert_eq!(ims.token_calls(), 1);

    let views = token_views(&replicas, "adobe").await;
    let mut origins: Vec<_> = views.iter().map(|v| v["origin"].as_str().unwrap_or("none")).collect();
    origins.sort_unstable();
    assert_eq!(origins, ["adopted", "adopted", "fetched"], "{views:?}");
    assert!(views[0]["store_version"].as_u64() >= Some(1), "{views:?}");
    assert!(
        views.iter().all(|v| v["store_version"] == views[0]["store_version"]),
        "{views:?}"
    );
}
}

on_each_topology! {
async fn renewals_under_steady_traffic_are_made_once_for_the_cluster(topology: Topology) {
    const TTL: Duration = Duration::from_secs(4);
    let redis = SharedRedis::start(topology);
    let ims = ims_with_ttl(TTL).await;
    let relay = SlowRelay::start(ims.base_url(), Duration::from_millis(200)).await;
    // refresh_before 1 s: each token is renewed 2.7–3.0 s after it was obtained.
    let extra = format!("{IMS_SECRET_LINE}\nrefresh_before = \"1s\"\nmin_token_age = \"0s\"");
    let toml = shared_config_on(&redis, &adobe_tenant("adobe", &ims, &relay.url, &extra));
    let url = redis.url();
    let started = Instant::now();
    let replicas = replicas::start(3, &toml, &sandbox_envs(&url));

    let statuses = traffic(&replicas, "/adobe/V1/products", 2, Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    assert_all_ok(&statuses, &replicas);
    assert_eq!(ims.rejected_api_calls(), 0, "no replica kept an expired token");
    // One renewal per token for the cluster: the first call, then one at most every 70 % of a
    // lifetime (the earliest schedule is 72 %). Three replicas renewing alone would make ~3×.
    let bound = 1 + (elapsed.as_secs_f64() / TTL.mul_f64(0.7).as_secs_f64()).ceil() as usize;
    let calls = ims.token_calls();
    assert!(
        (3..=bound).contains(&calls),
        "{calls} token calls in {elapsed:?} (at most {bound})\n{}",
        all_logs(&replicas)
    );
    let views = token_views(&replicas, "adobe").await;
    let fetched: u64 = views.iter().map(|v| v["renewals_ok"].as_u64().unwrap_or(0)).sum();
    assert!(
        fetched <= calls as u64,
        "the replicas fetched only what the IdP issued: {views:?}"
    );
    assert!(
        views.iter().all(|v| v["store_version"] == views[0]["store_version"]),
        "{views:?}"
    );
}
}

async fn short_shopline(ttl: Duration, grace: Duration) -> ShoplineSandbox {
    ShoplineSandbox::start(ShoplineOptions {
        token_ttl: ttl,
        grace,
        rate_per_second: 100_000,
        burst: 100_000,
        ..ShoplineOptions::default()
    })
    .await
    .expect("start the SHOPLINE fake")
}

on_each_topology! {
async fn shopline_refreshes_once_per_token_and_no_replica_meets_the_grace_end(topology: Topology) {
    const TTL: Duration = Duration::from_secs(6);
    let redis = SharedRedis::start(topology);
    // A refresh leaves the previous token 2 s: a replica that did not adopt in time gets 401s.
    let shop = short_shopline(TTL, Duration::from_secs(2)).await;
    let extra =
        "app_secret = { env = \"SHOPLINE_SECRET\" }\ncode = { env = \"SHOPLINE_CODE\" }\nmin_token_age = \"0s\"";
    let toml = shared_config_on(&redis, &shopline_tenant("shop", &shop, &shop.base_url(), extra));
    let url = redis.url();
    let replicas = replicas::start(3, &toml, &sandbox_envs(&url));

    let length = Duration::from_secs(14);
    let until = Instant::now() + length;
    let counted = call_times(|| shop.create_calls() + shop.refresh_calls(), until);
    let (times, statuses) = tokio::join!(
        counted,
        traffic(
            &replicas,
            "/shop/admin/openapi/v20230901/products/products.json",
            2,
            length
        )
    );
    assert_all_ok(&statuses, &replicas);
    assert_eq!(
        shop.rejected_api_calls(),
        0,
        "no 401 at the store\n{}",
        all_logs(&replicas)
    );
    assert_eq!(shop.create_calls(), 1, "the one-time code redeemed once");
    // Tokens are renewed at half their life (3 s): four refreshes in 14 s, each of another token.
    let refreshes = shop.refresh_calls();
    assert!(
        (3..=5).contains(&refreshes),
        "{refreshes} refreshes\n{}",
        all_logs(&replicas)
    );
    let gaps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|gap| *gap >= TTL.mul_f64(0.4)),
        "a token was renewed twice: gaps between token calls {gaps:?}"
    );
}
}

on_each_topology! {
async fn vantage_single_use_refresh_tokens_are_redeemed_once_across_replicas(topology: Topology) {
    let redis = SharedRedis::start(topology);
    let vantage = VantageSandbox::start(VantageOptions {
        token_ttl: Duration::from_secs(3),
        ..VantageOptions::default()
    })
    .await
    .expect("start the Vantage fake");
    // 3 s tokens with a long refresh_before: renewed at half their life, every 1.5 s.
    let extra = format!(
        "grant = \"password\"\nusername = \"{}\"\npassword = {{ env = \"VANTAGE_PASSWORD\" }}\n\
         offline_access = true\nrefresh_before = \"1h\"\nmin_token_age = \"0s\"",
        sandbox::VANTAGE_USERNAME
    );
    let toml = shared_config_on(&redis, &vantage_tenant("vantage", &vantage, &vantage.base_url(), &extra));
    let url = redis.url();
    let replicas = replicas::start(3, &toml, &sandbox_envs(&url));

    let statuses = traffic(&replicas, "/vantage/api/publicapi/v1/skills", 2, Duration::from_secs(8)).await;
    assert_all_ok(&statuses, &replicas);
    let logs = all_logs(&replicas);
    assert!(vantage.refresh_token_uses() >= 3, "several renewals\n{logs}");
    assert_eq!(vantage.invalid_grants(), 0, "no refresh token refused\n{logs}");
    assert_eq!(vantage.refresh_token_reuse_attempts(), 0);
    assert_eq!(
        vantage.grant_calls("password"),
        1,
        "renewed with refresh tokens only\n{logs}"
    );
    assert_eq!(vantage.rejected_api_calls(), 0);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_redis_is_shared_and_its_password_never_shown() {
    let password = format!("redis-pass-{:016x}", rand::random::<u64>());
    let redis = RedisServer::start_with_password(&password);
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    let toml = shared_config(&adobe_tenant("adobe", &ims, &ims.base_url(), IMS_SECRET_LINE));
    let url = redis.url();
    let replicas = replicas::start(2, &toml, &sandbox_envs(&url));
    for replica in &replicas {
        let answer = get(&replica.url("/adobe/V1/products")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    assert_eq!(
        ims.token_calls(),
        1,
        "shared through the protected Redis\n{}",
        all_logs(&replicas)
    );
    assert!(!redis.keys().await.is_empty(), "the token is in Redis");

    let needles = [password.clone(), url.clone()];
    for replica in &replicas {
        let readyz = get(&replica.admin_url("/readyz")).await.text();
        assert!(readyz.contains("\"up\""), "the store is up: {readyz}");
        let surfaces = [
            ("/tenants", get(&replica.admin_url("/tenants")).await.text()),
            ("/readyz", readyz),
            ("/metrics", replica.metrics().await),
            ("stderr", replica.logs()),
        ];
        for (surface, text) in &surfaces {
            assert_no_secret_in(surface, text, &needles);
        }
    }
}

/// Every token a fake issued, with each JWT's signature on its own.
fn token_needles(tokens: Vec<String>) -> Vec<String> {
    let signatures: Vec<String> = tokens
        .iter()
        .filter_map(|t| t.rsplit_once('.').map(|(_, s)| s.to_owned()))
        .collect();
    tokens.into_iter().chain(signatures).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_nothing_in_clear_and_every_token_key_expires() {
    let password = format!("redis-pass-{:016x}", rand::random::<u64>());
    let redis = RedisServer::start_with_password(&password);
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    let shop = short_shopline(sandbox::SHOPLINE_DEFAULT_TTL, sandbox::SHOPLINE_GRACE).await;
    let vantage = VantageSandbox::start(VantageOptions {
        token_ttl: Duration::from_secs(2),
        ..VantageOptions::default()
    })
    .await
    .expect("start the Vantage fake");
    let vantage_extra = format!(
        "grant = \"password\"\nusername = \"{}\"\npassword = {{ env = \"VANTAGE_PASSWORD\" }}\n\
         offline_access = true\nrefresh_before = \"1h\"",
        sandbox::VANTAGE_USERNAME
    );
    let shop_extra = "app_secret = { env = \"SHOPLINE_SECRET\" }\ncode = { env = \"SHOPLINE_CODE\" }";
    let tenants = [
        adobe_tenant("adobe", &ims, &ims.base_url(), IMS_SECRET_LINE),
        shopline_tenant("shop", &shop, &shop.base_url(), shop_extra),
        vantage_tenant("vantage", &vantage, &vantage.base_url(), &vantage_extra),
    ];
    let url = redis.url();
    let replicas = replicas::start(2, &shared_config(&tenants.concat()), &sandbox_envs(&url));
    // Vantage renews every second: wait for a refresh token to have been redeemed and rotated.
    let rotated = eventually(Duration::from_secs(8), || async { vantage.refresh_token_uses() >= 2 }).await;
    assert!(
        rotated,
        "Vantage renewed with its refresh token\n{}",
        all_logs(&replicas)
    );
    for path in [
        "/adobe/V1/products",
        "/shop/admin/openapi/v20230901/products/products.json",
    ] {
        assert_eq!(get(&replicas[1].url(path)).await.status, StatusCode::OK, "{path}");
    }
    assert_eq!((ims.token_calls(), shop.create_calls()), (1, 1), "shared");

    let dump = redis.dump_text().await;
    let mut needles = token_needles(ims.issued_tokens());
    needles.extend(token_needles(shop.issued_tokens()));
    needles.extend(token_needles(vantage.issued_tokens()));
    assert!(needles.len() >= 2 * 5, "access tokens and refresh tokens to look for");
    for secret in [
        sandbox::IMS_CLIENT_SECRET,
        sandbox::SHOPLINE_APP_SECRET,
        sandbox::SHOPLINE_AUTH_CODE,
        sandbox::VANTAGE_CLIENT_SECRET,
        sandbox::VANTAGE_PASSWORD,
        &password,
    ] {
        needles.push(secret.to_owned());
    }
    assert_no_secret_in("the Redis dump", &dump, &needles);

    let token_keys: Vec<_> = redis
        .keys()
        .await
        .into_iter()
        .filter(|k| k.ends_with(":token"))
        .collect();
    assert_eq!(token_keys.len(), 3, "one token hash per tenant: {token_keys:?}");
    for key in &token_keys {
        let hash = redis.hgetall(key).await;
        assert!(
            hash.get("sealed").is_some_and(|s| s.len() > 16),
            "{key} holds a sealed token"
        );
        assert!(redis.ttl_ms(key).await > 0, "{key} expires");
    }
}

on_each_topology! {
async fn a_record_rolled_back_to_an_older_version_is_not_adopted(topology: Topology) {
    let redis = SharedRedis::start(topology);
    let idp = TokenEndpoint::start("3600").await;
    let upstream = Upstream::start().await;
    let toml = format!(
        r#"{SERVER}{store}
[[tenant]]
name = "rb"
provider = "oauth2"
upstream = "{upstream}"
token_url = "{token_url}"
client_id = "cid"
client_secret = {{ env = "RB_SECRET" }}
min_token_age = "0s"
"#,
        upstream = upstream.url(),
        token_url = idp.url(),
        store = redis.store_toml(),
    );
    let url = redis.url();
    let replica = Binary::start(&toml, &[("REDIS_URL", url.as_str()), ("RB_SECRET", "s3cret")]);
    let view = || async { tenant_entry(&get(&replica.admin_url("/tenants")).await.json(), "rb")["token"].clone() };

    // Version 1 holds token-0: keep its sealed record, still valid ciphertext.
    assert_eq!(get(&replica.url("/rb/x")).await.status, StatusCode::OK);
    let key = redis
        .keys()
        .await
        .into_iter()
        .find(|k| k.ends_with(":token"))
        .expect("a token key");
    let old = redis.server_for(&key).hgetall(&key).await;
    assert_eq!(old["version"], b"1");
    // A 401 renews: token-1 is committed as version 2.
    assert_eq!(
        get(&replica.url("/rb/status/401")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(eventually(Duration::from_secs(5), || async { view().await["store_version"] == 2 }).await);
    let before = view().await;

    // Roll the record back and announce it, as someone with write access to Redis could, or as a
    // failover that lost the last commit leaves it.
    let mut conn = redis.server_for(&key).connection().await;
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("version")
        .arg(&old["version"])
        .arg("sealed")
        .arg(&old["sealed"])
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let channel = key.replace(":token", ":renewed");
    let _: i64 = redis::cmd(redis.publish_command())
        .arg(&channel)
        .arg(1)
        .query_async(&mut conn)
        .await
        .expect("PUBLISH");

    // The replica keeps token-1, and puts it back over the older record.
    let healed = eventually(Duration::from_secs(5), || async {
        redis
            .server_for(&key)
            .hgetall(&key)
            .await
            .get("version")
            .is_some_and(|v| v.as_slice() == b"3")
    })
    .await;
    let after = view().await;
    assert_eq!(after["adopted"], before["adopted"], "{after}\n{}", replica.logs());
    assert_eq!(after["generation"], before["generation"], "{after}");
    assert_eq!(get(&replica.url("/rb/x")).await.status, StatusCode::OK);
    assert_eq!(upstream.last().headers["authorization"], "Bearer token-1");
    assert!(
        healed,
        "the newer token replaced the rolled-back record\n{}",
        replica.logs()
    );
    assert_eq!(idp.calls(), 2, "no token call for the rollback");
}
}
