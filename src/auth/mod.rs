//! Providers: stateless fetchers of upstream credentials, one module per provider.
//!
//! A provider knows one wire protocol (IMS client credentials, SHOPLINE's signed refresh, ...)
//! and nothing about caching, scheduling or sharing: `token::TokenManager` owns single flight,
//! renewal and retirement, and calls [`Provider::fetch`] when it needs a new token.
//!
//! ```text
//!   TokenManager ──fetch(ctx)──▶ Provider::{AdobeIms, Shopline, Vantage, Cyberbiz, AdobeCommerce,
//!                                           OAuth2, Static}
//!                                   │ uses
//!                                   ▼
//!                               TokenHttp (token-endpoint client: timeout, form/JSON, errors)
//! ```
//!
//! Adding a provider is one new file implementing [`FetchToken`] plus one enum variant here.

pub(crate) mod adobe_commerce;
pub(crate) mod adobe_ims;
pub(crate) mod cyberbiz;
pub(crate) mod http;
pub(crate) mod jwt;
pub(crate) mod oauth2;
pub(crate) mod shopline;
pub(crate) mod static_token;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod vantage;

use std::future::Future;
use std::time::Duration;

use ::http::{HeaderName, HeaderValue};
use tokio::time::Instant;

pub(crate) use self::http::{TokenHttp, TokenHttpError, TokenHttpOptions};
use crate::config::{ProviderConfig, Secret};

/// A credential obtained from a provider.
#[derive(Debug, Clone)]
pub struct Token {
    /// The access token (or, for `static`, the whole header value).
    pub access: Secret<String>,
    /// When it was obtained (monotonic).
    pub obtained_at: Instant,
    /// Its real expiry; `None` for a credential that does not expire.
    pub expires_at: Option<Instant>,
    /// The refresh token to redeem next time (Vantage `offline_access`, OAuth2 refresh grants).
    pub refresh_token: Option<Secret<String>>,
    /// Index into `client_secrets` of the secret that worked (rotation reporting).
    pub secret_index: usize,
}

/// What a fetch may look at besides the provider's own configuration.
pub(crate) struct FetchCtx<'a> {
    pub http: &'a TokenHttp,
    /// The token being replaced, if any: refresh-token grants redeem its `refresh_token`.
    pub previous: Option<&'a Token>,
    /// Index into `client_secrets` of the secret to try first: the one that worked last, carried
    /// across reloads (see [`crate::token::TokenManager::spawn`]).
    pub first_secret: usize,
}

/// Why a token could not be obtained. Never carries a secret or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ProviderError {
    /// The IdP answered and said no (`invalid_client`, `invalid_grant`, SHOPLINE `code != 200`).
    #[error("token endpoint rejected the request ({status}): {code}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Rejected {
        status: u16,
        code: String,
        description: Option<String>,
    },
    /// The IdP asked us to slow down.
    #[error("token endpoint throttled the request (retry after {retry_after:?})")]
    Throttled { retry_after: Option<Duration> },
    /// Connect, TLS, timeout or 5xx: worth retrying.
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// 200 with a body we cannot use (no token, no expiry where one is required, bad JSON).
    #[error("unexpected token endpoint response: {0}")]
    BadResponse(String),
    /// A static credential whose expiry has passed: only the operator can fix it.
    #[error("the configured credential expired")]
    Expired,
}

/// Obtains a fresh credential from one upstream identity provider. Stateless: caching, single
/// flight and renewal scheduling belong to `token::TokenManager`, never to a provider.
pub(crate) trait FetchToken: Send + Sync {
    fn fetch(&self, ctx: FetchCtx<'_>) -> impl Future<Output = Result<Token, ProviderError>> + Send;
}

/// The closed set of providers, dispatched with `match`.
#[derive(Debug)]
pub(crate) enum Provider {
    AdobeIms(adobe_ims::AdobeIms),
    Shopline(shopline::Shopline),
    Vantage(vantage::Vantage),
    Cyberbiz(cyberbiz::Cyberbiz),
    AdobeCommerce(adobe_commerce::AdobeCommerce),
    OAuth2(oauth2::OAuth2),
    Static(static_token::StaticToken),
}

impl Provider {
    pub(crate) fn from_config(config: &ProviderConfig) -> Self {
        match config {
            ProviderConfig::AdobeIms(c) => Self::AdobeIms(adobe_ims::AdobeIms::new(c.clone())),
            ProviderConfig::Shopline(c) => Self::Shopline(shopline::Shopline::new(c.clone())),
            ProviderConfig::Vantage(c) => Self::Vantage(vantage::Vantage::new(c.clone())),
            ProviderConfig::Cyberbiz(c) => Self::Cyberbiz(cyberbiz::Cyberbiz::new(c.clone())),
            ProviderConfig::AdobeCommerce(c) => Self::AdobeCommerce(adobe_commerce::AdobeCommerce::new(c.clone())),
            ProviderConfig::OAuth2(c) => Self::OAuth2(oauth2::OAuth2::new(c.clone())),
            ProviderConfig::Static(c) => Self::Static(static_token::StaticToken::new(c.clone())),
        }
    }

    pub(crate) async fn fetch(&self, ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        match self {
            Self::AdobeIms(p) => p.fetch(ctx).await,
            Self::Shopline(p) => p.fetch(ctx).await,
            Self::Vantage(p) => p.fetch(ctx).await,
            Self::Cyberbiz(p) => p.fetch(ctx).await,
            Self::AdobeCommerce(p) => p.fetch(ctx).await,
            Self::OAuth2(p) => p.fetch(ctx).await,
            Self::Static(p) => p.fetch(ctx).await,
        }
    }

    /// The header that carries `token` upstream, built once per token (never per request).
    pub(crate) fn credential_header(&self, token: &Token) -> Result<(HeaderName, HeaderValue), ProviderError> {
        let (name, text) = match self {
            Self::Static(p) => (p.header_name().clone(), token.access.expose().clone()),
            // Never sent: each request is signed on its own (`signer`); the scheme alone stands in.
            Self::AdobeCommerce(_) => (::http::header::AUTHORIZATION, "OAuth".to_owned()),
            _ => (
                ::http::header::AUTHORIZATION,
                format!("Bearer {}", token.access.expose()),
            ),
        };
        let mut value = HeaderValue::try_from(text)
            .map_err(|_| ProviderError::BadResponse("token has characters not allowed in a header".into()))?;
        value.set_sensitive(true);
        Ok((name, value))
    }

    /// Fixed headers the provider adds to every upstream request (`x-api-key`, `x-gw-ims-org-id`).
    pub(crate) fn upstream_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            Self::AdobeIms(p) => p.upstream_headers(),
            _ => Vec::new(),
        }
    }

    /// What signs each request afresh, for providers whose credential is a per-request signature
    /// (OAuth 1.0a) rather than a header built once per token.
    pub(crate) fn signer(
        &self,
        upstream: &crate::config::UpstreamUrl,
    ) -> Option<std::sync::Arc<adobe_commerce::Signer>> {
        match self {
            Self::AdobeCommerce(p) => Some(std::sync::Arc::new(p.signer(upstream))),
            _ => None,
        }
    }

    /// Whether a token can be renewed at all (static credentials cannot: a 401 is passed back).
    pub(crate) fn renews(&self) -> bool {
        match self {
            Self::Static(_) | Self::Cyberbiz(_) | Self::AdobeCommerce(_) => false,
            Self::Shopline(p) => p.renews(),
            _ => true,
        }
    }
}
