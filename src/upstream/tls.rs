//! Opening upstream connections: the [`Endpoint`] a pool connects to, the [`Stream`] it then
//! speaks over (plain TCP, or TLS), and the rustls configuration of https upstreams.
//!
//! TLS is rustls with the ring provider, the system's web roots plus a tenant's `ca_file`
//! ([`TlsConfig`]). A first connection to an authority offers ALPN `h2` and `http/1.1`; once an
//! authority has answered `http/1.1`, its further connections offer only that (they feed the
//! HTTP/1.1 pool, which could not use an h2 one). Connecting — TCP, then the TLS handshake — is
//! bounded by [`CONNECT_TIMEOUT`] as a whole.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Connect budget, TCP and TLS handshake together; the rest of the exchange is bounded by
/// `request_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read ca_file {path}: {source}")]
    CaFile { path: String, source: io::Error },
    #[error("ca_file {path} holds no usable certificate")]
    NoCertificate { path: String },
    #[error("upstream host {host} cannot be checked against a certificate")]
    ServerName { host: String },
}

/// Why no connection to the upstream could be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("tcp connect error")]
    Tcp(#[source] io::Error),
    #[error("tcp connect error: no answer within {0:?}")]
    Timeout(Duration),
    #[error("tls handshake error")]
    Tls(#[source] io::Error),
}

/// The trust roots and ALPN offers of https upstreams. Cloning shares them.
#[derive(Clone)]
pub(crate) struct TlsConfig {
    /// ALPN `h2`, `http/1.1`: what a first connection offers.
    h2_or_http1: Arc<rustls::ClientConfig>,
    /// ALPN `http/1.1` only: for the connections of an authority known to pick it.
    http1: Arc<rustls::ClientConfig>,
}

/// What a new TLS connection offers in ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Alpn {
    H2OrHttp1,
    Http1,
}

/// Opaque in logs: rustls's own `Debug` prints every root certificate.
impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Trusts the system roots and, when given, the certificates in `ca_file`.
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<Self, TlsSetupError> {
        let mut roots = system_roots().clone();
        if let Some(path) = ca_file {
            add_ca_file(&mut roots, path)?;
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http1 = Arc::new(config.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            h2_or_http1: Arc::new(config),
            http1,
        })
    }

    fn offering(&self, alpn: Alpn) -> Arc<rustls::ClientConfig> {
        match alpn {
            Alpn::H2OrHttp1 => Arc::clone(&self.h2_or_http1),
            Alpn::Http1 => Arc::clone(&self.http1),
        }
    }

    /// Whether `self` and `other` are the same roots (one was cloned from the other).
    #[cfg(test)]
    pub(crate) fn same_roots(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.h2_or_http1, &other.h2_or_http1)
    }
}

/// Where a pool connects: host and port, and for https the TLS configuration and server name.
pub(super) struct Endpoint {
    /// `host` without IPv6 brackets, for the resolver.
    pub(super) host: String,
    pub(super) port: u16,
    tls: Option<(TlsConfig, ServerName<'static>)>,
}

/// `https://host:port` or `http://host:port`: what a log line needs, not the whole rustls
/// configuration (kilobytes of it on every debug line about a connection).
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl Endpoint {
    /// A plain-http endpoint; port 80 when `authority` names none.
    pub(super) fn plain(authority: &Authority) -> Self {
        let host = authority.host();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        Self {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            tls: None,
        }
    }

    /// An https endpoint; port 443 when `authority` names none. The certificate must be valid for
    /// the authority's host (a DNS name or an IP address).
    pub(super) fn tls(authority: &Authority, config: TlsConfig) -> Result<Self, TlsSetupError> {
        let mut endpoint = Self::plain(authority);
        endpoint.port = authority.port_u16().unwrap_or(443);
        let name = ServerName::try_from(endpoint.host.clone()).map_err(|_| TlsSetupError::ServerName {
            host: endpoint.host.clone(),
        })?;
        endpoint.tls = Some((config, name));
        Ok(endpoint)
    }

    /// The trust roots of an https endpoint; `None` for plain http.
    pub(super) fn tls_config(&self) -> Option<&TlsConfig> {
        self.tls.as_ref().map(|(config, _)| config)
    }

    /// The port a `Host` header may leave out.
    pub(super) fn default_port(&self) -> u16 {
        if self.tls.is_some() { 443 } else { 80 }
    }

    /// Opens a connection (and for https completes the TLS handshake) within [`CONNECT_TIMEOUT`].
    pub(super) async fn connect(&self, alpn: Alpn) -> Result<Stream, ConnectError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.open(alpn)).await {
            Ok(opened) => opened,
            Err(_) => Err(ConnectError::Timeout(CONNECT_TIMEOUT)),
        }
    }

    async fn open(&self, alpn: Alpn) -> Result<Stream, ConnectError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(ConnectError::Tcp)?;
        tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
        let Some((config, name)) = &self.tls else {
            return Ok(Stream::Tcp(tcp));
        };
        let tls = TlsConnector::from(config.offering(alpn))
            .connect(name.clone(), tcp)
            .await
            .map_err(ConnectError::Tls)?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// One upstream connection's byte stream. The TLS state is boxed so that plain-http connections,
/// the common case behind a mesh, do not carry its size.
#[derive(Debug)]
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether ALPN picked HTTP/2 (an upstream that answers no ALPN speaks HTTP/1.1).
    pub(super) fn negotiated_h2(&self) -> bool {
        match self {
            Self::Tcp(_) => false,
            Self::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
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
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|error| TlsSetupError::CaFile {
            path: shown.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, error),
        })?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsSetupError::NoCertificate { path: shown });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_logs_as_its_origin_only() {
        let authority = Authority::from_static("upstream.example:8443");
        let tls = TlsConfig::new(None).expect("the system roots load");
        let line = format!("{:?}", Endpoint::tls(&authority, tls).expect("a valid server name"));
        assert_eq!(line, "https://upstream.example:8443");
        assert_eq!(
            format!("{:?}", Endpoint::plain(&Authority::from_static("up:80"))),
            "http://up:80"
        );
        assert_eq!(
            format!("{:?}", Endpoint::plain(&Authority::from_static("[::1]:81"))),
            "http://[::1]:81"
        );
    }
}
