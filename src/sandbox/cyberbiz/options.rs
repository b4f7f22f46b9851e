//! How the fake CYBERBIZ shop is set up, and the sandbox's defaults, shared by the token endpoint
//! (`cyberbiz.rs`) and the shop's API (`shop.rs`).

use std::time::Duration;

pub const CYBERBIZ_SHOP_ID: u64 = 7109;
pub const CYBERBIZ_SHOP_DOMAIN: &str = "sandbox.cyberbiz.co";
/// The documented sample token lives exactly 2 hours (`docs/providers.md#cyberbiz-token`).
pub const CYBERBIZ_DEFAULT_TTL: Duration = Duration::from_secs(2 * 3600);
/// Each request may be at most 2 MB (`docs/providers.md#cyberbiz-limits`), taken as decimal
/// megabytes.
pub const CYBERBIZ_BODY_LIMIT: u64 = 2_000_000;

/// How the fake shop is set up.
#[derive(Debug, Clone)]
pub struct CyberbizOptions {
    pub shop_id: u64,
    pub shop_domain: String,
    /// Space-separated, as in the token's `scopes` claim.
    pub scopes: String,
    pub token_ttl: Duration,
    /// Requests allowed in any 1-second window.
    pub max_per_second: usize,
    pub body_limit: u64,
}

impl Default for CyberbizOptions {
    fn default() -> Self {
        Self {
            shop_id: CYBERBIZ_SHOP_ID,
            shop_domain: CYBERBIZ_SHOP_DOMAIN.to_owned(),
            scopes: "public read_products write_products read_orders".to_owned(),
            token_ttl: CYBERBIZ_DEFAULT_TTL,
            max_per_second: 5,
            body_limit: CYBERBIZ_BODY_LIMIT,
        }
    }
}
