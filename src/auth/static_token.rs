//! `static`: a fixed header value (`value`) sent as `header`. Nothing to fetch; the expiry comes
//! from `expires_at` or, when the value is a bearer JWT, its `exp`, so readiness can fail before
//! the credential lapses.

use http::HeaderName;
use tokio::time::Instant;

use super::{FetchCtx, FetchToken, ProviderError, Token, jwt};
use crate::clock;
use crate::config::StaticConfig;

#[derive(Debug)]
pub(crate) struct StaticToken {
    config: StaticConfig,
}

impl StaticToken {
    pub(crate) fn new(config: StaticConfig) -> Self {
        Self { config }
    }

    pub(crate) fn header_name(&self) -> &HeaderName {
        &self.config.header
    }
}

impl FetchToken for StaticToken {
    async fn fetch(&self, _ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let value = self.config.value.expose();
        let expires_at = match self.config.expires_at {
            Some(at) => Some(clock::deadline_for(at)),
            // "Bearer <jwt>" or a bare JWT.
            None => jwt::exp(value.strip_prefix("Bearer ").unwrap_or(value)).map(clock::deadline_for_unix_secs),
        };
        fixed_token(self.config.value.clone(), expires_at)
    }
}

/// A credential that never changes: usable until `expires_at`, then `Expired`.
pub(crate) fn fixed_token(
    access: crate::config::Secret<String>,
    expires_at: Option<Instant>,
) -> Result<Token, ProviderError> {
    let now = Instant::now();
    if expires_at.is_some_and(|at| at <= now) {
        return Err(ProviderError::Expired);
    }
    Ok(Token {
        access,
        obtained_at: now,
        expires_at,
        refresh_token: None,
        secret_index: 0,
    })
}
