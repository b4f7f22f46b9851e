//! The shared store (README, "Several replicas") when things go wrong: real replicas (the
//! binary as child processes) on a real `redis-server`, tokens from the IMS fake, counted at the
//! fake. A revoked token under load, Redis killed and restarted empty, and a lease holder killed
//! or frozen in the middle of its token call.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tokenbroker::sandbox::{self, ImsSandbox};
use tokio::time::Instant;

use crate::sandboxed::{IMS_SECRET_LINE, SERVER, SlowRelay, adobe_tenant, ims_with_ttl};
use crate::support::redis::RedisServer;
use crate::support::{self, Binary, eventually, get, sample, tenant_entry};

const TENANT: &str = "adobe";
const UNREACHABLE: &str = "shared store unreachable; tokens are renewed locally until it returns";
const LATE_COMMIT: &str = "late token commit rejected by the store";
/// The renewal lease's life (`token/shared.rs`): a dead or frozen holder's lease lapses after it.
const LEASE_TTL: Duration = Duration::from_secs(5);

// === harness ===

/// Three replicas of one `adobe` tenant on `redis`, tokens from `token_base` (the fake or a relay).
fn replicas(redis: &RedisServer, ims: &ImsSandbox, token_base: &str) -> Vec<Binary> {
    let toml = format!(
        "{SERVER}[store]\nkind = \"redis\"\nurl = {{ env = \"REDIS_URL\" }}\n\
         [token]\nmin_token_age = \"0s\"\n{}",
        adobe_tenant(TENANT, ims, token_base, IMS_SECRET_LINE)
    );
    let url = redis.url();
    let envs = [("REDIS_URL", url.as_str()), ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET)];
    (0..3).map(|_| Binary::start(&toml, &envs)).collect()
}

/// Every replica answers a first request (so each holds the cluster's token).
async fn warm_up(nodes: &[Binary]) {
    for node in nodes {
        let answer = get(&node.url("/adobe/V1/products")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}\n{}", answer.text(), node.logs());
    }
}

/// A GET's status, or `None` when the replica does not answer (killed, frozen) within `limit`.
async fn status_of(url: &str, limit: Duration) -> Option<StatusCode> {
    let request = Request::get(url).body(Full::default()).expect("valid request");
    let response = tokio::time::timeout(limit, support::client().request(request)).await;
    Some(response.ok()?.ok()?.status())
}

/// The `token` object of the tenant in a replica's `/tenants`.
async fn token_state(node: &Binary) -> Value {
    let tenants = get(&node.admin_url("/tenants")).await.json();
    tenant_entry(&tenants, TENANT)["token"].clone()
}

async fn store_state(node: &Binary) -> Value {
    get(&node.admin_url("/tenants")).await.json()["store"].clone()
}

/// The single key whose name ends with `suffix` (`:token`, `:lease`), if it exists.
async fn key_ending(redis: &RedisServer, suffix: &str) -> Option<String> {
    redis.keys().await.into_iter().find(|k| k.ends_with(suffix))
}

/// The token hash's `version` and `sealed` fields, if it exists.
async fn stored(redis: &RedisServer) -> Option<(u64, Vec<u8>)> {
    let key = key_ending(redis, ":token").await?;
    let hash = redis.hgetall(&key).await;
    let version = std::str::from_utf8(hash.get("version")?).ok()?.parse().ok()?;
    Some((version, hash.get("sealed")?.clone()))
}

/// Waits (up to `limit`) until the stored version is at least `to`.
async fn version_reaches(redis: &RedisServer, to: u64, limit: Duration) -> bool {
    eventually(limit, || async { stored_version(redis).await >= Some(to) }).await
}

async fn stored_version(redis: &RedisServer) -> Option<u64> {
    stored(redis).await.map(|(version, _)| version)
}

/// Which replica holds the renewal lease, by the pid that leads its owner value.
async fn lease_holder(redis: &RedisServer, nodes: &[Binary]) -> Option<usize> {
    let key = key_ending(redis, ":lease").await?;
    let owner = String::from_utf8(redis.get(&key).await?).ok()?;
    let pid: u32 = owner.split('-').next()?.parse().ok()?;
    nodes.iter().position(|n| n.pid() == pid)
}

/// How many JSON log lines of `node` have exactly `message`.
fn count_logged(node: &Binary, message: &str) -> usize {
    node.json_logs().iter().filter(|l| l["message"] == message).count()
}

fn all_logs(nodes: &[Binary]) -> String {
    let logs: Vec<String> = nodes.iter().map(Binary::logs).collect();
    logs.join("\n=====\n")
}

/// Retires the cluster's token at the fake and sends one request to each replica in the
/// background, so every replica sees a 401 and asks for a renewal; the tasks yield statuses.
fn revoke_and_poke(ims: &ImsSandbox, nodes: &[Binary]) -> Vec<tokio::task::JoinHandle<Option<StatusCode>>> {
    ims.revoke_all();
    nodes
        .iter()
        .map(|node| {
            let url = node.url("/adobe/V1/products");
            tokio::spawn(async move { status_of(&url, Duration::from_secs(30)).await })
        })
        .collect()
}

/// Waits for a replica to take the lease and returns its index.
async fn wait_for_holder(redis: &RedisServer, nodes: &[Binary]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(holder) = lease_holder(redis, nodes).await {
            return holder;
        }
        assert!(Instant::now() < deadline, "nobody took the lease\n{}", all_logs(nodes));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_under_load_is_renewed_once_for_the_cluster_and_every_body_replayed() {
    let redis = RedisServer::start();
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    // A token call of 300 ms keeps the lease held while the other replicas' 401s arrive.
    let relay = SlowRelay::start(ims.base_url(), Duration::from_millis(300)).await;
    let nodes = replicas(&redis, &ims, &relay.url);
    warm_up(&nodes).await;
    let before = ims.token_calls();
    assert_eq!(
        before,
        1,
        "replicas starting together make one token call\n{}",
        all_logs(&nodes)
    );

    ims.revoke_all();
    let requests: Vec<_> = (0..60)
        .map(|i| {
            let url = nodes[i % nodes.len()].url(&format!("/adobe/V1/orders/{i}"));
            let sent = json!({"order": i, "note": format!("body {i} ").repeat(20 + i)});
            tokio::spawn(async move {
                let bytes = Bytes::from(sent.to_string());
                let request = Request::post(url)
                    .header("content-type", "application/json")
                    .body(Full::new(bytes.clone()))
                    .expect("valid request");
                let answer = support::send(request).await;
                (i, sent, bytes.len(), answer)
            })
        })
        .collect();
    for request in requests {
        let (i, sent, length, answer) = request.await.expect("request task");
        let text = answer.text();
        assert_eq!(answer.status, StatusCode::OK, "request {i}: {text}");
        let seen = answer.sandbox_echo();
        let echo: Value = serde_json::from_str(&text).expect("the fake's JSON echo");
        assert_eq!(echo["body"], sent, "request {i}: the body arrived intact");
        assert_eq!(seen["body_length"], length, "request {i}");
        assert_eq!(seen["method"], "POST", "request {i}");
    }
    // A straggling renewal would land within a poll or two.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        ims.token_calls(),
        before + 1,
        "one renewal for the cluster\n{}",
        all_logs(&nodes)
    );
    let mut fetched = 0;
    for node in &nodes {
        let token = token_state(node).await;
        assert_eq!(token["store_version"], 2, "{token}");
        fetched += usize::from(token["origin"] == "fetched");
    }
    assert_eq!(fetched, 1, "one replica renewed, two adopted");
}

/// Sends GETs to every replica, one after another per replica, until `stop` is set; returns
/// every status that was not 200 (or did not arrive) and how many requests were made.
fn steady_traffic(
    nodes: &[Binary],
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    nodes
        .iter()
        .map(|node| {
            let url = node.url("/adobe/V1/products");
            let stop = std::sync::Arc::clone(stop);
            tokio::spawn(async move {
                let (mut made, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    made += 1;
                    match status_of(&url, Duration::from_secs(10)).await {
                        Some(StatusCode::OK) => {}
                        other => failed.push(format!("{other:?}")),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (made, failed)
            })
        })
        .collect()
}

async fn renewals_ok(node: &Binary) -> u64 {
    token_state(node).await["renewals_ok"].as_u64().expect("renewals_ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_the_replicas_keep_serving_and_renew_alone() {
    let mut redis = RedisServer::start();
    // 6 s tokens are renewed after 3 s: the outage below spans at least one renewal per replica.
    let ims = ims_with_ttl(Duration::from_secs(6)).await;
    let nodes = replicas(&redis, &ims, &ims.base_url());
    warm_up(&nodes).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = steady_traffic(&nodes, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;

    redis.kill();
    let killed_at = Instant::now();
    let calls_at_kill = ims.token_calls();
    let mut renewed_before = Vec::new();
    for node in &nodes {
        renewed_before.push(renewals_ok(node).await);
    }
    for node in &nodes {
        let down = eventually(Duration::from_secs(5), || async {
            store_state(node).await["state"] == "unreachable"
        })
        .await;
        assert!(down, "the replica notices the store is gone\n{}", node.logs());
    }
    // Every replica renews alone at least once (its token lives 6 s) while traffic continues.
    for (node, before) in nodes.iter().zip(&renewed_before) {
        let renewed = eventually(Duration::from_secs(8), || async { renewals_ok(node).await > *before }).await;
        assert!(renewed, "renewal continues with the store down\n{}", node.logs());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut made = 0;
    for task in traffic {
        let (count, failed) = task.await.expect("traffic task");
        assert!(failed.is_empty(), "failed requests: {failed:?}\n{}", all_logs(&nodes));
        made += count;
    }
    assert!(made >= 30, "steady traffic: only {made} requests");
    assert!(
        ims.token_calls() >= calls_at_kill + 3,
        "each replica renewed on its own"
    );
    for node in &nodes {
        let ready = get(&node.admin_url("/readyz")).await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
        assert_eq!(ready.json()["store"]["state"], "unreachable", "{}", ready.text());
        assert_eq!(sample(&node.metrics().await, "tokenbroker_store_up"), Some(0.0));
        assert_eq!(
            count_logged(node, UNREACHABLE),
            1,
            "the outage is logged once, not per request or renewal\n{}",
            node.logs()
        );
    }
    println!("outage observed for {:?}, {made} requests", killed_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_gets_the_token_back_and_sharing_resumes() {
    let mut redis = RedisServer::start();
    let ims = ims_with_ttl(Duration::from_secs(4)).await;
    let nodes = replicas(&redis, &ims, &ims.base_url());
    warm_up(&nodes).await;
    assert!(
        stored_version(&redis).await.is_some(),
        "the token is shared before the outage"
    );

    redis.kill();
    for node in &nodes {
        let down = eventually(Duration::from_secs(5), || async {
            store_state(node).await["state"] == "unreachable"
        })
        .await;
        assert!(down, "the replica notices the store is gone\n{}", node.logs());
    }
    redis.restart_empty();
    assert!(redis.keys().await.is_empty(), "the new server starts empty");
    let restarted = Instant::now();
    let republished = eventually(Duration::from_secs(5), || async {
        stored_version(&redis).await.is_some()
    })
    .await;
    assert!(republished, "a replica puts its token back\n{}", all_logs(&nodes));
    println!("republished {:?} after the restart", restarted.elapsed());
    for node in &nodes {
        let up = eventually(Duration::from_secs(5), || async {
            store_state(node).await["state"] == "up"
        })
        .await;
        assert!(up, "the replica sees the store again\n{}", node.logs());
    }
    // The replicas settle on one version (those that renewed alone meanwhile adopt or publish).
    let converged = eventually(Duration::from_secs(6), || async {
        let Some(version) = stored_version(&redis).await else {
            return false;
        };
        let mut same = true;
        for node in &nodes {
            same &= token_state(node).await["store_version"] == version;
        }
        same
    })
    .await;
    assert!(converged, "the replicas share one token again\n{}", all_logs(&nodes));

    // Then each renewal is one token call for the cluster: count from just after a commit
    // (the next is a renewal period away) over two renewals.
    let start = stored_version(&redis).await.expect("a stored token");
    assert!(
        version_reaches(&redis, start + 1, Duration::from_secs(6)).await,
        "a renewal is committed\n{}",
        all_logs(&nodes)
    );
    let (version, calls) = (stored_version(&redis).await.expect("stored"), ims.token_calls());
    assert!(
        version_reaches(&redis, version + 2, Duration::from_secs(6)).await,
        "renewals continue\n{}",
        all_logs(&nodes)
    );
    let (after, calls_after) = (stored_version(&redis).await.expect("stored"), ims.token_calls());
    assert_eq!(
        calls_after - calls,
        usize::try_from(after - version).expect("small"),
        "one token call per committed renewal\n{}",
        all_logs(&nodes)
    );
    for node in &nodes {
        assert_eq!(count_logged(node, UNREACHABLE), 1, "{}", node.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_killed_mid_renewal_frees_the_lease_for_the_others() {
    let redis = RedisServer::start();
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    let call = Duration::from_secs(3);
    let relay = SlowRelay::start(ims.base_url(), call).await;
    let mut nodes = replicas(&redis, &ims, &relay.url);
    warm_up(&nodes).await;
    let pokes = revoke_and_poke(&ims, &nodes);
    let holder = wait_for_holder(&redis, &nodes).await;
    // Well inside its 3 s token call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        lease_holder(&redis, &nodes).await,
        Some(holder),
        "still in its token call"
    );
    nodes[holder].kill9();
    let killed_at = Instant::now();
    let survivors: Vec<usize> = (0..nodes.len()).filter(|&i| i != holder).collect();
    for &i in &survivors {
        let limit = LEASE_TTL + call + Duration::from_secs(3);
        let status = status_of(&nodes[i].url("/adobe/V1/products"), limit).await;
        assert_eq!(status, Some(StatusCode::OK), "survivor {i}\n{}", all_logs(&nodes));
    }
    let took = killed_at.elapsed();
    println!("the survivors served {took:?} after the holder was killed");
    assert!(took <= LEASE_TTL + call + Duration::from_secs(3), "{took:?}");
    for (i, poke) in pokes.into_iter().enumerate() {
        let status = poke.await.expect("request task");
        if i != holder {
            assert_eq!(status, Some(StatusCode::OK), "the request waiting at survivor {i}");
        }
    }
    // One of the survivors renewed under the lapsed lease; the other adopted its token.
    let mut origins = Vec::new();
    let version = stored_version(&redis).await.expect("a committed token");
    for &i in &survivors {
        let token = token_state(&nodes[i]).await;
        assert_eq!(token["store_version"], version, "survivor {i}: {token}");
        origins.push(token["origin"].as_str().unwrap_or_default().to_owned());
    }
    origins.sort();
    assert_eq!(origins, ["adopted", "fetched"], "{}", all_logs(&nodes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_frozen_past_its_lease_has_its_late_commit_refused() {
    let redis = RedisServer::start();
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    // The frozen holder must wake before its own 10 s token-call timeout: the others need the
    // lease's 5 s plus one call to commit.
    let call = Duration::from_secs(2);
    let relay = SlowRelay::start(ims.base_url(), call).await;
    let nodes = replicas(&redis, &ims, &relay.url);
    warm_up(&nodes).await;
    let (first, _) = stored(&redis).await.expect("the first token is shared");
    let pokes = revoke_and_poke(&ims, &nodes);
    let holder = wait_for_holder(&redis, &nodes).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    nodes[holder].stop();
    let stopped_at = Instant::now();
    // The lease lapses, another replica takes it, renews and commits.
    let renewed = version_reaches(&redis, first + 1, LEASE_TTL + call + Duration::from_secs(2)).await;
    let waited = stopped_at.elapsed();
    if !renewed {
        nodes[holder].cont();
    }
    assert!(renewed, "the others renew past the frozen holder\n{}", all_logs(&nodes));
    assert!(
        waited >= LEASE_TTL - Duration::from_millis(500),
        "not before the lease lapsed: {waited:?}"
    );
    let (version, sealed) = stored(&redis).await.expect("the others' token");
    assert_ne!(lease_holder(&redis, &nodes).await, Some(holder));
    nodes[holder].cont();
    println!("holder frozen for {waited:?}; the others committed version {version}");

    let refused = nodes[holder].logged(LATE_COMMIT, Duration::from_secs(5)).await;
    assert!(
        refused,
        "the woken holder's commit is refused\n{}",
        nodes[holder].logs()
    );
    assert_eq!(
        stored(&redis).await,
        Some((version, sealed)),
        "the store keeps the others' token"
    );
    let converged = eventually(Duration::from_secs(5), || async {
        let mut same = true;
        for node in &nodes {
            same &= token_state(node).await["store_version"] == version;
        }
        same
    })
    .await;
    assert!(
        converged,
        "every replica ends on the store's version\n{}",
        all_logs(&nodes)
    );
    for (i, poke) in pokes.into_iter().enumerate() {
        assert_eq!(
            poke.await.expect("request task"),
            Some(StatusCode::OK),
            "request to {i}"
        );
    }
    for node in &nodes {
        let answer = get(&node.url("/adobe/V1/products")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    // The holder's call and the others' renewal reached the fake; nobody else called.
    assert_eq!(ims.token_calls(), 3, "{}", all_logs(&nodes));
}
