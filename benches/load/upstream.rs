//! The servers every benchmark case shares: a minimal upstream, the IMS sandbox as token endpoint
//! (behind an optional delaying front) and a control endpoint with the counters the driver checks.
//!
//! The upstream does as little as a real API's fastest endpoint could: one static ~300-byte JSON
//! body, HTTP/1.1 keep-alive, no parsing beyond hyper's. It counts requests and how many carried a
//! bearer token and a `Store` header, so the driver can prove each proxy really injected them.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokenbroker::sandbox::{ImsOptions, ImsSandbox};
use tokio::net::{TcpListener, TcpSocket};

use crate::BenchError;

/// A product-like document of 298 bytes: the size of a small Commerce REST answer.
const BODY: &str = concat!(
    r#"{"id":1042,"sku":"bench-sku-0001","name":"Benchmark product","attribute_set_id":4,"#,
    r#""price":19.99,"status":1,"visibility":4,"type_id":"simple","created_at":"2024-01-01 00:00:00","#,
    r#""updated_at":"2024-01-01 00:00:00","weight":1,"extension_attributes":{"website_ids":[1]},"#,
    r#""custom_attributes":[],"pad":"x"}"#
);

/// Room for the burst of connections a proxy opens when 10,000 waiting requests are released.
const BACKLOG: u32 = 4096;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    with_bearer: AtomicU64,
    with_store: AtomicU64,
}

/// The running servers; they stop when the runtime does.
pub(crate) struct Servers {
    pub(crate) upstream_addr: SocketAddr,
    pub(crate) token_url: String,
    pub(crate) control_addr: SocketAddr,
    _ims: Arc<ImsSandbox>,
}

impl Servers {
    pub(crate) async fn start(token_delay_ms: u64) -> Result<Self, BenchError> {
        let counters = Arc::new(Counters::default());
        let upstream = listen(BACKLOG)?;
        let upstream_addr = upstream.local_addr()?;
        let served = Arc::clone(&counters);
        spawn_server(upstream, move |request| {
            let response = answer(&served, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        let ims = Arc::new(ImsSandbox::start(ImsOptions::default()).await?);
        let token_url = match token_delay_ms {
            0 => ims.token_url(),
            ms => delaying_front(&ims.token_url(), Duration::from_millis(ms))?,
        };
        let control = listen(128)?;
        let control_addr = control.local_addr()?;
        let (counted, sandbox) = (Arc::clone(&counters), Arc::clone(&ims));
        spawn_server(control, move |_request| {
            let stats = serde_json::json!({
                "token_calls": sandbox.token_calls(),
                "tokens_issued": sandbox.tokens_issued(),
                "upstream_requests": counted.requests.load(Ordering::Relaxed),
                "upstream_with_bearer": counted.with_bearer.load(Ordering::Relaxed),
                "upstream_with_store": counted.with_store.load(Ordering::Relaxed),
            });
            async move { Ok::<_, Infallible>(json_response(Bytes::from(stats.to_string()))) }
        });
        Ok(Self {
            upstream_addr,
            token_url,
            control_addr,
            _ims: ims,
        })
    }
}

fn answer(counters: &Counters, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let headers = request.headers();
    if headers
        .get(AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "))
    {
        counters.with_bearer.fetch_add(1, Ordering::Relaxed);
    }
    if headers.contains_key("store") {
        counters.with_store.fetch_add(1, Ordering::Relaxed);
    }
    json_response(Bytes::from_static(BODY.as_bytes()))
}

fn json_response(body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn listen(backlog: u32) -> Result<TcpListener, BenchError> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(socket.listen(backlog)?)
}

/// Serves `handler` over HTTP/1.1 keep-alive, one task per connection, until the runtime stops.
fn spawn_server<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors during the cold burst: let connections finish, then retry.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = service_fn(handler.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// A front that holds every token call for `delay` before passing it to the sandbox, so that
/// requests sent right after the proxy starts find no token yet and must wait for one.
fn delaying_front(token_url: &str, delay: Duration) -> Result<String, BenchError> {
    let target: Uri = token_url.parse().map_err(|e| BenchError::Http(format!("{e}")))?;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let listener = listen(128)?;
    let addr = listener.local_addr()?;
    spawn_server(listener, move |request: Request<Incoming>| {
        let (client, target) = (client.clone(), target.clone());
        async move { Ok::<_, Infallible>(forward_later(&client, target, request, delay).await) }
    });
    Ok(format!("http://{addr}/ims/token/v3"))
}

async fn forward_later(
    client: &Client<HttpConnector, Full<Bytes>>,
    target: Uri,
    request: Request<Incoming>,
    delay: Duration,
) -> Response<Full<Bytes>> {
    tokio::time::sleep(delay).await;
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    parts.uri = target;
    parts.headers.remove(http::header::HOST);
    let Ok(response) = client.request(Request::from_parts(parts, Full::new(body))).await else {
        return error_response();
    };
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(body) => Response::from_parts(parts, Full::new(body.to_bytes())),
        Err(_) => error_response(),
    }
}

fn error_response() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
    response
}
