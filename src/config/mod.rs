//! Configuration: TOML text → raw serde structs → validated, typed [`RuntimeConfig`].
//!
//! ```text
//!  file text ──toml──▶ raw::RawConfig ──validate──▶ RuntimeConfig (+ warnings)
//!                      (strings, Options,            (Duration, SocketAddr, Regex,
//!                       deny_unknown_fields)           Secret<String>, HeaderValue)
//! ```
//!
//! `raw.rs` mirrors `config.example.toml` and holds no logic; `validate.rs` turns it into the types
//! below and collects *every* problem (with file:line:column) instead of stopping at the first.
//! `tokenbroker check` runs exactly this path. Nothing here touches the network.

mod adobe_commerce;
pub mod effective;
pub(crate) mod limits;
mod load;
pub(crate) mod raw;
mod redis_mode;
pub(crate) mod secret;
pub(crate) mod units;
pub(crate) mod validate;

pub use self::redis_mode::RedisMode;
pub use validate::{Env, MapEnv, NoSecrets, ProcessEnv};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue, Method};

pub use adobe_commerce::{AdobeCommerceConfig, SignatureMethod};
pub use limits::{BatchShare, CallerClass, MAX_PAUSE, PerClass, RateLimitConfig};
pub use load::{ConfigError, ConfigErrors, Loaded, load, load_with, load_with_text, parse};
pub use secret::Secret;

/// Everything the proxy needs to serve, validated. Built once per load or reload.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub tenants: Vec<TenantConfig>,
    pub callers: Vec<CallerConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Main listener; tenants are path prefixes here. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`, `/tenants`). Default `127.0.0.1:9901`.
    pub admin_listen: Option<SocketAddr>,
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

/// An upstream base URL, split for cheap per-request URI building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// `""` or a path without trailing slash, e.g. `/AbCYab34cdEfGHiJ27123`.
    pub base_path: String,
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// The provider block of a tenant, one variant per provider module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    AdobeIms(AdobeImsConfig),
    Shopline(ShoplineConfig),
    Vantage(VantageConfig),
    Cyberbiz(CyberbizConfig),
    AdobeCommerce(AdobeCommerceConfig),
    OAuth2(OAuth2Config),
    Static(StaticConfig),
}

impl ProviderConfig {
    /// Every secret this provider block holds (for tests that prove none leaks).
    pub fn secrets(&self) -> Vec<&Secret<String>> {
        match self {
            Self::AdobeIms(c) => c.client_secrets.iter().collect(),
            Self::Shopline(c) => match &c.credentials {
                ShoplineCredentials::OAuth { app_secret, code, .. } => {
                    std::iter::once(app_secret).chain(code).collect()
                }
                ShoplineCredentials::Private { access_token } => vec![access_token],
            },
            Self::Vantage(c) => c.client_secrets.iter().chain(c.grant.password()).collect(),
            Self::Cyberbiz(c) => vec![&c.token],
            Self::AdobeCommerce(c) => vec![
                &c.consumer_key,
                &c.consumer_secret,
                &c.access_token,
                &c.access_token_secret,
            ],
            Self::OAuth2(c) => {
                let grant = match &c.grant {
                    OAuth2Grant::Password { password, .. } => Some(password),
                    OAuth2Grant::RefreshToken { refresh_token } => Some(refresh_token),
                    OAuth2Grant::ClientCredentials => None,
                };
                let key = match &c.auth_method {
                    OAuth2AuthMethod::PrivateKeyJwt { private_key } => Some(private_key),
                    _ => None,
                };
                c.client_secrets.iter().chain(grant).chain(key).collect()
            }
            Self::Static(c) => vec![&c.value],
        }
    }

    /// The `client_secrets` tried in turn (empty for providers without them).
    pub fn client_secrets(&self) -> &[Secret<String>] {
        match self {
            Self::AdobeIms(c) => &c.client_secrets,
            Self::Vantage(c) => &c.client_secrets,
            Self::OAuth2(c) => &c.client_secrets,
            Self::Shopline(_) | Self::Cyberbiz(_) | Self::AdobeCommerce(_) | Self::Static(_) => &[],
        }
    }

    /// The `provider = "..."` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AdobeIms(_) => "adobe_ims",
            Self::Shopline(_) => "shopline",
            Self::Vantage(_) => "vantage",
            Self::Cyberbiz(_) => "cyberbiz",
            Self::AdobeCommerce(_) => "adobe_commerce",
            Self::OAuth2(_) => "oauth2",
            Self::Static(_) => "static",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdobeImsConfig {
    pub client_id: String,
    /// One or two; tried in order on `400 invalid_client`.
    pub client_secrets: Vec<Secret<String>>,
    /// Sent comma-separated.
    pub scopes: Vec<String>,
    /// Default `https://ims-na1.adobelogin.com/ims/token/v3`.
    pub token_url: http::Uri,
    pub org_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShoplineConfig {
    /// Store subdomain (`open001` for `open001.myshopline.com`).
    pub handle: String,
    pub credentials: ShoplineCredentials,
    /// Base to which `/admin/oauth/token/refresh` and `/create` are appended. Default: the upstream.
    pub token_url: http::Uri,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShoplineCredentials {
    /// Public and custom apps: signed `token/create` (with a one-time `code`) and `token/refresh`.
    OAuth {
        app_key: String,
        app_secret: Secret<String>,
        code: Option<Secret<String>>,
    },
    /// Private apps: a static token whose expiry is read from the JWT.
    Private { access_token: Secret<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VantageConfig {
    /// Default `https://vantage-us.abbyy.com`.
    pub base_url: http::Uri,
    pub tenant_id: Option<String>,
    /// Resolved token endpoint: `token_url` if set, else derived from `base_url` and `tenant_id`.
    pub token_url: http::Uri,
    pub client_id: String,
    pub client_secrets: Vec<Secret<String>>,
    pub grant: PasswordOrClient,
    /// Default `["openid", "permissions", "global.wildcard"]`.
    pub scopes: Vec<String>,
    pub offline_access: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOrClient {
    ClientCredentials,
    Password { username: String, password: Secret<String> },
}

impl PasswordOrClient {
    fn password(&self) -> Option<&Secret<String>> {
        match self {
            Self::Password { password, .. } => Some(password),
            Self::ClientCredentials => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CyberbizConfig {
    pub token: Secret<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    pub token_url: http::Uri,
    pub client_id: String,
    /// Empty only with `private_key_jwt` or `tls_client_auth`.
    pub client_secrets: Vec<Secret<String>>,
    pub grant: OAuth2Grant,
    /// Empty: no `scope` parameter at all.
    pub scopes: Vec<String>,
    /// Default `" "`.
    pub scope_separator: String,
    pub auth_method: OAuth2AuthMethod,
    pub extra_params: Vec<(String, String)>,
    pub audience: Option<String>,
    /// Lifetime assumed when the response carries no expiry. Default 1 h.
    pub default_ttl: Duration,
    pub response: ResponseMapping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuth2Grant {
    ClientCredentials,
    Password { username: String, password: Secret<String> },
    RefreshToken { refresh_token: Secret<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuth2AuthMethod {
    ClientSecretPost,
    ClientSecretBasic,
    /// RFC 7523: a JWT signed with this PEM key.
    PrivateKeyJwt {
        private_key: Secret<String>,
    },
    /// RFC 8705: mutual TLS to the token endpoint.
    TlsClientAuth {
        client_cert: PathBuf,
        client_key: PathBuf,
        /// A digest of both files' content as validation read them. A reload compares configs
        /// to decide whether a tenant's credentials changed; with paths alone, a certificate
        /// rotated in place would keep the old identity until a restart.
        content: KeyDigest,
    },
}

/// Where the token and its lifetime sit in a non-standard response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMapping {
    /// Dotted path split on `.`; default `["access_token"]`.
    pub token: Vec<String>,
    /// Default `["expires_in"]`.
    pub expires_in: Vec<String>,
    pub expires_in_unit: ExpiresInUnit,
    /// Absolute expiry (unix seconds, or RFC 3339) instead of `expires_in`.
    pub expires_at: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiresInUnit {
    Seconds,
    Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConfig {
    /// Default `authorization`.
    pub header: HeaderName,
    /// The whole header value, e.g. `Bearer abc`.
    pub value: Secret<String>,
    /// Explicit expiry; otherwise read from a JWT value when there is one.
    pub expires_at: Option<SystemTime>,
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

/// SHA-256 of a caller key. Presented keys are hashed and compared digest to digest: every
/// comparison then runs over 32 bytes, so its time tells nothing about the length of a key,
/// which a byte-wise comparison of the keys themselves would (it stops at a length mismatch).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(key: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(key).into())
    }
}

impl fmt::Debug for KeyDigest {
    /// A digest of a short key can be searched for, so it is kept out of logs like the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
