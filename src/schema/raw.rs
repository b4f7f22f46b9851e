//! Raw serde structs mirroring `config.example.toml`, one per section.
//!
//! They exist so that serde does the shape checking (types, unknown keys via
//! `deny_unknown_fields`, so a typo fails loudly instead of silently disabling a limit) and
//! `validate` does the meaning. Hence no logic here: only strings, numbers, `Option`s, `Vec`s and
//! the few "either this or that" enums TOML needs. Sections are deserialized one at a time (see
//! `source.rs`) so one broken tenant does not hide the errors of the others.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) listen: Option<String>,
    pub(crate) admin_listen: Option<String>,
    pub(crate) webhook_listen: Option<String>,
    pub(crate) shutdown_grace: Option<RawQuantity>,
    pub(crate) shutdown_delay: Option<RawQuantity>,
    pub(crate) request_timeout: Option<RawQuantity>,
    pub(crate) max_body: Option<RawQuantity>,
    pub(crate) allow_anonymous: Option<bool>,
    pub(crate) allowed_hosts: Option<Vec<String>>,
    pub(crate) watch_config: Option<bool>,
    pub(crate) header_read_timeout: Option<RawQuantity>,
    pub(crate) idle_timeout: Option<RawQuantity>,
    pub(crate) max_connections: Option<i64>,
    pub(crate) max_request_head: Option<RawQuantity>,
    pub(crate) max_response_head: Option<RawQuantity>,
    pub(crate) body_timeout: Option<RawQuantity>,
    pub(crate) replay_buffer_budget: Option<RawQuantity>,
}

/// `[token]`; the same keys may appear in a `[[tenant]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawToken {
    pub(crate) refresh_before: Option<RawQuantity>,
    pub(crate) retry_on_unauthorized: Option<bool>,
    pub(crate) replay_body_limit: Option<RawQuantity>,
    pub(crate) min_token_age: Option<RawQuantity>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub(crate) kind: Option<String>,
    pub(crate) url: Option<RawSecret>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) connect_timeout: Option<RawQuantity>,
    pub(crate) command_timeout: Option<RawQuantity>,
    pub(crate) seal_secret: Option<RawSecret>,
    pub(crate) mode: Option<String>,
    pub(crate) sentinels: Option<Vec<String>>,
    pub(crate) master_name: Option<String>,
    pub(crate) ca_file: Option<String>,
}

/// One `[[tenant]]`: common keys, `[token]` overrides, and every provider's keys (validation
/// rejects the ones that do not belong to the chosen provider).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    pub(crate) name: Option<String>,
    pub(crate) provider: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) required: Option<bool>,
    pub(crate) headers: Option<BTreeMap<String, RawSecret>>,
    pub(crate) ca_file: Option<String>,
    pub(crate) http2: Option<bool>,
    pub(crate) rewrite: Option<Vec<RawRewrite>>,
    pub(crate) rate_limit: Option<RawRateLimit>,
    pub(crate) max_body: Option<RawQuantity>,

    // `[token]` overrides.
    pub(crate) refresh_before: Option<RawQuantity>,
    pub(crate) retry_on_unauthorized: Option<bool>,
    pub(crate) replay_body_limit: Option<RawQuantity>,
    pub(crate) min_token_age: Option<RawQuantity>,

    // Provider keys (which provider takes which: each provider's `KEYS`, under `src/providers/`).
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<RawSecret>,
    pub(crate) client_secrets: Option<Vec<RawSecret>>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) token_url: Option<String>,
    pub(crate) org_id: Option<String>,
    pub(crate) handle: Option<String>,
    pub(crate) app_key: Option<String>,
    pub(crate) app_secret: Option<RawSecret>,
    pub(crate) code: Option<RawSecret>,
    pub(crate) access_token: Option<RawSecret>,
    pub(crate) base_url: Option<String>,
    pub(crate) tenant_id: Option<String>,
    pub(crate) grant: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<RawSecret>,
    pub(crate) offline_access: Option<bool>,
    pub(crate) token: Option<RawSecret>,
    pub(crate) refresh_token: Option<RawSecret>,
    pub(crate) scope_separator: Option<String>,
    pub(crate) auth_method: Option<String>,
    pub(crate) private_key: Option<RawSecret>,
    pub(crate) client_cert: Option<String>,
    pub(crate) client_key: Option<String>,
    pub(crate) extra_params: Option<BTreeMap<String, String>>,
    pub(crate) audience: Option<String>,
    pub(crate) default_ttl: Option<RawQuantity>,
    pub(crate) response: Option<RawResponse>,
    pub(crate) header: Option<String>,
    pub(crate) value: Option<RawSecret>,
    pub(crate) expires_at: Option<RawTime>,
    pub(crate) consumer_key: Option<RawSecret>,
    pub(crate) consumer_secret: Option<RawSecret>,
    pub(crate) access_token_secret: Option<RawSecret>,
    pub(crate) signature_method: Option<String>,
    pub(crate) legacy_signing: Option<bool>,
}

/// `{ match = "...", replace = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRewrite {
    #[serde(rename = "match")]
    pub(crate) pattern: Option<String>,
    pub(crate) replace: Option<String>,
}

/// `rate_limit = false` or `rate_limit = { per_second, burst, max_wait }`.
#[derive(Debug)]
pub(crate) enum RawRateLimit {
    Switch(bool),
    Limit(RawRateLimitTable),
}

/// By hand rather than `untagged`, so that a bad key inside the table is reported as itself
/// (with its position) instead of as "not a bool or a table".
impl<'de> Deserialize<'de> for RawRateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = RawRateLimit;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`false` or a table { per_second, burst, max_wait }")
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<RawRateLimit, E> {
                Ok(RawRateLimit::Switch(value))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawRateLimit, A::Error> {
                let table = serde::de::value::MapAccessDeserializer::new(map);
                RawRateLimitTable::deserialize(table).map(RawRateLimit::Limit)
            }
        }
        deserializer.deserialize_any(Shape)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimitTable {
    pub(crate) per_second: Option<i64>,
    pub(crate) burst: Option<i64>,
    pub(crate) max_wait: Option<RawMaxWait>,
    pub(crate) batch_share: Option<RawShare>,
}

/// `max_wait = "5s"` (every class) or `max_wait = { interactive = "2s", batch = "2m" }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a duration such as \"5s\" or a table { interactive, standard, batch }"
)]
pub(crate) enum RawMaxWait {
    All(RawQuantity),
    PerClass(RawClassWaits),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClassWaits {
    pub(crate) interactive: Option<RawQuantity>,
    pub(crate) standard: Option<RawQuantity>,
    pub(crate) batch: Option<RawQuantity>,
}

/// `batch_share = 0.1` or `batch_share = "10%"`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a fraction such as 0.1 or a percentage such as \"10%\""
)]
pub(crate) enum RawShare {
    Fraction(f64),
    Text(String),
}

/// oauth2 `response = { token, expires_in, expires_in_unit, expires_at }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResponse {
    pub(crate) token: Option<String>,
    pub(crate) expires_in: Option<String>,
    pub(crate) expires_in_unit: Option<String>,
    pub(crate) expires_at: Option<String>,
}

/// One `[[caller]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCaller {
    pub(crate) name: Option<String>,
    pub(crate) key: Option<RawSecret>,
    pub(crate) tenants: Option<Vec<String>>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) class: Option<String>,
}

/// A credential: a literal string (accepted with a warning), `{ env = "NAME" }` or
/// `{ file = "/path" }`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a string, { env = \"NAME\" } or { file = \"/path\" }"
)]
pub(crate) enum RawSecret {
    Literal(String),
    Env(RawEnvRef),
    File(RawFileRef),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnvRef {
    pub(crate) env: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFileRef {
    pub(crate) file: String,
}

/// Literal secrets must not show up when a raw struct is debug-printed.
impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal(***)"),
            Self::Env(r) => write!(f, "Env({:?})", r.env),
            Self::File(r) => write!(f, "File({:?})", r.file),
        }
    }
}

/// A duration (`"90s"`) or size (`"2MiB"`, or a bare integer of bytes). Integers are kept so
/// validation can say "a duration needs a unit" instead of serde's "expected a string".
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected a string such as \"90s\" or \"2MiB\"")]
pub(crate) enum RawQuantity {
    Integer(i64),
    Text(String),
}

/// `expires_at`: a TOML datetime (`2026-01-01T00:00:00Z`) or the same as a string.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected an RFC 3339 date-time such as 2026-01-01T00:00:00Z")]
pub(crate) enum RawTime {
    Datetime(toml::value::Datetime),
    Text(String),
}
