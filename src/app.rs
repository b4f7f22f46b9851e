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
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::net::TcpListener;

use prometheus_client::registry::Registry;

use crate::admin::metrics::{GlobalMetrics, MetricsCollector, TenantMetrics};
use crate::auth::{Provider, TokenHttp};
use crate::cache::TokenManager;
use crate::config::{CallerConfig, RuntimeConfig, ServerConfig, TenantConfig, TenantName};
use crate::ratelimit::Limiter;
use crate::store::{MemoryStore, Store, StoreKey};
use crate::server;
use crate::upstream::{TlsSetupError, UpstreamClient};

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
    /// The provider's fixed headers, then the tenant's own, built once.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the provider can renew a rejected token (static credentials cannot).
    pub renews: bool,
    pub metrics: Arc<TenantMetrics>,
}

impl Tenant {
    /// Whether an upstream status means the token was rejected.
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
}

impl Snapshot {
    /// Builds the live state for `config`, reusing what `previous` holds for unchanged parts.
    /// Must run inside the tokio runtime: new token managers start fetching at once.
    pub fn build(config: &RuntimeConfig, previous: Option<&Self>) -> Result<Self, TlsSetupError> {
        let shared = match previous {
            Some(previous) => previous.shared.clone(),
            None => Shared { store: Store::Memory(MemoryStore::default()), client: UpstreamClient::new(None)? },
        };
        let mut tenants = HashMap::with_capacity(config.tenants.len());
        for tenant in &config.tenants {
            let old = previous.and_then(|p| p.tenants.get(tenant.name.as_str()));
            let built = build_tenant(tenant, old.map(Arc::as_ref), &shared)?;
            tenants.insert(tenant.name.as_str().to_owned(), Arc::new(built));
        }
        Ok(Self { server: config.server.clone(), callers: config.callers.clone(), tenants, shared })
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(name).cloned()
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}

fn build_tenant(config: &TenantConfig, old: Option<&Tenant>, shared: &Shared) -> Result<Tenant, TlsSetupError> {
    let (store, default_client) = (&shared.store, &shared.client);
    let provider = Provider::from_config(&config.provider);
    let mut upstream_headers = provider.upstream_headers();
    upstream_headers.extend(config.headers.iter().cloned());
    let renews = provider.renews();
    // Same credentials, same token policy: keep the token (and its renewal schedule).
    let tokens = match old {
        Some(old) if old.config.provider == config.provider && old.config.token == config.token && old.config.ca_file == config.ca_file => {
            Arc::clone(&old.tokens)
        }
        _ => {
            let key = StoreKey::new(&config.name, &config.provider);
            let store = (store.clone(), key);
            Arc::new(TokenManager::spawn(config.name.clone(), provider, TokenHttp::default(), config.token.clone(), store))
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
    let metrics = old.map_or_else(Arc::default, |old| Arc::clone(&old.metrics));
    Ok(Tenant { config: config.clone(), tokens, limiter, client, upstream_headers, renews, metrics })
}

/// The sockets the app serves on, bound before `run` so tests can use port 0.
#[derive(Debug)]
pub struct Listeners {
    pub main: TcpListener,
    pub admin: Option<TcpListener>,
    pub tenants: Vec<(TenantName, TcpListener)>,
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
                tenants.push((tenant.name.clone(), bind(addr).await?));
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
}

impl App {
    /// Builds the first snapshot and registers the proxy's metrics in `registry` (created by the
    /// caller, so there is no global registry).
    pub fn build(config: &RuntimeConfig, mut registry: Registry) -> Result<Self, TlsSetupError> {
        let snapshot = Snapshot::build(config, None)?;
        let state = Arc::new(ArcSwap::from_pointee(snapshot));
        let globals = Arc::new(GlobalMetrics::default());
        registry.register_collector(Box::new(MetricsCollector { state: Arc::clone(&state), globals: Arc::clone(&globals) }));
        Ok(Self { state, registry: Arc::new(registry), globals })
    }

    /// The live snapshot (admin endpoints and tests read it).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests up to `shutdown_grace`.
    pub async fn run(self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let grace = self.state.load().server.shutdown_grace;
        let mut servers = server::Servers::new();
        servers.spawn_proxy(listeners.main, Binding::Main, Arc::clone(&self.state));
        for (name, listener) in listeners.tenants {
            servers.spawn_proxy(listener, Binding::Tenant(name), Arc::clone(&self.state));
        }
        if let Some(admin) = listeners.admin {
            servers.spawn_admin(admin, Arc::clone(&self.state), Arc::clone(&self.registry));
        }
        shutdown.await;
        tracing::info!(grace_s = grace.as_secs(), "shutting down: no new connections, draining in-flight requests");
        if servers.drain(grace).await {
            tracing::info!("drained");
        } else {
            tracing::warn!("shutdown grace elapsed with requests still in flight");
        }
    }
}
