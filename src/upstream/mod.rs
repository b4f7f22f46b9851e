//! The upstream side: one [`Upstream`] type a tenant sends through, with a typed
//! [`UpstreamError`], and header hygiene.
//!
//! An `Upstream` is either an [`HttpsPool`] (https: one HTTP/2 connection per authority, or
//! HTTP/1.1 over TLS when ALPN picks it) or an [`Http1Pool`] (plain http, always HTTP/1.1; or
//! https whose tenant set `http2 = false`, over TLS offering only `http/1.1`); the pipeline calls
//! [`Upstream::send`] and never asks which. Pools are per upstream authority and shared by the
//! tenants on it that trust the same roots (`tenant.rs` carries them across reloads). TLS is
//! rustls with the ring provider, the system's web roots plus a tenant's `ca_file`, and ALPN
//! offering `h2` and `http/1.1` (`tls.rs`).
//!
//! [`Upstream::send`] also holds the one retry rule of HTTP/2 upstreams: a request whose stream
//! the upstream refused unprocessed, or that never left a connection already going away, is sent
//! once more on a fresh connection, whatever its method — when its body can be sent again.

mod attempt;
mod body_budget;
mod caller_body;
pub(crate) mod headers;
mod http1;
mod https;
mod tls;

pub(crate) use attempt::{Resign, UpstreamBody, sign_attempt};
pub(crate) use body_budget::{ReplayBudget, ReplayPermit};
pub(crate) use caller_body::{BodyFate, CallerBody, RequestBodyError};
pub(crate) use http1::{Http1Pool, UpstreamResponseBody};
pub(crate) use https::HttpsPool;
pub(crate) use tls::{TlsConfig, TlsSetupError};

use std::sync::Arc;

use futures_util::TryFutureExt;
use futures_util::future::Either as EitherFuture;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::{Either, Full, LengthLimitError};
use hyper::body::Body;

use https::SendError;

/// Where one tenant's requests go.
#[derive(Clone, Debug)]
pub(crate) enum Upstream {
    /// https: the authority's pool, HTTP/2 or HTTP/1.1 as ALPN decides.
    Https(HttpsPool),
    /// HTTP/1.1 only: the pool of the upstream's authority, plain http or (for a tenant with
    /// `http2 = false`) over TLS.
    Http1(Http1Pool),
}

/// Why an exchange with the upstream failed, classified once, here.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The request body grew past the tenant's cap while it streamed (the cap is the caller's
    /// fault, not the upstream's).
    #[error("the request body grew past its limit")]
    BodyTooLarge,
    /// The caller's body stalled or broke while it streamed: the fault is downstream, and hyper
    /// aborted the upstream request.
    #[error(transparent)]
    RequestBody(RequestBodyError),
    /// No connection, or the exchange broke before a response head arrived.
    #[error(transparent)]
    Unreachable(Unreachable),
}

/// Why the upstream could not be reached: the error that said so, kept whole, and for a request
/// the upstream refused unprocessed, why the proxy did not send it again. It shows as the error's
/// whole cause chain, which holds connection errors only, never a header or a body.
#[derive(Debug, Clone)]
pub(crate) struct Unreachable {
    error: Arc<dyn std::error::Error + Send + Sync>,
    /// Set when the upstream closed the connection before processing the request.
    not_resent: Option<&'static str>,
}

impl Unreachable {
    pub(crate) fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            error: Arc::from(error.into()),
            not_resent: None,
        }
    }
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = self.not_resent {
            write!(
                f,
                "the upstream closed the connection before processing the request ({why}): "
            )?;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*self.error);
        let mut first = true;
        while let Some(current) = cause {
            if !first {
                f.write_str(": ")?;
            }
            write!(f, "{current}")?;
            first = false;
            cause = current.source();
        }
        Ok(())
    }
}

/// The chain is already the message; a reporter that walks sources would print it twice.
impl std::error::Error for Unreachable {}

impl Upstream {
    /// The URI for `path_and_query` on `upstream`: the HTTP/1 pool writes origin-form as given;
    /// HTTP/2 needs the scheme and authority too (the https pool drops them again for HTTP/1.1).
    pub(crate) fn uri(&self, upstream: &crate::config::UpstreamUrl, path_and_query: PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        if let Self::Https(_) = self {
            parts.scheme = Some(upstream.scheme.clone());
            parts.authority = Some(upstream.authority.clone());
        }
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).expect("scheme and authority come together, with a path")
    }

    /// Whether a request whose stream the upstream refuses may be sent again from a buffered copy
    /// of its body: https that speaks HTTP/2 (or has not said yet). The pipeline buffers small
    /// bodies for it.
    pub(crate) fn resends_refused(&self) -> bool {
        matches!(self, Self::Https(pool) if pool.multiplexes())
    }

    /// Sends `request` and returns the response once its head has arrived; the body streams.
    ///
    /// Not `async` itself: it picks the pool's future at once, so that the request future, which
    /// hyper moves with every request, does not also carry a second copy of the request.
    pub(crate) fn send(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, UpstreamError>> + Send + '_ {
        // `send_https` signs each of its attempts itself.
        if !matches!(self, Self::Https(pool) if pool.multiplexes()) {
            sign_attempt(&mut request);
        }
        match self {
            Self::Http1(pool) => EitherFuture::Left(pool.send(request).map_err(classify)),
            // An authority known to speak HTTP/1.1 has nothing to retry (a request its pool could
            // not write on a reused connection is sent again there).
            Self::Https(pool) if !pool.multiplexes() => {
                EitherFuture::Right(EitherFuture::Left(pool.send(request).map_err(|e| e.classify())))
            }
            // Boxed: the retrying HTTP/2 send is twice the size of the others, and every
            // request future would otherwise carry (and copy) room for it.
            Self::Https(pool) => EitherFuture::Right(EitherFuture::Right(Box::pin(send_https(pool, request)))),
        }
    }
}

/// The retry rule. A stream the upstream refused unprocessed (GOAWAY above its last stream id,
/// RST_STREAM `REFUSED_STREAM`; RFC 9113 §8.7) or a request that never left a connection already
/// going away is sent again, on a fresh connection, whatever the method: the upstream has not
/// acted on it. A request that never left comes back whole, but for the one hyper drops while it
/// waits for a stream (`https::dropped_while_queued`), which counts as refused; a refused one is
/// sent again from a
/// copy taken beforehand, which only a buffered or empty body allows (cloning `Full` shares its
/// bytes). At most [`REFUSED_ATTEMPTS`] sends in all: an upstream that recycles its connections
/// every few requests can refuse the retry too, on a connection that reached its own limit.
/// A refused request whose streamed body hyper already took gets an honest 502 instead.
async fn send_https(
    pool: &HttpsPool,
    mut request: Request<UpstreamBody>,
) -> Result<Response<UpstreamResponseBody>, UpstreamError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        sign_attempt(&mut request);
        let spare = if pool.multiplexes() {
            buffered_copy(&request)
        } else {
            None
        };
        let error = match pool.send(request).await {
            Ok(response) => return Ok(response),
            Err(SendError::Failed(error)) => return Err(classify(error)),
            Err(SendError::Unsent(unsent, error)) => {
                request = *unsent;
                error
            }
            Err(SendError::Refused(error)) => match spare {
                Some(copy) => {
                    request = copy;
                    error
                }
                None => return Err(refused(error, "its streamed body cannot be sent again")),
            },
        };
        if attempt == REFUSED_ATTEMPTS {
            return Err(refused(error, "on every attempt"));
        }
        tracing::debug!(
            attempt,
            "upstream refused or never took the request; sending it again on a new connection"
        );
    }
}

/// Sends of one request the upstream may refuse unprocessed before the caller gets 502.
const REFUSED_ATTEMPTS: u32 = 3;

/// A copy of `request` to send again, when its body is buffered or empty. An empty streamed body
/// (what a tenant that never replays sends for a GET) goes out as END_STREAM on the headers and
/// is never read, so an empty buffered one is the same on the wire.
fn buffered_copy(request: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    let body = match request.body() {
        Either::Left(body) => body.clone(),
        Either::Right(streamed) if streamed.is_end_stream() => Full::default(),
        Either::Right(_) => return None,
    };
    let mut copy = Request::new(Either::Left(body));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    if let Some(resign) = request.extensions().get::<Resign>() {
        copy.extensions_mut().insert(resign.clone());
    }
    Some(copy)
}

impl SendError {
    /// The error as the caller sees it, without a second attempt.
    fn classify(self) -> UpstreamError {
        match self {
            Self::Failed(error) => classify(error),
            Self::Unsent(_, error) | Self::Refused(error) => classify(error),
        }
    }
}

fn refused(error: hyper::Error, why: &'static str) -> UpstreamError {
    match classify(error) {
        UpstreamError::Unreachable(unreachable) => UpstreamError::Unreachable(Unreachable {
            not_resent: Some(why),
            ..unreachable
        }),
        other => other,
    }
}

/// Finds the caller's body among the causes (it surfaces as hyper's user-body error, whose source is
/// our `LengthLimitError` cap or the [`RequestBodyError`] of the body as read), else keeps the error
/// as the reason the upstream was unreachable.
fn classify(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> UpstreamError {
    let error = error.into();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(current) = cause {
        if current.is::<LengthLimitError>() {
            return UpstreamError::BodyTooLarge;
        }
        if let Some(body) = current.downcast_ref::<RequestBodyError>() {
            return UpstreamError::RequestBody(*body);
        }
        cause = current.source();
    }
    UpstreamError::Unreachable(Unreachable::new(error))
}
