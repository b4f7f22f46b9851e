//! Small typed values that the configuration and the providers both hold: an upstream's base URL
//! and the digest that stands for a caller key or a set of key files.

use std::fmt;

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
