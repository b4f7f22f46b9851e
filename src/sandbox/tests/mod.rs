//! Drives every fake over real loopback HTTP with hyper-util's pooled client, the way the proxy
//! and the integration tests will. Pure logic (registry expiry, the leaky bucket, date format)
//! is tested with paused time and no sockets.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

mod cyberbiz;
mod ims;
mod magento;
mod shopline;
mod vantage;

/// No single exchange with a loopback fake may take longer than this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("fake answered JSON")
    }

    /// What the fake saw of the request, from its `x-sandbox-echo` header.
    fn echo(&self) -> serde_json::Value {
        let header = self.headers.get(super::ECHO_HEADER).expect("an echo header");
        serde_json::from_slice(header.as_bytes()).expect("the echo is JSON")
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).expect("valid test request");
    let exchange = async {
        let response = client().request(request).await.expect("fake reachable");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body readable").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .expect("fake must answer promptly")
}

fn form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[tokio::test]
async fn whole_sandbox_starts_and_shuts_down() {
    let sandbox = super::Sandbox::start().await.expect("sandbox starts");
    let addr = sandbox.cyberbiz.addr();
    let token = sandbox.cyberbiz.token();
    let auth = format!("Bearer {token}");
    let reply = send(
        Method::GET,
        &format!("http://{addr}/shop"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    sandbox.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test]
async fn dropping_a_fake_closes_its_listener() {
    let fake = super::CyberbizSandbox::start(super::CyberbizOptions::default())
        .await
        .expect("starts");
    let addr = fake.addr();
    drop(fake);
    // The abort takes effect when the accept task is next polled: let the runtime run it, and
    // check for the outcome rather than guessing how long that takes.
    let mut closed = false;
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "listener closed after drop");
}

#[tokio::test(start_paused = true)]
async fn registry_expiry_and_grace_follow_tokio_time() {
    let registry = super::common::TokenRegistry::default();
    registry.insert("old".to_owned(), Duration::from_secs(36_000));
    registry.expire_by("old", tokio::time::Instant::now() + Duration::from_secs(300));
    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(registry.state("old"), super::common::TokenState::Valid);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(registry.state("old"), super::common::TokenState::Expired);
    assert_eq!(registry.state("never-issued"), super::common::TokenState::Unknown);
    registry.insert("new".to_owned(), Duration::from_secs(10));
    registry.revoke_all();
    assert_eq!(registry.state("new"), super::common::TokenState::Revoked);
}
