//! The store's one connection, whatever the topology: one server through redis-rs's
//! `ConnectionManager` (reconnects and resubscribes on its own), or a Redis Cluster through its
//! async `ClusterConnection` (discovers the slots, follows `MOVED`/`ASK` and failovers, and moves
//! sharded subscriptions to a slot's new owner). Commands see one `ConnectionLike` either way.
//!
//! Announcements: on one server the scripts `PUBLISH` and the store listens with one pattern
//! subscription. On a Cluster a plain `PUBLISH` is copied to every node over the cluster bus, so
//! the scripts `SPUBLISH` to the key's own shard instead, and the store `SSUBSCRIBE`s to each
//! channel it has a token manager or a bucket for: the channels share their keys' hash tag, so
//! each lives on the node that runs the script.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushInfo, RedisFuture, Value};
use tokio::sync::mpsc;

use super::connect;
use super::errors::RedisSetupError;
use super::sentinel::Sentinels;
use crate::config::{RedisConfig, RedisMode};

/// A handle on the store's connection; cloning it is cheap (one multiplexed link underneath).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// A primary found through the sentinels (see `sentinel.rs`).
    Sentinel(Arc<Sentinels>),
}

impl Conn {
    /// The connection `config` asks for, opened lazily: nothing is dialled until the first
    /// command, so a Redis that is down at startup is a degraded state, not an error.
    pub(super) fn open(config: &RedisConfig, pushes: mpsc::UnboundedSender<PushInfo>) -> Result<Self, RedisSetupError> {
        let info = connect::connection_info(config)?;
        match &config.mode {
            RedisMode::Standalone => {
                let client = connect::client(info, config.ca_file.as_deref())?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.command_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(std::time::Duration::from_secs(2))
                    .set_push_sender(pushes)
                    .set_automatic_resubscription();
                ConnectionManager::new_lazy_with_config(client, manager_config)
                    .map(Self::Single)
                    .map_err(|_| RedisSetupError("the connection settings were refused"))
            }
            RedisMode::Cluster => {
                let mut builder = ClusterClientBuilder::new([info])
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.command_timeout)
                    .retries(3)
                    .push_sender(pushes);
                if let Some(ca_file) = config.ca_file.as_deref() {
                    builder = builder.certs(connect::certificates(ca_file)?);
                }
                let client = builder
                    .build()
                    .map_err(|_| RedisSetupError("the cluster settings were refused"))?;
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(ClusterConfig::new()),
                ))
            }
            RedisMode::Sentinel { sentinels, master_name } => Ok(Self::Sentinel(Arc::new(Sentinels::new(
                config,
                sentinels,
                master_name,
                pushes,
            )?))),
        }
    }

    /// Whether announcements go through sharded channels (a Cluster) or plain ones.
    pub(super) fn is_sharded(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The command the scripts announce with: `PUBLISH`, or `SPUBLISH` on a Cluster.
    pub(super) fn publish_command(&self) -> &'static str {
        if self.is_sharded() { "SPUBLISH" } else { "PUBLISH" }
    }

    /// Whether the subscription must be checked on every health round: a Cluster gets new
    /// channels, a sentinel-managed primary may have changed. One server is subscribed once.
    pub(super) fn resubscribes(&self) -> bool {
        !matches!(self, Self::Single(_))
    }

    /// Listens on `pattern` (one server, or the primary a sentinel named) or on each of
    /// `channels` (a Cluster).
    pub(super) async fn listen(&mut self, pattern: &str, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Self::Single(conn) => conn.psubscribe(pattern).await,
            Self::Sentinel(sentinels) => sentinels.listen(pattern).await,
            Self::Cluster(conn) if channels.is_empty() => Ok(()),
            Self::Cluster(conn) => conn.ssubscribe(channels).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(sentinels) => sentinels.command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(sentinels) => sentinels.pipeline(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(sentinels) => sentinels.db(),
        }
    }
}
