//! The shared store on a real Redis Cluster (README, "Redis topologies") when the cluster moves
//! under traffic: a slot migrated mid-traffic (`ASK`, then `MOVED`) and a primary killed and
//! failed over to its replica. Three real replicas share one IMS tenant with a cluster-wide
//! bucket; every request must succeed, renewals stay one token call each, and the limiter is
//! back in `shared` mode shortly after the failover. The numbers are printed for the record.

use std::time::Duration;

use serde_json::Value;
use tokenbroker::sandbox::{self, ImsSandbox};
use tokio::time::Instant;

use crate::sandboxed::{IMS_SECRET_LINE, SERVER, adobe_tenant, ims_with_ttl};
use crate::shared_limits::limiters;
use crate::support::redis_cluster::{NODE_TIMEOUT, RedisCluster};
use crate::support::replicas::{self, all_logs, failures, steady};
use crate::support::{Binary, get, tenant_entry};

const TENANT: &str = "adobe";
const PATH: &str = "/adobe/V1/products";

/// Three replicas of one rate-limited IMS tenant on `cluster`, renewing `refresh_before` ahead.
fn replicas_on(cluster: &RedisCluster, ims: &ImsSandbox, refresh_before: &str) -> Vec<Binary> {
    let extra = format!(
        "{IMS_SECRET_LINE}\nrefresh_before = \"{refresh_before}\"\nmin_token_age = \"0s\"\n\
         rate_limit = {{ per_second = 200, burst = 20, max_wait = \"5s\" }}"
    );
    let toml = format!(
        "{SERVER}[store]\nkind = \"redis\"\nmode = \"cluster\"\nurl = {{ env = \"REDIS_URL\" }}\n{}",
        adobe_tenant(TENANT, ims, &ims.base_url(), &extra)
    );
    let url = cluster.url();
    let envs = [("REDIS_URL", url.as_str()), ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET)];
    replicas::start(3, &toml, &envs)
}

async fn store_versions(nodes: &[Binary]) -> Vec<Value> {
    let mut versions = Vec::new();
    for node in nodes {
        let tenants = get(&node.admin_url("/tenants")).await.json();
        versions.push(tenant_entry(&tenants, TENANT)["token"]["store_version"].clone());
    }
    versions
}

/// The tenant's token key, once a replica has committed it.
async fn token_key(cluster: &RedisCluster) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(key) = cluster.keys().await.into_iter().find(|k| k.ends_with(":token")) {
            return key;
        }
        assert!(Instant::now() < deadline, "a token was committed to the cluster");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls every replica's limiter until `limit`: whether one left `shared` mode, and when all
/// were back in it after that (`None`: not within `limit`).
async fn back_to_shared(nodes: &[Binary], since: Instant, limit: Duration) -> (bool, Option<Duration>) {
    let mut left = false;
    while since.elapsed() < limit {
        let shared = limiters(nodes, TENANT).await.iter().all(|l| l["mode"] == "shared");
        left |= !shared;
        if left && shared {
            return (true, Some(since.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (left, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_mid_traffic_loses_no_request_and_sharing_follows_it() {
    const TTL: Duration = Duration::from_secs(4);
    let cluster = RedisCluster::start(0);
    let ims = ims_with_ttl(TTL).await;
    let nodes = replicas_on(&cluster, &ims, "1s");
    let started = Instant::now();
    let drivers = steady(&nodes, &[PATH], started + Duration::from_secs(10));
    let key = token_key(&cluster).await;
    let slot = cluster.slot_of(&key);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = cluster.owner_of(slot).port();
    let to = cluster
        .nodes
        .iter()
        .find(|n| n.port() != from)
        .expect("another primary");
    let version_before = store_versions(&nodes).await;
    cluster.migrate_slot(slot, to);
    let (sent, failed) = failures(drivers).await;
    let elapsed = started.elapsed();
    assert!(
        failed.is_empty() && sent > 100,
        "{} of {sent} failed: {failed:?}\n{}",
        failed.len(),
        all_logs(&nodes)
    );
    assert_eq!(cluster.owner_of(slot).port(), to.port(), "the slot moved");
    assert!(to.keys().await.contains(&key), "the token key moved with its slot");
    let bound = 1 + (elapsed.as_secs_f64() / TTL.mul_f64(0.7).as_secs_f64()).ceil() as usize;
    let calls = ims.token_calls();
    let versions = store_versions(&nodes).await;
    eprintln!(
        "slot migration: {sent} requests, 0 failed; {calls} token calls in {elapsed:?} (bound {bound}); store versions {version_before:?} -> {versions:?}"
    );
    assert!(
        (3..=bound).contains(&calls),
        "{calls} token calls (at most {bound})\n{}",
        all_logs(&nodes)
    );
    assert!(
        versions.iter().all(|v| *v == versions[0]),
        "the replicas share after the move: {versions:?}"
    );
    assert!(
        versions[0].as_u64() > version_before[0].as_u64(),
        "renewed through the moved slot: {version_before:?} -> {versions:?}"
    );
    assert!(limiters(&nodes, TENANT).await.iter().all(|l| l["mode"] == "shared"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failover_under_traffic_fails_no_request_and_sharing_resumes() {
    // Renewed 7 s after a token is obtained: after the failover below, which shows whether the
    // renewal is shared again on the promoted primary.
    const TTL: Duration = Duration::from_secs(10);
    let mut cluster = RedisCluster::start(1);
    let ims = ims_with_ttl(TTL).await;
    let nodes = replicas_on(&cluster, &ims, "3s");
    let started = Instant::now();
    let drivers = steady(&nodes, &[PATH], started + Duration::from_secs(12));
    let key = token_key(&cluster).await;
    let slot = cluster.slot_of(&key);
    let owner = cluster.owner_of(slot).port();
    let killed_at = Instant::now();
    let index = cluster.nodes.iter().position(|n| n.port() == owner).expect("the owner");
    cluster.nodes[index].kill();
    // The limiter leaves `shared` while the slot has no primary, then comes back to it.
    let (left_shared, back) = back_to_shared(&nodes, killed_at, NODE_TIMEOUT * 4 + Duration::from_secs(6)).await;
    let (sent, failed) = failures(drivers).await;
    let calls = ims.token_calls();
    let versions = store_versions(&nodes).await;
    eprintln!(
        "failover: {sent} requests, {} failed; {calls} token calls for 1 renewal; limiter back to shared {back:?} after the kill (left shared: {left_shared}); versions {versions:?}",
        failed.len()
    );
    assert!(
        failed.is_empty() && sent > 100,
        "{} of {sent} failed: {failed:?}\n{}",
        failed.len(),
        all_logs(&nodes)
    );
    assert!(
        back.is_some(),
        "the limiter is shared again within the failover time plus a few seconds\n{}",
        all_logs(&nodes)
    );
    cluster.settle();
    assert_eq!(
        calls,
        2,
        "the first token and one shared renewal after the failover\n{}",
        all_logs(&nodes)
    );
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
}
