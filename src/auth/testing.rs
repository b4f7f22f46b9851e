//! A tiny token endpoint for socket tests of the providers: binds `127.0.0.1:0`, records every
//! request and answers with whatever the test's closure says. Deliberately dumb: the faithful
//! fakes live in `sandbox`; this one only lets a test see the exact bytes a provider sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::http::{TokenHttp, TokenHttpOptions};
use super::{FetchCtx, FetchToken, ProviderError, Token};

/// One request as the endpoint received it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Received {
    /// The body decoded as a form, in wire order.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The single value of form field `name`.
    pub(crate) fn field(&self, name: &str) -> Option<String> {
        self.form().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// What the endpoint answers: status, extra headers, JSON body.
pub(crate) type Canned = (u16, Vec<(&'static str, String)>, String);

type Handler = dyn Fn(usize, &Received) -> Canned + Send + Sync;

/// A running fake endpoint; it lives as long as the test's runtime.
pub(crate) struct FakeEndpoint {
    pub(crate) addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeEndpoint {
    /// Starts serving; `handler` gets the 0-based call number and the request.
    pub(crate) async fn start(handler: impl Fn(usize, &Received) -> Canned + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let (log, handler): (_, Arc<Handler>) = (received.clone(), Arc::new(handler));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, handler) = (log.clone(), handler.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (log, handler) = (log.clone(), handler.clone());
                    async move { Ok::<_, Infallible>(answer(req, &log, &*handler).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { addr, received }
    }

    pub(crate) fn uri(&self, path: &str) -> Uri {
        format!("http://{}{path}", self.addr).parse().expect("valid test URI")
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }
}

async fn answer(req: Request<Incoming>, log: &Mutex<Vec<Received>>, handler: &Handler) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let got = Received {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    };
    let n = {
        let mut log = log.lock().expect("not poisoned");
        log.push(got.clone());
        log.len() - 1
    };
    let (status, headers, body) = handler(n, &got);
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).expect("valid status"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response.body(Full::new(Bytes::from(body))).expect("valid response")
}

/// A client for loopback fakes: no system roots to load, short timeout.
pub(crate) fn test_http() -> TokenHttp {
    TokenHttp::new(TokenHttpOptions {
        native_roots: false,
        timeout: std::time::Duration::from_secs(5),
        ..TokenHttpOptions::default()
    })
    .expect("plain client builds")
}

/// `200` with `body`.
#[expect(clippy::needless_pass_by_value, reason = "reads best as ok(json!(...)) in tests")]
pub(crate) fn ok(body: serde_json::Value) -> Canned {
    (200, Vec::new(), body.to_string())
}

/// An OAuth error answer.
pub(crate) fn oauth_error(status: u16, code: &str) -> Canned {
    (status, Vec::new(), serde_json::json!({ "error": code }).to_string())
}

/// Fetches as the token manager would, with a loopback client; `previous` is the token being replaced.
pub(crate) async fn fetch<P: FetchToken>(provider: &P, previous: Option<&Token>) -> Result<Token, ProviderError> {
    provider
        .fetch(FetchCtx {
            http: &test_http(),
            previous,
            first_secret: 0,
        })
        .await
}
