//! `static`: a fixed header value (`value`) sent as `header`. Nothing to fetch; the expiry comes
//! from `expires_at` or, when the value is a bearer JWT, its `exp`, so readiness can fail before
//! the credential lapses.

use http::{HeaderName, HeaderValue};

use super::StaticConfig;
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token, fixed_token, jwt, sensitive_header};
use crate::clock;

#[derive(Debug)]
pub(crate) struct StaticToken {
    config: StaticConfig,
}

impl StaticToken {
    pub(crate) fn new(config: StaticConfig) -> Self {
        Self { config }
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

    /// The configured header, carrying the whole configured value.
    fn credential_header(&self, token: &Token) -> Result<(HeaderName, HeaderValue), ProviderError> {
        sensitive_header(self.config.header.clone(), token.access.expose().clone())
    }

    fn renews(&self) -> bool {
        false
    }
}
