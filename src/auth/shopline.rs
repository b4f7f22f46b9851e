//! STUB: the providers helper implements this wire protocol.

use super::{FetchCtx, FetchToken, ProviderError, Token};
use crate::config::ShoplineConfig;

#[derive(Debug)]
pub struct Shopline {
    config: ShoplineConfig,
}

impl Shopline {
    pub fn new(config: ShoplineConfig) -> Self {
        Self { config }
    }
}

impl FetchToken for Shopline {
    async fn fetch(&self, _ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let _ = &self.config;
        Err(ProviderError::BadResponse("not implemented yet".into()))
    }
}

impl Shopline {
    pub fn renews(&self) -> bool {
        true
    }
}
