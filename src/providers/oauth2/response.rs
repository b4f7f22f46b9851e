//! Reading a token endpoint's 2xx body into a [`Granted`] credential and its expiry.
//!
//! Shared by every form-based provider (`oauth2`, `adobe_ims`, `vantage`) and, for the date parser,
//! by `shopline`. Expiry precedence (`docs/providers.md#expiry`): what the response says
//! (`expires_in` in its unit, or an absolute `expires_at`), else the JWT `exp` claim, else the
//! provider's configured default; never a constant of ours. Nothing here formats a token or a body
//! into an error: only field paths.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

use super::{ExpiresInUnit, ResponseMapping};
use crate::auth::jwt::{self, unsigned};
use crate::auth::{ProviderError, Token};
use crate::clock;
use crate::schema::Secret;

/// When a granted token stops working, as the response (or its JWT) put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Relative to receipt (`expires_in`).
    In(Duration),
    /// Absolute wall-clock time (`expires_at`, JWT `exp`, SHOPLINE `expireTime`).
    At(SystemTime),
}

/// What a successful token response granted. `Debug` is safe: both tokens are [`Secret`]s.
#[derive(Debug)]
pub(crate) struct Granted {
    pub(crate) access: Secret<String>,
    pub(crate) expiry: Option<Expiry>,
    pub(crate) refresh_token: Option<Secret<String>>,
}

impl Granted {
    /// The [`Token`], taking its expiry from the response, else the JWT `exp`, else `default_ttl`.
    /// No expiry at all, or one already past, is a `BadResponse`: a token we cannot schedule
    /// renewal for would be used until it fails.
    pub(crate) fn into_token(self, secret_index: usize, default_ttl: Option<Duration>) -> Result<Token, ProviderError> {
        let expiry = self
            .expiry
            .or_else(|| jwt_expiry(self.access.expose()))
            .or(default_ttl.map(Expiry::In))
            .ok_or_else(|| {
                ProviderError::BadResponse("no expiry in the response and the token is not a JWT with `exp`".into())
            })?;
        // Both arms clamp the lifetime to `clock::MAX_TOKEN_LIFETIME`: a "never expires" answer
        // is used for a year, never added to the clock as it stands.
        let now = Instant::now();
        let expires_at = match expiry {
            Expiry::In(lifetime) => clock::later(now, lifetime),
            Expiry::At(at) => clock::later(now, clock::until(at)),
        };
        if expires_at <= now {
            return Err(ProviderError::BadResponse(
                "the granted token is already expired".into(),
            ));
        }
        Ok(Token {
            access: self.access,
            obtained_at: now,
            expires_at: Some(expires_at),
            refresh_token: self.refresh_token,
            secret_index,
        })
    }
}

/// The JWT `exp` of `token` as an [`Expiry`].
pub(crate) fn jwt_expiry(token: &str) -> Option<Expiry> {
    jwt::exp(token).map(|secs| Expiry::At(clock::from_unix_secs(secs)))
}

/// RFC 6749 5.1 field names: `access_token`, `expires_in` in seconds.
pub(crate) fn standard_mapping() -> ResponseMapping {
    ResponseMapping {
        token: vec!["access_token".into()],
        expires_in: vec!["expires_in".into()],
        expires_in_unit: ExpiresInUnit::Seconds,
        expires_at: None,
    }
}

/// Reads a 2xx body. A body without a token where `mapping` says it is, is a `BadResponse`
/// (some gateways answer 200 with an error page). The refresh token is always `refresh_token`.
pub(crate) fn parse_token_response(body: &[u8], mapping: &ResponseMapping) -> Result<Granted, ProviderError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|_| ProviderError::BadResponse("token response is not JSON".into()))?;
    let access = lookup(&json, &mapping.token)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::BadResponse(format!("no token at `{}`", mapping.token.join("."))))?;
    let expiry = match &mapping.expires_at {
        Some(path) => lookup(&json, path).and_then(absolute_time).map(Expiry::At),
        None => lookup(&json, &mapping.expires_in).and_then(unsigned).map(|n| {
            Expiry::In(match mapping.expires_in_unit {
                ExpiresInUnit::Seconds => Duration::from_secs(n),
                ExpiresInUnit::Millis => Duration::from_millis(n),
            })
        }),
    };
    let refresh_token = json
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    Ok(Granted {
        access: Secret::new(access.to_owned()),
        expiry,
        refresh_token: refresh_token.map(|t| Secret::new(t.to_owned())),
    })
}

/// The value at a dotted path (already split), `None` when any step is missing.
pub(crate) fn lookup<'v>(json: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(json, |value, key| value.get(key))
}

/// Unix seconds (number or numeric string) or an RFC 3339 date-time.
fn absolute_time(value: &Value) -> Option<SystemTime> {
    match unsigned(value) {
        Some(secs) => Some(clock::from_unix_secs(secs)),
        None => clock::parse_datetime(value.as_str()?),
    }
}
