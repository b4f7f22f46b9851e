//! What a tenant is at run time, and the one immutable [`Snapshot`] of all of them.
//!
//! Everything derived from configuration lives in one `Snapshot` behind one `ArcSwap` (held by
//! `app`): each request loads it once and uses it to the end, so a reload never changes a request
//! midway. Stateful parts (token managers, limiters, upstream connections, metrics) are carried
//! from the previous snapshot when their configuration did not change, so a reload neither drops
//! tokens nor resets limits. `server` and `admin` read snapshots; only `app` swaps them.

use std::collections::HashMap;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};

use crate::auth::{Provider, TokenHttp, TokenHttpError, TokenHttpOptions};
use crate::config::{CallerConfig, RuntimeConfig, ServerConfig, TenantConfig};
use crate::metrics::TenantMetrics;
use crate::ratelimit::Limiter;
use crate::store::{Store, StoreError, StoreKey};
use crate::token::TokenManager;
use crate::upstream::{Http1Pool, TlsSetupError, Upstream, UpstreamClient};

/// One tenant, ready to serve.
#[derive(Debug)]
pub struct Tenant {
    pub config: TenantConfig,
    pub tokens: Arc<TokenManager>,
    pub limiter: Option<Arc<Limiter>>,
    pub upstream: Upstream,
    /// The provider's fixed headers, then the tenant's own, built once.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    pub metrics: Arc<TenantMetrics>,
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
    /// `server.max_response_head`, taken at startup with the connections it shapes.
    max_response_head: usize,
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Snapshot {
    /// Builds the live state for `config`, reusing what `previous` holds for unchanged parts.
    /// Must run inside the tokio runtime: new token managers start fetching at once.
    pub fn build(config: &RuntimeConfig, previous: Option<&Self>) -> Result<Self, BuildError> {
        // The store is chosen at startup; `[store]` changes need a restart (`app` warns).
        let shared = match previous {
            Some(previous) => previous.shared.clone(),
            None => Shared {
                store: Store::open(&config.store)?,
                max_response_head: config.server.max_response_head,
                client: UpstreamClient::new(None, config.server.max_response_head)?,
                token_http: TokenHttp::new(TokenHttpOptions::default())?,
            },
        };
        let mut pools = Http1Pools::carried_from(previous);
        let mut tenants = HashMap::with_capacity(config.tenants.len());
        for tenant in &config.tenants {
            let old = previous.and_then(|p| p.tenants.get(tenant.name.as_str()));
            let built = Tenant::build(tenant, old.map(Arc::as_ref), &shared, &mut pools)?;
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

// === impl Tenant ===

impl Tenant {
    /// The live tenant for `config`: each stateful part is kept from `old` when the configuration
    /// it depends on is unchanged, and made anew otherwise.
    fn build(
        config: &TenantConfig,
        old: Option<&Self>,
        shared: &Shared,
        pools: &mut Http1Pools,
    ) -> Result<Self, BuildError> {
        let provider = Provider::from_config(&config.provider);
        let mut upstream_headers = provider.upstream_headers();
        upstream_headers.extend(config.headers.iter().cloned());
        let tokens = match old {
            Some(old) if same_credentials(&old.config, config) => Arc::clone(&old.tokens),
            _ => Arc::new(spawn_tokens(config, provider, shared)?),
        };
        let limiter = match (config.rate_limit, old) {
            (Some(limit), Some(old)) if old.config.rate_limit == Some(limit) => old.limiter.clone(),
            (Some(limit), _) => Some(Arc::new(Limiter::new(limit))),
            (None, _) => None,
        };
        Ok(Self {
            config: config.clone(),
            tokens,
            limiter,
            upstream: upstream_for(config, old, shared, pools)?,
            upstream_headers,
            metrics: old.map_or_else(Arc::default, |old| Arc::clone(&old.metrics)),
        })
    }
}

/// Same credentials, same token policy, same trust roots: the token (and its renewal schedule)
/// carries over.
fn same_credentials(old: &TenantConfig, new: &TenantConfig) -> bool {
    old.provider == new.provider && old.token == new.token && old.ca_file == new.ca_file
}

fn spawn_tokens(config: &TenantConfig, provider: Provider, shared: &Shared) -> Result<TokenManager, BuildError> {
    let key = StoreKey::new(&config.name, &config.provider);
    // A tenant's ca_file also applies to its token endpoint (an IdP behind a corporate CA).
    let http = match &config.ca_file {
        None => shared.token_http.clone(),
        Some(path) => TokenHttp::new(TokenHttpOptions {
            ca_file: Some(path.clone()),
            ..TokenHttpOptions::default()
        })?,
    };
    Ok(TokenManager::spawn(
        config.name.clone(),
        provider,
        http,
        config.token.clone(),
        (shared.store.clone(), key),
    ))
}

/// Plain http goes through the pool of its authority; https through the shared client, or the
/// tenant's own when it trusts its own `ca_file`.
fn upstream_for(
    config: &TenantConfig,
    old: Option<&Tenant>,
    shared: &Shared,
    pools: &mut Http1Pools,
) -> Result<Upstream, BuildError> {
    if config.upstream.scheme == Scheme::HTTP {
        return Ok(Upstream::Http1(
            pools.for_authority(&config.upstream.authority, shared.max_response_head),
        ));
    }
    let client = match (&config.ca_file, old.map(|old| (&old.config.ca_file, &old.upstream))) {
        (None, _) => shared.client.clone(),
        (Some(path), Some((Some(old_path), Upstream::Https(old_client)))) if old_path == path => old_client.clone(),
        (Some(path), _) => UpstreamClient::new(Some(path), shared.max_response_head)?,
    };
    Ok(Upstream::Https(client))
}

/// Tenants on the same plain-http upstream share its connections, as https tenants share the
/// client's pool; a reload keeps the open ones.
struct Http1Pools(HashMap<Authority, Http1Pool>);

impl Http1Pools {
    fn carried_from(previous: Option<&Snapshot>) -> Self {
        let pools = previous
            .into_iter()
            .flat_map(|p| p.tenants.values())
            .filter_map(|t| match &t.upstream {
                Upstream::Http1(pool) => Some((t.config.upstream.authority.clone(), pool.clone())),
                Upstream::Https(_) => None,
            })
            .collect();
        Self(pools)
    }

    fn for_authority(&mut self, authority: &Authority, max_head: usize) -> Http1Pool {
        self.0
            .entry(authority.clone())
            .or_insert_with(|| Http1Pool::new(authority, max_head))
            .clone()
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
        match &snapshot.tenants[tenant].upstream {
            Upstream::Http1(pool) => Some(pool),
            Upstream::Https(_) => None,
        }
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
