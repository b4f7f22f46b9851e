//! [`StoreKey`]: which stored token belongs to which credential set, computed the same way by
//! every version of the binary.
//!
//! The key names a token in the store; with a shared store it names one entry for every replica,
//! and during a rolling upgrade an old and a new binary must derive the same key from the same
//! configuration, or they stop sharing the token (and SHOPLINE's renewals start shortening each
//! other's copies). So the fingerprint hashes an explicit, versioned byte encoding of the provider
//! block, never a `Debug` rendering, whose format Rust and our own derives may change at will.
//!
//! # Encoding, version `tokenbroker-storekey-v1`
//!
//! The key is `{tenant}:{hex}`, `hex` being the first 12 bytes (96 bits) of SHA-256 over a stream
//! of records. A record is `u32-BE len(name) ‖ name ‖ u32-BE len(value) ‖ value`. The stream is
//! the record `version` = `tokenbroker-storekey-v1`, the record `provider` = the `provider = "..."`
//! name, then the provider's records in the fixed order written in this file. Values:
//!
//! - text, URLs (as displayed), header names, secrets: their UTF-8 bytes; paths: their OS bytes;
//! - a flag: one byte, 0 or 1; a duration: u128-BE nanoseconds; an instant: i128-BE nanoseconds
//!   since the Unix epoch;
//! - a list: u32-BE item count, then each item as `u32-BE len ‖ bytes`; a list of pairs is the
//!   list of key, value, key, value, ...;
//! - an absent optional field: no record at all (names make that unambiguous; empty ≠ absent);
//! - a choice (grant, auth method, SHOPLINE credentials, expiry unit): a record with the choice's
//!   name, then one record per field of that choice, named `choice.field`.
//!
//! Every field of the provider block is covered, secrets included: any change to the block must
//! give a new key, so a changed credential never picks up an old credential's token. The secrets
//! go into the hash and nowhere else; the key shows none of them.
//!
//! # Sealing material
//!
//! Stored tokens are sealed under material of the same encoding with a `purpose` record of its
//! own (`token-seal`). Files are covered by their path there, which anyone holding the
//! configuration knows, so for `tls_client_auth` the material is the SHA-256 of a second stream:
//! the `version` record, the record `purpose` = `token-seal-client-key`, the record `seal` = that
//! first material, and the record `client_key` = the key file's bytes, read when the key is made.
//! A key file that cannot be read gives the record `client_key_unreadable` = 32 random bytes: its
//! tenant can call no token endpoint anyway, and must not open what others sealed. The material
//! never shows in the key's name, so changing it splits nothing but the sealed records.
//!
//! **Bump the version tag whenever the encoding changes** (a field added, removed, renamed,
//! reordered, or encoded differently), and keep the pinned-key test in step: a changed key
//! without a new tag would silently split replicas that run different versions. Destructuring
//! without `..` below makes a new config field a compile error here, so it cannot be forgotten.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::config::{
    AdobeCommerceConfig, AdobeImsConfig, CyberbizConfig, ExpiresInUnit, OAuth2AuthMethod, OAuth2Config, OAuth2Grant,
    PasswordOrClient, ProviderConfig, ResponseMapping, Secret, ShoplineConfig, ShoplineCredentials, StaticConfig,
    TenantName, VantageConfig,
};

/// The first record of every fingerprint; see the module documentation for when to bump it.
const VERSION: &str = "tokenbroker-storekey-v1";

/// Identifies one credential set: tenant name plus a hash of its provider configuration.
#[derive(Clone)]
pub struct StoreKey {
    name: String,
    /// Key material for sealing this credential set's stored tokens: SHA-256 of the same
    /// encoding under a purpose record of its own, so it cannot be derived from the name's
    /// fingerprint; only a process that holds the credentials can compute it.
    seal_material: Arc<Secret<[u8; 32]>>,
}

impl StoreKey {
    /// The fingerprint covers every field, secrets included (hashed, never shown).
    pub fn new(tenant: &TenantName, provider: &ProviderConfig) -> Self {
        let digest = fingerprint(provider, None);
        Self {
            name: format!("{tenant}:{}", hex::encode(&digest[..12])),
            seal_material: Arc::new(Secret::new(seal_material(provider))),
        }
    }

    /// `tenant:fingerprint`, the part of every Redis key that names this credential set.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn seal_material(&self) -> &[u8; 32] {
        self.seal_material.expose()
    }
}

impl PartialEq for StoreKey {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for StoreKey {}

impl std::hash::Hash for StoreKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The purpose record of the sealing material's encoding (after the version record).
const SEAL_PURPOSE: &str = "token-seal";

/// The purpose record of the sealing material that covers a client key file's bytes.
const CLIENT_KEY_SEAL_PURPOSE: &str = "token-seal-client-key";

/// What stored tokens of `provider` are sealed under (module documentation, "Sealing material"):
/// a hash of every setting and secret, and for `tls_client_auth` of the key file's bytes too, so
/// that reading Redis and the configuration is not enough to open a sealed token.
fn seal_material(provider: &ProviderConfig) -> [u8; 32] {
    let base = fingerprint(provider, Some(SEAL_PURPOSE));
    let ProviderConfig::OAuth2(OAuth2Config {
        auth_method: OAuth2AuthMethod::TlsClientAuth { client_key, .. },
        ..
    }) = provider
    else {
        return base;
    };
    let mut w = FingerprintWriter::new();
    w.text("purpose", CLIENT_KEY_SEAL_PURPOSE).field("seal", &base);
    match read_key_file(client_key) {
        Some(bytes) => w.field("client_key", &bytes),
        None => w.field("client_key_unreadable", &rand::random::<[u8; 32]>()),
    };
    w.finish()
}

/// A PEM private key is a few KiB; a path to anything much larger (a device, a log) is not one.
const MAX_KEY_FILE: u64 = 1 << 20;

/// The key file's bytes, or `None` when it cannot be read or is larger than [`MAX_KEY_FILE`].
fn read_key_file(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).ok()?;
    file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= MAX_KEY_FILE).then_some(bytes)
}

/// SHA-256 of the v1 encoding of `provider`, with a `purpose` record when one is given.
fn fingerprint(provider: &ProviderConfig, purpose: Option<&str>) -> [u8; 32] {
    let mut w = FingerprintWriter::new();
    if let Some(purpose) = purpose {
        w.text("purpose", purpose);
    }
    match provider {
        ProviderConfig::AdobeIms(c) => adobe_ims(w.text("provider", "adobe_ims"), c),
        ProviderConfig::Shopline(c) => shopline(w.text("provider", "shopline"), c),
        ProviderConfig::Vantage(c) => vantage(w.text("provider", "vantage"), c),
        ProviderConfig::Cyberbiz(c) => cyberbiz(w.text("provider", "cyberbiz"), c),
        ProviderConfig::AdobeCommerce(c) => adobe_commerce(w.text("provider", "adobe_commerce"), c),
        ProviderConfig::OAuth2(c) => oauth2(w.text("provider", "oauth2"), c),
        ProviderConfig::Static(c) => static_token(w.text("provider", "static"), c),
    }
    w.finish()
}

fn adobe_ims(w: &mut FingerprintWriter, c: &AdobeImsConfig) {
    let AdobeImsConfig {
        client_id,
        client_secrets,
        scopes,
        token_url,
        org_id,
    } = c;
    w.text("client_id", client_id);
    w.secrets("client_secrets", client_secrets);
    w.texts("scopes", scopes);
    w.display("token_url", token_url);
    if let Some(org_id) = org_id {
        w.text("org_id", org_id);
    }
}

fn shopline(w: &mut FingerprintWriter, c: &ShoplineConfig) {
    let ShoplineConfig {
        handle,
        credentials,
        token_url,
    } = c;
    w.text("handle", handle);
    match credentials {
        ShoplineCredentials::OAuth {
            app_key,
            app_secret,
            code,
        } => {
            w.text("credentials", "oauth");
            w.text("credentials.app_key", app_key);
            w.secret("credentials.app_secret", app_secret);
            if let Some(code) = code {
                w.secret("credentials.code", code);
            }
        }
        ShoplineCredentials::Private { access_token } => {
            w.text("credentials", "private");
            w.secret("credentials.access_token", access_token);
        }
    }
    w.display("token_url", token_url);
}

fn vantage(w: &mut FingerprintWriter, c: &VantageConfig) {
    let VantageConfig {
        base_url,
        tenant_id,
        token_url,
        client_id,
        client_secrets,
        grant,
        scopes,
        offline_access,
    } = c;
    w.display("base_url", base_url);
    if let Some(tenant_id) = tenant_id {
        w.text("tenant_id", tenant_id);
    }
    w.display("token_url", token_url);
    w.text("client_id", client_id);
    w.secrets("client_secrets", client_secrets);
    match grant {
        PasswordOrClient::ClientCredentials => w.text("grant", "client_credentials"),
        PasswordOrClient::Password { username, password } => w
            .text("grant", "password")
            .text("grant.username", username)
            .secret("grant.password", password),
    };
    w.texts("scopes", scopes);
    w.flag("offline_access", *offline_access);
}

fn cyberbiz(w: &mut FingerprintWriter, c: &CyberbizConfig) {
    // The app secret only verifies webhooks: changing it must not orphan the stored token.
    let CyberbizConfig { token, app_secret: _ } = c;
    w.secret("token", token);
}

fn adobe_commerce(w: &mut FingerprintWriter, c: &AdobeCommerceConfig) {
    #[rustfmt::skip]
    let AdobeCommerceConfig { consumer_key, consumer_secret, access_token, access_token_secret, signature_method, legacy_signing } = c;
    w.secret("consumer_key", consumer_key)
        .secret("consumer_secret", consumer_secret);
    w.secret("access_token", access_token)
        .secret("access_token_secret", access_token_secret);
    w.text("signature_method", signature_method.as_str())
        .flag("legacy_signing", *legacy_signing);
}

fn oauth2(w: &mut FingerprintWriter, c: &OAuth2Config) {
    let OAuth2Config {
        token_url,
        client_id,
        client_secrets,
        grant,
        scopes,
        scope_separator,
        auth_method,
        extra_params,
        audience,
        default_ttl,
        response,
    } = c;
    w.display("token_url", token_url);
    w.text("client_id", client_id);
    w.secrets("client_secrets", client_secrets);
    oauth2_grant(w, grant);
    w.texts("scopes", scopes);
    w.text("scope_separator", scope_separator);
    oauth2_auth_method(w, auth_method);
    let pairs = extra_params.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]);
    w.list("extra_params", pairs);
    if let Some(audience) = audience {
        w.text("audience", audience);
    }
    w.duration("default_ttl", *default_ttl);
    response_mapping(w, response);
}

fn oauth2_grant(w: &mut FingerprintWriter, grant: &OAuth2Grant) {
    match grant {
        OAuth2Grant::ClientCredentials => w.text("grant", "client_credentials"),
        OAuth2Grant::Password { username, password } => w
            .text("grant", "password")
            .text("grant.username", username)
            .secret("grant.password", password),
        OAuth2Grant::RefreshToken { refresh_token } => w
            .text("grant", "refresh_token")
            .secret("grant.refresh_token", refresh_token),
    };
}

fn oauth2_auth_method(w: &mut FingerprintWriter, method: &OAuth2AuthMethod) {
    match method {
        OAuth2AuthMethod::ClientSecretPost => w.text("auth_method", "client_secret_post"),
        OAuth2AuthMethod::ClientSecretBasic => w.text("auth_method", "client_secret_basic"),
        OAuth2AuthMethod::PrivateKeyJwt { private_key } => w
            .text("auth_method", "private_key_jwt")
            .secret("auth_method.private_key", private_key),
        OAuth2AuthMethod::TlsClientAuth {
            client_cert,
            client_key,
            ..
        } => w
            .text("auth_method", "tls_client_auth")
            .path("auth_method.client_cert", client_cert)
            .path("auth_method.client_key", client_key),
    };
}

fn response_mapping(w: &mut FingerprintWriter, response: &ResponseMapping) {
    let ResponseMapping {
        token,
        expires_in,
        expires_in_unit,
        expires_at,
    } = response;
    w.texts("response.token", token);
    w.texts("response.expires_in", expires_in);
    let unit = match expires_in_unit {
        ExpiresInUnit::Seconds => "seconds",
        ExpiresInUnit::Millis => "millis",
    };
    w.text("response.expires_in_unit", unit);
    if let Some(expires_at) = expires_at {
        w.texts("response.expires_at", expires_at);
    }
}

fn static_token(w: &mut FingerprintWriter, c: &StaticConfig) {
    let StaticConfig {
        header,
        value,
        expires_at,
    } = c;
    w.text("header", header.as_str());
    w.secret("value", value);
    if let Some(at) = expires_at {
        w.instant("expires_at", *at);
    }
}

/// Streams records into SHA-256, so the secrets are never gathered into one buffer.
struct FingerprintWriter(Sha256);

impl FingerprintWriter {
    fn new() -> Self {
        let mut w = Self(Sha256::new());
        w.text("version", VERSION);
        w
    }

    /// One record: the tagged, length-prefixed `value`.
    fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.prefixed(name.as_bytes()).prefixed(value)
    }

    fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.field(name, value.as_bytes())
    }

    /// Secrets are read here and in `secrets` only: into the hash, never into the key text.
    fn secret(&mut self, name: &str, value: &Secret<String>) -> &mut Self {
        self.text(name, value.expose())
    }

    fn display(&mut self, name: &str, value: &impl std::fmt::Display) -> &mut Self {
        self.text(name, &value.to_string())
    }

    fn path(&mut self, name: &str, value: &Path) -> &mut Self {
        self.field(name, value.as_os_str().as_encoded_bytes())
    }

    fn flag(&mut self, name: &str, value: bool) -> &mut Self {
        self.field(name, &[u8::from(value)])
    }

    fn duration(&mut self, name: &str, value: Duration) -> &mut Self {
        self.field(name, &value.as_nanos().to_be_bytes())
    }

    fn instant(&mut self, name: &str, at: SystemTime) -> &mut Self {
        let nanos = |d: Duration| i128::try_from(d.as_nanos()).expect("a Duration's nanoseconds fit in i128");
        let since_epoch = match at.duration_since(UNIX_EPOCH) {
            Ok(after) => nanos(after),
            Err(before) => -nanos(before.duration()),
        };
        self.field(name, &since_epoch.to_be_bytes())
    }

    fn texts(&mut self, name: &str, items: &[String]) -> &mut Self {
        self.list(name, items.iter().map(String::as_bytes))
    }

    fn secrets(&mut self, name: &str, items: &[Secret<String>]) -> &mut Self {
        self.list(name, items.iter().map(|s| s.expose().as_bytes()))
    }

    /// `u32-BE count ‖ (u32-BE len ‖ item)*` as one record; the items are walked twice (once for
    /// the record's length) rather than copied, since some are secrets.
    fn list<'a, I>(&mut self, name: &str, items: I) -> &mut Self
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: Clone,
    {
        let items = items.into_iter();
        let (count, len) = items
            .clone()
            .fold((0usize, 4usize), |(n, len), item| (n + 1, len + 4 + item.len()));
        self.prefixed(name.as_bytes());
        self.0.update(length(len));
        self.0.update(length(count));
        for item in items {
            self.prefixed(item);
        }
        self
    }

    fn prefixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(length(bytes.len()));
        self.0.update(bytes);
        self
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// A length or count as u32-BE; configuration values are nowhere near 4 GiB.
fn length(n: usize) -> [u8; 4] {
    u32::try_from(n)
        .expect("a configuration value is shorter than 4 GiB")
        .to_be_bytes()
}

#[cfg(test)]
mod tests;
