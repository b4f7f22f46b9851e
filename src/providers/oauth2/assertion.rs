//! RFC 7523 client assertions for `private_key_jwt`: a short-lived JWT signed with the client's
//! private key replaces the client secret on the wire.
//!
//! Signing uses `ring` (already in the tree through rustls) with RS256 (RSA PKCS#1 v1.5 SHA-256)
//! or ES256 (P-256, fixed-width `r||s` as JWS requires). The key is parsed once, when the provider
//! is built; neither the key nor an assertion is ever formatted.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::auth::ProviderError;

/// `client_assertion_type` for a JWT bearer assertion (RFC 7523 2.2).
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Lifetime of one assertion: long enough to absorb clock skew, short enough that a captured
/// assertion is soon useless (each is used once; `jti` lets the server refuse replays).
const ASSERTION_LIFETIME_SECS: u64 = 300;

/// Why a `private_key` cannot sign. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum KeyError {
    #[error("private_key holds no PEM private key")]
    NoKey,
    #[error("private_key is neither an RSA nor a P-256 key in PKCS#8 (or RSA PKCS#1): {0}")]
    Unsupported(String),
}

enum SigningKey {
    Rs256(RsaKeyPair),
    Es256(EcdsaKeyPair),
}

/// Signs client assertions with one private key.
pub(crate) struct AssertionSigner {
    key: SigningKey,
    rng: SystemRandom,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// Parses a PEM `PRIVATE KEY` (PKCS#8, RSA or P-256) or `RSA PRIVATE KEY` (PKCS#1).
    pub(crate) fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| KeyError::NoKey)?;
        let rng = SystemRandom::new();
        let key = match &der {
            PrivateKeyDer::Pkcs8(pkcs8) => {
                let der = pkcs8.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(der) {
                    Ok(rsa) => SigningKey::Rs256(rsa),
                    Err(_) => EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                        .map(SigningKey::Es256)
                        .map_err(|e| KeyError::Unsupported(e.to_string()))?,
                }
            }
            PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der())
                .map(SigningKey::Rs256)
                .map_err(|e| KeyError::Unsupported(e.to_string()))?,
            _ => {
                return Err(KeyError::Unsupported(
                    "SEC1 EC keys: convert with `openssl pkcs8 -topk8 -nocrypt`".into(),
                ));
            }
        };
        Ok(Self { key, rng })
    }

    /// `RS256` or `ES256`.
    pub(crate) fn alg(&self) -> &'static str {
        match self.key {
            SigningKey::Rs256(_) => "RS256",
            SigningKey::Es256(_) => "ES256",
        }
    }

    /// A fresh assertion: `iss` = `sub` = `client_id`, `aud` = the token endpoint, random `jti`,
    /// `iat` = `now_unix_secs`, `exp` five minutes later.
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now_unix_secs: u64,
    ) -> Result<String, ProviderError> {
        let header = serde_json::json!({ "alg": self.alg(), "typ": "JWT" });
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": hex::encode(rand::random::<[u8; 16]>()),
            "iat": now_unix_secs,
            "exp": now_unix_secs + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ProviderError> {
        let failed = |_| ProviderError::BadResponse("signing the client assertion failed".into());
        match &self.key {
            SigningKey::Rs256(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
            SigningKey::Es256(key) => Ok(key.sign(&self.rng, message).map_err(failed)?.as_ref().to_vec()),
        }
    }

    /// The public key, for tests that verify what was signed.
    #[cfg(test)]
    pub(crate) fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        match &self.key {
            SigningKey::Rs256(key) => key.public().as_ref().to_vec(),
            SigningKey::Es256(key) => key.public_key().as_ref().to_vec(),
        }
    }
}
