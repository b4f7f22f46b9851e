//! `[store] mode`: how the shared store reaches Redis. Its own file so that the topology can
//! grow without crowding the configuration's other types.

/// `[store] mode` (README, "Redis topologies").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    /// `url` is the server.
    Standalone,
    /// `url` is any node of a Redis Cluster; the rest is discovered.
    Cluster,
    /// The primary named `master_name` is asked of `sentinels` (`host:port` each); `url` gives
    /// only the scheme, the credentials and the database.
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
    },
}
