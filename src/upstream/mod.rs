//! The upstream side: one [`Upstream`] type a tenant sends through, with a typed
//! [`UpstreamError`], and header hygiene.
//!
//! An `Upstream` is either a pooled HTTP/1.1 + HTTP/2 client over rustls (https) or the leaner
//! [`Http1Pool`] (plain http); the pipeline calls [`Upstream::send`] and never asks which.
//!
//! For https, one client (and so one connection pool) is shared by every tenant that trusts the
//! default roots; a tenant with its own `ca_file` gets its own client. TLS is rustls with the ring
//! provider, the system's web roots plus `ca_file`, and ALPN offering `h2` and `http/1.1`, so an
//! upstream that speaks HTTP/2 gets multiplexed requests on one connection. A plain-http upstream
//! is always HTTP/1.1 (nothing offers h2 without TLS) and gets its own [`Http1Pool`].

pub(crate) mod headers;
mod http1;

pub use http1::{Http1Error, Http1Pool, UpstreamResponseBody};

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::{Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

/// A request body on its way upstream: buffered (so a 401 can replay it) or streamed under a cap.
pub type UpstreamBody = Either<Full<Bytes>, Limited<Incoming>>;

/// Idle keep-alive connections are closed after this: shorter than the 120 s+ most load balancers
/// use, so we close first and never reuse a connection the other side is about to drop.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP connect budget; the rest of the exchange is bounded by `request_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one tenant's requests go.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// https: the pooled client, HTTP/1.1 or HTTP/2 as ALPN decides.
    Https(UpstreamClient),
    /// Plain http: the HTTP/1.1 pool of the upstream's authority.
    Http1(Http1Pool),
}

/// Why an exchange with the upstream failed, classified once, here.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The request body grew past the tenant's cap while it streamed (the cap is the caller's
    /// fault, not the upstream's).
    #[error("the request body grew past its limit")]
    BodyTooLarge,
    /// No connection, or the exchange broke before a response head arrived; the text is the whole
    /// cause chain (connection errors only, never a header or body).
    #[error("{0}")]
    Unreachable(String),
}

impl Upstream {
    /// The URI for `path_and_query` on `upstream`: the HTTP/1 pool writes origin-form as given;
    /// hyper-util's client picks its connection by scheme and authority, so it gets them too.
    pub fn uri(&self, upstream: &crate::config::UpstreamUrl, path_and_query: PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        if let Self::Https(_) = self {
            parts.scheme = Some(upstream.scheme.clone());
            parts.authority = Some(upstream.authority.clone());
        }
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).expect("scheme and authority come together, with a path")
    }

    /// Sends `request` and returns the response once its head has arrived; the body streams.
    pub async fn send(&self, request: Request<UpstreamBody>) -> Result<Response<UpstreamResponseBody>, UpstreamError> {
        match self {
            Self::Http1(pool) => pool.send(request).await.map_err(|e| classify(&e)),
            Self::Https(client) => (client.client.request(request).await)
                .map(|response| response.map(UpstreamResponseBody::from))
                .map_err(|e| classify(&e)),
        }
    }
}

/// Finds our own body cap among the causes (it surfaces as hyper's user-body error, whose source is
/// the `LengthLimitError`), else reports the whole chain as the upstream being unreachable.
fn classify(error: &(dyn std::error::Error + 'static)) -> UpstreamError {
    let mut chain = String::new();
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.is::<LengthLimitError>() {
            return UpstreamError::BodyTooLarge;
        }
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&current.to_string());
        cause = current.source();
    }
    UpstreamError::Unreachable(chain)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read ca_file {path}: {source}")]
    CaFile { path: String, source: std::io::Error },
    #[error("ca_file {path} holds no usable certificate")]
    NoCertificate { path: String },
}

/// A pooled client to upstream APIs. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    /// Behind an `Arc` so that a tenant's [`Upstream`] stays pointer-sized either way.
    client: Arc<Client<HttpsConnector<HttpConnector>, UpstreamBody>>,
}

impl UpstreamClient {
    /// A client trusting the system roots and, when given, the certificates in `ca_file`, reading
    /// response heads of at most `max_head` bytes (HTTP/1: hyper-util offers only the read
    /// buffer's size, which bounds the head; HTTP/2: the header list size we advertise).
    pub fn new(ca_file: Option<&Path>, max_head: usize) -> Result<Self, TlsSetupError> {
        let mut roots = system_roots().clone();
        if let Some(path) = ca_file {
            add_ca_file(&mut roots, path)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http1_max_buf_size(max_head)
            .http2_max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
            .build(connector);
        Ok(Self {
            client: Arc::new(client),
        })
    }
}

/// The system's trust roots, loaded once per process (reading them costs milliseconds).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "some system trust roots could not be loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        tracing::debug!(added, ignored, "system trust roots loaded");
        roots
    })
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsSetupError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsSetupError::CaFile {
        path: shown.clone(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsSetupError::CaFile {
            path: shown.clone(),
            source,
        })?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsSetupError::NoCertificate { path: shown });
    }
    Ok(())
}
