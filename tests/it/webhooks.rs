//! Webhooks through the real binary (README, "Webhooks"): a test client signs deliveries as
//! SHOPLINE (lowercase hex) and CYBERBIZ (hex and base64) do, a recording target stands for the
//! service behind the broker, and every assertion is on what crossed a socket: the sender's
//! answer, what the target received, `/metrics`, `/tenants` and the log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::support::redis::RedisServer;
use crate::support::replicas::{self, REDIS_STORE, all_logs};
use crate::support::{Answer, Binary, assert_no_secret_in, get, sample, send};

pub const SHOPLINE_SECRET: &str = "shopline-app-secret-for-webhooks";
const CYBERBIZ_SECRET: &str = "cyberbiz-app-secret-for-webhooks";

/// What the target behind the broker received, and what it answers next.
#[derive(Clone, Default)]
pub struct Target {
    addr: Option<SocketAddr>,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// The status it answers (200 until set).
    status: Arc<AtomicU16>,
    /// How long it takes to answer, in ms.
    delay_ms: Arc<AtomicU64>,
}

impl Target {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the target");
        let target = Self {
            addr: Some(listener.local_addr().expect("addr")),
            status: Arc::new(AtomicU16::new(200)),
            ..Self::default()
        };
        let serving = target.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let target = serving.clone();
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let target = target.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        target.received.lock().expect("test lock").push((parts.headers, body));
                        tokio::time::sleep(Duration::from_millis(target.delay_ms.load(SeqCst))).await;
                        let mut response = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                        *response.status_mut() = StatusCode::from_u16(target.status.load(SeqCst)).expect("status");
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        target
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.expect("started"))
    }

    pub fn received(&self) -> Vec<(HeaderMap, Bytes)> {
        self.received.lock().expect("test lock").clone()
    }

    fn answer_with(&self, status: u16) {
        self.status.store(status, SeqCst);
    }
}

pub fn hmac(secret: &str, body: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, body).as_ref().to_vec()
}

/// A SHOPLINE delivery: lowercase hex, as SHOPLINE's SDK signs.
pub fn shopline_delivery(url: &str, id: &str, body: &'static [u8], secret: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("x-shopline-topic", "orders/create")
        .header("x-shopline-shop-domain", "acme.myshopline.com")
        .header("x-shopline-webhook-id", id)
        .header("x-shopline-hmac-sha256", hex::encode(hmac(secret, body)))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .body(Full::new(Bytes::from_static(body)))
        .expect("request")
}

/// A CYBERBIZ delivery, its signature in `base64` or (as production sends) hex.
fn cyberbiz_delivery(url: &str, body: &'static [u8], base64: bool) -> Request<Full<Bytes>> {
    let tag = hmac(CYBERBIZ_SECRET, body);
    let signature = match base64 {
        true => base64::engine::general_purpose::STANDARD.encode(&tag),
        false => hex::encode_upper(&tag),
    };
    Request::post(url)
        .header("content-type", "application/json")
        .header("x-cyberbiz-event", "orders/create")
        .header("x-cyberbiz-domain", "acme.cyberbiz.co")
        .header("x-cyberbiz-hmac-sha256", signature)
        .header(
            "x-cyberbiz-domain-hmac-sha256",
            hex::encode(hmac(CYBERBIZ_SECRET, b"acme.cyberbiz.co")),
        )
        .body(Full::new(Bytes::from_static(body)))
        .expect("request")
}

/// Two tenants that sign webhooks and a route for each; `extra` goes into each `[[webhook]]`.
pub fn config(target: &Target, extra: &str, store: &str) -> String {
    let nowhere = crate::support::unused_addr();
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
webhook_listen = "127.0.0.1:0"
{store}
[[tenant]]
name = "acme-shopline"
provider = "shopline"
handle = "acme"
upstream = "http://{nowhere}"
app_key = "key"
app_secret = {{ env = "SHOPLINE_SECRET" }}

[[tenant]]
name = "acme-cyberbiz"
provider = "cyberbiz"
upstream = "http://{nowhere}"
token = "cyberbiz-api-token"
app_secret = {{ env = "CYBERBIZ_SECRET" }}

[[webhook]]
name = "shopline-orders"
tenant = "acme-shopline"
forward = "{shopline}"
{extra}
[[webhook]]
name = "cyberbiz-orders"
tenant = "acme-cyberbiz"
forward = "{cyberbiz}"
{extra}"#,
        shopline = target.url("/hooks/shopline?source=broker"),
        cyberbiz = target.url("/hooks/cyberbiz"),
    )
}

pub const ENVS: [(&str, &str); 2] = [
    ("SHOPLINE_SECRET", SHOPLINE_SECRET),
    ("CYBERBIZ_SECRET", CYBERBIZ_SECRET),
];

fn start(target: &Target, extra: &str) -> Binary {
    Binary::start(&config(target, extra, ""), &ENVS)
}

fn outcome(answer: &Answer) -> &str {
    answer
        .headers
        .get("tokenbroker-webhook-outcome")
        .map_or("", |v| v.to_str().unwrap_or(""))
}

fn count(metrics: &str, webhook: &str, outcome: &str) -> Option<f64> {
    sample(
        metrics,
        &format!(r#"tokenbroker_webhooks_total{{webhook="{webhook}",outcome="{outcome}"}}"#),
    )
}

const ORDER: &[u8] = "{\"id\": 4711, \"note\": \"caf\u{e9} \\u00e9\",  \"lines\":[1,2]}\n".as_bytes();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_deliveries_are_forwarded_once_byte_for_byte_without_their_signatures() {
    let target = Target::start().await;
    let broker = start(&target, "");
    let shopline = send(shopline_delivery(
        &broker.webhook_url("/shopline-orders"),
        "wh-1",
        ORDER,
        SHOPLINE_SECRET,
    ))
    .await;
    assert_eq!(
        (shopline.status, outcome(&shopline)),
        (StatusCode::OK, "forwarded"),
        "{}",
        shopline.text()
    );
    let hex = send(cyberbiz_delivery(
        &broker.webhook_url("/cyberbiz-orders"),
        b"{\"id\":1}",
        false,
    ))
    .await;
    let b64 = send(cyberbiz_delivery(
        &broker.webhook_url("/cyberbiz-orders"),
        b"{\"id\":2}",
        true,
    ))
    .await;
    assert_eq!(
        (hex.status, b64.status),
        (StatusCode::OK, StatusCode::OK),
        "{} {}",
        hex.text(),
        b64.text()
    );

    let received = target.received();
    assert_eq!(received.len(), 3, "each delivery forwarded once");
    let (headers, body) = &received[0];
    assert_eq!(body.as_ref(), ORDER, "the body byte for byte");
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(headers["x-shopline-topic"], "orders/create");
    assert_eq!(headers["x-shopline-webhook-id"], "wh-1");
    assert_eq!(headers["tokenbroker-webhook"], "shopline-orders");
    assert!(
        headers["traceparent"]
            .to_str()
            .expect("ascii")
            .contains("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert!(
        !headers.contains_key("x-shopline-hmac-sha256"),
        "the signature stays with the broker"
    );
    for (headers, _) in &received[1..] {
        assert_eq!(headers["tokenbroker-webhook"], "cyberbiz-orders");
        assert_eq!(headers["x-cyberbiz-event"], "orders/create");
        assert!(
            !headers.contains_key("x-cyberbiz-hmac-sha256") && !headers.contains_key("x-cyberbiz-domain-hmac-sha256")
        );
    }
    assert_eq!(
        (received[1].1.as_ref(), received[2].1.as_ref()),
        (&b"{\"id\":1}"[..], &b"{\"id\":2}"[..])
    );

    let metrics = broker.metrics().await;
    assert_eq!(count(&metrics, "shopline-orders", "forwarded"), Some(1.0));
    assert_eq!(count(&metrics, "cyberbiz-orders", "forwarded"), Some(2.0));
    let tenants = get(&broker.admin_url("/tenants")).await.text();
    let listed: serde_json::Value = serde_json::from_str(&tenants).expect("json");
    assert_eq!(listed["webhooks"][0]["name"], "shopline-orders");
    assert_eq!(listed["webhooks"][0]["tenant"], "acme-shopline");
    let secrets = [SHOPLINE_SECRET.to_owned(), CYBERBIZ_SECRET.to_owned()];
    for (surface, text) in [
        ("/tenants", &tenants),
        ("/metrics", &metrics),
        ("the log", &broker.logs()),
    ] {
        assert_no_secret_in(surface, text, &secrets);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_wrong_signatures_are_refused_and_nothing_is_forwarded() {
    let target = Target::start().await;
    let broker = start(&target, "");
    let url = broker.webhook_url("/shopline-orders");
    let mut missing = shopline_delivery(&url, "wh-1", ORDER, SHOPLINE_SECRET);
    missing.headers_mut().remove("x-shopline-hmac-sha256");
    let wrong_key = shopline_delivery(&url, "wh-2", ORDER, "not-the-app-secret");
    let mut one_byte_changed = shopline_delivery(&url, "wh-3", ORDER, SHOPLINE_SECRET);
    *one_byte_changed.body_mut() = Full::new(Bytes::from(
        ORDER
            .to_vec()
            .into_iter()
            .map(|b| if b == b'1' { b'2' } else { b })
            .collect::<Vec<_>>(),
    ));
    let signature = hex::encode(hmac("not-the-app-secret", ORDER));
    for request in [missing, wrong_key, one_byte_changed] {
        let answer = send(request).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        assert_eq!(answer.json()["type"], "urn:tokenbroker:error:webhook_signature_invalid");
    }
    assert!(target.received().is_empty(), "nothing reached the target");
    assert_eq!(
        count(&broker.metrics().await, "shopline-orders", "invalid_signature"),
        Some(3.0)
    );
    assert!(
        broker.logged("webhook_signature_invalid", Duration::from_secs(5)).await,
        "refusals are logged"
    );
    assert_no_secret_in("the log", &broker.logs(), &[signature, SHOPLINE_SECRET.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_answered_200_and_not_forwarded_again() {
    let target = Target::start().await;
    let broker = start(&target, "");
    let url = broker.webhook_url("/shopline-orders");
    let first = send(shopline_delivery(&url, "wh-1", ORDER, SHOPLINE_SECRET)).await;
    let again = send(shopline_delivery(&url, "wh-1", ORDER, SHOPLINE_SECRET)).await;
    let other = send(shopline_delivery(&url, "wh-2", ORDER, SHOPLINE_SECRET)).await;
    assert_eq!(
        [outcome(&first), outcome(&again), outcome(&other)],
        ["forwarded", "duplicate", "forwarded"],
        "the same id once, another id again"
    );
    assert_eq!(again.status, StatusCode::OK);
    // CYBERBIZ sends no id: the event and the body tell a repeat, whatever encoding it signs in.
    let cyberbiz = broker.webhook_url("/cyberbiz-orders");
    let first = send(cyberbiz_delivery(&cyberbiz, b"{\"id\":9}", false)).await;
    let again = send(cyberbiz_delivery(&cyberbiz, b"{\"id\":9}", true)).await;
    assert_eq!([outcome(&first), outcome(&again)], ["forwarded", "duplicate"]);
    assert_eq!(target.received().len(), 3);
    assert_eq!(
        count(&broker.metrics().await, "shopline-orders", "duplicate"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_forward_is_retried_by_the_sender_and_delivered_exactly_once() {
    let target = Target::start().await;
    let broker = start(&target, "");
    let url = broker.webhook_url("/shopline-orders");
    target.answer_with(500);
    let failed = send(shopline_delivery(&url, "wh-1", ORDER, SHOPLINE_SECRET)).await;
    assert_eq!(
        failed.status,
        StatusCode::BAD_GATEWAY,
        "the sender must retry: {}",
        failed.text()
    );
    target.answer_with(200);
    let retried = send(shopline_delivery(&url, "wh-1", ORDER, SHOPLINE_SECRET)).await;
    let repeated = send(shopline_delivery(&url, "wh-1", ORDER, SHOPLINE_SECRET)).await;
    assert_eq!([outcome(&retried), outcome(&repeated)], ["forwarded", "duplicate"]);
    let accepted = target.received().len();
    assert_eq!(
        accepted, 2,
        "one refused attempt, then one delivery; the repeat is not forwarded"
    );
    let metrics = broker.metrics().await;
    assert_eq!(count(&metrics, "shopline-orders", "forward_failed"), Some(1.0));
    assert_eq!(count(&metrics, "shopline-orders", "forwarded"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_does_not_answer_gives_503() {
    let target = Target::start().await;
    let broker = start(&target, "timeout = \"300ms\"\n");
    target.delay_ms.store(2_000, SeqCst);
    let answer = send(shopline_delivery(
        &broker.webhook_url("/shopline-orders"),
        "wh-1",
        ORDER,
        SHOPLINE_SECRET,
    ))
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.text());
    assert_eq!(
        answer.json()["type"],
        "urn:tokenbroker:error:webhook_forward_unreachable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_deliveries_get_413_and_nothing_is_forwarded() {
    let target = Target::start().await;
    let broker = start(&target, "max_body = \"1KiB\"\n");
    static BIG: [u8; 2048] = [b'x'; 2048];
    let answer = send(shopline_delivery(
        &broker.webhook_url("/shopline-orders"),
        "wh-1",
        &BIG,
        SHOPLINE_SECRET,
    ))
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert!(target.received().is_empty());
    assert_eq!(
        count(&broker.metrics().await, "shopline-orders", "too_large"),
        Some(1.0)
    );
    // The proxy's head limit (64 KiB by default) holds here too.
    let mut huge = shopline_delivery(&broker.webhook_url("/shopline-orders"), "wh-3", ORDER, SHOPLINE_SECRET);
    huge.headers_mut()
        .insert("x-padding", "p".repeat(66 * 1024).parse().expect("header"));
    assert_eq!(send(huge).await.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Only POST on a configured name.
    let unknown = send(shopline_delivery(
        &broker.webhook_url("/nope"),
        "wh-2",
        ORDER,
        SHOPLINE_SECRET,
    ))
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let get_answer = get(&broker.webhook_url("/shopline-orders")).await;
    assert_eq!(get_answer.status, StatusCode::METHOD_NOT_ALLOWED);
    // The proxy's tenants are not reachable through the webhook listener.
    let proxied = get(&broker.webhook_url("/acme-shopline/admin/openapi/v20230901/products/products.json")).await;
    assert_eq!(proxied.status, StatusCode::NOT_FOUND);
}

/// A delivery is held whole to be verified, so it counts against the process-wide budget for
/// bodies in memory: one the budget cannot hold is turned away before it is read, for the platform
/// to retry, and one that fits still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_memory_budget_cannot_hold_gets_503_and_nothing_is_forwarded() {
    let target = Target::start().await;
    let broker = Binary::start(&config(&target, "", "replay_buffer_budget = \"1KiB\"\n"), &ENVS);
    static BIG: [u8; 2048] = [b'x'; 2048];
    let answer = send(shopline_delivery(
        &broker.webhook_url("/shopline-orders"),
        "wh-big",
        &BIG,
        SHOPLINE_SECRET,
    ))
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.text());
    assert_eq!(answer.headers["tokenbroker-error"], "server_busy");
    assert_eq!(answer.headers["retry-after"], "1");
    assert!(target.received().is_empty(), "nothing is forwarded");
    let small = send(shopline_delivery(
        &broker.webhook_url("/shopline-orders"),
        "wh-small",
        ORDER,
        SHOPLINE_SECRET,
    ))
    .await;
    assert_eq!(small.status, StatusCode::OK, "{}", small.text());
    assert_eq!(
        target.received().len(),
        1,
        "a delivery that fits the budget is forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_on_two_replicas_are_forwarded_once() {
    let redis = RedisServer::start();
    let target = Target::start().await;
    target.delay_ms.store(300, SeqCst);
    let url = redis.url();
    let envs = [ENVS[0], ENVS[1], ("REDIS_URL", url.as_str())];
    let nodes = replicas::start(2, &config(&target, "", REDIS_STORE), &envs);
    let sends = (0..6).map(|i| {
        let url = nodes[i % 2].webhook_url("/shopline-orders");
        tokio::spawn(async move { send(shopline_delivery(&url, "wh-race", ORDER, SHOPLINE_SECRET)).await })
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut outcomes = Vec::new();
    for answer in answers {
        let answer = answer.expect("the send task");
        assert!(
            matches!(answer.status, StatusCode::OK | StatusCode::CONFLICT),
            "{} {}",
            answer.status,
            answer.text()
        );
        outcomes.push(outcome(&answer).to_owned());
    }
    assert_eq!(
        target.received().len(),
        1,
        "forwarded once across replicas: {outcomes:?}\n{}",
        all_logs(&nodes)
    );
    assert_eq!(outcomes.iter().filter(|o| *o == "forwarded").count(), 1, "{outcomes:?}");
    // Later repeats, on either replica, are duplicates.
    for node in &nodes {
        let again = send(shopline_delivery(
            &node.webhook_url("/shopline-orders"),
            "wh-race",
            ORDER,
            SHOPLINE_SECRET,
        ))
        .await;
        assert_eq!(outcome(&again), "duplicate");
    }
    assert_eq!(target.received().len(), 1);
}

/// A reload swaps what verifies with the tenant it comes from: a rotated app secret is the only
/// one accepted at once, the delivery markers and counters carry over, and a removed webhook is
/// gone from the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_secret_keeps_the_markers_and_removes_routes() {
    let target = Target::start().await;
    let broker = start(&target, "");
    let url = broker.webhook_url("/shopline-orders");
    assert_eq!(
        outcome(&send(shopline_delivery(&url, "wh-1", ORDER, SHOPLINE_SECRET)).await),
        "forwarded"
    );
    let rotated = "rotated-shopline-app-secret";
    let text = config(&target, "", "").replace(
        "app_secret = { env = \"SHOPLINE_SECRET\" }",
        &format!("app_secret = \"{rotated}\""),
    );
    broker.replace_config(&text);
    broker.signal("HUP");
    assert!(
        broker.logged("configuration reloaded", Duration::from_secs(5)).await,
        "{}",
        broker.logs()
    );
    let old = send(shopline_delivery(&url, "wh-2", ORDER, SHOPLINE_SECRET)).await;
    assert_eq!(
        old.status,
        StatusCode::UNAUTHORIZED,
        "the old secret no longer verifies"
    );
    let repeat = send(shopline_delivery(&url, "wh-1", ORDER, rotated)).await;
    let fresh = send(shopline_delivery(&url, "wh-2", ORDER, rotated)).await;
    assert_eq!([outcome(&repeat), outcome(&fresh)], ["duplicate", "forwarded"]);
    assert_eq!(
        count(&broker.metrics().await, "shopline-orders", "forwarded"),
        Some(2.0)
    );

    let without = text
        .split("[[webhook]]\nname = \"cyberbiz-orders\"")
        .next()
        .expect("the first part")
        .to_owned();
    broker.replace_config(&without);
    broker.signal("HUP");
    // Polled unsigned (401 while the route exists), so the polls themselves forward nothing.
    let gone = crate::support::eventually(Duration::from_secs(5), || async {
        let unsigned = Request::post(broker.webhook_url("/cyberbiz-orders"))
            .body(Full::default())
            .expect("request");
        send(unsigned).await.status == StatusCode::NOT_FOUND
    })
    .await;
    assert!(gone, "a removed webhook is no longer served:\n{}", broker.logs());
    assert_eq!(target.received().len(), 2);
}

/// With the shared store unreachable, whether a delivery was already forwarded cannot be known:
/// it gets 503 and the sender retries, the process keeps serving, and once Redis is back the
/// retry is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_answers_503_and_the_retry_goes_through_once_it_is_back() {
    let mut redis = RedisServer::start();
    let target = Target::start().await;
    let url = redis.url();
    let envs = [ENVS[0], ENVS[1], ("REDIS_URL", url.as_str())];
    let node = replicas::start(1, &config(&target, "", REDIS_STORE), &envs).remove(0);
    let hook = node.webhook_url("/shopline-orders");
    redis.kill();
    let refused = send(shopline_delivery(&hook, "wh-1", ORDER, SHOPLINE_SECRET)).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text());
    assert_eq!(refused.json()["type"], "urn:tokenbroker:error:store_unavailable");
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(
        target.received().is_empty(),
        "nothing forwarded while it cannot be recorded"
    );
    redis.restart_empty();
    let delivered = crate::support::eventually(Duration::from_secs(10), || async {
        outcome(&send(shopline_delivery(&hook, "wh-1", ORDER, SHOPLINE_SECRET)).await) == "forwarded"
    })
    .await;
    assert!(delivered, "the retry goes through once Redis answers:\n{}", node.logs());
    assert_eq!(target.received().len(), 1);
}

/// With traces exported, the delivery's server span continues the sender's `traceparent`, and
/// the forward is a client span under it whose id is the parent the target receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_continues_into_the_forward() {
    let receiver = crate::support::otlp::OtlpReceiver::start().await;
    let target = Target::start().await;
    let endpoint = receiver.endpoint();
    let envs = [
        ENVS[0],
        ENVS[1],
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let broker = Binary::start(&config(&target, "", ""), &envs);
    let sent = send(shopline_delivery(
        &broker.webhook_url("/shopline-orders"),
        "wh-1",
        ORDER,
        SHOPLINE_SECRET,
    ))
    .await;
    assert_eq!(sent.status, StatusCode::OK);
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            spans.iter().any(|s| s.name == "upstream" && s.trace_id == caller_trace)
        })
        .await;
    let server = spans
        .iter()
        .find(|s| s.kind == 2 && s.trace_id == caller_trace)
        .expect("the server span");
    assert_eq!(server.parent_span_id, "00f067aa0ba902b7", "under the sender's span");
    let forward = spans
        .iter()
        .find(|s| s.name == "upstream" && s.trace_id == caller_trace)
        .expect("the forward span");
    assert_eq!(forward.parent_span_id, server.span_id);
    let received = target.received()[0].0["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        received,
        format!("00-{caller_trace}-{}-01", forward.span_id),
        "the target's parent is the forward"
    );
}

/// Without Redis, repeats racing in one process are held back the same way: one forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_in_one_process_are_forwarded_once() {
    let target = Target::start().await;
    target.delay_ms.store(300, SeqCst);
    let broker = start(&target, "");
    let sends = (0..4).map(|_| {
        let url = broker.webhook_url("/shopline-orders");
        tokio::spawn(async move { send(shopline_delivery(&url, "wh-race", ORDER, SHOPLINE_SECRET)).await })
    });
    let outcomes: Vec<String> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(|answer| outcome(&answer.expect("the send task")).to_owned())
        .collect();
    assert_eq!(target.received().len(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "forwarded").count(), 1, "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| *o == "duplicate").count(),
        3,
        "the others waited for it: {outcomes:?}"
    );
}
