//! Configuration: TOML text → raw serde structs → validated, typed [`RuntimeConfig`].
//!
//! ```text
//!  file text ──toml──▶ raw::RawConfig ──validate──▶ RuntimeConfig (+ warnings)
//!                      (strings, Options,            (Duration, SocketAddr, Regex,
//!                       deny_unknown_fields)           Secret<String>, HeaderValue)
//! ```
//!
//! The raw TOML shapes, the checking context and the shared value types are in `schema`; each
//! provider validates its own block in `providers`; `validate/` checks the sections and assembles
//! the types below, collecting *every* problem (with file:line:column) instead of stopping at the
//! first. `tokenbroker check` runs exactly this path. Nothing here touches the network.
//!
//! ```text
//!   config ──▶ providers ──▶ schema      (each arrow: "builds on")
//! ```

pub mod effective;
mod load;
mod redis_mode;
pub(crate) mod validate;
mod webhook;

pub use self::redis_mode::RedisMode;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

pub use crate::providers::{
    AdobeCommerceConfig, AdobeImsConfig, CyberbizConfig, ExpiresInUnit, OAuth2AuthMethod, OAuth2Config, OAuth2Grant,
    PasswordOrClient, ProviderConfig, ProviderKind, ResponseMapping, ShoplineConfig, ShoplineCredentials,
    SignatureMethod, StaticConfig, VantageConfig,
};
pub use crate::schema::{
    BatchShare, CallerClass, ConfigError, ConfigErrors, Env, KeyDigest, MAX_PAUSE, MapEnv, NoSecrets, PerClass,
    ProcessEnv, RateLimitConfig, Secret, UpstreamUrl,
};
pub use load::{Loaded, load, load_with, load_with_text, parse};
pub use webhook::{SignatureEncoding, WebhookConfig, WebhookSender};

/// Everything the proxy needs to serve, validated. Built once per load or reload.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub tenants: Vec<TenantConfig>,
    pub callers: Vec<CallerConfig>,
    /// `[[webhook]]` routes, served on `server.webhook_listen`.
    pub webhooks: Vec<WebhookConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Main listener; tenants are path prefixes here. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`, `/tenants`). Default `127.0.0.1:9901`.
    pub admin_listen: Option<SocketAddr>,
    /// Webhook listener: serves only the `[[webhook]]` routes and lends no credential, so it may
    /// face an ingress. Default none. Restart-only.
    pub webhook_listen: Option<SocketAddr>,
    /// How long in-flight requests may take to finish after SIGTERM. Default 30 s.
    pub shutdown_grace: Duration,
    /// How long `/readyz` answers 503 after SIGTERM before the listeners close, so a load
    /// balancer stops sending first. Default 0.
    pub shutdown_delay: Duration,
    /// Whole upstream exchange, per request (also bounds a wait for a first token). Default 60 s.
    pub request_timeout: Duration,
    /// Default request body cap in bytes. Default 10 MiB.
    pub max_body: u64,
    /// Allow non-loopback listeners without any `[[caller]]`. Default false.
    pub allow_anonymous: bool,
    /// Extra `Host` names an anonymous loopback listener answers besides loopback addresses and
    /// `localhost` (lowercase, no port). Default none.
    pub allowed_hosts: Vec<String>,
    /// Reload when the config file changes. Default false.
    pub watch_config: bool,
    /// A connection must deliver each request head (the first one counted from accept) within this.
    /// Default 30 s. Restart-only.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress for this long is closed. Default 60 s. Restart-only.
    pub idle_timeout: Duration,
    /// Open inbound connections on the proxy listeners; more are accepted and closed at once.
    /// Default 10,000. Restart-only.
    pub max_connections: usize,
    /// The largest request head (request line and header fields) the proxy accepts, in bytes;
    /// larger heads get 431 and never reach an upstream. Default 64 KiB. A reload changes the
    /// proxy's check; hyper's HTTP/1 read bound (the limit + 8 KiB at startup) needs a restart.
    pub max_request_head: usize,
    /// The largest response head an upstream may send, in bytes; larger ones give the caller 502.
    /// Default 64 KiB. Restart-only.
    pub max_response_head: usize,
    /// A request body that sends nothing for this long is cut off with 408. Default 60 s.
    pub body_timeout: Duration,
    /// Bytes of all bodies kept for a replay together (README, "Limits"). Default 64 MiB.
    pub replay_buffer_budget: usize,
}

/// `[store]`: where tokens live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Memory,
    Redis(RedisConfig),
}

/// `[store] kind = "redis"`: the store replicas share (README, "Several replicas").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS); may carry a password, so it is a secret.
    pub url: Secret<String>,
    /// Leads every key, so deployments can share one Redis. Default `tokenbroker`.
    pub key_prefix: String,
    /// One attempt to open the connection. Default 2 s.
    pub connect_timeout: Duration,
    /// One command's answer. Default 1 s.
    pub command_timeout: Duration,
    /// Mixed into every tenant's sealing key, so that Redis and the configuration together are
    /// not enough to open a stored token. Optional; the same on every replica.
    pub seal_secret: Option<Secret<String>>,
    /// How the Redis is reached: one server, a Cluster, or a Sentinel-managed primary.
    pub mode: RedisMode,
    /// Trust roots for `rediss://` beyond the system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// `[token]`, overridable per tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Start renewing this long before expiry (clamped to 50–80 % of the lifetime). Default 10 min.
    pub refresh_before: Duration,
    /// On upstream 401: renew once and replay the request. Default true.
    pub retry_on_unauthorized: bool,
    /// Bodies up to this size are buffered so they can be replayed. Default 1 MiB.
    pub replay_body_limit: u64,
    /// A 401 on a token younger than this is passed back without renewing. Default 30 s.
    pub min_token_age: Duration,
}

/// One `[[tenant]]`.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub name: TenantName,
    /// Own listener: every request on it is this tenant, with no path prefix.
    pub listen: Option<SocketAddr>,
    pub upstream: UpstreamUrl,
    pub provider: ProviderConfig,
    pub token: TokenPolicy,
    /// `None` when switched off (`rate_limit = false`) or when the provider has no default.
    pub rate_limit: Option<RateLimitConfig>,
    pub max_body: u64,
    /// Fixed headers added upstream (after the provider's own).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extra trust roots for this upstream.
    pub ca_file: Option<PathBuf>,
    /// Whether an https upstream may be offered `h2` in ALPN (`http2 = false`: only `http/1.1`).
    /// Always `true` for plain http, which is HTTP/1.1 regardless.
    pub http2: bool,
    /// Path rewriting rules, first match wins (the provider preset when `rewrite` is absent).
    pub rewrite: Vec<crate::routing::rewrite::RewriteRule>,
    /// Whether this tenant's failure makes `/readyz` answer 503. Default true.
    pub required: bool,
}

/// `[a-z0-9][a-z0-9_-]{0,62}`; the first path segment that selects the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantName(String);

impl TenantName {
    /// Validates the shape; `None` when the name is not acceptable.
    pub fn try_new(name: &str) -> Option<Self> {
        let bytes = name.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
        (first_ok && rest_ok && bytes.len() <= 63).then(|| Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `[[caller]]`.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    pub name: String,
    pub key: Secret<String>,
    /// What requests are matched against (see [`KeyDigest`]).
    pub key_digest: KeyDigest,
    /// `None` means `["*"]`.
    pub tenants: Option<Vec<TenantName>>,
    /// `None` means every method.
    pub methods: Option<Vec<Method>>,
    /// The order in which a rate-limited tenant serves this caller's waiting requests.
    pub class: CallerClass,
}
