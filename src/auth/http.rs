//! `TokenHttp`: the one HTTP client every provider uses to talk to its token endpoint.
//!
//! It exists so that providers speak in wire terms (a form, a JSON body, a status) and never deal
//! with connectors, TLS roots, timeouts or body limits, and so that every token endpoint failure is
//! classified the same way into [`ProviderError`]:
//!
//! ```text
//!   connect / TLS / timeout / 5xx ──▶ Unreachable  (worth retrying later)
//!   429                           ──▶ Throttled    (Retry-After seconds, when sent)
//!   other 4xx (OAuth JSON error)  ──▶ Rejected     (status, `error`, `error_description`)
//!   2xx                           ──▶ Ok(TokenResponse)  (body capped at 64 KiB)
//! ```
//!
//! Messages never contain a request body, a query string or URL user-info: only the method, the
//! scheme/host/path, the failure and correlation ids (Adobe `x-debug-id`, SHOPLINE `traceId`),
//! which vendors ask for and which are not secrets.
//!
//! TLS is rustls with the ring provider installed explicitly (no reliance on a process-wide
//! default), the system's native roots plus an optional extra CA file, ALPN for HTTP/2 and
//! HTTP/1.1, and an optional client certificate for RFC 8705 `tls_client_auth`. `http://` is
//! allowed (in-cluster endpoints, test fakes). Cloning is an `Arc` bump.

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ProviderError;

/// Per-call bound on a token request. Token endpoints answer in well under a second; 10 s leaves
/// room for a slow TLS handshake while keeping a hung IdP from stalling renewal for long (the
/// token manager retries with backoff anyway).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest token response we read. Real ones are 1–4 KiB (a JWT plus a few fields); anything
/// bigger is not a token response, and the cap keeps a misbehaving endpoint from exhausting memory.
pub(crate) const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Longest IdP-supplied error text we keep: enough for a sentence, too little for a body dump.
const MAX_DESCRIPTION: usize = 200;

/// Token calls in flight at once per client (one client serves every tenant). 1,000 tenants
/// starting together otherwise open 1,000 connections to one IdP at once: ~15 MB of buffers
/// that the heap keeps, and a burst a real IdP may throttle. 64 still fetches 100 cold tenants
/// in two rounds.
const MAX_CONCURRENT_EXCHANGES: usize = 64;

/// Response headers that identify a call to the vendor's support (never secrets).
const CORRELATION_HEADERS: [&str; 2] = ["x-debug-id", "traceid"];

/// How to build a [`TokenHttp`].
#[derive(Debug, Clone)]
pub(crate) struct TokenHttpOptions {
    /// Bound on one whole call (connect, TLS, request, response body). Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Trust the operating system's root certificates. Default true.
    pub native_roots: bool,
    /// Extra trust roots (PEM), e.g. a corporate CA in front of the IdP.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM) for RFC 8705 mutual-TLS client authentication.
    pub client_auth: Option<ClientAuthFiles>,
}

impl Default for TokenHttpOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            native_roots: true,
            ca_file: None,
            client_auth: None,
        }
    }
}

/// PEM files of a TLS client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientAuthFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Why a [`TokenHttp`] could not be built (bad local TLS material, not an IdP failure).
#[derive(Debug, thiserror::Error)]
pub enum TokenHttpError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A 2xx answer of a token endpoint.
#[derive(Debug)]
pub(crate) struct TokenResponse {
    /// At most [`MAX_RESPONSE_BODY`] bytes. Holds a token: never log it.
    pub body: Bytes,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A small client for token endpoints: timeout, form/JSON bodies, status → [`ProviderError`].
#[derive(Clone)]
pub(crate) struct TokenHttp {
    inner: Arc<Inner>,
}

struct Inner {
    client: HttpsClient,
    options: TokenHttpOptions,
    in_flight: tokio::sync::Semaphore,
}

/// Native roots, no extra CA, no client certificate, [`DEFAULT_TIMEOUT`]. Loads the system roots,
/// so build one and clone it (an `Arc` bump) rather than calling this per tenant.
impl Default for TokenHttp {
    fn default() -> Self {
        Self::new(TokenHttpOptions::default())
            .expect("with no file to read only the protocol versions could fail; ring supports them")
    }
}

impl fmt::Debug for TokenHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHttp")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

// === impl TokenHttp ===

impl TokenHttp {
    /// The bound on one whole token call.
    pub(crate) fn timeout(&self) -> Duration {
        self.inner.options.timeout
    }

    /// Builds the client, reading the CA and client-certificate files now so that a bad file is
    /// reported at start-up, not at the first renewal.
    pub(crate) fn new(options: TokenHttpOptions) -> Result<Self, TokenHttpError> {
        let tls = tls_config(&options)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_CONCURRENT_EXCHANGES)
            .build(connector);
        let in_flight = tokio::sync::Semaphore::new(MAX_CONCURRENT_EXCHANGES);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                options,
                in_flight,
            }),
        })
    }

    /// A client with the same timeout and roots that also presents `client_auth` (RFC 8705).
    pub(crate) fn with_client_auth(&self, client_auth: ClientAuthFiles) -> Result<Self, TokenHttpError> {
        Self::new(TokenHttpOptions {
            client_auth: Some(client_auth),
            ..self.inner.options.clone()
        })
    }

    /// `POST` an `application/x-www-form-urlencoded` body, optionally with HTTP Basic client
    /// authentication encoded as RFC 6749 2.3.1 requires.
    pub(crate) async fn post_form<K, V>(
        &self,
        uri: &Uri,
        fields: impl IntoIterator<Item = (K, V)>,
        basic_auth: Option<(&str, &str)>,
    ) -> Result<TokenResponse, ProviderError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut headers = vec![(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )];
        if let Some((id, secret)) = basic_auth {
            headers.push((AUTHORIZATION, basic_auth_header(id, secret)?));
        }
        self.post(uri, headers, Bytes::from(body)).await
    }

    /// `POST` a JSON body with the given extra headers (`Content-Type` is set here).
    pub(crate) async fn post_json(
        &self,
        uri: &Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<TokenResponse, ProviderError> {
        let mut all = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        all.extend(headers);
        self.post(uri, all, body).await
    }

    async fn post(
        &self,
        uri: &Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<TokenResponse, ProviderError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("tokenbroker/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| ProviderError::Unreachable(format!("POST {}: cannot build request: {e}", redacted(uri))))?;
        let timeout = self.inner.options.timeout;
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(Ok((status, headers, body))) => classify(status, &headers, body),
            Ok(Err(why)) => Err(ProviderError::Unreachable(format!("POST {}: {why}", redacted(uri)))),
            Err(_) => Err(ProviderError::Unreachable(format!(
                "POST {}: no response within {timeout:?}",
                redacted(uri)
            ))),
        }
    }

    /// Sends and reads the capped body; the error is a secret-free description.
    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        // Inside the caller's timeout: waiting for a turn counts against the same budget.
        let _turn = self.inner.in_flight.acquire().await.map_err(|e| e.to_string())?;
        let response = self.inner.client.request(request).await.map_err(|e| error_chain(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BODY)
            .collect()
            .await
            .map_err(|e| format!("HTTP {}: cannot read response body: {}", parts.status, error_chain(&*e)))?;
        Ok((parts.status, parts.headers, body.to_bytes()))
    }
}

// === TLS material ===

fn tls_config(options: &TokenHttpOptions) -> Result<rustls::ClientConfig, TokenHttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(options)?);
    Ok(match &options.client_auth {
        Some(files) => {
            builder.with_client_auth_cert(read_certs(&files.cert_file)?, read_private_key(&files.key_file)?)?
        }
        None => builder.with_no_client_auth(),
    })
}

fn root_store(options: &TokenHttpOptions) -> Result<rustls::RootCertStore, TokenHttpError> {
    let mut roots = rustls::RootCertStore::empty();
    if options.native_roots {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "some system root certificates could not be loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "loaded system root certificates for token endpoints");
    }
    if let Some(path) = &options.ca_file {
        for cert in read_certs(path)? {
            roots.add(cert)?;
        }
    }
    Ok(roots)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TokenHttpError> {
    let read = |source| TokenHttpError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_io)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_io)
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TokenHttpError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TokenHttpError> {
    let read = |source| TokenHttpError::Read {
        path: path.to_owned(),
        source,
    };
    match PrivateKeyDer::from_pem_file(path) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TokenHttpError::NoPrivateKey { path: path.to_owned() }),
        Err(error) => Err(read(pem_io(error))),
    }
}

/// A PEM failure as the I/O error it reports as: the file's own error when it could not be read,
/// else the content was not PEM.
fn pem_io(error: pem::Error) -> std::io::Error {
    match error {
        pem::Error::Io(error) => error,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
    }
}

// === request and response helpers ===

/// `Authorization: Basic` for client authentication, RFC 6749 2.3.1: the id and the secret are
/// each form-urlencoded *before* base64 (so `:` in an id cannot split it, and a server that
/// url-decodes gets the original back). Marked sensitive so HTTP/2 never indexes it.
pub(crate) fn basic_auth_header(id: &str, secret: &str) -> Result<HeaderValue, ProviderError> {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = STANDARD.encode(format!("{}:{}", encode(id), encode(secret)));
    let mut value = HeaderValue::try_from(format!("Basic {credentials}"))
        .map_err(|_| ProviderError::BadResponse("cannot build Basic credentials".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Maps a complete answer to `Ok` (2xx) or the [`ProviderError`] it means.
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Result<TokenResponse, ProviderError> {
    let correlation = correlation(headers);
    if status.is_success() {
        return Ok(TokenResponse { body });
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ProviderError::Throttled {
            retry_after: retry_after(headers),
        });
    }
    if status.is_server_error() {
        return Err(ProviderError::Unreachable(format!("HTTP {status}{correlation}")));
    }
    if status.is_client_error() {
        let (code, description) = error_fields(&body, status);
        let description = match (description, correlation.is_empty()) {
            (Some(d), _) => Some(format!("{d}{correlation}")),
            (None, false) => Some(correlation.trim_start().to_owned()),
            (None, true) => None,
        };
        return Err(ProviderError::Rejected {
            status: status.as_u16(),
            code,
            description,
        });
    }
    // 1xx/3xx: token endpoints do not redirect; following one would resend credentials.
    Err(ProviderError::BadResponse(format!(
        "unexpected HTTP {status}{correlation}"
    )))
}

/// `Retry-After` in delay-seconds or HTTP-date form. Capped at the retry ceiling
/// (`config::MAX_PAUSE`, a minute, which token renewals back off to as well): an IdP asking for
/// longer is asked again then, and an absurd value cannot park a tenant (or overflow the clock).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    // Delay-seconds, or an HTTP date (RFC 9110 10.2.3), both capped at the backoff ceiling.
    let after = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => crate::clock::until_http_date(value)?,
    };
    Some(after.min(crate::schema::MAX_PAUSE))
}

/// The error code and description of a 4xx body. OAuth servers send `error`/`error_description`
/// (RFC 6749 5.2); SHOPLINE's envelope has `i18nCode`/`message`, its API errors `errors`.
fn error_fields(body: &[u8], status: StatusCode) -> (String, Option<String>) {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |key: &str| json.get(key).and_then(|v| v.as_str()).map(sanitize);
    let code = text("error").or_else(|| text("i18nCode"));
    let description = text("error_description")
        .or_else(|| text("message"))
        .or_else(|| text("errors"));
    (code.unwrap_or_else(|| format!("http_{}", status.as_u16())), description)
}

/// IdP text goes into logs: keep it short and on one line.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .take(MAX_DESCRIPTION)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// ` (x-debug-id: …)` when the answer carries a vendor correlation id, else empty.
fn correlation(headers: &HeaderMap) -> String {
    CORRELATION_HEADERS
        .iter()
        .filter_map(|name| Some((name, headers.get(*name)?.to_str().ok()?)))
        .map(|(name, value)| format!(" ({name}: {})", sanitize(value)))
        .collect()
}

/// `scheme://host[:port]/path`: no user-info, no query (Adobe allows credentials in the query).
pub(crate) fn redacted(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", uri.path())
}

/// `outer: cause: root cause`; hyper's top-level error alone says only "client error (Connect)".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
