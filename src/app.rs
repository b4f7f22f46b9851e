//! Wiring: a validated configuration becomes a [`Snapshot`] of live tenants, served on listeners
//! until a shutdown future resolves.
//!
//! Everything derived from configuration lives in one immutable `Snapshot` behind one `ArcSwap`:
//! each request loads it once and uses it to the end, so a reload never changes a request midway.
//! Stateful parts (token managers, limiters, upstream pools) are carried from the previous snapshot
//! when their configuration did not change, so a reload neither drops tokens nor resets limits.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use prometheus_client::registry::Registry;

use crate::admin::metrics::{GlobalMetrics, MetricsCollector, TenantMetrics};
use crate::auth::{Provider, TokenHttp, TokenHttpError, TokenHttpOptions};
use crate::cache::TokenManager;
use crate::config::{
    self, CallerConfig, ConfigError, ConfigErrors, RuntimeConfig, ServerConfig, TenantConfig, TenantName,
};
use crate::ratelimit::Limiter;
use crate::reload::{self, ReloadHandle, ReloadRequest, ReloadSource};
use crate::server;
use crate::store::{MemoryStore, Store, StoreKey};
use crate::upstream::{Http1Pool, TlsSetupError, UpstreamClient};

/// Which listener a request arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The main listener: the first path segment names the tenant.
    Main,
    /// A tenant's own listener: every request is this tenant, with no prefix.
    Tenant(TenantName),
}

/// One tenant, ready to serve.
#[derive(Debug)]
pub struct Tenant {
    pub config: TenantConfig,
    pub tokens: Arc<TokenManager>,
    pub limiter: Option<Arc<Limiter>>,
    pub client: UpstreamClient,
    /// The connections of a plain-http upstream (which then bypasses `client`).
    pub http1: Option<Http1Pool>,
    /// The provider's fixed headers, then the tenant's own, built once.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the provider can renew a rejected token (static credentials cannot).
    pub renews: bool,
    pub metrics: Arc<TenantMetrics>,
}

impl Tenant {
    /// Whether an upstream status means the token was rejected: 401 for every provider (ACCS's
    /// Magento and gateway bodies, Vantage's `WWW-Authenticate`, SHOPLINE and CYBERBIZ all use it).
    /// The one place this rule lives.
    pub fn provider_rejects(&self, status: StatusCode) -> bool {
        status == StatusCode::UNAUTHORIZED
    }
}

/// Everything a request needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub server: ServerConfig,
    pub callers: Vec<CallerConfig>,
    tenants: HashMap<String, Arc<Tenant>>,
    shared: Shared,
}

/// What every tenant of the process shares, carried from snapshot to snapshot.
#[derive(Debug, Clone)]
struct Shared {
    store: Store,
    client: UpstreamClient,
    token_http: TokenHttp,
}

/// Why a snapshot could not be built (files named by `ca_file` are read here).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Upstream(#[from] TlsSetupError),
    #[error("token endpoint client: {0}")]
    TokenHttp(#[from] TokenHttpError),
}

impl Snapshot {
    /// Builds the live state for `config`, reusing what `previous` holds for unchanged parts.
    /// Must run inside the tokio runtime: new token managers start fetching at once.
    pub fn build(config: &RuntimeConfig, previous: Option<&Self>) -> Result<Self, BuildError> {
        let shared = match previous {
            Some(previous) => previous.shared.clone(),
            None => Shared {
                store: Store::Memory(MemoryStore::default()),
                client: UpstreamClient::new(None)?,
                token_http: TokenHttp::new(TokenHttpOptions::default())?,
            },
        };
        // Tenants on the same plain-http upstream share its connections, as https tenants share
        // the client's pool; a reload keeps the open ones.
        let mut pools: HashMap<Authority, Http1Pool> = previous
            .into_iter()
            .flat_map(|p| p.tenants.values())
            .filter_map(|t| Some((t.config.upstream.authority.clone(), t.http1.clone()?)))
            .collect();
        let mut tenants = HashMap::with_capacity(config.tenants.len());
        for tenant in &config.tenants {
            let old = previous.and_then(|p| p.tenants.get(tenant.name.as_str()));
            let built = build_tenant(tenant, old.map(Arc::as_ref), &shared, &mut pools)?;
            tenants.insert(tenant.name.as_str().to_owned(), Arc::new(built));
        }
        Ok(Self {
            server: config.server.clone(),
            callers: config.callers.clone(),
            tenants,
            shared,
        })
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(name).cloned()
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}

fn build_tenant(
    config: &TenantConfig,
    old: Option<&Tenant>,
    shared: &Shared,
    pools: &mut HashMap<Authority, Http1Pool>,
) -> Result<Tenant, BuildError> {
    let (store, default_client) = (&shared.store, &shared.client);
    let provider = Provider::from_config(&config.provider);
    let mut upstream_headers = provider.upstream_headers();
    upstream_headers.extend(config.headers.iter().cloned());
    let renews = provider.renews();
    // Same credentials, same token policy: keep the token (and its renewal schedule).
    let tokens = match old {
        Some(old)
            if old.config.provider == config.provider
                && old.config.token == config.token
                && old.config.ca_file == config.ca_file =>
        {
            Arc::clone(&old.tokens)
        }
        _ => {
            let key = StoreKey::new(&config.name, &config.provider);
            let store = (store.clone(), key);
            // A tenant's ca_file also applies to its token endpoint (an IdP behind a corporate CA).
            let http = match &config.ca_file {
                None => shared.token_http.clone(),
                Some(path) => TokenHttp::new(TokenHttpOptions {
                    ca_file: Some(path.clone()),
                    ..TokenHttpOptions::default()
                })?,
            };
            Arc::new(TokenManager::spawn(
                config.name.clone(),
                provider,
                http,
                config.token.clone(),
                store,
            ))
        }
    };
    let limiter = match (config.rate_limit, old) {
        (Some(limit), Some(old)) if old.config.rate_limit == Some(limit) => old.limiter.clone(),
        (Some(limit), _) => Some(Arc::new(Limiter::new(limit))),
        (None, _) => None,
    };
    let client = match (&config.ca_file, old) {
        (None, _) => default_client.clone(),
        (Some(path), Some(old)) if old.config.ca_file.as_ref() == Some(path) => old.client.clone(),
        (Some(path), _) => UpstreamClient::new(Some(path))?,
    };
    let http1 = (config.upstream.scheme == Scheme::HTTP).then(|| {
        let authority = &config.upstream.authority;
        pools
            .entry(authority.clone())
            .or_insert_with(|| Http1Pool::new(authority))
            .clone()
    });
    let metrics = old.map_or_else(Arc::default, |old| Arc::clone(&old.metrics));
    Ok(Tenant {
        config: config.clone(),
        tokens,
        limiter,
        client,
        http1,
        upstream_headers,
        renews,
        metrics,
    })
}

/// The sockets the app serves on, bound before `run` so tests can use port 0.
#[derive(Debug)]
pub struct Listeners {
    pub main: TcpListener,
    pub admin: Option<TcpListener>,
    /// Tenant listeners with the address their configuration names.
    pub tenants: Vec<(TenantName, SocketAddr, TcpListener)>,
}

impl Listeners {
    pub async fn bind(config: &RuntimeConfig) -> std::io::Result<Self> {
        let main = bind(config.server.listen).await?;
        let admin = match config.server.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let mut tenants = Vec::new();
        for tenant in &config.tenants {
            if let Some(addr) = tenant.listen {
                tenants.push((tenant.name.clone(), addr, bind(addr).await?));
            }
        }
        Ok(Self { main, admin, tenants })
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// The running proxy.
pub struct App {
    state: Arc<ArcSwap<Snapshot>>,
    registry: Arc<Registry>,
    globals: Arc<GlobalMetrics>,
    reload_tx: mpsc::Sender<ReloadRequest>,
    reload_rx: mpsc::Receiver<ReloadRequest>,
    /// The file SIGHUP (and `watch_config`) reload from.
    config_path: Option<PathBuf>,
    /// Fingerprint of the text the first configuration was parsed from (the watcher's baseline).
    loaded_fingerprint: Option<[u8; 32]>,
}

impl App {
    /// Builds the first snapshot and registers the proxy's metrics in `registry` (created by the
    /// caller, so there is no global registry).
    pub fn build(config: &RuntimeConfig, mut registry: Registry) -> Result<Self, BuildError> {
        let snapshot = Snapshot::build(config, None)?;
        let state = Arc::new(ArcSwap::from_pointee(snapshot));
        let globals = Arc::new(GlobalMetrics::default());
        registry.register_collector(Box::new(MetricsCollector {
            state: Arc::clone(&state),
            globals: Arc::clone(&globals),
        }));
        // Reloads are serialised through this queue; one waiting request is enough, since each
        // reload reads the newest file.
        let (reload_tx, reload_rx) = mpsc::channel(4);
        Ok(Self {
            state,
            registry: Arc::new(registry),
            globals,
            reload_tx,
            reload_rx,
            config_path: None,
            loaded_fingerprint: None,
        })
    }

    /// Reload from `path` on SIGHUP, and on change when `server.watch_config` is set.
    /// `loaded_text` is what the running configuration was parsed from: the watcher reloads as
    /// soon as the file differs from it, even if it changed before the watcher started.
    #[must_use]
    pub fn with_config_path(mut self, path: PathBuf, loaded_text: &str) -> Self {
        self.config_path = Some(path);
        self.loaded_fingerprint = Some(reload::fingerprint_of(loaded_text.as_bytes()));
        self
    }

    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            tx: self.reload_tx.clone(),
        }
    }

    /// Serves until `shutdown` resolves, applying reloads as they come, then drains in-flight
    /// requests up to `shutdown_grace`.
    pub async fn run(mut self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let mut servers = server::Servers::new();
        servers.spawn_main(listeners.main, Arc::clone(&self.state));
        for (name, addr, listener) in listeners.tenants {
            servers.add_tenant(name, addr, listener, Arc::clone(&self.state));
        }
        if let Some(admin) = listeners.admin {
            servers.spawn_admin(admin, Arc::clone(&self.state), Arc::clone(&self.registry));
        }
        let _triggers = self.spawn_reload_triggers();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(request) = self.reload_rx.recv() => {
                    let outcome = self.apply_reload(request.source, &mut servers).await;
                    if let Some(reply) = request.reply {
                        let _ = reply.send(outcome);
                    }
                }
            }
        }
        let grace = self.state.load().server.shutdown_grace;
        tracing::info!(
            grace_s = grace.as_secs(),
            "shutting down: no new connections, draining in-flight requests"
        );
        if servers.drain(grace).await {
            tracing::info!("drained");
        } else {
            tracing::warn!("shutdown grace elapsed with requests still in flight");
        }
    }

    /// SIGHUP and file watching, stopped when the returned guard drops.
    fn spawn_reload_triggers(&self) -> Vec<AbortOnDrop> {
        let Some(path) = self.config_path.clone() else {
            return Vec::new();
        };
        let handle = self.reload_handle();
        let mut triggers = vec![AbortOnDrop(tokio::spawn(reload::on_sighup(
            handle.clone(),
            path.clone(),
        )))];
        if self.state.load().server.watch_config {
            triggers.push(AbortOnDrop(tokio::spawn(reload::watch_file(
                handle,
                path,
                self.loaded_fingerprint,
            ))));
        }
        triggers
    }

    /// Validates and swaps in a new configuration; on any error nothing changes.
    async fn apply_reload(&self, source: ReloadSource, servers: &mut server::Servers) -> Result<(), ConfigErrors> {
        let started = tokio::time::Instant::now();
        let outcome = self.try_reload(source, servers).await;
        match &outcome {
            Ok(()) => {
                self.globals.reloads_ok.fetch_add(1, Ordering::Relaxed);
                // Read, validate, build and swap: what the load benchmark holds under 100 ms.
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                tracing::info!(
                    tenants = self.state.load().tenants().count(),
                    elapsed_ms,
                    "configuration reloaded"
                );
            }
            Err(errors) => {
                self.globals.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(errors = %errors, "configuration reload rejected; the previous configuration keeps serving");
            }
        }
        outcome
    }

    async fn try_reload(&self, source: ReloadSource, servers: &mut server::Servers) -> Result<(), ConfigErrors> {
        let config = match source {
            ReloadSource::File(path) => {
                let loaded = config::load(&path)?;
                for warning in &loaded.warnings {
                    tracing::warn!(%warning, "configuration warning");
                }
                loaded.config
            }
            ReloadSource::Config(config) => *config,
        };
        let old = self.state.load_full();
        warn_about_restart_only_changes(&old.server, &config.server);
        let snapshot = Snapshot::build(&config, Some(&old)).map_err(|e| single_error(e.to_string()))?;
        // Bind new tenant listeners before swapping, so a port conflict rejects the reload whole.
        let wanted: Vec<(TenantName, SocketAddr)> = config
            .tenants
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.listen?)))
            .collect();
        let mut fresh = Vec::new();
        for (name, addr) in &wanted {
            if servers.tenant_addr(name) != Some(*addr) {
                fresh.push((
                    name.clone(),
                    *addr,
                    bind(*addr).await.map_err(|e| single_error(e.to_string()))?,
                ));
            }
        }
        self.state.store(Arc::new(snapshot));
        servers.retain_tenants(|name, addr| wanted.iter().any(|(n, a)| n == name && *a == addr));
        for (name, addr, listener) in fresh {
            servers.add_tenant(name, addr, listener, Arc::clone(&self.state));
        }
        Ok(())
    }
}

fn warn_about_restart_only_changes(old: &ServerConfig, new: &ServerConfig) {
    if old.listen != new.listen || old.admin_listen != new.admin_listen {
        tracing::warn!("server.listen and server.admin_listen changes take effect only after a restart");
    }
}

fn single_error(message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        location: "reload".into(),
        message,
    }])
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::MapEnv;

    fn snapshot(upstreams: [&str; 3], previous: Option<&Snapshot>) -> Snapshot {
        let text: String = upstreams
            .iter()
            .enumerate()
            .map(|(i, url)| format!("[[tenant]]\nname = \"t{i}\"\nprovider = \"static\"\nupstream = \"{url}\"\nvalue = {{ env = \"V\" }}\n"))
            .collect();
        let loaded = crate::config::parse(&text, "t.toml", &MapEnv::new([("V", "v")])).expect("valid");
        Snapshot::build(&loaded.config, previous).expect("builds")
    }

    fn pool<'s>(snapshot: &'s Snapshot, tenant: &str) -> Option<&'s Http1Pool> {
        snapshot.tenants[tenant].http1.as_ref()
    }

    #[tokio::test]
    async fn tenants_on_one_plain_http_upstream_share_its_connections_across_reloads() {
        let urls = ["http://10.0.0.1:8080/a", "http://10.0.0.1:8080/b", "http://10.0.0.2"];
        let first = snapshot(urls, None);
        let shared = pool(&first, "t0").expect("plain http is pooled");
        assert!(
            shared.same_pool(pool(&first, "t1").expect("pooled")),
            "same authority, one pool"
        );
        assert!(
            !shared.same_pool(pool(&first, "t2").expect("pooled")),
            "another upstream"
        );
        let reloaded = snapshot(urls, Some(&first));
        assert!(
            shared.same_pool(pool(&reloaded, "t1").expect("pooled")),
            "a reload keeps it"
        );
        let https = snapshot(
            ["https://10.0.0.1:8080", "http://10.0.0.1:8080", "http://10.0.0.2"],
            Some(&first),
        );
        assert!(pool(&https, "t0").is_none(), "https goes through the shared client");
        assert!(shared.same_pool(pool(&https, "t1").expect("pooled")));
    }
}
