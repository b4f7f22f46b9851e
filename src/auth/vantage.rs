//! STUB: the providers helper implements this wire protocol.

use super::{FetchCtx, FetchToken, ProviderError, Token};
use crate::config::VantageConfig;

#[derive(Debug)]
pub struct Vantage {
    config: VantageConfig,
}

impl Vantage {
    pub fn new(config: VantageConfig) -> Self {
        Self { config }
    }
}

impl FetchToken for Vantage {
    async fn fetch(&self, _ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let _ = &self.config;
        Err(ProviderError::BadResponse("not implemented yet".into()))
    }
}
