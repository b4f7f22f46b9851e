//! Token-endpoint HTTP client. STUB: the providers helper implements this.

/// A small client for token endpoints: timeout, form/JSON bodies, status → `ProviderError`.
#[derive(Debug, Clone, Default)]
pub struct TokenHttp {}
