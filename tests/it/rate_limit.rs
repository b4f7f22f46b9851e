//! Traffic control end to end (README, "Rate limits"): the per-tenant limiter seen from outside,
//! over real sockets, with the recording upstream's arrival times as the witness.
//!
//! Unit tests in `src/ratelimit/tests.rs` prove the limiter's arithmetic on paused time; these
//! prove the wiring: that the proxy waits before it forwards, answers its own 429 when the wait
//! would pass `max_wait`, pauses a tenant after an upstream 429, keeps tenants apart, and lets a
//! caller that hangs up leave the queue. Real time is unavoidable here (sockets), so each test
//! asserts with tolerances on the order of 100 ms and keeps its total run short, except the
//! 60-request test, whose point is a sustained rate.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use tokenbroker::sandbox::{CyberbizOptions, CyberbizSandbox};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::tenants::static_tenant_from;
use crate::support::upstream::Upstream;
use crate::support::{Answer, Binary, Proxy, env, get, get_as, tenant_entry};

const SECOND: Duration = Duration::from_secs(1);
/// What "answers immediately" means for a tenant that nothing holds back, on a busy 2-core box.
const IMMEDIATE: Duration = Duration::from_millis(100);

/// A `static` tenant named `name` in front of `upstream`, plus `extra` TOML (e.g. its limit).
fn tenant(name: &str, upstream: &str, extra: &str) -> String {
    static_tenant_from(name, upstream, "VALUE", extra)
}

fn config(tenants: &[String]) -> String {
    let server = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nrequest_timeout = \"30s\"\n";
    format!("{server}{}", tenants.concat())
}

async fn start(tenants: &[String]) -> Proxy {
    Proxy::start_with_env(&config(tenants), &env(&[("VALUE", "Bearer static-token")])).await
}

/// Fires one GET per URL at once; answers in URL order, each with its time since the batch began.
pub async fn fire(urls: Vec<String>) -> Vec<(Answer, Duration)> {
    fire_keyed(urls, None).await
}

/// As [`fire`], each request as the caller whose key is `key`.
pub async fn fire_as(urls: Vec<String>, key: &str) -> Vec<(Answer, Duration)> {
    fire_keyed(urls, Some(key)).await
}

async fn fire_keyed(urls: Vec<String>, key: Option<&str>) -> Vec<(Answer, Duration)> {
    let began = Instant::now();
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let key = key.map(str::to_owned);
            tokio::spawn(async move {
                let answer = match key {
                    Some(key) => get_as(&url, &key).await,
                    None => get(&url).await,
                };
                (answer, began.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

async fn timed_get(url: &str) -> (Answer, Duration) {
    let began = Instant::now();
    let answer = get(url).await;
    (answer, began.elapsed())
}

/// The most arrivals within any half-open 1-second window.
fn max_in_any_second(mut times: Vec<Instant>) -> usize {
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < SECOND)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The tenant's limiter as `/tenants` reports it (`null` for an unlimited tenant).
async fn limiter(proxy: &Proxy, name: &str) -> serde_json::Value {
    let tenants = get(&proxy.admin_url("/tenants")).await.json();
    tenant_entry(&tenants, name)["limiter"].clone()
}

/// Polls `/tenants` until the tenant's limiter has `waiting` queued requests (bounded: 2 s).
async fn until_waiting(proxy: &Proxy, name: &str, waiting: u64) {
    for _ in 0..200 {
        if limiter(proxy, name).await["waiting"] == waiting {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{name} never had {waiting} requests waiting: {}",
        limiter(proxy, name).await
    );
}

fn assert_passed_back(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert!(
        answer.headers.get("tokenbroker-error").is_none(),
        "the upstream's {status} is passed back, not made by the proxy"
    );
}

#[tokio::test]
async fn sixty_at_once_reach_the_upstream_at_the_quota_and_all_succeed() {
    let upstream = Upstream::start().await;
    let limited = tenant(
        "a",
        &upstream.url(),
        r#"rate_limit = { per_second = 5, burst = 5, max_wait = "15s" }"#,
    );
    let proxy = start(&[limited, tenant("b", &upstream.url(), "")]).await;

    let urls = (0..60).map(|i| proxy.url(&format!("/a/item/{i}"))).collect();
    let batch = tokio::spawn(fire(urls));
    // While `a` has a deep queue, `b` (unlimited) is served at once.
    tokio::time::sleep(SECOND).await;
    assert!(
        limiter(&proxy, "a").await["waiting"].as_u64() > Some(40),
        "a is saturated"
    );
    let (answer, took) = timed_get(&proxy.url("/b/other")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(took < IMMEDIATE, "b waited {took:?} behind a's queue");

    let answers = batch.await.expect("batch");
    for (answer, _) in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    let arrivals: Vec<Instant> = upstream
        .recorded()
        .into_iter()
        .filter(|r| r.target.starts_with("/item/"))
        .map(|r| r.arrived)
        .collect();
    assert_eq!(arrivals.len(), 60);
    let span = arrivals
        .iter()
        .max()
        .expect("arrivals")
        .duration_since(*arrivals.iter().min().expect("arrivals"));
    // 5 at once, then 55 more at 5/s: the last slot is 11 s after the first.
    assert!(
        span >= Duration::from_millis(10_900),
        "the quota was not enforced: {span:?}"
    );
    assert!(span < Duration::from_secs(13), "slots were wasted: {span:?}");
    let peak = max_in_any_second(arrivals);
    assert!(
        peak <= 10,
        "{peak} requests reached the upstream within one second (burst 5 + 5/s)"
    );
    let state = limiter(&proxy, "a").await;
    assert_eq!(state["granted_total"], 60);
    assert_eq!(state["rejected_total"], 0);
}

#[tokio::test]
async fn excess_beyond_max_wait_gets_the_proxys_429_and_never_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let limited = tenant(
        "a",
        &upstream.url(),
        r#"rate_limit = { per_second = 2, burst = 2, max_wait = "200ms" }"#,
    );
    let proxy = start(&[limited]).await;

    let answers = fire((0..20).map(|i| proxy.url(&format!("/a/item/{i}"))).collect()).await;
    let ok = answers.iter().filter(|(a, _)| a.status == StatusCode::OK).count();
    // The burst passes; the next slot is 500 ms away, past max_wait, so the rest are refused.
    assert!((2..=3).contains(&ok), "{ok} requests admitted");
    for (answer, took) in answers.iter().filter(|(a, _)| a.status != StatusCode::OK) {
        assert_our_429(answer);
        assert!(*took < Duration::from_millis(700), "refused only after {took:?}");
    }
    assert_eq!(upstream.started(), ok, "a refused request reached the upstream");
    assert_eq!(upstream.recorded().len(), ok);
    assert_eq!(limiter(&proxy, "a").await["rejected_total"], 20 - ok as u64);
}

#[tokio::test]
async fn upstream_429_pauses_only_that_tenant_for_its_retry_after() {
    let upstream = Upstream::start().await;
    let limited = tenant(
        "a",
        &upstream.url(),
        r#"rate_limit = { per_second = 10, burst = 10, max_wait = "5s" }"#,
    );
    let proxy = start(&[limited, tenant("b", &upstream.url(), "")]).await;

    let (answer, _) = timed_get(&proxy.url("/a/status/429")).await;
    assert_passed_back(&answer, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        answer.headers["retry-after"], "2",
        "the upstream's Retry-After reaches the caller"
    );
    let paused = limiter(&proxy, "a").await["paused_for_s"]
        .as_f64()
        .expect("a is paused");
    assert!(paused > 1.5 && paused <= 2.0, "paused for {paused} s");

    let held_url = proxy.url("/a/after");
    let held = tokio::spawn(async move { timed_get(&held_url).await });
    until_waiting(&proxy, "a", 1).await;
    // `b` shares the proxy and the upstream, not the pause.
    let (answer, took) = timed_get(&proxy.url("/b/meanwhile")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(took < IMMEDIATE, "b waited {took:?} while a was paused");

    let (answer, took) = held.await.expect("held request");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        took >= Duration::from_millis(1800) && took <= Duration::from_secs(3),
        "the request after an upstream 429 waited {took:?}, not ~2 s"
    );
}

/// RFC 9110 lets `Retry-After` be an HTTP-date; it pauses until then (it was read as 1 s).
#[tokio::test]
async fn upstream_429_with_an_http_date_pauses_until_that_date() {
    let upstream = Upstream::start().await;
    let limited = tenant(
        "a",
        &upstream.url(),
        r#"rate_limit = { per_second = 10, burst = 10, max_wait = "1s" }"#,
    );
    let proxy = start(&[limited]).await;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(6));
    let encoded = percent_encoding::utf8_percent_encode(&date, percent_encoding::NON_ALPHANUMERIC);

    let (answer, _) = timed_get(&proxy.url(&format!("/a/status/429?retry_after={encoded}"))).await;
    assert_passed_back(&answer, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], date.as_str(), "passed back as sent");
    let paused = limiter(&proxy, "a").await["paused_for_s"].as_f64().unwrap_or(0.0);
    assert!(
        paused > 4.0 && paused <= 6.0,
        "paused for {paused} s, not until the date"
    );
    // Beyond the 1 s max_wait: refused at once, with the date's distance as Retry-After.
    let (answer, took) = timed_get(&proxy.url("/a/after")).await;
    let retry_after = assert_our_429(&answer);
    assert!((5..=6).contains(&retry_after), "Retry-After {retry_after}");
    assert!(took < IMMEDIATE, "refused after {took:?}");
}

/// An upstream 429 pauses "the tenant's limiter"; a tenant without `rate_limit` has none (that is
/// what makes it free on the hot path), so its callers get the upstream's 429 and `Retry-After`
/// and back off themselves. This pins that choice: the next request is not held.
#[tokio::test]
async fn unlimited_tenant_passes_429_back_without_pausing() {
    let upstream = Upstream::start().await;
    let proxy = start(&[tenant("b", &upstream.url(), "")]).await;

    let (answer, _) = timed_get(&proxy.url("/b/status/429")).await;
    assert_passed_back(&answer, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "2");
    assert!(
        limiter(&proxy, "b").await.is_null(),
        "an unlimited tenant has no limiter"
    );
    let (answer, took) = timed_get(&proxy.url("/b/next")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(took < IMMEDIATE, "an unlimited tenant was held {took:?}");
}

/// Sends a GET on its own connection and returns the socket, so the caller can hang up.
async fn queue_raw(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream
}

#[tokio::test]
async fn callers_that_hang_up_while_queued_consume_no_slot() {
    let upstream = Upstream::start().await;
    // Burst 1 at 2/s: after the first request, slots come every 500 ms.
    let limited = tenant(
        "a",
        &upstream.url(),
        r#"rate_limit = { per_second = 2, burst = 1, max_wait = "5s" }"#,
    );
    let proxy = start(&[limited]).await;

    let first_sent = Instant::now();
    let (answer, _) = timed_get(&proxy.url("/a/first")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let first_done = Instant::now();
    // Four callers queue for the slots at +0.5, +1.0, +1.5 and +2.0 s, then hang up.
    let mut quitters = Vec::new();
    for i in 0..4 {
        quitters.push(queue_raw(proxy.addr, &format!("/a/quitter/{i}")).await);
    }
    until_waiting(&proxy, "a", 4).await;
    drop(quitters);
    until_waiting(&proxy, "a", 0).await;

    // Had the quitters kept their places, this would be served ~2.5 s after the first.
    let (answer, _) = timed_get(&proxy.url("/a/live")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let since_sent = first_sent.elapsed();
    let since_done = first_done.elapsed();
    assert!(
        since_sent >= Duration::from_millis(450),
        "the limiter let it through early: {since_sent:?}"
    );
    assert!(
        since_done <= Duration::from_millis(800),
        "served {since_done:?} after the first, not at the next slot (+500 ms)"
    );
    let targets: Vec<String> = upstream.recorded().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/first", "/live"], "a hung-up caller reached the upstream");
    assert_eq!(limiter(&proxy, "a").await["granted_total"], 2);
}

#[tokio::test]
async fn cyberbiz_default_keeps_any_second_at_five() {
    let sandbox = CyberbizSandbox::start(CyberbizOptions::default())
        .await
        .expect("sandbox");
    let token = sandbox.token();
    // No `rate_limit`: the provider default (5/s, burst 1, max_wait 5 s) is under test; the 20th
    // request waits 19 x 200 ms = 3.8 s, inside the default max_wait.
    let toml = config(&[format!(
        "\n[[tenant]]\nname = \"cb\"\nprovider = \"cyberbiz\"\nupstream = \"{}\"\ntoken = {{ env = \"CB_TOKEN\" }}\n",
        sandbox.base_url()
    )]);
    let proxy = Proxy::start_with_env(&toml, &env(&[("CB_TOKEN", &token)])).await;

    let answers = fire((0..20).map(|_| proxy.url("/cb/v1/products")).collect()).await;
    // (ms since the batch began, status) in answer order: shows which slot arrived late on failure.
    let mut timeline: Vec<(u128, u16)> = answers
        .iter()
        .map(|(a, t)| (t.as_millis(), a.status.as_u16()))
        .collect();
    timeline.sort_unstable();
    let (over, peak) = (sandbox.requests_over_limit(), sandbox.max_requests_in_any_second());
    assert!(
        over == 0 && peak <= 5 && timeline.iter().all(|(_, s)| *s == 200),
        "{peak} requests reached CYBERBIZ within one second, {over} over its limit: {timeline:?}"
    );
    assert_eq!(sandbox.api_calls(), 20);
}

#[tokio::test]
async fn shopline_423_is_passed_back_and_logged_as_an_error() {
    let upstream = Upstream::start().await;
    let toml = config(&[tenant("shop", &upstream.url(), "")]);
    let binary = Binary::start(&toml, &[("VALUE", "Bearer static-token")]);

    let answer = get(&binary.url("/shop/status/423")).await;
    assert_passed_back(&answer, StatusCode::LOCKED);
    // Counted: the per-tenant status counter (in process, where the admin address is known).
    let proxy = start(&[tenant("shop", &upstream.url(), "")]).await;
    assert_passed_back(&get(&proxy.url("/shop/status/423")).await, StatusCode::LOCKED);
    let metrics = get(&proxy.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"tokenbroker_requests_total{tenant="shop",status="423",source="upstream"} 1"#),
        "{metrics}"
    );
    let logged = || {
        binary.logs().lines().any(|line| {
            line.contains("\"level\":\"ERROR\"") && line.contains("423") && line.contains("\"tenant\":\"shop\"")
        })
    };
    for _ in 0..100 {
        if logged() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no error-level log line for the 423:\n{}", binary.logs());
}

/// Not a test: the hot-path cost of a limiter that never says no, against no limiter at all.
/// Run: `cargo test --test it rate_limit::hot_path_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check; prints medians"]
async fn hot_path_cost_of_an_unlimited_tenant() {
    const ROUNDS: usize = 2_000;
    let upstream = Upstream::start().await;
    let generous = r#"rate_limit = { per_second = 1000000, burst = 1000000, max_wait = "1s" }"#;
    let proxy = start(&[
        tenant("free", &upstream.url(), ""),
        tenant("generous", &upstream.url(), generous),
    ])
    .await;
    let client = crate::support::client();
    let (free, generous) = (proxy.url("/free/x"), proxy.url("/generous/x"));
    let mut samples = [Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS)];
    // Interleaved on one keep-alive client, so drift and warm-up hit both alike.
    for _ in 0..ROUNDS {
        for (url, sample) in [&free, &generous].into_iter().zip(samples.iter_mut()) {
            let request = http::Request::get(url.as_str())
                .body(Default::default())
                .expect("request");
            let began = Instant::now();
            let response = client.request(request).await.expect("answer");
            let _ = http_body_util::BodyExt::collect(response.into_body())
                .await
                .expect("body");
            sample.push(began.elapsed());
        }
    }
    for (name, sample) in ["unlimited", "1e6/s limit"].into_iter().zip(samples.iter_mut()) {
        sample.sort_unstable();
        let at = |q: f64| sample[((sample.len() - 1) as f64 * q) as usize];
        eprintln!(
            "{name:>12}: median {:?}, p90 {:?}, p99 {:?} over {ROUNDS}",
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
}

/// A response the proxy made itself: 429 `rate_limited`, problem+json, whole-second Retry-After.
pub fn assert_our_429(answer: &Answer) -> u64 {
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{}", answer.text());
    assert_eq!(answer.headers["tokenbroker-error"], "rate_limited", "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert_eq!(answer.json()["type"], "urn:tokenbroker:error:rate_limited");
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1);
    retry_after
}
