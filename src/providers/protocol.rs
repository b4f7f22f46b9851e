//! [`Provider`]: the runtime half of a tenant's provider, built from its validated block once per
//! load. It dispatches to each provider's [`FetchToken`] implementation with `match`.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::{
    ProviderConfig, adobe_commerce::AdobeCommerce, adobe_ims::AdobeIms, cyberbiz::Cyberbiz, oauth2::OAuth2,
    shopline::Shopline, static_token::StaticToken, vantage::Vantage,
};
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token};
use crate::schema::UpstreamUrl;

/// The closed set of providers' protocols.
#[derive(Debug)]
pub(crate) enum Provider {
    AdobeIms(AdobeIms),
    Shopline(Shopline),
    Vantage(Vantage),
    Cyberbiz(Cyberbiz),
    AdobeCommerce(AdobeCommerce),
    OAuth2(OAuth2),
    Static(StaticToken),
}

/// `match`es every variant, binding the provider to `$p` for `$body`.
macro_rules! each {
    ($self:expr, $p:ident => $body:expr) => {
        match $self {
            Provider::AdobeIms($p) => $body,
            Provider::Shopline($p) => $body,
            Provider::Vantage($p) => $body,
            Provider::Cyberbiz($p) => $body,
            Provider::AdobeCommerce($p) => $body,
            Provider::OAuth2($p) => $body,
            Provider::Static($p) => $body,
        }
    };
}

impl Provider {
    pub(crate) fn from_config(config: &ProviderConfig) -> Self {
        match config {
            ProviderConfig::AdobeIms(c) => Self::AdobeIms(AdobeIms::new(c.clone())),
            ProviderConfig::Shopline(c) => Self::Shopline(Shopline::new(c.clone())),
            ProviderConfig::Vantage(c) => Self::Vantage(Vantage::new(c.clone())),
            ProviderConfig::Cyberbiz(c) => Self::Cyberbiz(Cyberbiz::new(c.clone())),
            ProviderConfig::AdobeCommerce(c) => Self::AdobeCommerce(AdobeCommerce::new(c.clone())),
            ProviderConfig::OAuth2(c) => Self::OAuth2(OAuth2::new(c.clone())),
            ProviderConfig::Static(c) => Self::Static(StaticToken::new(c.clone())),
        }
    }

    /// What signs each request afresh, for providers whose credential is a per-request signature
    /// (OAuth 1.0a) rather than a header built once per token.
    pub(crate) fn signer(&self, upstream: &UpstreamUrl) -> Option<Arc<super::adobe_commerce::Signer>> {
        match self {
            Self::AdobeCommerce(p) => Some(Arc::new(p.signer(upstream))),
            _ => None,
        }
    }
}

impl FetchToken for Provider {
    async fn fetch(&self, ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        each!(self, p => p.fetch(ctx).await)
    }

    fn credential_header(&self, token: &Token) -> Result<(HeaderName, HeaderValue), ProviderError> {
        each!(self, p => p.credential_header(token))
    }

    fn upstream_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        each!(self, p => p.upstream_headers())
    }

    fn renews(&self) -> bool {
        each!(self, p => p.renews())
    }

    fn solo_renewal_costs_peers(&self) -> bool {
        each!(self, p => p.solo_renewal_costs_peers())
    }
}
