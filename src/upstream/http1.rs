//! HTTP/1.1 upstreams: connections pooled per upstream and driven by the request using them. A
//! plain-http upstream always gets one of these pools; an https upstream whose ALPN picked
//! `http/1.1` gets one over TLS (`https.rs` decides), and so does one whose tenant set
//! `http2 = false` (`tenant.rs`), so it never holds more connections than concurrent requests need.
//!
//! hyper-util's pooled client does per request what a plain HTTP/1 upstream does not need: a pool
//! keyed by a freshly formatted scheme and authority, hashed twice under a mutex; a spawned task
//! per connection, reached over a channel; and a task to put each connection back (what that costs
//! is measured in `benches/README.md`). Here a connection is hyper's
//! `client::conn::http1` pair. The request that takes it polls the connection's I/O itself, first
//! while it waits for the response head, then from the response body as that streams to the
//! caller, and puts it back when the body has ended. A response dropped before its end closes the
//! connection, which can no longer carry another request.
//!
//! Idle connections are kept per worker thread, last in first out: the most recently used
//! connection is the least likely to have been closed by the upstream's own keep-alive timeout,
//! and a thread takes its own list's lock first, so the lock is rarely contended on the request
//! path. Only when its own list is empty does a thread take a connection idle on another's before
//! opening one, so the pool never holds more connections than concurrent requests need (with one
//! list per thread and no stealing, it held up to one set per worker). A connection idle for
//! [`POOL_IDLE_TIMEOUT`] is closed, on the next use of the pool or by a sweep every third of that
//! timeout; one the upstream closed is noticed when it is next taken, and skipped. A request that
//! could not be written on a reused connection is sent again on another (the race with an upstream
//! closing an idle connection), as hyper-util's client does.

use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use thread_local::ThreadLocal;
use tokio::time::Instant;

use super::attempt::{POOL_IDLE_TIMEOUT, UpstreamBody};
use super::tls::{Alpn, ConnectError, Endpoint, Stream, TlsConfig, TlsSetupError};

/// At most this many idle connections are kept per worker thread (more are closed when returned).
const MAX_IDLE_PER_THREAD: usize = 256;

type Driver = http1::Connection<TokioIo<Stream>, UpstreamBody>;

/// Why an exchange with an HTTP/1.1 upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Http1Error {
    #[error(transparent)]
    Connect(ConnectError),
    #[error("upstream exchange failed")]
    Exchange(#[source] hyper::Error),
}

/// The idle connections of one HTTP/1.1 upstream, shared by the tenants on it. Cloning shares them.
#[derive(Clone, Debug)]
pub(crate) struct Http1Pool {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    /// The `Host` every request carries, built once: the authority, without the port when it is
    /// the scheme's default (the value hyper-util's client would format per request).
    host_header: HeaderValue,
    /// The largest response head read (`server.max_response_head`); beyond it the exchange fails.
    max_head: usize,
    idle: ThreadLocal<Mutex<Vec<Idle>>>,
    /// Set once the idle sweep runs (it starts with the first connection put back).
    sweeping: std::sync::OnceLock<()>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Pool").field("endpoint", &self.endpoint).finish()
    }
}

/// One upstream connection: the handle requests go through and the future doing its I/O.
struct Conn {
    sender: http1::SendRequest<UpstreamBody>,
    /// `None` once the connection has ended. Boxed: the connection moves in and out of the idle
    /// list and into each response body, and hyper's state with its buffers is large.
    driver: Option<Box<Driver>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Conn {
    /// An HTTP/1.1 connection on `stream` reading response heads of at most `max_head` bytes.
    async fn handshake(stream: Stream, max_head: usize) -> Result<Self, Http1Error> {
        let (sender, driver) = http1::Builder::new()
            .max_header_size(max_head)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(Http1Error::Exchange)?;
        Ok(Self {
            sender,
            driver: Some(Box::new(driver)),
        })
    }

    /// Polls the connection's I/O; returns whether it is still open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = &mut self.driver else {
            return false;
        };
        match Pin::new(&mut **driver).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upstream connection ended");
                }
                self.driver = None;
                false
            }
        }
    }

    /// Whether the connection is open and waiting for a request, after letting it notice any
    /// close or stray bytes that arrived while it sat idle.
    fn ready_for_reuse(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop())) && self.sender.is_ready()
    }
}

impl Http1Pool {
    /// A pool for `authority` (a plain-http upstream; port 80 when none is given), reading
    /// response heads of at most `max_head` bytes (`server.max_response_head`).
    pub(crate) fn new(authority: &Authority, max_head: usize) -> Self {
        Self::on(authority, Endpoint::plain(authority), max_head)
    }

    /// A pool for `authority` over TLS (port 443 when none is given), for an https upstream that
    /// speaks HTTP/1.1 (ALPN picked it, or the tenant set `http2 = false`). Its connections offer
    /// only `http/1.1` in ALPN.
    pub(crate) fn over_tls(authority: &Authority, tls: TlsConfig, max_head: usize) -> Result<Self, TlsSetupError> {
        Ok(Self::on(authority, Endpoint::tls(authority, tls)?, max_head))
    }

    fn on(authority: &Authority, endpoint: Endpoint, max_head: usize) -> Self {
        let host_header = match endpoint.port == endpoint.default_port() {
            true => authority.host(),
            false => authority.as_str(),
        };
        let host_header = HeaderValue::from_str(host_header).expect("an authority is a valid header value");
        Self {
            inner: Arc::new(Inner {
                endpoint,
                host_header,
                max_head,
                idle: ThreadLocal::new(),
                sweeping: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Whether `self` and `other` hold the same connections.
    #[cfg(test)]
    pub(crate) fn same_pool(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The trust roots of a pool over TLS; `None` for plain http.
    pub(crate) fn tls(&self) -> Option<&TlsConfig> {
        self.inner.endpoint.tls_config()
    }

    /// Sends `request` (origin-form URI) with the upstream's `Host` and returns the response once
    /// its head has arrived; its body carries the connection until it ends.
    /// Not `async` itself: a wrapper future would hold a second copy of the request.
    pub(crate) fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, Http1Error>> + Send + '_ {
        self.send_from(None, request)
    }

    /// Sends `request` first on `stream`, a connection just opened (the one that told an https
    /// upstream speaks HTTP/1.1), which then joins the pool like any other.
    pub(super) async fn send_fresh(
        &self,
        stream: Stream,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, Http1Error> {
        let conn = Conn::handshake(stream, self.inner.max_head).await?;
        self.send_from(Some(conn), request).await
    }

    async fn send_from(
        &self,
        mut fresh: Option<Conn>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, Http1Error> {
        request
            .headers_mut()
            .insert(http::header::HOST, self.inner.host_header.clone());
        loop {
            let (mut conn, reused) = match fresh.take() {
                Some(conn) => (conn, false),
                None => match self.inner.checkout() {
                    Some(conn) => (conn, true),
                    // Boxed: opening a connection (TCP, TLS) is the largest await here and the
                    // rarest, and its space would be carried, and moved, with every request.
                    None => (Box::pin(self.inner.connect()).await?, false),
                },
            };
            let mut exchange = pin!(conn.sender.try_send_request(request));
            let outcome = std::future::poll_fn(|cx| {
                if let Poll::Ready(outcome) = exchange.as_mut().poll(cx) {
                    return Poll::Ready(outcome);
                }
                // The response (or the error that ends the exchange) comes from the connection's
                // own I/O, so drive it, then look again.
                conn.drive(cx);
                exchange.as_mut().poll(cx)
            })
            .await;
            match outcome {
                Ok(response) => {
                    // A connection the answer closes never goes back (hyper closes it after the
                    // body); one whose reuse only a poll can tell is looked at when next taken.
                    let pool = (keeps_alive(&response)).then(|| Arc::downgrade(&self.inner));
                    return Ok(response.map(|body| UpstreamResponseBody::pooled(body, conn, pool)));
                }
                Err(mut error) => match error.take_message() {
                    // Never written: an idle connection the upstream was closing. Try another.
                    Some(unsent) if reused => {
                        tracing::debug!(error = %error.error(), "reused upstream connection was closed; sending again");
                        request = unsent;
                        super::attempt::sign_attempt(&mut request);
                    }
                    _ => return Err(Http1Error::Exchange(error.into_error())),
                },
            }
        }
    }
}

impl Inner {
    fn idle(&self) -> &Mutex<Vec<Idle>> {
        self.idle.get_or_default()
    }

    /// The most recently used open connection of this thread, else one idle on another thread
    /// (opening a connection while another sits idle would hold more than concurrency needs),
    /// closing stale ones on the way.
    fn checkout(&self) -> Option<Conn> {
        Self::take_from(self.idle()).or_else(|| self.idle.iter().find_map(Self::take_from))
    }

    fn take_from(idle: &Mutex<Vec<Idle>>) -> Option<Conn> {
        let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Idle { mut conn, since }) = idle.pop() {
            if since.elapsed() < POOL_IDLE_TIMEOUT && conn.ready_for_reuse() {
                return Some(conn);
            }
        }
        None
    }

    /// Puts back a connection whose answer has ended. It is not polled here: the look
    /// `take_from` takes anyway (has the upstream closed it while it sat idle?) also settles
    /// hyper's state after the answer, so one poll per request does for both.
    fn checkin(self: &Arc<Self>, conn: Conn) {
        if conn.driver.is_none() {
            return;
        }
        self.start_sweeping();
        let mut idle = self.idle().lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_THREAD {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Conn, Http1Error> {
        let stream = (self.endpoint.connect(Alpn::Http1).await).map_err(Http1Error::Connect)?;
        Conn::handshake(stream, self.max_head).await
    }

    /// Closes, every third of the idle timeout, connections idle past it or closed by the
    /// upstream, so a tenant whose traffic stopped holds no sockets. Ends with the pool.
    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.get().is_some() {
            return;
        }
        // A body dropped outside the runtime (at shutdown) has no sweep to start.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let _ = self.sweeping.set(());
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(POOL_IDLE_TIMEOUT / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep();
            }
        });
    }

    fn sweep(&self) {
        for idle in self.idle.iter() {
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain_mut(|Idle { conn, since }| since.elapsed() < POOL_IDLE_TIMEOUT && conn.ready_for_reuse());
        }
    }

    /// Makes every idle connection look `by` older.
    #[cfg(test)]
    fn age_idle(&self, by: std::time::Duration) {
        for idle in self.idle.iter() {
            for entry in idle.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
                entry.since = entry
                    .since
                    .checked_sub(by)
                    .expect("the clock runs longer than the timeout");
            }
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle
            .iter()
            .map(|idle| idle.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// A response body from upstream. From a pooled plain-http connection it also drives that
/// connection, which goes back to the pool when the body has ended.
pub(crate) struct UpstreamResponseBody {
    body: Incoming,
    lease: Option<Lease>,
}

struct Lease {
    conn: Conn,
    /// `None` when the answer closes the connection.
    pool: Option<Weak<Inner>>,
}

impl UpstreamResponseBody {
    fn pooled(body: Incoming, conn: Conn, pool: Option<Weak<Inner>>) -> Self {
        Self {
            body,
            lease: Some(Lease { conn, pool }),
        }
    }

    /// Puts the connection back once the response has been read to its end.
    fn release(&mut self) {
        if let Some(Lease { conn, pool: Some(pool) }) = self.lease.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.checkin(conn);
        }
    }
}

/// Whether the connection may carry another request after `response`, by its head: HTTP/1.1
/// without `Connection: close` (RFC 9112 §9.3); hyper closes it after the body otherwise. An
/// HTTP/1.0 answer is not pooled even with `Connection: keep-alive`, which costs one connection.
fn keeps_alive<B>(response: &Response<B>) -> bool {
    response.version() == http::Version::HTTP_11
        && !(response.headers().get_all(http::header::CONNECTION).iter()).any(|value| {
            value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
        })
}

impl From<Incoming> for UpstreamResponseBody {
    /// A body from hyper-util's client, whose connections drive themselves.
    fn from(body: Incoming) -> Self {
        Self { body, lease: None }
    }
}

impl Body for UpstreamResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut frame = Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_pending()
            && let Some(lease) = &mut this.lease
        {
            // The body's bytes arrive through the connection's I/O: drive it, then look again.
            lease.conn.drive(cx);
            frame = Pin::new(&mut this.body).poll_frame(cx);
        }
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamResponseBody {
    /// An empty body (204, 304, a HEAD answer) is never polled: its connection is still reusable.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

impl std::fmt::Debug for UpstreamResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponseBody")
            .field("pooled", &self.lease.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests;
