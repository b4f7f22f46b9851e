//! https upstreams: at most one HTTP/2 connection per authority, or an HTTP/1.1 pool over TLS.
//!
//! hyper-util's pool cannot know, before ALPN has answered, that a connection in progress will be
//! HTTP/2 and could carry every waiting request (hyperium/hyper#1485), so each request that finds
//! no connection opens its own: 64 concurrent first requests open dozens of TLS connections, at
//! cold start and again each time the upstream recycles its connection. Here one connect at a time
//! is in flight per authority, and concurrent requests wait for it; the h2 connection it yields
//! carries them all until it is closed or going away (GOAWAY), when the next request opens its
//! successor. If ALPN picks `http/1.1` instead, the authority is served from then on by an
//! [`Http1Pool`] over TLS, which opens connections only as concurrency needs them.
//!
//! An h2 connection that took no new request for [`POOL_IDLE_TIMEOUT`] is let go: the pool drops
//! its handle, and hyper closes the connection once the streams still on it have ended. Nothing
//! here cuts a connection short: after a GOAWAY the streams the upstream accepted run to their
//! end, and only the handle that new requests take is replaced.
//!
//! [`HttpsPool::send`] makes one attempt and says whether its failure is safe to send again; the
//! rule for doing so lives in `Upstream::send`.

use arc_swap::ArcSwapOption;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::TryFutureExt;
use futures_util::future::Either as EitherFuture;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::attempt::{POOL_IDLE_TIMEOUT, UpstreamBody};
use super::http1::{Http1Pool, UpstreamResponseBody};
use super::tls::{Alpn, ConnectError, Endpoint, Stream, TlsConfig, TlsSetupError};
use settling::{Settled, Settling};

mod settling;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type H2Connection = http2::Connection<TokioIo<Settling>, UpstreamBody, TokioExecutor>;

/// How long a new h2 connection waits for the upstream's SETTINGS before taking requests anyway
/// (they normally come with the end of the TLS handshake, within a round trip).
const SETTINGS_WAIT: Duration = Duration::from_secs(1);

/// How one attempt failed, sorted by what may follow it.
#[derive(Debug)]
pub(super) enum SendError {
    /// The request never left (the connection was closed or going away): it comes back whole.
    Unsent(Box<Request<UpstreamBody>>, hyper::Error),
    /// The upstream refused the stream unprocessed (RFC 9113 §8.7): a GOAWAY whose last stream id
    /// is below it, or RST_STREAM `REFUSED_STREAM`. Safe to send again, if the body still can be.
    Refused(hyper::Error),
    /// Anything else: the upstream may have processed the request.
    Failed(BoxError),
}

/// The connections to one https authority, shared by the tenants on it with the same trust roots.
/// Cloning shares them.
#[derive(Clone, Debug)]
pub(crate) struct HttpsPool {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    tls: TlsConfig,
    /// Serves the authority once ALPN has picked `http/1.1`.
    http1: Http1Pool,
    speaks_http1: AtomicBool,
    /// The h2 connection new requests take; `None` before the first and between two.
    current: ArcSwapOption<H2>,
    /// Held while a connection is being opened, so that there is one such attempt at a time. Holds
    /// the last attempt's failure, which the requests that waited for it share rather than each
    /// trying again in turn.
    connecting: tokio::sync::Mutex<Option<Arc<ConnectError>>>,
    /// Connection attempts ended so far: tells a waiter whether one ended while it waited.
    attempts: AtomicU64,
    /// Reference point of [`H2::last_used`].
    epoch: Instant,
    /// [`POOL_IDLE_TIMEOUT`], but for tests.
    idle_timeout: Duration,
    /// The largest response head read (`server.max_response_head`), as h2's header list size.
    max_head: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsPool")
            .field("endpoint", &self.endpoint)
            .field("speaks_http1", &self.speaks_http1)
            .finish()
    }
}

/// The handle to an h2 connection: cloned by each request (it multiplexes).
#[derive(Clone)]
struct H2 {
    id: u64,
    sender: http2::SendRequest<UpstreamBody>,
    /// When it last took a request, in milliseconds since [`Inner::epoch`].
    last_used: Arc<AtomicU64>,
}

/// Where one request goes.
enum Route {
    H2(H2),
    /// The HTTP/1.1 pool, first on this connection (just opened) when there is one.
    Http1(Option<Stream>),
}

impl HttpsPool {
    /// A pool for `authority` (port 443 when none is given) trusting `tls`'s roots, reading
    /// response heads of at most `max_head` bytes (`server.max_response_head`).
    pub(crate) fn new(authority: &Authority, tls: &TlsConfig, max_head: usize) -> Result<Self, TlsSetupError> {
        Self::idle_after(authority, tls, POOL_IDLE_TIMEOUT, max_head)
    }

    fn idle_after(
        authority: &Authority,
        tls: &TlsConfig,
        idle_timeout: Duration,
        max_head: usize,
    ) -> Result<Self, TlsSetupError> {
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: Endpoint::tls(authority, tls.clone())?,
                tls: tls.clone(),
                http1: Http1Pool::over_tls(authority, tls.clone(), max_head)?,
                max_head,
                speaks_http1: AtomicBool::new(false),
                current: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(None),
                attempts: AtomicU64::new(0),
                epoch: Instant::now(),
                idle_timeout,
            }),
        })
    }

    /// The trust roots the pool was built with.
    pub(crate) fn tls(&self) -> &TlsConfig {
        &self.inner.tls
    }

    /// Whether `self` and `other` hold the same connections.
    #[cfg(test)]
    pub(crate) fn same_pool(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether a request may go out over HTTP/2, where a refused stream can be retried only from
    /// a copy of the request.
    pub(super) fn multiplexes(&self) -> bool {
        !self.inner.speaks_http1.load(Ordering::Acquire)
    }

    /// One attempt at `request` (absolute-form URI); the response once its head has arrived.
    ///
    /// Not `async` itself: an authority known to speak HTTP/1.1 goes straight to its pool's
    /// future, so that the request future (which hyper moves with every request) carries neither
    /// the h2 route nor a second copy of the request.
    pub(super) fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, SendError>> + Send + '_ {
        match self.multiplexes() {
            true => EitherFuture::Left(self.send_routed(request)),
            false => EitherFuture::Right(self.send_http1(request)),
        }
    }

    /// The request on the authority's HTTP/1.1 pool over TLS.
    fn send_http1(
        &self,
        request: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, SendError>> + Send + '_ {
        (self.inner.http1.send(origin_form(request))).map_err(|error| SendError::Failed(error.into()))
    }

    async fn send_routed(&self, request: Request<UpstreamBody>) -> Result<Response<UpstreamResponseBody>, SendError> {
        match self.inner.route().await? {
            Route::H2(h2) => self.inner.send_h2(h2, request).await,
            // The first request on the connection that told the authority speaks HTTP/1.1 (rare,
            // and large: boxed), or one that waited for that connection.
            Route::Http1(Some(stream)) => (Box::pin(self.inner.http1.send_fresh(stream, origin_form(request))).await)
                .map_err(|error| SendError::Failed(error.into())),
            Route::Http1(None) => Box::pin(self.send_http1(request)).await,
        }
    }
}

impl Inner {
    /// The current h2 connection, or else the outcome of the one attempt at opening a connection.
    async fn route(self: &Arc<Self>) -> Result<Route, SendError> {
        if let Some(h2) = self.usable() {
            return Ok(Route::H2(h2));
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let mut failure = self.connecting.lock().await;
        if let Some(h2) = self.usable() {
            return Ok(Route::H2(h2));
        }
        if self.speaks_http1.load(Ordering::Acquire) {
            return Ok(Route::Http1(None));
        }
        // An attempt ended while this request waited, and failed: its answer is ours too.
        if let Some(error) = failure
            .as_ref()
            .filter(|_| self.attempts.load(Ordering::Acquire) != seen)
        {
            return Err(SendError::Failed(Box::new(Arc::clone(error))));
        }
        // Boxed, like the handshake below: rare, and large enough to weigh on every request.
        let connected = Box::pin(self.endpoint.connect(Alpn::H2OrHttp1)).await;
        let id = self.attempts.fetch_add(1, Ordering::AcqRel) + 1;
        let stream = match connected {
            Ok(stream) => stream,
            Err(error) => {
                let error = Arc::new(error);
                *failure = Some(Arc::clone(&error));
                return Err(SendError::Failed(Box::new(error)));
            }
        };
        *failure = None;
        if !stream.negotiated_h2() {
            self.speaks_http1.store(true, Ordering::Release);
            tracing::debug!(endpoint = ?self.endpoint, "https upstream chose http/1.1");
            return Ok(Route::Http1(Some(stream)));
        }
        let (h2, settled) = Box::pin(self.handshake(id, stream))
            .await
            .map_err(|e| SendError::Failed(e.into()))?;
        // The requests waiting for the connection go once its stream limit is known.
        if !Box::pin(settled.wait(SETTINGS_WAIT)).await {
            tracing::debug!(endpoint = ?self.endpoint, "no SETTINGS from the upstream in time");
        }
        self.current.store(Some(Arc::new(h2.clone())));
        Ok(Route::H2(h2))
    }

    /// The current h2 connection if it still takes requests; forgets it if it does not.
    /// Lock-free: every request passes here.
    fn usable(&self) -> Option<H2> {
        let current = self.current.load();
        let h2 = current.as_ref()?;
        if h2.sender.is_closed() {
            self.retire(h2.id);
            return None;
        }
        Some(H2::clone(h2))
    }

    /// Stops handing out connection `id` (if it is still the current one). Requests on it go on.
    fn retire(&self, id: u64) {
        self.current.rcu(|current| match current {
            Some(h2) if h2.id == id => None,
            other => other.clone(),
        });
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn handshake(self: &Arc<Self>, id: u64, stream: Stream) -> Result<(H2, Arc<Settled>), hyper::Error> {
        let (io, settled) = Settling::new(stream);
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_head).unwrap_or(u32::MAX))
            .handshake(TokioIo::new(io))
            .await?;
        let h2 = H2 {
            id,
            sender,
            last_used: Arc::new(AtomicU64::new(self.now_ms())),
        };
        let watched = Watched {
            pool: Arc::downgrade(self),
            id,
            epoch: self.epoch,
            idle_timeout: self.idle_timeout,
            last_used: Arc::clone(&h2.last_used),
            settled: Arc::clone(&settled),
        };
        tokio::spawn(watched.run(connection));
        Ok((h2, settled))
    }

    async fn send_h2(
        &self,
        mut h2: H2,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, SendError> {
        h2.last_used.store(self.now_ms(), Ordering::Relaxed);
        let mut error = match h2.sender.try_send_request(request).await {
            Ok(response) => return Ok(response.map(UpstreamResponseBody::from)),
            Err(error) => error,
        };
        let outcome = match error.take_message() {
            Some(request) => SendError::Unsent(Box::new(request), error.into_error()),
            None if refused(error.error()) || dropped_while_queued(&h2, error.error()) => {
                SendError::Refused(error.into_error())
            }
            None => return Err(SendError::Failed(error.into_error().into())),
        };
        // Going away, or refusing: the next request (this one's retry included) opens a new one.
        tracing::debug!(endpoint = ?self.endpoint, ?outcome, "upstream h2 connection is going away");
        self.retire(h2.id);
        Err(outcome)
    }
}

/// Whether the upstream refused the stream before processing it: a GOAWAY `NO_ERROR` reaches only
/// the streams above its last stream id (those at or below it run on), and `REFUSED_STREAM`
/// promises the request was not processed. Told by the h2 error's type, never by its text.
fn refused(error: &hyper::Error) -> bool {
    h2_cause(error).is_some_and(|h2| {
        h2.is_remote()
            && match h2.reason() {
                Some(h2::Reason::NO_ERROR) => h2.is_go_away(),
                Some(h2::Reason::REFUSED_STREAM) => h2.is_reset(),
                _ => false,
            }
    })
}

fn h2_cause(error: &hyper::Error) -> Option<&h2::Error> {
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        cause = current.source();
    }
    None
}

/// Whether hyper dropped the request while it waited for a stream: past the upstream's
/// SETTINGS_MAX_CONCURRENT_STREAMS, hyper holds the next request (one per connection) until a
/// stream ends, and when a GOAWAY arrives meanwhile its dispatch task ends and drops that request
/// and its body, answering "dispatch task is gone" (a user error, with no h2 error behind it, on
/// a connection whose dispatch has closed). Its HEADERS were never written: it goes again under
/// the rule of a refused stream. The one case where they were is a race (a stream ends and frees
/// the slot, and the GOAWAY is read before hyper's dispatch task runs again, more than a round
/// trip later), in which the upstream may have taken the request.
fn dropped_while_queued(h2: &H2, error: &hyper::Error) -> bool {
    error.is_user() && h2.sender.is_closed() && h2_cause(error).is_none()
}

/// HTTP/1.1 upstreams get origin-form (`Upstream::uri` gives https requests absolute form, which
/// HTTP/2 needs for its `:scheme` and `:authority`).
fn origin_form(mut request: Request<UpstreamBody>) -> Request<UpstreamBody> {
    let target = (request.uri().path_and_query().cloned()).unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(target);
    request
}

/// What the task driving one h2 connection needs to let it go when idle.
struct Watched {
    pool: Weak<Inner>,
    id: u64,
    epoch: Instant,
    idle_timeout: Duration,
    last_used: Arc<AtomicU64>,
    /// Released if the connection ends before the upstream's SETTINGS came.
    settled: Arc<Settled>,
}

impl Watched {
    /// Drives `connection` (hyper's dispatch of new requests onto it) to its end, and retires it
    /// once it took no request for [`POOL_IDLE_TIMEOUT`]. Retiring drops only the pool's handle:
    /// the connection then ends by itself when its last stream has.
    async fn run(self, connection: H2Connection) {
        let mut connection = pin!(connection);
        let mut let_go = false;
        loop {
            let idle_until = self.idle_until();
            tokio::select! {
                ended = &mut connection => {
                    if let Err(error) = ended {
                        tracing::debug!(%error, "upstream h2 connection ended");
                    }
                    break;
                }
                () = tokio::time::sleep_until(idle_until), if !let_go => {
                    if self.idle_until() <= Instant::now() {
                        self.retire();
                        let_go = true;
                    }
                }
            }
        }
        self.settled.settle();
        self.retire();
    }

    fn idle_until(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_used.load(Ordering::Relaxed)) + self.idle_timeout
    }

    fn retire(&self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.retire(self.id);
        }
    }
}

#[cfg(test)]
mod tests;
