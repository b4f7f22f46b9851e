//! An https upstream fake for the connection tests: HTTP/2, and HTTP/1.1 by ALPN, over TLS with
//! a test certificate, counting TLS handshakes and requests (and which of them came over
//! HTTP/1.1), and recycling its connections the way
//! production gateways do — a GOAWAY after a number of requests per connection.
//!
//! Two ways to recycle ([`Recycle`]):
//! - `Graceful`: hyper's server with `graceful_shutdown()` — GOAWAY `NO_ERROR` (a first one with
//!   last stream id 2^31-1, then the real one), after which the streams in flight finish. The
//!   client sees only "connection going away" for requests it had not sent yet.
//! - `RefuseAbove` / `ResetAbove`: a small HTTP/2 server of its own, written with raw frames,
//!   because the `h2` crate cannot send a GOAWAY whose last stream id is below streams it has
//!   already read. The Nth request of a connection becomes the GOAWAY's last stream id: every
//!   stream the client opens after it is left unanswered, and refused when the GOAWAY `NO_ERROR`
//!   goes out (RFC 9113 §6.8), one answer delay later; the Nth request itself is answered one
//!   more delay after the GOAWAY, so a client that cut it off would show it. `ResetAbove` answers
//!   each request after the Nth with RST_STREAM `REFUSED_STREAM` instead.
//!
//! `max_concurrent_streams` announces SETTINGS_MAX_CONCURRENT_STREAMS in either way, so that a
//! client holds the requests beyond it queued when a GOAWAY arrives; both refuse the streams
//! opened past it (RST_STREAM `REFUSED_STREAM`), as servers do. The raw-frame server also waits
//! for the client to close after its GOAWAY, reading on; hyper's closes once its last stream is
//! answered, so that streams a client opened meanwhile, above the GOAWAY's last id, can fail with
//! the connection (a broken pipe) before the client reads that GOAWAY.
//!
//! Every request is answered 200 `{"ok":true}`; through hyper, `/slow/<ms>` first waits that long
//! and `/big-head/<bytes>` adds a header `x-big` of that many bytes; in raw frames, every answer
//! waits [`H2UpstreamOptions::answer_delay`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::common::Body;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// What the fake offers in ALPN, in its order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Alpn {
    /// `h2`, then `http/1.1`: what production gateways offer.
    H2OrHttp1,
    /// `http/1.1` only: an HTTP/1.1 upstream behind TLS.
    Http1,
}

/// When the fake closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recycle {
    /// Never (the client closes).
    Never,
    /// After this many requests, hyper's graceful shutdown.
    Graceful(usize),
    /// After this many requests, a GOAWAY refusing the streams above the last one answered.
    RefuseAbove(usize),
    /// After this many requests, RST_STREAM `REFUSED_STREAM` for every further one.
    ResetAbove(usize),
}

#[derive(Clone, Debug)]
pub struct H2UpstreamOptions {
    /// PEM certificate chain and key of the server (valid for 127.0.0.1).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Ignored by the raw-frame modes, which speak only `h2`.
    pub alpn: H2Alpn,
    pub recycle: Recycle,
    /// Raw-frame modes: how long each answer waits (so that streams are in flight at a GOAWAY).
    pub answer_delay: Duration,
    /// The SETTINGS_MAX_CONCURRENT_STREAMS announced on h2 (none: no limit), so that a client
    /// queues the requests beyond it.
    pub max_concurrent_streams: Option<u32>,
}

impl H2UpstreamOptions {
    /// `h2` and `http/1.1`, never recycling, answering at once.
    pub fn new(cert_file: PathBuf, key_file: PathBuf) -> Self {
        Self {
            cert_file,
            key_file,
            alpn: H2Alpn::H2OrHttp1,
            recycle: Recycle::Never,
            answer_delay: Duration::ZERO,
            max_concurrent_streams: None,
        }
    }
}

/// What the fake counted.
#[derive(Debug, Default)]
struct Counters {
    handshakes: AtomicUsize,
    requests: AtomicUsize,
    /// Requests that came over HTTP/1.1 (the rest came over h2).
    http1_requests: AtomicUsize,
    refused: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    /// Raw-frame modes: the body of each request answered.
    bodies: Mutex<Vec<Bytes>>,
}

/// A running fake; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct H2Upstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl H2Upstream {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start(options: H2UpstreamOptions) -> io::Result<Self> {
        let acceptor = acceptor(&options)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, acceptor, options, Arc::clone(&counters)));
        Ok(Self { addr, counters, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// TLS handshakes completed: one per connection a client opened.
    pub fn handshakes(&self) -> usize {
        self.counters.handshakes.load(Ordering::SeqCst)
    }

    /// Requests answered.
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Requests answered that came over HTTP/1.1 (ALPN picked `http/1.1`).
    pub fn http1_requests(&self) -> usize {
        self.counters.http1_requests.load(Ordering::SeqCst)
    }

    /// Requests answered that came over HTTP/2.
    pub fn h2_requests(&self) -> usize {
        self.requests().saturating_sub(self.http1_requests())
    }

    /// Streams refused unprocessed (left above a GOAWAY's last id, or reset `REFUSED_STREAM`).
    pub fn refused(&self) -> usize {
        self.counters.refused.load(Ordering::SeqCst)
    }

    /// Raw-frame modes: the body of each request answered, in the order answered (a refused
    /// stream's never counts).
    pub fn bodies(&self) -> Vec<Bytes> {
        (self.counters.bodies.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn max_open_connections(&self) -> usize {
        self.counters.max_open.load(Ordering::SeqCst)
    }
}

impl Drop for H2Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn acceptor(options: &H2UpstreamOptions) -> io::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&options.cert_file)
        .map_err(io::Error::other)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io::Error::other)?;
    let key = PrivateKeyDer::from_pem_file(&options.key_file).map_err(io::Error::other)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = match (options.recycle, options.alpn) {
        (Recycle::RefuseAbove(_) | Recycle::ResetAbove(_), _) => vec![b"h2".to_vec()],
        (_, H2Alpn::H2OrHttp1) => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        (_, H2Alpn::Http1) => vec![b"http/1.1".to_vec()],
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Connection tasks live in a `JoinSet` owned by this task, so aborting it closes them all.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    options: H2UpstreamOptions,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                };
                let (acceptor, options, counters) = (acceptor.clone(), options.clone(), Arc::clone(&counters));
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    counters.handshakes.fetch_add(1, Ordering::SeqCst);
                    let open = counters.open.fetch_add(1, Ordering::SeqCst) + 1;
                    counters.max_open.fetch_max(open, Ordering::SeqCst);
                    match options.recycle {
                        Recycle::RefuseAbove(after) | Recycle::ResetAbove(after) => {
                            let reset = matches!(options.recycle, Recycle::ResetAbove(_));
                            let mut raw = RawH2::new(after, reset, options.answer_delay, &counters);
                            raw.max_streams = options.max_concurrent_streams.map(|max| max as usize);
                            let _ = raw.serve(tls).await;
                        }
                        Recycle::Never | Recycle::Graceful(_) => serve_hyper(tls, &options, &counters).await,
                    }
                    counters.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }
}

/// One connection through hyper (h2 or http/1.1 as ALPN chose), shut down gracefully after the
/// configured number of requests.
async fn serve_hyper(tls: TlsStream<TcpStream>, options: &H2UpstreamOptions, counters: &Arc<Counters>) {
    let after = match options.recycle {
        Recycle::Graceful(after) => after,
        _ => usize::MAX,
    };
    let seen = Arc::new(AtomicUsize::new(0));
    let shutdown = Arc::new(Notify::new());
    let (counters, notify) = (Arc::clone(counters), Arc::clone(&shutdown));
    let service = service_fn(move |request: Request<Incoming>| {
        let (counters, seen, notify) = (Arc::clone(&counters), Arc::clone(&seen), Arc::clone(&notify));
        async move {
            let http1 = request.version() < http::Version::HTTP_2;
            let response = answer(request).await;
            if http1 {
                counters.http1_requests.fetch_add(1, Ordering::SeqCst);
            }
            counters.requests.fetch_add(1, Ordering::SeqCst);
            if seen.fetch_add(1, Ordering::SeqCst) + 1 == after {
                notify.notify_one();
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if let Some(max) = options.max_concurrent_streams {
        builder.http2().max_concurrent_streams(max);
    }
    let mut connection = pin!(builder.serve_connection(TokioIo::new(tls), service));
    tokio::select! {
        _ = connection.as_mut() => return,
        () = shutdown.notified() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

async fn answer(request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    let delay = (path.strip_prefix("/slow/")).and_then(|ms| ms.parse().ok());
    let big = (path.strip_prefix("/big-head/")).and_then(|bytes| bytes.parse::<usize>().ok());
    // The body is read whole first, as a real API would.
    let _ = request.into_body().collect().await;
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")).boxed());
    if let Some(Ok(value)) = big.map(|bytes| http::HeaderValue::from_str(&"b".repeat(bytes))) {
        response.headers_mut().insert("x-big", value);
    }
    response
}

// === raw HTTP/2 frames ===

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame to write: type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(9 + payload.len());
    let length = u32::try_from(payload.len()).expect("test frames are small");
    out.put_slice(&length.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
    out.put_slice(payload);
    out.freeze()
}

/// The state of one raw-frame connection.
struct RawH2 {
    after: usize,
    reset: bool,
    delay: Duration,
    counters: Arc<Counters>,
    /// Requests opened on this connection so far.
    opened: usize,
    /// The GOAWAY's last stream id, once sent.
    last: Option<u32>,
    /// Streams whose request is still arriving (no END_STREAM yet), with their body so far.
    arriving: HashMap<u32, BytesMut>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS: announced, and enforced by refusing (RST_STREAM
    /// `REFUSED_STREAM`) a stream opened while this many are unanswered, as servers do.
    max_streams: Option<usize>,
    /// Streams accepted and not yet answered.
    unanswered: Arc<AtomicUsize>,
}

impl RawH2 {
    fn new(after: usize, reset: bool, delay: Duration, counters: &Arc<Counters>) -> Self {
        Self {
            after,
            reset,
            delay,
            counters: Arc::clone(counters),
            opened: 0,
            last: None,
            arriving: HashMap::new(),
            max_streams: None,
            unanswered: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn serve(mut self, tls: TlsStream<TcpStream>) -> io::Result<()> {
        let (read, mut write) = tokio::io::split(tls);
        let mut read = BufReader::new(read);
        let mut preface = [0; PREFACE.len()];
        read.read_exact(&mut preface).await?;
        if preface != PREFACE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not an h2 client"));
        }
        let (out, mut frames) = mpsc::unbounded_channel::<Bytes>();
        let writer = tokio::spawn(async move {
            while let Some(bytes) = frames.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        let mut settings = Vec::new();
        if let Some(max) = self.max_streams {
            settings.extend_from_slice(&SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes());
            settings.extend_from_slice(&u32::try_from(max).unwrap_or(u32::MAX).to_be_bytes());
        }
        let _ = out.send(frame(SETTINGS, 0, 0, &settings));
        // Until the client closes: after a GOAWAY, once its streams are done. Answers still
        // waiting hold their own sender, so the writer outlives this loop until they are out.
        let _ = self.read_frames(&mut read, &out).await;
        drop(out);
        let _ = writer.await;
        Ok(())
    }

    async fn read_frames<R: AsyncRead + Unpin>(
        &mut self,
        read: &mut R,
        out: &mpsc::UnboundedSender<Bytes>,
    ) -> io::Result<()> {
        loop {
            let mut head = [0; 9];
            read.read_exact(&mut head).await?;
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0; length];
            read.read_exact(&mut payload).await?;
            match kind {
                SETTINGS if flags & ACK == 0 => drop(out.send(frame(SETTINGS, ACK, 0, &[]))),
                PING if flags & ACK == 0 => drop(out.send(frame(PING, ACK, 0, &payload))),
                HEADERS => self.on_headers(stream, flags, out),
                DATA => self.on_data(stream, flags, &payload, out),
                _ => {}
            }
        }
    }

    fn on_headers(&mut self, stream: u32, flags: u8, out: &mpsc::UnboundedSender<Bytes>) {
        let full = (self.max_streams).is_some_and(|max| self.unanswered.load(Ordering::SeqCst) >= max);
        if self.last.is_some_and(|last| stream > last) || (self.reset && self.opened >= self.after) || full {
            self.counters.refused.fetch_add(1, Ordering::SeqCst);
            if self.reset || full {
                let _ = out.send(frame(RST_STREAM, 0, stream, &REFUSED_STREAM.to_be_bytes()));
            }
            return;
        }
        self.opened += 1;
        self.unanswered.fetch_add(1, Ordering::SeqCst);
        if self.opened == self.after && !self.reset {
            // The last stream id is this one: everything the client opens after it is refused.
            self.last = Some(stream);
        }
        if flags & END_STREAM != 0 {
            self.respond(stream, Bytes::new(), out);
        } else {
            self.arriving.insert(stream, BytesMut::new());
        }
    }

    /// A DATA frame (unpadded: hyper never pads) of a stream that is still arriving adds to its
    /// body; the others' are dropped.
    fn on_data(&mut self, stream: u32, flags: u8, payload: &[u8], out: &mpsc::UnboundedSender<Bytes>) {
        if !payload.is_empty() {
            // Give the flow-control window back, so that bodies never stall the connection.
            let increment = u32::try_from(payload.len())
                .expect("a frame is under 16 MiB")
                .to_be_bytes();
            let _ = out.send(frame(WINDOW_UPDATE, 0, 0, &increment));
            if flags & END_STREAM == 0 && self.arriving.contains_key(&stream) {
                let _ = out.send(frame(WINDOW_UPDATE, 0, stream, &increment));
            }
        }
        if let Some(body) = self.arriving.get_mut(&stream) {
            body.extend_from_slice(payload);
        }
        if flags & END_STREAM != 0
            && let Some(body) = self.arriving.remove(&stream)
        {
            self.respond(stream, body.freeze(), out);
        }
    }

    /// Answers `stream`, whose request carried `body`, after the configured delay: `:status 200`
    /// (HPACK static index 8), then the body. The last stream sends the GOAWAY first, and waits
    /// once more before answering. Answered, the request's body is recorded.
    fn respond(&self, stream: u32, body: Bytes, out: &mpsc::UnboundedSender<Bytes>) {
        let (out, counters, delay) = (out.clone(), Arc::clone(&self.counters), self.delay);
        let unanswered = Arc::clone(&self.unanswered);
        let last = self.last == Some(stream);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if last {
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend_from_slice(&0_u32.to_be_bytes());
                let _ = out.send(frame(GOAWAY, 0, 0, &payload));
                tokio::time::sleep(delay).await;
            }
            unanswered.fetch_sub(1, Ordering::SeqCst);
            let _ = out.send(frame(HEADERS, END_HEADERS, stream, &[0x88]));
            let _ = out.send(frame(DATA, END_STREAM, stream, b"{\"ok\":true}"));
            (counters.bodies.lock())
                .unwrap_or_else(PoisonError::into_inner)
                .push(body);
            counters.requests.fetch_add(1, Ordering::SeqCst);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_24_bit_length_and_a_31_bit_stream_id() {
        let bytes = frame(GOAWAY, 0, 0x8000_0003, &[1, 2, 3]);
        assert_eq!(&bytes[..9], &[0, 0, 3, GOAWAY, 0, 0, 0, 0, 3]);
        assert_eq!(&bytes[9..], &[1, 2, 3]);
    }
}
