//! `cyberbiz`: the merchant-admin API token, sent as `Authorization: Bearer`. CYBERBIZ documents
//! no refresh, so the token is static; it is an HS256 JWT whose `exp` is read (not verified) to
//! report time to expiry and fail readiness before it lapses (`docs/providers.md#cyberbiz-token`).

use super::CyberbizConfig;
use crate::auth::fixed_token;
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token, jwt};
use crate::clock;

#[derive(Debug)]
pub(crate) struct Cyberbiz {
    config: CyberbizConfig,
}

impl Cyberbiz {
    pub(crate) fn new(config: CyberbizConfig) -> Self {
        Self { config }
    }
}

impl FetchToken for Cyberbiz {
    async fn fetch(&self, _ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let expires_at = jwt::exp(self.config.token.expose()).map(clock::deadline_for_unix_secs);
        fixed_token(self.config.token.clone(), expires_at)
    }

    fn renews(&self) -> bool {
        false
    }
}
