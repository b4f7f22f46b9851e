//! The store topologies the multi-replica suites run on: one `redis-server`, a three-primary
//! Redis Cluster, and a primary with a replica behind three sentinels. A suite writes its
//! scenario once as `async fn(Topology)` inside [`on_each_topology!`], which makes one test per
//! topology (`<scenario>::standalone`, `::cluster`, `::sentinel`), so the same assertions hold
//! on each.

use super::redis::RedisServer;
use super::redis_cluster::RedisCluster;
use super::redis_sentinel::RedisSentinel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Standalone,
    Cluster,
    Sentinel,
}

/// A running Redis of some topology.
pub enum SharedRedis {
    One(RedisServer),
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

impl SharedRedis {
    pub fn start(topology: Topology) -> Self {
        match topology {
            Topology::Standalone => Self::One(RedisServer::start()),
            Topology::Cluster => Self::Cluster(RedisCluster::start(0)),
            Topology::Sentinel => Self::Sentinel(RedisSentinel::start_serving()),
        }
    }

    /// What tokenbroker is given as `url` (any node of a Cluster; with sentinels, only its
    /// scheme counts).
    pub fn url(&self) -> String {
        match self {
            Self::One(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
            Self::Sentinel(_) => "redis://127.0.0.1".to_owned(),
        }
    }

    /// The `[store]` section for this topology; the URL comes from the `REDIS_URL` variable.
    pub fn store_toml(&self) -> String {
        let mode = match self {
            Self::One(_) => "standalone",
            Self::Cluster(_) => "cluster",
            Self::Sentinel(sentinels) => return sentinels.store_toml(),
        };
        format!("[store]\nkind = \"redis\"\nmode = \"{mode}\"\nurl = {{ env = \"REDIS_URL\" }}\n")
    }

    /// The server that holds `key` now (the slot's primary on a Cluster, the primary the
    /// sentinels name), for a test that reads or writes it directly.
    pub fn server_for(&self, key: &str) -> &RedisServer {
        match self {
            Self::One(server) => server,
            Self::Cluster(cluster) => cluster.owner_of(cluster.slot_of(key)),
            Self::Sentinel(sentinels) => sentinels.primary(),
        }
    }

    /// The command the store announces with on this topology (sharded on a Cluster).
    pub fn publish_command(&self) -> &'static str {
        match self {
            Self::Cluster(_) => "SPUBLISH",
            _ => "PUBLISH",
        }
    }

    /// Every key, on every primary.
    pub async fn keys(&self) -> Vec<String> {
        match self {
            Self::One(server) => server.keys().await,
            Self::Cluster(cluster) => cluster.keys().await,
            Self::Sentinel(sentinels) => sentinels.primary().keys().await,
        }
    }
}

/// `on_each_topology! { async fn name(topology: Topology) { ... } }`: the scenario once, a
/// multi-threaded tokio test per topology.
macro_rules! on_each_topology {
    ($(#[doc = $doc:literal])* async fn $name:ident($topology:ident: Topology) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use crate::support::topology::Topology;

            async fn scenario($topology: Topology) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                scenario(Topology::Standalone).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                scenario(Topology::Cluster).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sentinel() {
                scenario(Topology::Sentinel).await;
            }
        }
    };
}

pub(crate) use on_each_topology;
