//! The configuration's vocabulary, shared by the configuration and the providers: the raw TOML
//! shapes, the typed values both build (secrets, durations and sizes, rate limits, upstream URLs),
//! and the checking context that reports each problem at `file:line:column`.
//!
//! ```text
//!   config (assembles RuntimeConfig) ──▶ providers (each checks its own keys) ──▶ schema
//! ```
//!
//! It sits below both, so a provider can validate its own block without reaching up into the
//! configuration that assembles the tenants. Nothing here knows a section or a provider by name.

pub(crate) mod check;
pub(crate) mod errors;
pub(crate) mod fields;
pub(crate) mod limits;
pub(crate) mod print;
pub(crate) mod raw;
pub(crate) mod secret;
pub(crate) mod source;
pub(crate) mod units;
pub(crate) mod values;

pub use check::{Env, MapEnv, NoSecrets, ProcessEnv};
pub use errors::{ConfigError, ConfigErrors};
pub use limits::{BatchShare, CallerClass, MAX_PAUSE, PerClass, RateLimitConfig};
pub use secret::Secret;
pub use values::{KeyDigest, UpstreamUrl};
