//! STUB: the providers helper implements this wire protocol.

use super::{FetchCtx, FetchToken, ProviderError, Token};
use crate::config::AdobeImsConfig;

#[derive(Debug)]
pub struct AdobeIms {
    config: AdobeImsConfig,
}

impl AdobeIms {
    pub fn new(config: AdobeImsConfig) -> Self {
        Self { config }
    }
}

impl FetchToken for AdobeIms {
    async fn fetch(&self, _ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let _ = &self.config;
        Err(ProviderError::BadResponse("not implemented yet".into()))
    }
}

impl AdobeIms {
    pub fn upstream_headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        Vec::new()
    }
}
