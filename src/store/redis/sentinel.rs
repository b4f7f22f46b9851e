//! `mode = "sentinel"`: the primary is asked of the sentinels, and asked again whenever a command
//! finds it gone.
//!
//! redis-rs's own Sentinel client asks once and then keeps its connection: it does not follow a
//! failover (redis-rs #1438), and a `ConnectionManager` over it would redial the old address for
//! ever, or serve reads from the old primary once it returns as a replica. So the store keeps the
//! primary's address itself: a command that fails as "unreachable" (no connection, no answer in
//! time, `-READONLY` from a demoted primary, `-MASTERDOWN`) drops the connection, and the next
//! command asks the sentinels again. During a failover the sentinels still name the dead primary
//! until they agree on a new one; commands fail meanwhile, which the store reports as unreachable
//! (tokens local, limiter in `fallback`), and the first command after the promotion lands on the
//! new primary. Nothing waits longer than `connect_timeout` for an answer from the sentinels.
//!
//! The sentinels are reached with the URL's scheme (and `ca_file`), without its credentials,
//! which belong to the data nodes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline, PushInfo, RedisConnectionInfo,
    RedisError, RedisResult, Value,
};
use tokio::sync::{Mutex, mpsc};

use super::connect;
use super::errors::{RedisSetupError, is_unreachable};
use crate::config::RedisConfig;

/// A sentinel-managed primary: where it is now, and how to ask again.
pub(super) struct Sentinels {
    sentinels: Vec<String>,
    master_name: String,
    /// The URL as given: its scheme, credentials and database apply to the primary.
    template: ConnectionInfo,
    ca_file: Option<PathBuf>,
    connect_timeout: Duration,
    command_timeout: Duration,
    pushes: mpsc::UnboundedSender<PushInfo>,
    /// The primary's connection and its generation; `None` until asked, or after it failed.
    current: Mutex<Option<(ConnectionManager, u64)>>,
    generations: AtomicU64,
    /// The generation the announcement pattern was subscribed on.
    listened: AtomicU64,
}

impl Sentinels {
    pub(super) fn new(
        config: &RedisConfig,
        sentinels: &[String],
        master_name: &str,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> Result<Self, RedisSetupError> {
        Ok(Self {
            sentinels: sentinels.to_vec(),
            master_name: master_name.to_owned(),
            template: connect::connection_info(config)?,
            ca_file: config.ca_file.clone(),
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            pushes,
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            listened: AtomicU64::new(0),
        })
    }

    pub(super) fn db(&self) -> i64 {
        self.template.redis_settings().db()
    }

    /// The primary's connection, asking the sentinels first when there is none.
    async fn connection(&self) -> RedisResult<(ConnectionManager, u64)> {
        let mut current = self.current.lock().await;
        if let Some(known) = current.as_ref() {
            return Ok(known.clone());
        }
        let (host, port) = tokio::time::timeout(self.connect_timeout, self.ask())
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "no sentinel answered in time")))??;
        let addr = self.addr_like_url(host, port);
        let client = connect::client(self.template.clone().set_addr(addr), self.ca_file.as_deref())
            .map_err(|_| RedisError::from((ErrorKind::InvalidClientConfig, "the primary's address is not usable")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(0)
            .set_push_sender(self.pushes.clone())
            .set_automatic_resubscription();
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(generation, "asked the sentinels for the shared store's primary");
        *current = Some((manager.clone(), generation));
        Ok((manager, generation))
    }

    /// `host:port` reached the way the store's URL says: over TLS for `rediss://`.
    fn addr_like_url(&self, host: String, port: u16) -> ConnectionAddr {
        match self.template.addr() {
            ConnectionAddr::TcpTls { .. } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host, port),
        }
    }

    /// Asks every sentinel at once; the first address given wins.
    async fn ask(&self) -> RedisResult<(String, u16)> {
        let asks = self.sentinels.iter().map(|sentinel| self.ask_one(sentinel).boxed());
        futures_util::future::select_ok(asks).await.map(|(addr, _)| addr)
    }

    async fn ask_one(&self, sentinel: &str) -> RedisResult<(String, u16)> {
        let bad = || RedisError::from((ErrorKind::InvalidClientConfig, "not a sentinel address"));
        let (host, port) = sentinel.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let addr = self.addr_like_url(host, port);
        let info = self
            .template
            .clone()
            .set_addr(addr)
            .set_redis_settings(RedisConnectionInfo::default());
        let client = connect::client(info, self.ca_file.as_deref()).map_err(|_| bad())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        let answer: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut conn)
            .await?;
        answer.ok_or_else(|| RedisError::from((ErrorKind::Io, "the sentinel does not know the primary")))
    }

    /// Forgets generation `generation`'s connection (a later one is kept), so the next command
    /// asks the sentinels again.
    async fn forget(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(_, known)| *known == generation) {
            *current = None;
            tracing::info!(
                generation,
                "the shared store's primary is gone; the sentinels will be asked again"
            );
        }
    }

    /// Runs one command or pipeline on the primary; a failure that means "gone" forgets it,
    /// whether it comes as an error or as an error reply inside the answer (redis-rs hands a
    /// reply's `-READONLY` back as a value, converted only later).
    async fn run<T>(
        &self,
        send: impl AsyncFnOnce(&mut ConnectionManager) -> RedisResult<T>,
        replies: impl Fn(&T) -> &[Value],
    ) -> RedisResult<T> {
        let (mut conn, generation) = self.connection().await?;
        let result = send(&mut conn).await;
        let gone = match &result {
            Err(error) => is_unreachable(error),
            Ok(answer) => replies(answer).iter().any(|reply| match reply {
                Value::ServerError(error) => is_unreachable(&RedisError::from(error.clone())),
                _ => false,
            }),
        };
        if gone {
            self.forget(generation).await;
        }
        result
    }

    /// Subscribes `pattern` on the current primary, once per primary.
    pub(super) async fn listen(&self, pattern: &str) -> RedisResult<()> {
        let (mut conn, generation) = self.connection().await?;
        if self.listened.load(Ordering::Relaxed) == generation {
            return Ok(());
        }
        let result = conn.psubscribe(pattern).await;
        match &result {
            Ok(()) => self.listened.store(generation, Ordering::Relaxed),
            Err(error) if is_unreachable(error) => self.forget(generation).await,
            Err(_) => {}
        }
        result
    }

    pub(super) fn command<'a>(self: &'a Arc<Self>, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(self.run(
            async move |conn| conn.req_packed_command(cmd).await,
            std::slice::from_ref,
        ))
    }

    pub(super) fn pipeline<'a>(
        self: &'a Arc<Self>,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(self.run(
            async move |conn| conn.req_packed_commands(pipeline, offset, count).await,
            Vec::as_slice,
        ))
    }
}
