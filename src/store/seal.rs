//! Stored tokens are sealed: AES-256-GCM under a key derived (HKDF-SHA256) from the tenant's own
//! credential material (for `tls_client_auth`, the key file's bytes: `store::key`) and the
//! optional deployment-wide `[store] seal_secret`, so Redis holds nothing usable for someone who
//! can read Redis (and the configuration) but does not hold the credentials. The associated data binds a sealed record to its key name and version, so
//! a record copied to another key, or replayed as another version, fails to open.
//!
//! Sealed form: `v1` ‖ 12-byte random nonce ‖ ciphertext ‖ 16-byte tag. The plaintext is the
//! token record as JSON.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::{StoreKey, StoredToken};
use crate::config::Secret;

const FORMAT: &[u8; 2] = b"v1";
const SALT: &[u8] = b"tokenbroker-token-seal-v1";

/// The sealing key of one store key.
pub(crate) struct Sealer {
    key: LessSafeKey,
    name: String,
    random: SystemRandom,
}

/// Why a stored record could not be opened: written by a process with other credentials, altered,
/// or by a future format. Either way it is treated as absent, never as an error a request sees.
#[derive(Debug, thiserror::Error)]
#[error("the stored token could not be opened (other credentials, or altered)")]
pub(crate) struct Unsealable;

#[derive(Serialize, Deserialize)]
struct Record {
    access: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh: Option<String>,
    obtained_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
    secret_index: usize,
}

impl Sealer {
    /// The sealer of `key`'s records; `deployment` is `[store] seal_secret`, appended to the key's
    /// own material (a fixed 32 bytes, so the two cannot be confused) when one is configured.
    pub(crate) fn new(key: &StoreKey, deployment: Option<&Secret<String>>) -> Self {
        let mut material = key.seal_material().to_vec();
        if let Some(secret) = deployment {
            material.extend_from_slice(secret.expose().as_bytes());
        }
        let prk = Salt::new(HKDF_SHA256, SALT).extract(&material);
        let info = [key.name().as_bytes()];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            name: key.name().to_owned(),
            random: SystemRandom::new(),
        }
    }

    /// The sealed form of `token` as `version`.
    pub(crate) fn seal(&self, token: &StoredToken, version: u64) -> Vec<u8> {
        let record = Record {
            access: token.access.expose().clone(),
            refresh: token.refresh_token.as_ref().map(|r| r.expose().clone()),
            obtained_at_ms: token.obtained_at_ms,
            expires_at_ms: token.expires_at_ms,
            secret_index: token.secret_index,
        };
        let mut buffer = serde_json::to_vec(&record).expect("a token record always serializes");
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .expect("the system random source is available");
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), self.aad(version), &mut buffer)
            .expect("AES-GCM seals any record this small");
        let mut sealed = Vec::with_capacity(FORMAT.len() + NONCE_LEN + buffer.len());
        sealed.extend_from_slice(FORMAT);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buffer);
        sealed
    }

    /// The token sealed in `sealed` as `version`.
    pub(crate) fn open(&self, sealed: &[u8], version: u64) -> Result<StoredToken, Unsealable> {
        let rest = sealed.strip_prefix(FORMAT).ok_or(Unsealable)?;
        if rest.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealable)?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, self.aad(version), &mut buffer)
            .map_err(|_| Unsealable)?;
        let record: Record = serde_json::from_slice(plain).map_err(|_| Unsealable)?;
        Ok(StoredToken {
            access: Secret::new(record.access),
            refresh_token: record.refresh.map(Secret::new),
            obtained_at_ms: record.obtained_at_ms,
            expires_at_ms: record.expires_at_ms,
            secret_index: record.secret_index,
        })
    }

    fn aad(&self, version: u64) -> Aad<Vec<u8>> {
        let mut aad = Vec::with_capacity(self.name.len() + 9);
        aad.extend_from_slice(self.name.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&version.to_be_bytes());
        Aad::from(aad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderConfig, StaticConfig, TenantName};

    fn key(tenant: &str, value: &str) -> StoreKey {
        let provider = ProviderConfig::Static(StaticConfig {
            header: http::HeaderName::from_static("authorization"),
            value: Secret::new(value.to_owned()),
            expires_at: None,
        });
        StoreKey::new(&TenantName::try_new(tenant).expect("valid tenant"), &provider)
    }

    fn token() -> StoredToken {
        StoredToken {
            access: Secret::new("access-token-SECRET".to_owned()),
            refresh_token: Some(Secret::new("refresh-token-SECRET".to_owned())),
            obtained_at_ms: 1_700_000_000_000,
            expires_at_ms: Some(1_700_000_600_000),
            secret_index: 1,
        }
    }

    #[test]
    fn a_sealed_token_opens_with_the_same_credentials_only() {
        let sealer = Sealer::new(&key("acme", "cred-1"), None);
        let sealed = sealer.seal(&token(), 7);
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("SECRET"), "nothing in clear");
        let opened = sealer.open(&sealed, 7).expect("opens");
        assert_eq!(opened.access.expose(), "access-token-SECRET");
        assert_eq!(opened.refresh_token.expect("refresh").expose(), "refresh-token-SECRET");
        assert_eq!(
            (opened.expires_at_ms, opened.secret_index),
            (Some(1_700_000_600_000), 1)
        );
        // Other credentials, another tenant, another version, a flipped bit: none opens.
        assert!(Sealer::new(&key("acme", "cred-2"), None).open(&sealed, 7).is_err());
        assert!(Sealer::new(&key("other", "cred-1"), None).open(&sealed, 7).is_err());
        assert!(sealer.open(&sealed, 8).is_err());
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(sealer.open(&altered, 7).is_err());
        assert!(sealer.open(b"v1short", 7).is_err());
    }

    fn mtls_key(key_file: &std::path::Path) -> StoreKey {
        let provider = ProviderConfig::OAuth2(crate::config::OAuth2Config {
            token_url: "https://idp.example/token".parse().expect("uri"),
            client_id: "cid".into(),
            client_secrets: Vec::new(),
            grant: crate::config::OAuth2Grant::ClientCredentials,
            scopes: Vec::new(),
            scope_separator: " ".into(),
            auth_method: crate::config::OAuth2AuthMethod::TlsClientAuth {
                client_cert: "/etc/tb/cert.pem".into(),
                client_key: key_file.to_owned(),
                content: crate::config::KeyDigest::of(b""),
            },
            extra_params: Vec::new(),
            audience: None,
            default_ttl: std::time::Duration::from_secs(3600),
            response: crate::providers::oauth2::response::standard_mapping(),
        });
        StoreKey::new(&TenantName::try_new("mtls").expect("valid tenant"), &provider)
    }

    #[test]
    fn a_client_key_seals_with_its_bytes_not_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nfirst\n").expect("write");
        let holder = mtls_key(&path);
        let sealed = Sealer::new(&holder, None).seal(&token(), 3);
        assert!(
            Sealer::new(&mtls_key(&path), None).open(&sealed, 3).is_ok(),
            "same key file, same seal"
        );
        // Someone with the configuration (the same path) but another key file: same store key,
        // and the record does not open.
        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nsecond\n").expect("write");
        let outsider = mtls_key(&path);
        assert_eq!(outsider, holder, "the key's name covers the path only");
        assert!(Sealer::new(&outsider, None).open(&sealed, 3).is_err());
        // Without the file at all, nothing opens either, and two such keys differ.
        std::fs::remove_file(&path).expect("remove");
        assert!(Sealer::new(&mtls_key(&path), None).open(&sealed, 3).is_err());
        let unreadable = Sealer::new(&mtls_key(&path), None).seal(&token(), 3);
        assert!(Sealer::new(&mtls_key(&path), None).open(&unreadable, 3).is_err());
    }

    #[test]
    fn a_deployment_seal_secret_is_needed_to_open() {
        let (one, two) = (Secret::new("seal-one".to_owned()), Secret::new("seal-two".to_owned()));
        let sealed = Sealer::new(&key("acme", "cred-1"), Some(&one)).seal(&token(), 4);
        assert!(Sealer::new(&key("acme", "cred-1"), Some(&one)).open(&sealed, 4).is_ok());
        assert!(Sealer::new(&key("acme", "cred-1"), None).open(&sealed, 4).is_err());
        assert!(
            Sealer::new(&key("acme", "cred-1"), Some(&two))
                .open(&sealed, 4)
                .is_err()
        );
    }

    #[test]
    fn two_seals_of_one_token_differ() {
        let sealer = Sealer::new(&key("acme", "cred-1"), None);
        assert_ne!(
            sealer.seal(&token(), 1),
            sealer.seal(&token(), 1),
            "fresh nonce each time"
        );
    }
}
