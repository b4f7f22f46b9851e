//! Cluster-wide rate limits (README, "Several replicas"; `docs/architecture.md#rate-limiting`):
//! with `[store] kind = "redis"` a tenant's quota belongs to the upstream account, so several real
//! binaries on one real `redis-server` together send no more than one replica may.
//!
//! First the bucket's Lua scripts through the crate's API against a real Redis (slot arithmetic,
//! `max_wait` refusal, pause), then three replicas against the CYBERBIZ and SHOPLINE fakes and the
//! recording upstream, whose arrival times (the test's clock) are the witness. Real time is
//! unavoidable (sockets, processes), so assertions allow tens of milliseconds of jitter; a limit
//! kept per replica would miss them by whole seconds or by multiples of the quota.

use std::time::Duration;

use http::{HeaderName, StatusCode};
use tokenbroker::config::{
    CallerClass, ProviderConfig, RedisConfig, RedisMode, Secret, StaticConfig, StoreConfig, TenantName,
};
use tokenbroker::sandbox::{self, CyberbizOptions, CyberbizSandbox, ShoplineOptions, ShoplineSandbox};
use tokenbroker::store::{Ask, RedisBucket, Reservation, Store, StoreKey};
use tokio::time::Instant;

use crate::rate_limit::{assert_our_429, fire};
use crate::sandboxed::shopline_tenant;
use crate::support::redis::RedisServer;
use crate::support::replicas::{self, REDIS_STORE, all_logs};
use crate::support::tenants::static_tenant_from;
use crate::support::topology::{SharedRedis, on_each_topology};
use crate::support::upstream::Upstream;
use crate::support::{Binary, eventually, get, sample, tenant_entry};

/// Jitter between a slot's time on Redis's clock and the request's arrival upstream. On the
/// 2-core test machine, with the rest of the suite running beside these processes, 60 ms was
/// exceeded about once in three runs; the envelope still fails by tens of requests for a
/// bucket per replica (3 × the quota) or none.
const JITTER: Duration = Duration::from_millis(150);
/// A `[server]` whose request timeout outlasts every `max_wait` below.
const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nrequest_timeout = \"30s\"\n";

pub(crate) fn shared_config(tenants: &str) -> String {
    format!("{SERVER}{REDIS_STORE}{tenants}")
}

/// As [`shared_config`], on `redis`'s topology.
pub(crate) fn shared_config_on(redis: &SharedRedis, tenants: &str) -> String {
    format!("{SERVER}{}{tenants}", redis.store_toml())
}

// === the scripts, through the crate's API ===

/// A bucket on `redis` for a static credential, and the Redis key it keeps its slot time in.
pub(crate) async fn bucket_on(redis: &RedisServer) -> (Store, RedisBucket, String) {
    let store = Store::open(&StoreConfig::Redis(RedisConfig {
        url: Secret::new(redis.url()),
        key_prefix: "tokenbroker".to_owned(),
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        seal_secret: None,
        mode: RedisMode::Standalone,
        ca_file: None,
    }))
    .expect("a valid redis:// URL");
    let key = StoreKey::new(
        &TenantName::try_new("rl").expect("a valid tenant name"),
        &ProviderConfig::Static(StaticConfig {
            header: HeaderName::from_static("authorization"),
            value: Secret::new("Bearer script-test".to_owned()),
            expires_at: None,
        }),
    );
    let bucket = store.bucket(&key).expect("the Redis store has cluster buckets");
    let base = format!("tokenbroker:{{{}}}", key.name());
    (store, bucket, base)
}

/// A standard request's ask on a tenant whose callers are all standard (it reserves ahead).
pub(crate) fn ask(period: Duration, burst: u32, max_wait: Duration) -> Ask {
    Ask {
        period,
        burst,
        max_wait,
        class: CallerClass::Standard,
        ahead: true,
        batch_every: 10,
    }
}

async fn granted(bucket: &RedisBucket, period: Duration, burst: u32, max_wait: Duration) -> Duration {
    match bucket
        .reserve(&ask(period, burst, max_wait))
        .await
        .expect("redis answers")
    {
        Reservation::Granted(wait) => wait,
        other => panic!("{other:?} within max_wait {max_wait:?}"),
    }
}

const PERIOD: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn script_hands_out_the_burst_at_once_then_one_slot_per_period() {
    let redis = RedisServer::start();
    let (_store, bucket, base) = bucket_on(&redis).await;
    let began = Instant::now();
    let mut waits = Vec::new();
    for _ in 0..7 {
        waits.push(granted(&bucket, PERIOD, 3, LONG).await);
    }
    let elapsed = began.elapsed();
    assert!(
        waits[..3].iter().all(Duration::is_zero),
        "burst of 3 at once: {waits:?}"
    );
    for (k, wait) in waits.iter().enumerate().skip(3) {
        // Slot k is (k - 2) periods after the first call; the calls themselves took `elapsed`.
        let slot = PERIOD * (k as u32 - 2);
        assert!(
            *wait <= slot && *wait + elapsed >= slot,
            "slot {k}: waited {wait:?}, expected {slot:?} less the {elapsed:?} the calls took: {waits:?}"
        );
    }
    for pair in waits[3..].windows(2) {
        let step = pair[1].saturating_sub(pair[0]);
        assert!(
            step <= PERIOD && step + elapsed >= PERIOD,
            "waits grow by one period: {waits:?}"
        );
    }
    // The slot time lives under the tenant's hash tag and expires once the bucket is idle again.
    let stored = redis.get(&format!("{base}:bucket")).await.expect("the bucket key");
    assert!(std::str::from_utf8(&stored).is_ok_and(|s| s.parse::<u64>().is_ok()));
    let ttl = redis.ttl_ms(&format!("{base}:bucket")).await;
    assert!((1_000..=2_000).contains(&ttl), "idle expiry {ttl} ms");
}

#[tokio::test]
async fn script_refusal_beyond_max_wait_reserves_nothing() {
    let redis = RedisServer::start();
    let (_store, bucket, base) = bucket_on(&redis).await;
    let max_wait = Duration::from_millis(250);
    for _ in 0..3 {
        granted(&bucket, PERIOD, 1, max_wait).await;
    }
    let before = redis.get(&format!("{base}:bucket")).await;
    let began = Instant::now();
    let mut refusals = Vec::new();
    for _ in 0..3 {
        match bucket.reserve(&ask(PERIOD, 1, max_wait)).await.expect("redis answers") {
            Reservation::Refused(wait) => refusals.push(wait),
            other => panic!("{other:?} beyond max_wait"),
        }
    }
    assert_eq!(
        redis.get(&format!("{base}:bucket")).await,
        before,
        "a refusal changed the bucket"
    );
    // The honest Retry-After: the fourth slot, 300 ms after the first, whichever refusal asks.
    for wait in &refusals {
        assert!(
            *wait > max_wait && *wait <= PERIOD * 3,
            "refused with {wait:?}: {refusals:?}"
        );
    }
    // With room to wait, the next request gets that same fourth slot, not a fifth.
    let wait = granted(&bucket, PERIOD, 1, LONG).await;
    assert!(
        wait <= refusals[0] && wait + began.elapsed() >= refusals[0],
        "after three refusals the next slot is {wait:?}, not {:?}",
        refusals[0]
    );
}

#[tokio::test]
async fn script_pause_pushes_the_next_slot_past_it_and_is_announced() {
    let redis = RedisServer::start();
    let (_store, bucket, base) = bucket_on(&redis).await;
    // The announcement needs this process's pattern subscription in place.
    let mut conn = redis.connection().await;
    let subscribed = eventually(Duration::from_secs(5), || {
        let mut conn = conn.clone();
        async move {
            let patterns: i64 = redis::cmd("PUBSUB")
                .arg("NUMPAT")
                .query_async(&mut conn)
                .await
                .expect("PUBSUB NUMPAT");
            patterns == 1
        }
    })
    .await;
    assert!(subscribed, "the store never subscribed");
    let _: () = redis::cmd("PING").query_async(&mut conn).await.expect("ping");

    assert_eq!(granted(&bucket, PERIOD, 1, LONG).await, Duration::ZERO);
    bucket.pause(Duration::from_secs(1)).await.expect("redis answers");
    // A shorter pause later never shortens a longer one in force.
    bucket.pause(Duration::from_millis(200)).await.expect("redis answers");
    let after_pause = granted(&bucket, PERIOD, 1, LONG).await;
    let next = granted(&bucket, PERIOD, 1, LONG).await;
    let slack = Duration::from_millis(100);
    assert!(
        after_pause <= Duration::from_secs(1) && after_pause + slack >= Duration::from_secs(1),
        "the first slot after a 1 s pause is {after_pause:?} away"
    );
    assert!(
        next.saturating_sub(after_pause) <= PERIOD && next.saturating_sub(after_pause) + slack >= PERIOD,
        "then one per period: {after_pause:?}, {next:?}"
    );
    let ttl = redis.ttl_ms(&format!("{base}:pause")).await;
    assert!((1_000..=2_000).contains(&ttl), "the pause key lives {ttl} ms");
    // Announced as a length and turned into a deadline on this process's clock on receipt.
    let announced = eventually(Duration::from_secs(2), || async {
        bucket.paused_until().is_some_and(|until| {
            let left = until.saturating_duration_since(Instant::now());
            left > Duration::ZERO && left <= Duration::from_secs(1)
        })
    })
    .await;
    assert!(
        announced,
        "the pause's end was not announced: {:?}",
        bucket.paused_until()
    );
}

// === three replicas ===

/// A replica's `/tenants` limiter for `tenant`.
async fn limiter(node: &Binary, tenant: &str) -> serde_json::Value {
    let tenants = get(&node.admin_url("/tenants")).await.json();
    tenant_entry(&tenants, tenant)["limiter"].clone()
}

/// Every replica's limiter for `tenant`, in replica order.
pub(crate) async fn limiters(nodes: &[Binary], tenant: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for node in nodes {
        all.push(limiter(node, tenant).await);
    }
    all
}

/// Waits (bounded by `limit`) until every replica's limiter for `tenant` is in `mode`.
pub(crate) async fn until_mode(nodes: &[Binary], tenant: &str, mode: &str, limit: Duration) {
    let reached = eventually(limit, || async move {
        limiters(nodes, tenant).await.iter().all(|l| l["mode"] == mode)
    })
    .await;
    assert!(
        reached,
        "not every replica's limiter became {mode}: {:?}\n{}",
        limiters(nodes, tenant).await,
        all_logs(nodes)
    );
}

/// The sum over replicas of one limiter counter.
async fn total(nodes: &[Binary], tenant: &str, field: &str) -> u64 {
    limiters(nodes, tenant)
        .await
        .iter()
        .map(|l| l[field].as_u64().expect("a counter"))
        .sum()
}

/// The first window `[a_i, a_j]` that holds more than `burst + rate * (t + JITTER)` arrivals, `t`
/// being its length, if any: the GCRA envelope, checked for every window the arrivals span.
pub(crate) fn envelope_breach(arrivals: &[Instant], burst: u32, rate: u32) -> Option<String> {
    let mut times = arrivals.to_vec();
    times.sort();
    for i in 0..times.len() {
        for j in i..times.len() {
            let span = times[j] - times[i];
            let allowed = f64::from(burst) + f64::from(rate) * (span + JITTER).as_secs_f64();
            if (j - i + 1) as f64 > allowed {
                return Some(format!(
                    "{} arrivals within {span:?} (at most {allowed:.1}); ms since the first: {:?}",
                    j - i + 1,
                    offsets_ms(&times)
                ));
            }
        }
    }
    None
}

pub(crate) fn offsets_ms(times: &[Instant]) -> Vec<u128> {
    let first = times.iter().min().copied();
    times
        .iter()
        .map(|t| first.map_or(0, |f| t.duration_since(f).as_millis()))
        .collect()
}

on_each_topology! {
async fn cyberbiz_45_at_once_on_three_replicas_stay_at_five_in_any_second(topology: Topology) {
    let redis = SharedRedis::start(topology);
    let cb = CyberbizSandbox::start(CyberbizOptions::default())
        .await
        .expect("start the CYBERBIZ fake");
    let token = cb.token();
    let tenant = format!(
        "\n[[tenant]]\nname = \"cb\"\nprovider = \"cyberbiz\"\nupstream = \"{}\"\ntoken = {{ env = \"CB_TOKEN\" }}\nrate_limit = {{ per_second = 5, burst = 1, max_wait = \"20s\" }}\n",
        cb.base_url()
    );
    let url = redis.url();
    let nodes = replicas::start(3, &shared_config_on(&redis, &tenant), &[("REDIS_URL", &url), ("CB_TOKEN", &token)]);
    until_mode(&nodes, "cb", "shared", Duration::from_secs(5)).await;

    let began = Instant::now();
    let answers = fire((0..45).map(|i| nodes[i % 3].url("/cb/v1/products")).collect()).await;
    let took = began.elapsed();
    let mut timeline: Vec<(u128, u16)> = answers
        .iter()
        .map(|(a, t)| (t.as_millis(), a.status.as_u16()))
        .collect();
    timeline.sort_unstable();
    let (over, peak) = (cb.requests_over_limit(), cb.max_requests_in_any_second());
    assert!(
        over == 0 && peak <= 5 && timeline.iter().all(|(_, s)| *s == 200),
        "{peak} requests reached CYBERBIZ within one second, {over} over its limit: {timeline:?}\n{}",
        all_logs(&nodes)
    );
    assert_eq!(cb.api_calls(), 45);
    // One bucket for the account: 44 slots 200 ms apart after the first.
    assert!(took >= Duration::from_secs(8), "45 requests done in {took:?}");
    assert_eq!(total(&nodes, "cb", "granted_total").await, 45);
    for node in &nodes {
        let metrics = node.metrics().await;
        assert_eq!(
            sample(&metrics, r#"tokenbroker_ratelimit_shared{tenant="cb"}"#),
            Some(1.0),
            "{metrics}"
        );
    }
}
}

const SHOP_PATH: &str = "/shop/admin/openapi/v20230901/products/products.json";

/// A SHOPLINE fake whose bucket holds one request more than SHOPLINE's: the preset grants slots at
/// exactly SHOPLINE's rate, so the first slot after the burst can arrive a few ms early relative to
/// the burst's first (which opened a connection) and overflow an exact bucket by one. The witness
/// is the envelope of the arrivals (`envelope_breach`), not the fake's verdict.
pub(crate) async fn shopline_witness() -> ShoplineSandbox {
    ShoplineSandbox::start(ShoplineOptions {
        burst: 41,
        ..ShoplineOptions::default()
    })
    .await
    .expect("start the SHOPLINE fake")
}

on_each_topology! {
async fn shopline_preset_120_at_once_on_three_replicas_stay_within_the_bucket(topology: Topology) {
    let redis = SharedRedis::start(topology);
    let shop = shopline_witness().await;
    let extra = "app_secret = { env = \"SHOPLINE_SECRET\" }\ncode = { env = \"SHOPLINE_CODE\" }";
    // The preset (4/s, burst 40, max_wait 5 s) is under test, so the helper's `rate_limit = false` goes.
    let tenant = shopline_tenant("shop", &shop, &shop.base_url(), extra).replace("rate_limit = false\n", "");
    let url = redis.url();
    let envs = [
        ("REDIS_URL", url.as_str()),
        ("SHOPLINE_SECRET", sandbox::SHOPLINE_APP_SECRET),
        ("SHOPLINE_CODE", sandbox::SHOPLINE_AUTH_CODE),
    ];
    let nodes = replicas::start(3, &shared_config_on(&redis, &tenant), &envs);
    until_mode(&nodes, "shop", "shared", Duration::from_secs(5)).await;
    // Each replica gets the shared token; then both buckets refill (3 slots: 750 ms).
    for node in &nodes {
        let answer = get(&node.url(SHOP_PATH)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let since = Instant::now();
    let answers = fire((0..120).map(|i| nodes[i % 3].url(SHOP_PATH)).collect()).await;
    let arrivals: Vec<Instant> = shop.api_arrivals().into_iter().filter(|t| *t >= since).collect();
    let ok = answers.iter().filter(|(a, _)| a.status == StatusCode::OK).count();
    assert_eq!(
        shop.throttled_calls(),
        0,
        "SHOPLINE itself throttled; arrivals, ms: {:?}",
        offsets_ms(&arrivals)
    );
    for (answer, took) in answers.iter().filter(|(a, _)| a.status != StatusCode::OK) {
        assert_our_429(answer);
        assert!(*took < Duration::from_secs(1), "refused only after {took:?}");
    }
    assert_eq!(arrivals.len(), ok, "a refused request reached SHOPLINE");
    // 40 at once, then one per 250 ms up to max_wait 5 s: about 60 in all, the rest refused.
    assert!(
        (57..=62).contains(&ok),
        "{ok} admitted; ms: {:?}",
        offsets_ms(&arrivals)
    );
    if let Some(breach) = envelope_breach(&arrivals, 40, 4) {
        panic!("over 40 + 4·t: {breach}");
    }
    assert_eq!(total(&nodes, "shop", "rejected_total").await, 120 - ok as u64);
}
}

/// The recording upstream behind a static tenant `t` with `limit`, on three replicas.
async fn static_replicas(redis: &SharedRedis, upstream: &Upstream, limit: &str) -> Vec<Binary> {
    let tenant = static_tenant_from("t", &upstream.url(), "VALUE", &format!("rate_limit = {limit}"));
    let url = redis.url();
    let envs = [("REDIS_URL", url.as_str()), ("VALUE", "Bearer static-token")];
    let nodes = replicas::start(3, &shared_config_on(redis, &tenant), &envs);
    until_mode(&nodes, "t", "shared", Duration::from_secs(5)).await;
    nodes
}

/// Waits (bounded) until the upstream has received `n` requests.
async fn until_started(upstream: &Upstream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.started() < n {
        assert!(Instant::now() < deadline, "the upstream never saw {n} requests");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

on_each_topology! {
async fn an_upstream_429_on_one_replica_holds_every_replica_for_its_retry_after(topology: Topology) {
    let redis = SharedRedis::start(topology);
    let upstream = Upstream::start().await;
    let nodes = static_replicas(&redis, &upstream, r#"{ per_second = 2, burst = 1, max_wait = "10s" }"#).await;

    // The 429 (Retry-After: 2) takes 200 ms to come back, so four requests on the other replicas
    // reserve their slots (+0.5 s ... +2 s) before anyone knows of it.
    let throttled_url = nodes[0].url("/t/status/429?delay_ms=200");
    let throttled = tokio::spawn(async move { get(&throttled_url).await });
    until_started(&upstream, 1).await;
    let queued = tokio::spawn(fire(
        (0..4)
            .map(|i| nodes[1 + i % 2].url(&format!("/t/queued/{i}")))
            .collect(),
    ));
    let answer = throttled.await.expect("the throttled request");
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        answer.headers.get("tokenbroker-error").is_none(),
        "the upstream's own 429"
    );
    assert_eq!(answer.headers["retry-after"], "2");
    // And requests arriving after it, on every replica.
    let later = fire((0..3).map(|i| nodes[i].url(&format!("/t/later/{i}"))).collect()).await;
    let queued = queued.await.expect("the queued requests");
    for (answer, _) in queued.iter().chain(&later) {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }

    let recorded = upstream.recorded();
    let throttled_at = recorded
        .iter()
        .find(|r| r.target.starts_with("/status/429"))
        .expect("the 429 request")
        .arrived;
    // The pause starts when the 429 is read, 200 ms after the upstream received its request.
    let pause_end = throttled_at + Duration::from_millis(2_200);
    let others: Vec<Instant> = recorded
        .iter()
        .filter(|r| !r.target.starts_with("/status/"))
        .map(|r| r.arrived)
        .collect();
    assert_eq!(others.len(), 7);
    let early: Vec<_> = others
        .iter()
        .filter(|t| **t + JITTER < pause_end)
        .map(|t| t.duration_since(throttled_at).as_millis())
        .collect();
    assert!(
        early.is_empty(),
        "sent during the 2 s pause, ms after the 429's request: {early:?}\n{}",
        all_logs(&nodes)
    );
    let first = others.iter().min().expect("arrivals").duration_since(throttled_at);
    assert!(first < Duration::from_millis(3_000), "the pause lasted until {first:?}");
}
}

on_each_topology! {
async fn a_slot_beyond_max_wait_is_refused_at_once_on_any_replica_and_not_consumed(topology: Topology) {
    let redis = SharedRedis::start(topology);
    let upstream = Upstream::start().await;
    let nodes = static_replicas(
        &redis,
        &upstream,
        r#"{ per_second = 1, burst = 1, max_wait = "2500ms" }"#,
    )
    .await;

    // Slots at +0, +1 and +2 s, one per replica: all within max_wait.
    let held = tokio::spawn(fire((0..3).map(|i| nodes[i].url(&format!("/t/held/{i}"))).collect()));
    let reserved = eventually(Duration::from_secs(2), || async {
        upstream.started() == 1 && total(&nodes, "t", "waiting").await == 2
    })
    .await;
    assert!(reserved, "three slots were not reserved");
    let standard: u64 = limiters(&nodes, "t")
        .await
        .iter()
        .map(|l| l["waiting_by_class"]["standard"].as_u64().expect("a count"))
        .sum();
    assert_eq!(standard, 2, "anonymous requests wait as standard");
    let first_at = upstream.recorded()[0].arrived;
    // The next slot is +3 s: more than 2.5 s away for the next 500 ms.
    let began = Instant::now();
    let refused = get(&nodes[0].url("/t/refused")).await;
    let took = began.elapsed();
    assert!(
        first_at.elapsed() < Duration::from_millis(500),
        "too slow to test: {:?}",
        first_at.elapsed()
    );
    assert_eq!(assert_our_429(&refused), 3, "Retry-After: the +3 s slot, rounded up");
    assert!(took < Duration::from_millis(300), "refused only after {took:?}");

    // Had the refusal taken the +3 s slot, this one's (+4 s) would be past max_wait too.
    tokio::time::sleep_until(first_at + Duration::from_millis(800)).await;
    let next = get(&nodes[1].url("/t/next")).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text());
    for (answer, _) in held.await.expect("the held requests") {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    let recorded = upstream.recorded();
    let next_at = recorded
        .iter()
        .find(|r| r.target == "/next")
        .expect("the next request reached the upstream")
        .arrived
        .duration_since(first_at);
    assert!(
        next_at >= Duration::from_millis(2_950) && next_at < Duration::from_millis(3_300),
        "the request after the refusal went at +{next_at:?}, not at the +3 s slot"
    );
    assert!(recorded.iter().all(|r| r.target != "/refused"));
    assert_eq!(total(&nodes, "t", "rejected_total").await, 1);
    assert_eq!(total(&nodes, "t", "granted_total").await, 4);
}
}

/// Closed-loop callers, `per_replica` on each replica, GETting `/t/r<replica>/...` until `stop`;
/// each answer must come within `ANSWER_LIMIT` (a hung request fails the test). Every status.
async fn closed_loops(
    nodes: &[Binary],
    per_replica: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<StatusCode> {
    const ANSWER_LIMIT: Duration = Duration::from_secs(12);
    let loops: Vec<_> = (0..nodes.len() * per_replica)
        .map(|n| {
            let base = nodes[n % nodes.len()].url(&format!("/t/r{}/loop{n}", n % nodes.len()));
            let stop = std::sync::Arc::clone(&stop);
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let url = format!("{base}/{}", statuses.len());
                    let answer = tokio::time::timeout(ANSWER_LIMIT, get(&url))
                        .await
                        .unwrap_or_else(|_| panic!("{url} hung for {ANSWER_LIMIT:?}"));
                    statuses.push(answer.status);
                }
                statuses
            })
        })
        .collect();
    let mut all = Vec::new();
    for caller in loops {
        all.extend(caller.await.expect("a caller loop"));
    }
    all
}

/// Arrivals at the upstream within `[from, to)`, of replica `replica` or (`None`) of all.
fn arrivals_between(upstream: &Upstream, replica: Option<usize>, from: Instant, to: Instant) -> Vec<Instant> {
    let prefix = replica.map(|r| format!("/r{r}/"));
    upstream
        .recorded()
        .into_iter()
        .filter(|r| prefix.as_ref().is_none_or(|p| r.target.starts_with(p.as_str())))
        .map(|r| r.arrived)
        .filter(|t| *t >= from && *t < to)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_each_replica_keeps_a_third_and_sharing_resumes_without_a_burst() {
    let mut shared = SharedRedis::One(RedisServer::start());
    let upstream = Upstream::start().await;
    let nodes = static_replicas(&shared, &upstream, r#"{ per_second = 9, burst = 3, max_wait = "10s" }"#).await;
    let SharedRedis::One(redis) = &mut shared else {
        unreachable!("one server")
    };
    let mut conn = redis.connection().await;
    let registered = eventually(Duration::from_secs(5), || {
        let mut conn = conn.clone();
        async move {
            let n: u64 = redis::cmd("ZCARD")
                .arg("tokenbroker:replicas")
                .query_async(&mut conn)
                .await
                .expect("ZCARD");
            n == 3
        }
    })
    .await;
    assert!(registered, "the replicas never registered");
    let _: () = redis::cmd("PING").query_async(&mut conn).await.expect("ping");
    drop(conn);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = closed_loops(&nodes, 3, stop.clone());
    tokio::pin!(load);
    let phases = async {
        // Shared, and long enough for every replica's heartbeat to count all three.
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        redis.kill();
        until_mode(&nodes, "t", "fallback", Duration::from_secs(5)).await;
        let fallback_from = Instant::now();
        for state in limiters(&nodes, "t").await {
            assert_eq!(state["divided_by"], 3, "{state}");
        }
        let metrics = nodes[0].metrics().await;
        assert_eq!(
            sample(&metrics, r#"tokenbroker_ratelimit_shared{tenant="t"}"#),
            Some(0.0)
        );
        // Slots reserved on Redis before the kill (up to 1 s ahead) are still sent meanwhile.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let fallback_to = Instant::now();
        redis.restart_empty();
        let restarted = Instant::now();
        until_mode(&nodes, "t", "shared", Duration::from_secs(10)).await;
        let shared_again = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (fallback_from, fallback_to, restarted, shared_again)
    };
    let ((fallback_from, fallback_to, restarted, shared_again), statuses) = tokio::join!(phases, &mut load);
    let end = Instant::now();

    let failed: Vec<_> = statuses.iter().filter(|s| **s != StatusCode::OK).collect();
    assert!(
        failed.is_empty() && statuses.len() > 50,
        "{} of {} requests failed: {failed:?}\n{}",
        failed.len(),
        statuses.len(),
        all_logs(&nodes)
    );
    let fallback_from = fallback_from + Duration::from_millis(1_200);
    let outage = fallback_to - fallback_from;
    for replica in 0..3 {
        let own = arrivals_between(&upstream, Some(replica), fallback_from, fallback_to);
        // A third of 9/s, burst 3 / 3 = 1: over the outage about 3 per second each.
        let most = 1.0 + 3.0 * (outage + JITTER).as_secs_f64();
        assert!(
            own.len() as f64 <= most && own.len() as f64 >= 0.6 * 3.0 * outage.as_secs_f64(),
            "replica {replica} sent {} in {outage:?} without Redis: {:?}",
            own.len(),
            offsets_ms(&own)
        );
        if let Some(breach) = envelope_breach(&own, 1, 3) {
            panic!("replica {replica} beyond a third of the rate: {breach}");
        }
    }
    // Once every replica is back on the shared bucket, its envelope holds exactly (the fresh
    // bucket's burst of 3 included). Before that, a replica that has not yet seen Redis return
    // still sends on its local share: at most one slot each beyond the envelope.
    let since_shared = arrivals_between(&upstream, None, shared_again, end);
    if let Some(breach) = envelope_breach(&since_shared, 3, 9) {
        panic!("with every replica shared again, beyond burst 3 + 9·t: {breach}");
    }
    let since_restart = arrivals_between(&upstream, None, restarted, end);
    if let Some(breach) = envelope_breach(&since_restart, 3 + 3, 9) {
        panic!(
            "after Redis returned (all shared after {:?}), beyond 3 + 3 + 9·t: {breach}",
            shared_again - restarted
        );
    }
}
