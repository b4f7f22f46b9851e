//! The token-endpoint toolkit every provider's protocol is built from: the [`Token`] a provider
//! obtains, the [`FetchToken`] trait it implements, the errors it reports, the HTTP client for
//! token endpoints ([`TokenHttp`]: timeout, form and JSON bodies, bounded answers) and JWT claims.
//!
//! ```text
//!   TokenManager ──fetch(ctx)──▶ providers::Provider ──▶ one provider's FetchToken impl
//!                                                            │ uses
//!                                                            ▼
//!                                   auth: TokenHttp, Token, ProviderError, jwt
//! ```
//!
//! It knows no provider: the providers (`src/providers/`) sit above it.

pub(crate) mod http;
pub(crate) mod jwt;
#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::time::Duration;

use ::http::{HeaderName, HeaderValue};
use tokio::time::Instant;

pub(crate) use self::http::{TokenHttp, TokenHttpError, TokenHttpOptions};
use crate::schema::Secret;

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

/// One provider's token protocol: how it obtains a credential and how that credential is used.
/// Stateless: caching, single flight and renewal scheduling belong to `token::TokenManager`,
/// never to a provider. The defaults fit a bearer token that can be renewed at will.
pub(crate) trait FetchToken: Send + Sync {
    fn fetch(&self, ctx: FetchCtx<'_>) -> impl Future<Output = Result<Token, ProviderError>> + Send;

    /// The header that carries `token` upstream, built once per token (never per request).
    fn credential_header(&self, token: &Token) -> Result<(HeaderName, HeaderValue), ProviderError> {
        sensitive_header(
            ::http::header::AUTHORIZATION,
            format!("Bearer {}", token.access.expose()),
        )
    }

    /// Fixed headers added to every upstream request (`x-api-key`, `x-gw-ims-org-id`).
    fn upstream_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        Vec::new()
    }

    /// Whether a token can be renewed at all (a fixed credential cannot: a 401 is passed back).
    fn renews(&self) -> bool {
        true
    }

    /// Whether a renewal made without the shared store's lease costs the replicas that share the
    /// account (a SHOPLINE refresh shortens every other copy; a Vantage refresh token is spent),
    /// so that, cut off from the store, the renewal is put off as late as is safe.
    fn solo_renewal_costs_peers(&self) -> bool {
        false
    }
}

/// `name: text`, marked sensitive so that hyper's HPACK never indexes it.
pub(crate) fn sensitive_header(name: HeaderName, text: String) -> Result<(HeaderName, HeaderValue), ProviderError> {
    let mut value = HeaderValue::try_from(text)
        .map_err(|_| ProviderError::BadResponse("token has characters not allowed in a header".into()))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// A credential that never changes: usable until `expires_at`, then `Expired`.
pub(crate) fn fixed_token(access: Secret<String>, expires_at: Option<Instant>) -> Result<Token, ProviderError> {
    let now = Instant::now();
    if expires_at.is_some_and(|at| at <= now) {
        return Err(ProviderError::Expired);
    }
    Ok(Token {
        access,
        obtained_at: now,
        expires_at,
        refresh_token: None,
        secret_index: 0,
    })
}
