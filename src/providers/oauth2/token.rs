//! `oauth2`: a generic RFC 6749 token request, and the shared pieces of every form-based provider.
//!
//! Adobe IMS and ABBYY Vantage are OAuth token endpoints with house rules (comma scopes, secret
//! rotation, refresh fallback); they build their requests from the pieces here rather than each
//! re-implementing them:
//!
//! ```text
//!   grant_form + join_scopes ──▶ Form ──▶ request_with_secrets ─┬─▶ post_with_secret ──▶ TokenHttp
//!   (grant_type, credentials,            (next secret only on  │   (client_secret_post or
//!    scope only when non-empty)           invalid_client)      │    client_secret_basic)
//!                                                              └─▶ response::parse_token_response
//!                                                                  ──▶ Granted::into_token
//! ```
//!
//! The generic provider adds the client authentication methods of RFC 7523 (`private_key_jwt`,
//! see `assertion`) and RFC 8705 (`tls_client_auth`: the client id in the form, the identity in
//! the TLS handshake), `audience`, `extra_params` and a `ResponseMapping` for endpoints that put
//! the token elsewhere. Expiry: response, else JWT `exp`, else `default_ttl`.

#[cfg(test)]
mod tests;

use std::future::Future;

use http::Uri;
use tokio::sync::OnceCell;

use super::assertion::{AssertionSigner, JWT_BEARER, KeyError};
use super::response::{Granted, parse_token_response};
use super::{OAuth2AuthMethod, OAuth2Config, OAuth2Grant, ResponseMapping};
use crate::auth::http::{ClientAuthFiles, TokenHttp};
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token};
use crate::clock;
use crate::schema::Secret;

/// A token request body in wire order. Values include secrets: never log or format a `Form`.
pub(crate) type Form = Vec<(String, String)>;

/// The grant of one token request (RFC 6749 4.3, 4.4, 6).
#[derive(Clone, Copy)]
pub(crate) enum Grant<'a> {
    ClientCredentials,
    Password { username: &'a str, password: &'a str },
    RefreshToken(&'a str),
}

/// How a client secret travels (RFC 6749 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretPlacement {
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    Form,
    /// `client_secret_basic`: `Authorization: Basic` of the form-encoded id and secret.
    Basic,
}

/// `grant_type` and the grant's own fields, then `scope` when there is one.
pub(crate) fn grant_form(grant: Grant<'_>, scope: Option<String>) -> Form {
    let mut form = Vec::with_capacity(4);
    let mut push = |k: &str, v: &str| form.push((k.to_owned(), v.to_owned()));
    match grant {
        Grant::ClientCredentials => push("grant_type", "client_credentials"),
        Grant::Password { username, password } => {
            push("grant_type", "password");
            push("username", username);
            push("password", password);
        }
        Grant::RefreshToken(refresh_token) => {
            push("grant_type", "refresh_token");
            push("refresh_token", refresh_token);
        }
    }
    if let Some(scope) = scope {
        form.push(("scope".to_owned(), scope));
    }
    form
}

/// The `scope` value, or `None` when there are no scopes: an empty `scope=` is an error at
/// several IdPs, while an absent one means "the client's default scopes".
pub(crate) fn join_scopes(scopes: &[String], separator: &str) -> Option<String> {
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    (!scopes.is_empty()).then(|| scopes.join(separator))
}

/// One request authenticated with `secret`, parsed with `mapping`.
pub(crate) async fn post_with_secret(
    http: &TokenHttp,
    uri: &Uri,
    form: &Form,
    client: (&str, &str),
    placement: SecretPlacement,
    mapping: &ResponseMapping,
) -> Result<Granted, ProviderError> {
    let (id, secret) = client;
    let fields = form.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let response = match placement {
        SecretPlacement::Form => {
            let auth = [("client_id", id), ("client_secret", secret)];
            http.post_form(uri, fields.chain(auth), None).await?
        }
        SecretPlacement::Basic => http.post_form(uri, fields, Some((id, secret))).await?,
    };
    parse_token_response(&response.body, mapping)
}

/// [`post_with_secret`] under [`with_secret_rotation`], from secret `first`: the grant and the
/// index of the secret.
pub(crate) async fn request_with_secrets(
    http: &TokenHttp,
    uri: &Uri,
    form: &Form,
    (client_id, secrets): (&str, &[Secret<String>]),
    first: usize,
    placement: SecretPlacement,
    mapping: &ResponseMapping,
) -> Result<(Granted, usize), ProviderError> {
    with_secret_rotation(secrets, first, |secret| {
        post_with_secret(http, uri, form, (client_id, secret), placement, mapping)
    })
    .await
}

/// Runs `attempt` with each secret in turn, from index `first` (the one that worked last; 0 if
/// out of range) round to the one before it, moving on only when the IdP says `invalid_client`
/// (a retired or not-yet-active secret during rotation). Any other answer is final: a throttle
/// or an outage must not burn through the list. Logs the index that failed, never the value.
pub(crate) async fn with_secret_rotation<'s, T, F, Fut>(
    secrets: &'s [Secret<String>],
    first: usize,
    mut attempt: F,
) -> Result<(T, usize), ProviderError>
where
    F: FnMut(&'s str) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let count = secrets.len();
    let first = if first < count { first } else { 0 };
    for tried in 0..count {
        let index = (first + tried) % count;
        match attempt(secrets[index].expose()).await {
            Ok(value) => return Ok((value, index)),
            Err(error) if tried + 1 < count && is_invalid_client(&error) => {
                tracing::warn!(
                    secret_index = index,
                    "client secret rejected as invalid_client; trying the next configured secret"
                );
            }
            Err(error) => return Err(error),
        }
    }
    Err(ProviderError::BadResponse("no client secret is configured".into()))
}

/// `invalid_client` as RFC 6749 5.2 sends it: 400, or 401 when the client used Basic auth.
pub(crate) fn is_invalid_client(error: &ProviderError) -> bool {
    matches!(error, ProviderError::Rejected { status: 400 | 401, code, .. } if code == "invalid_client")
}

/// `invalid_grant`: a refresh token (or password) the IdP no longer accepts.
pub(crate) fn is_invalid_grant(error: &ProviderError) -> bool {
    matches!(error, ProviderError::Rejected { code, .. } if code == "invalid_grant")
}

/// A rotated refresh token replaces the one redeemed; a response without one means the old one
/// stays valid (RFC 6749 6), so it is carried into the new [`Token`].
pub(crate) fn keep_refresh_token(mut granted: Granted, redeemed: Option<&str>) -> Granted {
    if granted.refresh_token.is_none() {
        granted.refresh_token = redeemed.map(|t| Secret::new(t.to_owned()));
    }
    granted
}

// === impl OAuth2 ===

/// A generic RFC 6749 token endpoint.
#[derive(Debug)]
pub(crate) struct OAuth2 {
    // Boxed: the config and a parsed key are large, and `Provider` holds one per variant.
    config: Box<OAuth2Config>,
    auth: Box<ClientAuth>,
}

/// The configured client authentication, prepared once.
#[derive(Debug)]
enum ClientAuth {
    Secret(SecretPlacement),
    Assertion(Result<AssertionSigner, KeyError>),
    /// Built on first use from the shared client, so it keeps its timeout and roots.
    Mtls {
        files: ClientAuthFiles,
        http: OnceCell<TokenHttp>,
    },
}

impl OAuth2 {
    pub(crate) fn new(config: OAuth2Config) -> Self {
        let auth = match &config.auth_method {
            OAuth2AuthMethod::ClientSecretPost => ClientAuth::Secret(SecretPlacement::Form),
            OAuth2AuthMethod::ClientSecretBasic => ClientAuth::Secret(SecretPlacement::Basic),
            OAuth2AuthMethod::PrivateKeyJwt { private_key } => {
                ClientAuth::Assertion(AssertionSigner::from_pem(private_key.expose()))
            }
            OAuth2AuthMethod::TlsClientAuth {
                client_cert,
                client_key,
                ..
            } => ClientAuth::Mtls {
                files: ClientAuthFiles {
                    cert_file: client_cert.clone(),
                    key_file: client_key.clone(),
                },
                http: OnceCell::new(),
            },
        };
        Self {
            config: Box::new(config),
            auth: Box::new(auth),
        }
    }

    /// The request body without client authentication. A refresh grant redeems the refresh
    /// token the previous fetch returned (rotation), else the configured initial one.
    fn form<'a>(&'a self, previous: Option<&'a Token>) -> (Form, Option<&'a str>) {
        let mut redeemed = None;
        let grant = match &self.config.grant {
            OAuth2Grant::ClientCredentials => Grant::ClientCredentials,
            OAuth2Grant::Password { username, password } => Grant::Password {
                username,
                password: password.expose(),
            },
            OAuth2Grant::RefreshToken { refresh_token } => {
                let current = previous.and_then(|p| p.refresh_token.as_ref()).unwrap_or(refresh_token);
                redeemed = Some(current.expose().as_str());
                Grant::RefreshToken(current.expose())
            }
        };
        let scope = join_scopes(&self.config.scopes, &self.config.scope_separator);
        let mut form = grant_form(grant, scope);
        if let Some(audience) = &self.config.audience {
            form.push(("audience".to_owned(), audience.clone()));
        }
        form.extend(self.config.extra_params.iter().cloned());
        (form, redeemed)
    }

    /// `private_key_jwt` and `tls_client_auth`: one request, no secret to rotate.
    async fn post_without_secret(&self, shared: &TokenHttp, mut form: Form) -> Result<Granted, ProviderError> {
        let id = &self.config.client_id;
        form.push(("client_id".to_owned(), id.clone()));
        let http = match &*self.auth {
            ClientAuth::Assertion(signer) => {
                let signer = signer
                    .as_ref()
                    .map_err(|e| ProviderError::BadResponse(format!("cannot sign the client assertion: {e}")))?;
                let audience = self.config.token_url.to_string();
                let assertion = signer.assertion(id, &audience, clock::unix_millis() / 1000)?;
                form.push(("client_assertion_type".to_owned(), JWT_BEARER.to_owned()));
                form.push(("client_assertion".to_owned(), assertion));
                shared
            }
            ClientAuth::Mtls { files, http } => http
                .get_or_try_init(|| async { shared.with_client_auth(files.clone()) })
                .await
                .map_err(|e| ProviderError::Unreachable(format!("TLS client identity: {e}")))?,
            ClientAuth::Secret(_) => shared,
        };
        let response = http.post_form(&self.config.token_url, form, None).await?;
        parse_token_response(&response.body, &self.config.response)
    }
}

impl FetchToken for OAuth2 {
    async fn fetch(&self, ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let (form, redeemed) = self.form(ctx.previous);
        let config = &self.config;
        let (granted, index) = match *self.auth {
            ClientAuth::Secret(placement) => {
                let client = (config.client_id.as_str(), config.client_secrets.as_slice());
                let uri = &config.token_url;
                let first = ctx.first_secret;
                request_with_secrets(ctx.http, uri, &form, client, first, placement, &config.response).await?
            }
            _ => (self.post_without_secret(ctx.http, form).await?, 0),
        };
        keep_refresh_token(granted, redeemed).into_token(index, Some(config.default_ttl))
    }
}
