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
//! name, then the provider's records in the fixed order its module's `fingerprint` function writes them
//! (under `src/providers/`; the writer is `providers/fingerprint.rs`). Values:
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
//! without a new tag would silently split replicas that run different versions. Each provider's
//! function destructures its block without `..`, which makes a new config field a compile error
//! there, so it cannot be forgotten.

use std::path::Path;
use std::sync::Arc;

use crate::config::TenantName;
use crate::providers::ProviderConfig;
use crate::providers::fingerprint::Fingerprint;
use crate::schema::Secret;

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
    let Some(client_key) = provider.sealed_key_file() else {
        return base;
    };
    let mut w = Fingerprint::new();
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
    let mut w = Fingerprint::new();
    if let Some(purpose) = purpose {
        w.text("purpose", purpose);
    }
    provider.fingerprint(&mut w);
    w.finish()
}

#[cfg(test)]
mod tests;
