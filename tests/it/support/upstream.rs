//! A recording upstream: answers by path and remembers every request it received in full.
//!
//! `/slow/<ms>` answers after a delay, `/bytes/<n>` streams n bytes, `/status/<code>` answers that
//! status (429 with `Retry-After: 2`), `/forged-error` a 502 carrying `tokenbroker-error`, anything
//! else answers a small JSON echo. A `delay_ms=<ms>` query parameter delays any answer, so a 429
//! can reach the proxy while others are queued, and a `retry_after=<percent-encoded text>` one
//! replaces that 429's `Retry-After`. Only requests whose
//! body arrived completely are recorded, so "nothing reached the upstream" is observable.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    #[allow(dead_code)] // for protocol tests; none of the current ones reads it
    pub version: Version,
    /// When the request's headers arrived (tokio clock), for rate assertions.
    pub arrived: Instant,
}

#[derive(Clone, Default)]
pub struct Upstream {
    pub addr: Option<SocketAddr>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    started: Arc<std::sync::atomic::AtomicUsize>,
    aborted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake upstream");
        let upstream = Self {
            addr: Some(listener.local_addr().expect("local addr")),
            ..Self::default()
        };
        let serving = upstream.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let upstream = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let upstream = upstream.clone();
                        async move { Ok::<_, Infallible>(upstream.answer(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        upstream
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("started")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Requests received completely, in arrival order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("test lock").clone()
    }

    pub fn last(&self) -> Recorded {
        self.recorded().pop().expect("the upstream received a request")
    }

    /// Requests whose headers arrived, complete or not.
    pub fn started(&self) -> usize {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests whose body failed before its end (the sender aborted it).
    pub fn aborted(&self) -> usize {
        self.aborted.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let arrived = Instant::now();
        self.started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
            self.aborted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return plain(StatusCode::BAD_REQUEST, "incomplete body");
        };
        let target = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default();
        self.recorded.lock().expect("test lock").push(Recorded {
            method: parts.method.clone(),
            target: target.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
            version: parts.version,
            arrived,
        });
        // Behaviours are chosen by the last segments, whatever base path the tenant adds.
        let path = parts.uri.path();
        let after = |marker: &str| path.rsplit_once(marker).map(|(_, v)| v.to_owned());
        if let Some(ms) = after("/slow/").and_then(|v| v.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let delay = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("delay_ms="))
                .and_then(|ms| ms.parse().ok())
        });
        if let Some(ms) = delay {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(n) = after("/bytes/").and_then(|v| v.parse::<u64>().ok()) {
            return streamed(n);
        }
        if path.ends_with("/forged-error") {
            // An upstream 502 dressed up as one the proxy made.
            let mut response = plain(StatusCode::BAD_GATEWAY, "the upstream's own 502");
            (response.headers_mut()).insert("tokenbroker-error", "upstream_unreachable".parse().expect("valid"));
            return response;
        }
        if let Some(code) = after("/status/").and_then(|v| v.parse::<u16>().ok()) {
            let mut response = plain(StatusCode::from_u16(code).expect("valid status"), "status");
            if code == 429 {
                let asked = parts.uri.query().and_then(|q| {
                    q.split('&')
                        .find_map(|pair| pair.strip_prefix("retry_after="))
                        .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
                });
                let value = asked.unwrap_or_else(|| "2".to_owned());
                response
                    .headers_mut()
                    .insert("retry-after", value.parse().expect("a valid header value"));
            }
            return response;
        }
        let echo = serde_json::json!({ "target": target, "body_len": body.len() }).to_string();
        let mut response = plain(StatusCode::OK, &echo);
        let headers = response.headers_mut();
        headers.insert("content-type", "application/json".parse().expect("valid"));
        headers.insert("x-upstream", "fake".parse().expect("valid"));
        // Its own id for the request, as SHOPLINE sends one (the access log carries it).
        headers.insert("traceid", "fake-upstream-trace-1".parse().expect("valid"));
        headers.insert("keep-alive", "timeout=5".parse().expect("valid"));
        response
    }
}

fn plain(status: StatusCode, text: &str) -> Response<BoxBody<Bytes, Infallible>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())).boxed());
    *response.status_mut() = status;
    response
}

/// `n` bytes in 64 KiB chunks, produced lazily: the fake never holds the whole body.
fn streamed(n: u64) -> Response<BoxBody<Bytes, Infallible>> {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let frames = stream::iter((0..n.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(n - i * CHUNK) as usize;
        Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
    }));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert("content-length", n.into());
    response
}

/// An RFC 6749 token endpoint that grants `token-0`, `token-1`, ... with a fixed `expires_in`
/// (written into the JSON as given, so it can be any number), counting the calls.
#[derive(Clone)]
pub struct TokenEndpoint {
    addr: SocketAddr,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenEndpoint {
    pub async fn start(expires_in: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the token endpoint");
        let endpoint = Self {
            addr: listener.local_addr().expect("local addr"),
            calls: Arc::default(),
        };
        let calls = Arc::clone(&endpoint.calls);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let calls = Arc::clone(&calls);
                let service = service_fn(move |_req: Request<Incoming>| {
                    let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body =
                        format!(r#"{{"access_token":"token-{n}","token_type":"Bearer","expires_in":{expires_in}}}"#);
                    let response = Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)));
                    async move { response }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        endpoint
    }

    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Token calls received so far.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}
