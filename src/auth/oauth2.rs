//! STUB: the providers helper implements this wire protocol.

use super::{FetchCtx, FetchToken, ProviderError, Token};
use crate::config::OAuth2Config;

#[derive(Debug)]
pub struct OAuth2 {
    config: OAuth2Config,
}

impl OAuth2 {
    pub fn new(config: OAuth2Config) -> Self {
        Self { config }
    }
}

impl FetchToken for OAuth2 {
    async fn fetch(&self, _ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let _ = &self.config;
        Err(ProviderError::BadResponse("not implemented yet".into()))
    }
}
