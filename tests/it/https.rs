//! https upstreams through the real binary: an HTTP/2 upstream over TLS that recycles its
//! connections with GOAWAY fails no request, GET or POST (queued past its MAX_CONCURRENT_STREAMS
//! too), and costs one TLS handshake per recycle, never a stampede; an HTTP/1.1 upstream over TLS
//! holds no more connections than concurrent requests; a tenant with `http2 = false` speaks
//! HTTP/1.1 to an upstream that offers h2, and a reload that flips the key takes effect.
//!
//! Two tenants share the upstream (and, trusting the same `ca_file`, its pool): `acme`, static,
//! whose bodies stream (a GET's is empty), and `shop`, an IMS tenant, whose small bodies are
//! buffered for a 401 replay — the kind a refused stream can be sent again from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokenbroker::sandbox::{self, H2Alpn, H2Upstream, H2UpstreamOptions, ImsOptions, ImsSandbox, Recycle};
use tokio::task::JoinSet;

use crate::support::tenants::{SERVER, static_tenant};
use crate::support::{Binary, Proxy, client, env, get};

const VALUE: &str = "Bearer static-https-token";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/auth/http/testdata")
        .join(name)
}

async fn fake(alpn: H2Alpn, recycle: Recycle) -> H2Upstream {
    fake_with(alpn, recycle, |_| ()).await
}

async fn fake_with(alpn: H2Alpn, recycle: Recycle, more: impl FnOnce(&mut H2UpstreamOptions)) -> H2Upstream {
    let mut options = H2UpstreamOptions::new(testdata("server.pem"), testdata("server.key"));
    options.alpn = alpn;
    options.recycle = recycle;
    more(&mut options);
    H2Upstream::start(options).await.expect("the TLS upstream starts")
}

/// The binary with tenants `acme` (static) and `shop` (IMS, its tokens from `ims`) on `upstream`,
/// both trusting the test CA.
fn binary(upstream: &H2Upstream, ims: &ImsSandbox) -> Binary {
    let ca_file = format!("ca_file = \"{}\"", testdata("ca.pem").display());
    let shop = format!(
        "\n[[tenant]]\nname = \"shop\"\nprovider = \"adobe_ims\"\nupstream = \"{}\"\ntoken_url = \"{}\"\n\
         client_id = \"{}\"\nclient_secret = {{ env = \"IMS_SECRET\" }}\nscopes = [\"openid\"]\nrewrite = []\n{ca_file}\n",
        upstream.base_url(),
        ims.token_url(),
        sandbox::IMS_CLIENT_ID,
    );
    let toml = format!(
        "{SERVER}{}{shop}",
        static_tenant("acme", &upstream.base_url(), &ca_file)
    );
    Binary::start(
        &toml,
        &[("STATIC_VALUE", VALUE), ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET)],
    )
}

/// `clients` concurrent callers, each sending `each` requests in turn — GETs to `acme`, and every
/// other one a POST with a small JSON body to `shop` — all within 60 s; returns the requests that
/// did not get a 200, with why.
async fn load(binary: &Binary, clients: usize, each: usize) -> Vec<String> {
    let (get, post) = (binary.url("/acme/V1/orders"), binary.url("/shop/V1/orders"));
    load_with(clients, each, move |caller, n| match (caller + n) % 2 {
        0 => Request::post(&post).body(Full::new(Bytes::from_static(b"{\"order\":1}"))),
        _ => Request::get(&get).body(Full::default()),
    })
    .await
}

/// `clients` concurrent callers, each sending `each` requests in turn, the `n`th of `caller` made
/// by `request`, all within 60 s; returns the requests that did not get a 200, with why.
async fn load_with<F>(clients: usize, each: usize, request: F) -> Vec<String>
where
    F: Fn(usize, usize) -> http::Result<Request<Full<Bytes>>> + Clone + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for caller in 0..clients {
        let (client, request) = (client(), request.clone());
        tasks.spawn(async move {
            let mut failed = Vec::new();
            for n in 0..each {
                let sent = client.request(request(caller, n).expect("valid request"));
                let outcome = match tokio::time::timeout(Duration::from_secs(20), sent).await {
                    Err(_) => Err("no answer within 20 s".to_owned()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Ok(Ok(response)) => {
                        let status = response.status();
                        let body = response.into_body().collect().await.map(|b| b.to_bytes());
                        let body = body.map_err(|e| e.to_string())?;
                        match status {
                            StatusCode::OK => Ok(()),
                            _ => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
                        }
                    }
                };
                failed.extend(outcome.err());
            }
            Ok::<_, String>(failed)
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), tasks.join_all())
        .await
        .expect("the load finishes within 60 s");
    all.into_iter()
        .flat_map(|failed| failed.unwrap_or_else(|error| vec![error]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_that_sends_goaway_every_50_requests_fails_none_and_reconnects_once_each() {
    let upstream = fake(H2Alpn::H2OrHttp1, Recycle::RefuseAbove(50)).await;
    recycling_load_fails_none(&upstream, (32, 63), 50, "GOAWAY every 50").await;
}

/// `clients` callers sending `each` requests through the binary to an upstream that recycles its
/// connections every `every` requests: none fails, each reaches the upstream once, and it takes
/// about one handshake per recycle.
async fn recycling_load_fails_none(upstream: &H2Upstream, (clients, each): (usize, usize), every: usize, what: &str) {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("IMS fake");
    let binary = binary(upstream, &ims);
    let failed = load(&binary, clients, each).await;
    let sent = clients * each;
    assert!(
        failed.is_empty(),
        "{} of {sent} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    eprintln!(
        "{what}: {sent} requests, {} handshakes, {} streams refused and sent again",
        upstream.handshakes(),
        upstream.refused()
    );
    assert_eq!(upstream.requests(), sent, "each request answered once");
    assert!(
        upstream.handshakes() <= sent / every + 5,
        "{} handshakes for {sent} requests",
        upstream.handshakes()
    );
}

/// 32 callers against an upstream that runs 4 streams at once and recycles its connections every
/// 100 requests: most requests wait in hyper for a stream, and each GOAWAY finds some there,
/// never sent (one held by hyper's dispatch, which drops it, the others still queued). They are
/// sent again on the next connection like the refused ones.
async fn queued_past_max_concurrent_streams(recycle: Recycle) {
    let upstream = fake_with(H2Alpn::H2OrHttp1, recycle, |options| {
        options.max_concurrent_streams = Some(4);
        options.answer_delay = Duration::from_millis(5);
    })
    .await;
    let what = format!("{recycle:?}, 4 streams at once");
    recycling_load_fails_none(&upstream, (32, 25), 100, &what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_past_max_concurrent_streams_survive_a_refusing_goaway() {
    queued_past_max_concurrent_streams(Recycle::RefuseAbove(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_first_requests_open_one_h2_connection() {
    let upstream = fake(H2Alpn::H2OrHttp1, Recycle::Never).await;
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("IMS fake");
    let binary = binary(&upstream, &ims);
    let failed = load(&binary, 64, 1).await;
    assert!(failed.is_empty(), "{failed:?}");
    eprintln!("cold start, 64 concurrent: {} handshakes", upstream.handshakes());
    assert!(upstream.handshakes() <= 2, "{} handshakes", upstream.handshakes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_upstream_over_tls_holds_no_more_connections_than_concurrent_requests() {
    let upstream = fake(H2Alpn::Http1, Recycle::Never).await;
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("IMS fake");
    let binary = binary(&upstream, &ims);
    let clients = 16;
    let failed = load(&binary, clients, 20).await;
    assert!(failed.is_empty(), "{failed:?}");
    eprintln!(
        "http/1.1 over TLS, {clients} concurrent: {} handshakes, at most {} open",
        upstream.handshakes(),
        upstream.max_open_connections()
    );
    assert!(upstream.handshakes() <= clients, "{} handshakes", upstream.handshakes());
    assert!(upstream.max_open_connections() <= clients);
}

/// Tenants `acme` and `legacy` on one h2-capable upstream, `legacy` with `http2 = false` when
/// `legacy_http1`, `acme` with it when `acme_http1`.
fn http2_knob_config(upstream: &H2Upstream, acme_http1: bool, legacy_http1: bool) -> String {
    let extra = |http1: bool| {
        let http2 = if http1 { "http2 = false\n" } else { "" };
        format!("ca_file = \"{}\"\n{http2}", testdata("ca.pem").display())
    };
    format!(
        "{SERVER}{}{}",
        static_tenant("acme", &upstream.base_url(), &extra(acme_http1)),
        static_tenant("legacy", &upstream.base_url(), &extra(legacy_http1)),
    )
}

/// `acme` gets 3 requests and `legacy` 2, each answered 200.
async fn three_to_acme_two_to_legacy(proxy: &Proxy) {
    for path in ["/acme/a", "/acme/b", "/acme/c", "/legacy/a", "/legacy/b"] {
        let answer = get(&proxy.url(path)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        assert_eq!(answer.text(), "{\"ok\":true}", "{path}");
    }
}

#[tokio::test]
async fn a_tenant_with_http2_false_speaks_http1_to_an_h2_upstream_and_a_reload_flips_it() {
    let upstream = fake(H2Alpn::H2OrHttp1, Recycle::Never).await;
    let secrets = env(&[("STATIC_VALUE", VALUE)]);
    let proxy = Proxy::start_with_env(&http2_knob_config(&upstream, false, true), &secrets).await;
    three_to_acme_two_to_legacy(&proxy).await;
    assert_eq!(
        (upstream.h2_requests(), upstream.http1_requests()),
        (3, 2),
        "acme over h2, legacy over HTTP/1.1"
    );
    proxy
        .reload_with_env(&http2_knob_config(&upstream, true, false), &secrets)
        .await
        .expect("the reload applies");
    three_to_acme_two_to_legacy(&proxy).await;
    assert_eq!(
        (upstream.h2_requests(), upstream.http1_requests()),
        (3 + 2, 2 + 3),
        "after the reload, acme over HTTP/1.1 and legacy over h2"
    );
    proxy.stop().await;
}

/// The binary with the static tenant `acme` (plus `extra` keys) on `upstream`, trusting the test
/// CA.
fn static_binary(upstream: &H2Upstream, extra: &str) -> Binary {
    let keys = format!("ca_file = \"{}\"\n{extra}", testdata("ca.pem").display());
    let toml = format!("{SERVER}{}", static_tenant("acme", &upstream.base_url(), &keys));
    Binary::start(&toml, &[("STATIC_VALUE", VALUE)])
}

/// 32 callers each POSTing 25 distinct JSON bodies of about 100 bytes to `acme` on an upstream
/// that sends GOAWAY every 50 requests, refusing the streams above its last id; the failures and
/// the bodies sent.
async fn post_through_recycling(upstream: &H2Upstream, binary: &Binary) -> (Vec<String>, Vec<Bytes>) {
    let body = |caller: usize, n: usize| Bytes::from(format!("{{\"order\":\"{caller}-{n}\",\"pad\":\"{:080}\"}}", 0));
    let url = binary.url("/acme/V1/orders");
    let failed = load_with(32, 25, move |caller, n| {
        Request::post(&url).body(Full::new(body(caller, n)))
    })
    .await;
    eprintln!(
        "static POSTs, GOAWAY every 50: {} failed, {} streams refused, {} handshakes",
        failed.len(),
        upstream.refused(),
        upstream.handshakes()
    );
    assert!(upstream.refused() > 0, "the upstream refused some streams");
    let sent = (0..32)
        .flat_map(|caller| (0..25).map(move |n| body(caller, n)))
        .collect();
    (failed, sent)
}

async fn recycling_upstream() -> H2Upstream {
    fake_with(H2Alpn::H2OrHttp1, Recycle::RefuseAbove(50), |options| {
        options.answer_delay = Duration::from_millis(5);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_tenants_refused_posts_are_sent_again_with_their_bodies_intact() {
    let upstream = recycling_upstream().await;
    let binary = static_binary(&upstream, "");
    let (failed, mut sent) = post_through_recycling(&upstream, &binary).await;
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let mut received = upstream.bodies();
    sent.sort();
    received.sort();
    assert!(received == sent, "every body arrived once, byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_tenants_bodies_over_replay_body_limit_stream_and_a_refusal_gets_502() {
    let upstream = recycling_upstream().await;
    let binary = static_binary(&upstream, "replay_body_limit = 64");
    let (failed, sent) = post_through_recycling(&upstream, &binary).await;
    assert!(!failed.is_empty(), "streamed bodies cannot be sent again");
    for failure in &failed {
        assert!(failure.starts_with("502"), "{failure}");
        assert!(failure.contains("its streamed body cannot be sent again"), "{failure}");
    }
    assert_eq!(upstream.bodies().len() + failed.len(), sent.len());
}
