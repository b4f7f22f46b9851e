//! The fingerprint writer: a versioned, explicit byte encoding of a provider block, streamed into
//! SHA-256. Each provider writes its own fields with it (its `fingerprint` function); the store
//! names and seals tokens with the digest. The encoding, and when to bump its version, is
//! described in `store/key.rs`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::schema::Secret;

/// The first record of every fingerprint; see `store/key.rs` for when to bump it.
pub(crate) const VERSION: &str = "tokenbroker-storekey-v1";

/// Streams records into SHA-256, so the secrets are never gathered into one buffer.
pub(crate) struct Fingerprint(Sha256);

impl Fingerprint {
    pub(crate) fn new() -> Self {
        let mut w = Self(Sha256::new());
        w.text("version", VERSION);
        w
    }

    /// One record: the tagged, length-prefixed `value`.
    pub(crate) fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.prefixed(name.as_bytes()).prefixed(value)
    }

    pub(crate) fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.field(name, value.as_bytes())
    }

    /// Secrets are read here and in `secrets` only: into the hash, never into the key text.
    pub(crate) fn secret(&mut self, name: &str, value: &Secret<String>) -> &mut Self {
        self.text(name, value.expose())
    }

    pub(crate) fn display(&mut self, name: &str, value: &impl std::fmt::Display) -> &mut Self {
        self.text(name, &value.to_string())
    }

    pub(crate) fn path(&mut self, name: &str, value: &Path) -> &mut Self {
        self.field(name, value.as_os_str().as_encoded_bytes())
    }

    pub(crate) fn flag(&mut self, name: &str, value: bool) -> &mut Self {
        self.field(name, &[u8::from(value)])
    }

    pub(crate) fn duration(&mut self, name: &str, value: Duration) -> &mut Self {
        self.field(name, &value.as_nanos().to_be_bytes())
    }

    pub(crate) fn instant(&mut self, name: &str, at: SystemTime) -> &mut Self {
        let nanos = |d: Duration| i128::try_from(d.as_nanos()).expect("a Duration's nanoseconds fit in i128");
        let since_epoch = match at.duration_since(UNIX_EPOCH) {
            Ok(after) => nanos(after),
            Err(before) => -nanos(before.duration()),
        };
        self.field(name, &since_epoch.to_be_bytes())
    }

    pub(crate) fn texts(&mut self, name: &str, items: &[String]) -> &mut Self {
        self.list(name, items.iter().map(String::as_bytes))
    }

    pub(crate) fn secrets(&mut self, name: &str, items: &[Secret<String>]) -> &mut Self {
        self.list(name, items.iter().map(|s| s.expose().as_bytes()))
    }

    /// `u32-BE count ‖ (u32-BE len ‖ item)*` as one record; the items are walked twice (once for
    /// the record's length) rather than copied, since some are secrets.
    pub(crate) fn list<'a, I>(&mut self, name: &str, items: I) -> &mut Self
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

    pub(crate) fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// A length or count as u32-BE; configuration values are nowhere near 4 GiB.
fn length(n: usize) -> [u8; 4] {
    u32::try_from(n)
        .expect("a configuration value is shorter than 4 GiB")
        .to_be_bytes()
}
