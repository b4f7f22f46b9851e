//! What a tenant is at run time, and the one immutable [`Snapshot`] of all of them.
//!
//! Everything derived from configuration lives in one `Snapshot` behind one `ArcSwap` (held by
//! `app`): each request loads it once and uses it to the end, so a reload never changes a request
//! midway. Stateful parts (token managers, limiters, upstream connections, metrics) are carried
//! from the previous snapshot when their configuration did not change, so a reload neither drops
//! tokens nor resets limits. `server` and `admin` read snapshots; only `app` swaps them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};

use crate::auth::{FetchToken, TokenHttp, TokenHttpError, TokenHttpOptions};
use crate::config::{CallerConfig, RuntimeConfig, Secret, ServerConfig, TenantConfig};
use crate::metrics::TenantMetrics;
use crate::providers::Provider;
use crate::providers::adobe_commerce::Signer;
use crate::ratelimit::Limiter;
use crate::reload::ReloadStatus;
use crate::store::{Store, StoreError, StoreKey};
use crate::token::TokenManager;
use crate::upstream::{Http1Pool, HttpsPool, TlsConfig, TlsSetupError, Upstream};

/// One tenant, ready to serve.
#[derive(Debug)]
pub(crate) struct Tenant {
    pub config: TenantConfig,
    pub tokens: Arc<TokenManager>,
    pub limiter: Option<Arc<Limiter>>,
    pub upstream: Upstream,
    /// The provider's fixed headers, then the tenant's own, built once.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// Signs each request afresh, for a provider whose credential is a per-request signature
    /// (`adobe_commerce`); `None` for the rest, whose header is built once per token.
    pub signer: Option<Arc<Signer>>,
    pub metrics: Arc<TenantMetrics>,
}

/// Everything a request needs, immutable once built.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub server: ServerConfig,
    pub callers: Vec<CallerConfig>,
    tenants: HashMap<String, Arc<Tenant>, BuildHasherDefault<NameHasher>>,
    /// The same tenants in name order, sorted once here for every page and scrape that lists them.
    by_name: Vec<Arc<Tenant>>,
    /// The `[[webhook]]` routes; they share no state with the tenants.
    webhooks: Arc<crate::webhook::Routes>,
    shared: Shared,
}

/// What every tenant of the process shares, carried from snapshot to snapshot.
#[derive(Debug, Clone)]
struct Shared {
    store: Store,
    /// The system's trust roots, for https upstreams of tenants without a `ca_file`.
    tls: TlsConfig,
    token_http: TokenHttp,
    /// `server.max_response_head`, taken at startup with the connections it shapes.
    max_response_head: usize,
    /// Set once SIGTERM has come: `/readyz` then answers 503 (for `server.shutdown_delay`
    /// before the listeners close).
    shutting_down: Arc<std::sync::atomic::AtomicBool>,
    /// Answers to requests that matched no tenant, by status (counted with an empty `tenant`).
    unmatched: Arc<crate::metrics::StatusCounts>,
    /// How reloads went since the start.
    reloads: Arc<ReloadStatus>,
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
    pub(crate) fn build(config: &RuntimeConfig, previous: Option<&Self>) -> Result<Self, BuildError> {
        // The store is chosen at startup; `[store]` changes need a restart (`app` warns).
        let shared = match previous {
            Some(previous) => previous.shared.clone(),
            None => Shared {
                store: Store::open(&config.store)?,
                tls: TlsConfig::new(None)?,
                max_response_head: config.server.max_response_head,
                token_http: TokenHttp::new(TokenHttpOptions::default())?,
                shutting_down: Arc::default(),
                unmatched: Arc::default(),
                reloads: Arc::new(ReloadStatus::started(crate::clock::unix_millis())),
            },
        };
        let mut pools = Pools::carried_from(previous);
        let mut tenants = HashMap::with_capacity_and_hasher(config.tenants.len(), BuildHasherDefault::default());
        for tenant in &config.tenants {
            let old = previous.and_then(|p| p.tenants.get(tenant.name.as_str()));
            let built = Tenant::build(tenant, old.map(Arc::as_ref), &shared, &mut pools)?;
            tenants.insert(tenant.name.as_str().to_owned(), Arc::new(built));
        }
        let old_webhooks = previous.map(|p| p.webhooks.as_ref());
        let (tls, head) = (&shared.tls, shared.max_response_head);
        let webhooks = crate::webhook::Routes::build(config, old_webhooks, &shared.store, tls, head)?;
        let mut by_name: Vec<Arc<Tenant>> = tenants.values().cloned().collect();
        by_name.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        Ok(Self {
            server: config.server.clone(),
            callers: config.callers.clone(),
            tenants,
            by_name,
            webhooks: Arc::new(webhooks),
            shared,
        })
    }

    /// Answers to requests that matched no tenant (the proxy made them all), kept across reloads.
    pub(crate) fn unmatched_statuses(&self) -> &crate::metrics::StatusCounts {
        &self.shared.unmatched
    }

    /// Marks the process as shutting down, for this snapshot and every later one.
    pub(crate) fn begin_shutdown(&self) {
        self.shared
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether SIGTERM (or the app's shutdown future) has come.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How reloads went since the start (the app records each one here).
    pub(crate) fn reloads(&self) -> &ReloadStatus {
        &self.shared.reloads
    }

    /// The token store every tenant of the process uses.
    pub(crate) fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The webhook routes of this configuration.
    pub(crate) fn webhooks(&self) -> &crate::webhook::Routes {
        &self.webhooks
    }

    pub(crate) fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(name).cloned()
    }

    /// Every tenant, in name order.
    pub(crate) fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_name.iter()
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
        pools: &mut Pools,
    ) -> Result<Self, BuildError> {
        let provider = Provider::from_config(&config.provider);
        let mut upstream_headers = provider.upstream_headers();
        let signer = provider.signer(&config.upstream);
        upstream_headers.extend(config.headers.iter().cloned());
        let tokens = match old {
            Some(old) if same_credentials(&old.config, config) => Arc::clone(&old.tokens),
            _ => Arc::new(spawn_tokens(config, provider, shared, carried_secret(old, config))?),
        };
        let limiter = match (config.rate_limit, old) {
            (Some(limit), Some(old))
                if old.config.rate_limit == Some(limit) && same_credentials(&old.config, config) =>
            {
                old.limiter.clone()
            }
            (Some(limit), _) => {
                let key = StoreKey::new(&config.name, &config.provider);
                Some(Arc::new(Limiter::new(limit, &shared.store, &key)))
            }
            (None, _) => None,
        };
        Ok(Self {
            config: config.clone(),
            tokens,
            limiter,
            upstream: upstream_for(config, shared, pools)?,
            upstream_headers,
            signer,
            metrics: old.map_or_else(Arc::default, |old| Arc::clone(&old.metrics)),
        })
    }
}

/// Same credentials, same token policy, same trust roots: the token (and its renewal schedule)
/// carries over.
fn same_credentials(old: &TenantConfig, new: &TenantConfig) -> bool {
    old.provider == new.provider && old.token == new.token && old.ca_file == new.ca_file
}

/// Where a new token manager starts in `client_secrets`: where the one it replaces had got to.
fn carried_secret(old: Option<&Tenant>, new: &TenantConfig) -> usize {
    old.map_or(0, |old| {
        let before = old.config.provider.client_secrets();
        carried_index(before, old.tokens.secret_index(), new.provider.client_secrets())
    })
}

/// `index` into `before` as an index into `after`: the same when the list is unchanged, else the
/// place of the same secret, found by value, else 0.
fn carried_index(before: &[Secret<String>], index: usize, after: &[Secret<String>]) -> usize {
    if before == after {
        return index;
    }
    (before.get(index))
        .and_then(|secret| after.iter().position(|s| s == secret))
        .unwrap_or(0)
}

fn spawn_tokens(
    config: &TenantConfig,
    provider: Provider,
    shared: &Shared,
    first_secret: usize,
) -> Result<TokenManager, BuildError> {
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
        (shared.store.clone(), key, first_secret),
    ))
}

/// Plain http goes through the HTTP/1.1 pool of its authority; https through the pool of its
/// authority and trust roots (the system's, or those plus the tenant's `ca_file`): the h2-capable
/// one, or with `http2 = false` an HTTP/1.1 pool over TLS, which offers only `http/1.1` in ALPN.
fn upstream_for(config: &TenantConfig, shared: &Shared, pools: &mut Pools) -> Result<Upstream, BuildError> {
    let authority = &config.upstream.authority;
    if config.upstream.scheme == Scheme::HTTP {
        return Ok(Upstream::Http1(pools.http1(authority, shared.max_response_head)));
    }
    let ca_file = config.ca_file.as_deref();
    match config.http2 {
        true => Ok(Upstream::Https(pools.https(ca_file, authority, shared)?)),
        false => Ok(Upstream::Http1(pools.http1_over_tls(ca_file, authority, shared)?)),
    }
}

/// Where a pool of an https upstream is found: its `ca_file` (the roots it trusts beyond the
/// system's) and authority.
type TlsKey = (Option<PathBuf>, Authority);

/// Tenants on the same upstream authority share its connections (on https, those that trust the
/// same roots and agree on `http2`); a reload keeps the open ones, and the roots read from an
/// unchanged `ca_file` path.
struct Pools {
    http1: HashMap<Authority, Http1Pool>,
    https: HashMap<TlsKey, HttpsPool>,
    /// HTTP/1.1 over TLS, for the tenants with `http2 = false`.
    http1_tls: HashMap<TlsKey, Http1Pool>,
    /// Roots of each `ca_file`, read once per build (or carried with a pool that uses them).
    roots: HashMap<PathBuf, TlsConfig>,
}

impl Pools {
    /// The pools of `previous`, sorted by what they are: an `Upstream::Http1` is plain http
    /// unless its pool speaks TLS (a tenant with `http2 = false`).
    fn carried_from(previous: Option<&Snapshot>) -> Self {
        let mut pools = Self {
            http1: HashMap::new(),
            https: HashMap::new(),
            http1_tls: HashMap::new(),
            roots: HashMap::new(),
        };
        for tenant in previous.into_iter().flat_map(|p| p.tenants.values()) {
            let authority = tenant.config.upstream.authority.clone();
            let ca_file = tenant.config.ca_file.clone();
            let tls = match &tenant.upstream {
                Upstream::Http1(pool) => pool.tls(),
                Upstream::Https(pool) => Some(pool.tls()),
            };
            if let (Some(path), Some(tls)) = (&ca_file, tls) {
                pools.roots.insert(path.clone(), tls.clone());
            }
            match &tenant.upstream {
                Upstream::Http1(pool) if pool.tls().is_none() => {
                    pools.http1.insert(authority, pool.clone());
                }
                Upstream::Http1(pool) => {
                    pools.http1_tls.insert((ca_file, authority), pool.clone());
                }
                Upstream::Https(pool) => {
                    pools.https.insert((ca_file, authority), pool.clone());
                }
            }
        }
        pools
    }

    fn http1(&mut self, authority: &Authority, max_head: usize) -> Http1Pool {
        self.http1
            .entry(authority.clone())
            .or_insert_with(|| Http1Pool::new(authority, max_head))
            .clone()
    }

    fn https(
        &mut self,
        ca_file: Option<&Path>,
        authority: &Authority,
        shared: &Shared,
    ) -> Result<HttpsPool, BuildError> {
        let key = (ca_file.map(Path::to_path_buf), authority.clone());
        if let Some(pool) = self.https.get(&key) {
            return Ok(pool.clone());
        }
        let tls = self.roots(ca_file, shared)?;
        let pool = HttpsPool::new(authority, &tls, shared.max_response_head)?;
        self.https.insert(key, pool.clone());
        Ok(pool)
    }

    fn http1_over_tls(
        &mut self,
        ca_file: Option<&Path>,
        authority: &Authority,
        shared: &Shared,
    ) -> Result<Http1Pool, BuildError> {
        let key = (ca_file.map(Path::to_path_buf), authority.clone());
        if let Some(pool) = self.http1_tls.get(&key) {
            return Ok(pool.clone());
        }
        let tls = self.roots(ca_file, shared)?;
        let pool = Http1Pool::over_tls(authority, tls, shared.max_response_head)?;
        self.http1_tls.insert(key, pool.clone());
        Ok(pool)
    }

    /// The system's roots, or those plus `ca_file`'s.
    fn roots(&mut self, ca_file: Option<&Path>, shared: &Shared) -> Result<TlsConfig, BuildError> {
        match ca_file {
            None => Ok(shared.tls.clone()),
            Some(path) => self.roots_of(path),
        }
    }

    /// The roots for `path`: those of a carried pool that uses it, else read now.
    fn roots_of(&mut self, path: &Path) -> Result<TlsConfig, BuildError> {
        if let Some(tls) = self.roots.get(path) {
            return Ok(tls.clone());
        }
        let tls = TlsConfig::new(Some(path))?;
        self.roots.insert(path.to_path_buf(), tls.clone());
        Ok(tls)
    }
}

/// FNV-1a, for the table every request looks its tenant up in: a tenant name is a few bytes, and
/// SipHash's set-up cost more than hashing them (about 235 instructions a lookup). A keyed hash is
/// not needed: the names in the table come from the operator's configuration, so a caller choosing
/// the looked-up name cannot lengthen any probe sequence.
#[derive(Debug, Clone, Copy)]
struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MapEnv;

    #[test]
    fn tenant_names_hash_as_fnv_1a() {
        // The published FNV-1a (64-bit) values for "" and "a".
        let hash = |name: &str| {
            let mut hasher = NameHasher::default();
            hasher.write(name.as_bytes());
            hasher.finish()
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_secret_index_carries_by_position_when_the_list_is_kept_else_by_value() {
        let list = |names: &[&str]| names.iter().map(|n| Secret::from(*n)).collect::<Vec<_>>();
        let (old_new, new_newer) = (list(&["old", "new"]), list(&["new", "newer"]));
        assert_eq!(carried_index(&old_new, 1, &old_new), 1, "unchanged list");
        assert_eq!(carried_index(&old_new, 1, &new_newer), 0, "`new` moved to the front");
        assert_eq!(
            carried_index(&old_new, 0, &new_newer),
            0,
            "`old` is gone: from the start"
        );
        assert_eq!(carried_index(&list(&["a"]), 0, &list(&["b", "a"])), 1);
        assert_eq!(carried_index(&[], 0, &new_newer), 0, "no secrets before");
    }

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
        assert!(pool(&https, "t0").is_none(), "https goes through its own pool");
        assert!(shared.same_pool(pool(&https, "t1").expect("pooled")));
    }

    fn https_pool<'s>(snapshot: &'s Snapshot, tenant: &str) -> &'s HttpsPool {
        match &snapshot.tenants[tenant].upstream {
            Upstream::Https(pool) => pool,
            Upstream::Http1(_) => panic!("{tenant} is https"),
        }
    }

    #[tokio::test]
    async fn https_tenants_share_a_pool_per_authority_and_trust_roots_across_reloads() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/src/auth/http/testdata/ca.pem");
        let tenant = |name: &str, url: &str, ca_file: bool| {
            let ca_file = if ca_file {
                format!("ca_file = \"{ca}\"\n")
            } else {
                String::new()
            };
            format!(
                "[[tenant]]\nname = \"{name}\"\nprovider = \"static\"\nupstream = \"{url}\"\nvalue = {{ env = \"V\" }}\n{ca_file}"
            )
        };
        let text = [
            tenant("a", "https://10.0.0.1/a", false),
            tenant("b", "https://10.0.0.1/b", false),
            tenant("c", "https://10.0.0.1/c", true),
            tenant("d", "https://10.0.0.2", true),
        ]
        .concat();
        let loaded = crate::config::parse(&text, "t.toml", &MapEnv::new([("V", "v")])).expect("valid");
        let first = Snapshot::build(&loaded.config, None).expect("builds");
        let a = https_pool(&first, "a");
        assert!(
            a.same_pool(https_pool(&first, "b")),
            "same authority and roots, one pool"
        );
        assert!(!a.same_pool(https_pool(&first, "c")), "its own ca_file, its own pool");
        assert!(
            https_pool(&first, "c").tls().same_roots(https_pool(&first, "d").tls()),
            "one ca_file is read once"
        );
        let reloaded = Snapshot::build(&loaded.config, Some(&first)).expect("builds");
        for name in ["a", "b", "c", "d"] {
            assert!(
                https_pool(&first, name).same_pool(https_pool(&reloaded, name)),
                "{name} keeps its pool"
            );
        }
    }

    #[tokio::test]
    async fn http2_false_tenants_share_a_tls_http1_pool_across_reloads() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/src/auth/http/testdata/ca.pem");
        let tenant = |name: &str, http2: bool| {
            format!(
                "[[tenant]]\nname = \"{name}\"\nprovider = \"static\"\nupstream = \"https://10.0.0.1/{name}\"\nvalue = {{ env = \"V\" }}\nca_file = \"{ca}\"\nhttp2 = {http2}\n"
            )
        };
        let build = |text: String, previous: Option<&Snapshot>| {
            let loaded = crate::config::parse(&text, "t.toml", &MapEnv::new([("V", "v")])).expect("valid");
            Snapshot::build(&loaded.config, previous).expect("builds")
        };
        let first = build(
            [tenant("a", false), tenant("b", false), tenant("c", true)].concat(),
            None,
        );
        let a = pool(&first, "a").expect("http2 = false is an HTTP/1.1 pool");
        assert!(a.tls().is_some(), "over TLS");
        assert!(
            a.same_pool(pool(&first, "b").expect("HTTP/1.1")),
            "one pool per authority"
        );
        assert!(
            a.tls().expect("tls").same_roots(https_pool(&first, "c").tls()),
            "one ca_file is read once"
        );
        let reloaded = build(
            [tenant("a", false), tenant("b", true), tenant("c", false)].concat(),
            Some(&first),
        );
        assert!(
            a.same_pool(pool(&reloaded, "a").expect("HTTP/1.1")),
            "a reload keeps it"
        );
        assert!(a.same_pool(pool(&reloaded, "c").expect("flipped to HTTP/1.1")));
        assert!(
            https_pool(&first, "c").same_pool(https_pool(&reloaded, "b")),
            "the h2 pool is carried too"
        );
    }
}
