//! Harness for tests against the sandbox fakes (`tokens`, `providers`): tenant TOML per provider
//! pointed at a fake, a slow relay in front of a token endpoint, and `/metrics` sampling.
//!
//! A token endpoint on loopback answers in a millisecond, which would hide a request waiting on
//! a renewal or a burst racing the first fetch. [`SlowRelay`] sits in front of a fake's token
//! endpoint and delays every call, so "nobody waited" and "exactly one call" mean something.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokenbroker::sandbox::{self, ImsOptions, ImsSandbox, ShoplineOptions, ShoplineSandbox, VantageSandbox};
use tokio::net::TcpListener;

use crate::support::{self, MapEnv, Proxy, env, get};

/// Forwards every request to `target` (same path and query) after `delay`: a slow IdP.
pub struct SlowRelay {
    pub url: String,
}

impl SlowRelay {
    pub async fn start(target: String, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let client = support::client();
        let target: Arc<str> = target.into();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (client, target) = (client.clone(), Arc::clone(&target));
                tokio::spawn(async move {
                    let service = service_fn(move |req| relay(client.clone(), Arc::clone(&target), delay, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url }
    }
}

/// Sleeps first, so the fake issues the token (and starts its expiry clock) when the proxy gets it.
async fn relay(
    client: support::HttpClient,
    target: Arc<str>,
    delay: Duration,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    tokio::time::sleep(delay).await;
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let target_path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{target}{target_path}").parse().expect("a valid relay target");
    parts.headers.remove(http::header::HOST);
    let Ok(answer) = client.request(Request::from_parts(parts, Full::new(body))).await else {
        let mut failed = Response::new(Full::default());
        *failed.status_mut() = StatusCode::BAD_GATEWAY;
        return Ok(failed);
    };
    let (parts, body) = answer.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok(Response::from_parts(parts, Full::new(body)))
}

// === configuration ===

pub const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";

/// The secrets every tenant below reads, as the sandbox's demo credentials.
pub fn sandbox_env() -> MapEnv {
    env(&[
        ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET),
        ("SHOPLINE_SECRET", sandbox::SHOPLINE_APP_SECRET),
        ("SHOPLINE_CODE", sandbox::SHOPLINE_AUTH_CODE),
        ("VANTAGE_SECRET", sandbox::VANTAGE_CLIENT_SECRET),
        ("VANTAGE_PASSWORD", sandbox::VANTAGE_PASSWORD),
    ])
}

/// An `adobe_ims` tenant on `ims`'s API, its tokens from `token_base` (the fake or a relay).
pub fn adobe_tenant(name: &str, ims: &ImsSandbox, token_base: &str, extra: &str) -> String {
    format!(
        r#"
[[tenant]]
name = "{name}"
provider = "adobe_ims"
upstream = "{api}"
token_url = "{token_base}/ims/token/v3"
client_id = "{client}"
scopes = ["openid", "AdobeID", "commerce.accs"]
{extra}
"#,
        api = ims.api_base_url(),
        client = sandbox::IMS_CLIENT_ID,
    )
}

/// A `shopline` tenant with the proxy's own rate limit off (tests set the fake's bucket).
pub fn shopline_tenant(name: &str, shop: &ShoplineSandbox, token_base: &str, extra: &str) -> String {
    format!(
        r#"
[[tenant]]
name = "{name}"
provider = "shopline"
handle = "{handle}"
upstream = "{upstream}"
token_url = "{token_base}"
app_key = "{app_key}"
rate_limit = false
{extra}
"#,
        handle = shop.handle(),
        upstream = shop.base_url(),
        app_key = shop.app_key(),
    )
}

pub fn vantage_tenant(name: &str, vantage: &VantageSandbox, token_base: &str, extra: &str) -> String {
    format!(
        r#"
[[tenant]]
name = "{name}"
provider = "vantage"
base_url = "{base}"
token_url = "{token_base}/auth2/connect/token"
client_id = "{client}"
client_secret = {{ env = "VANTAGE_SECRET" }}
{extra}
"#,
        base = vantage.base_url(),
        client = sandbox::VANTAGE_CLIENT_ID,
    )
}

/// A generic RFC 6749 `oauth2` tenant against the Vantage fake (client credentials, post).
pub fn oauth2_tenant(name: &str, vantage: &VantageSandbox, token_base: &str) -> String {
    format!(
        r#"
[[tenant]]
name = "{name}"
provider = "oauth2"
upstream = "{base}"
token_url = "{token_base}/auth2/connect/token"
client_id = "{client}"
client_secret = {{ env = "VANTAGE_SECRET" }}
scopes = ["openid", "permissions"]
"#,
        base = vantage.base_url(),
        client = sandbox::VANTAGE_CLIENT_ID,
    )
}

/// A SHOPLINE fake whose leaky bucket never throttles, for load tests.
pub async fn roomy_shopline() -> ShoplineSandbox {
    ShoplineSandbox::start(ShoplineOptions {
        rate_per_second: 100_000,
        burst: 100_000,
        ..ShoplineOptions::default()
    })
    .await
    .expect("start the SHOPLINE fake")
}

pub async fn ims_with_ttl(ttl: Duration) -> ImsSandbox {
    ImsSandbox::start(ImsOptions {
        token_ttl: ttl,
        ..ImsOptions::default()
    })
    .await
    .expect("start the IMS fake")
}

pub async fn start_proxy(tenants: &[String]) -> Proxy {
    Proxy::start_with_env(&format!("{SERVER}{}", tenants.concat()), &sandbox_env()).await
}

/// The `client_secret` line the adobe tenants use.
pub const IMS_SECRET_LINE: &str = "client_secret = { env = \"IMS_SECRET\" }";

/// The sum of the `/metrics` samples named `name` whose labels contain every one of `labels`;
/// panics when there is none, so a renamed metric cannot make a "== 0" assertion pass.
pub async fn metric(proxy: &Proxy, name: &str, labels: &[&str]) -> f64 {
    let text = get(&proxy.admin_url("/metrics")).await.text();
    let samples: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    assert!(!samples.is_empty(), "no sample {name} {labels:?} in:\n{text}");
    samples.iter().sum()
}
