//! What a provider sets when the tenant does not: its default upstream, rate limit, body cap and
//! path rewriting. Each provider module returns one from its `preset`.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::schema::{BatchShare, CallerClass, PerClass, RateLimitConfig};

/// A provider's defaults for a tenant's common keys.
#[derive(Default)]
pub(crate) struct Preset {
    /// `None` with `has_default_upstream` when the default depends on a key that is invalid.
    pub(crate) upstream: Option<String>,
    pub(crate) has_default_upstream: bool,
    pub(crate) rate_limit: Option<RateLimitConfig>,
    pub(crate) max_body: Option<u64>,
    pub(crate) rewrite: &'static [(&'static str, &'static str)],
}

/// A documented provider limit: `per_second` with `burst`, each request spaced `headroom` more,
/// waiting up to 5 s for a slot.
pub(super) fn limit(per_second: u32, burst: u32, headroom: Duration) -> Option<RateLimitConfig> {
    Some(RateLimitConfig {
        per_second: NonZeroU32::new(per_second).expect("preset rates are positive"),
        burst: NonZeroU32::new(burst).expect("preset bursts are positive"),
        max_wait: PerClass::all(Duration::from_secs(5)),
        batch_share: BatchShare::DEFAULT,
        headroom,
        lead: CallerClass::Standard,
    })
}

/// `/rest/V1/...` and `/rest/<store>/V1/...` → `/V1/...`; the store code becomes the `Store` header.
pub(super) const ADOBE_REWRITE: &[(&str, &str)] = &[(
    crate::routing::rewrite::ADOBE_REST_PATTERN,
    crate::routing::rewrite::ADOBE_REST_REPLACE,
)];
