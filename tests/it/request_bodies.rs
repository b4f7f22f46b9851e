//! Request bodies through the real binary (README, "Limits"): the process-wide replay budget (past
//! it a body streams, not replayable, and is counted), `body_timeout` on a body that stalls (408,
//! the upstream request aborted), and broken chunk framing answered as the caller's fault (400).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokenbroker::sandbox::{self, ImsOptions, ImsSandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::tenants::{SERVER, ims_tenant, static_tenant};
use crate::support::upstream::Upstream;
use crate::support::{Answer, Binary, eventually, sample, send};

/// An adobe_ims tenant `renewing` (it renews, so it keeps bodies for a 401 replay) in front of
/// `upstream`, and a static tenant `plain` (it never replays, so bodies stream).
fn tenants(ims: &ImsSandbox, upstream: &Upstream) -> String {
    let renewing = ims_tenant("renewing", ims, "min_token_age = \"0s\"").replace(
        &format!("upstream = \"{}\"", ims.base_url()),
        &format!("upstream = \"{}\"", upstream.url()),
    );
    format!("{renewing}{}", static_tenant("plain", &upstream.url(), ""))
}

fn start(ims: &ImsSandbox, upstream: &Upstream, server: &str) -> Binary {
    let toml = format!("{SERVER}{server}\n{}", tenants(ims, upstream));
    Binary::start(
        &toml,
        &[
            ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET),
            ("STATIC_VALUE", "Bearer bodies-static"),
        ],
    )
}

async fn post(binary: &Binary, path: &str, size: usize) -> Answer {
    let request = Request::post(binary.url(path))
        .body(Full::new(Bytes::from(vec![b'b'; size])))
        .expect("valid request");
    send(request).await
}

async fn counter(binary: &Binary, series: &str) -> f64 {
    sample(&binary.metrics().await, series).unwrap_or_else(|| panic!("{series} is exposed"))
}

const EXHAUSTED: &str = "tokenbroker_replay_budget_exhausted_total";
const REPLAYS: &str = r#"tokenbroker_unauthorized_replays_total{tenant="renewing"}"#;
const BODY: usize = 80_000;

#[tokio::test]
async fn past_the_replay_budget_bodies_stream_unreplayed_and_every_one_still_succeeds() {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("IMS fake");
    let upstream = Upstream::start().await;
    let binary = start(&ims, &upstream, "replay_buffer_budget = \"100KiB\"");
    // One body kept while the upstream takes its time holds 80 of the 100 KiB...
    let url = binary.url("/renewing/slow/1500");
    let held = tokio::spawn(async move {
        let request = Request::post(url).body(Full::new(Bytes::from(vec![b'h'; BODY])));
        send(request.expect("valid request")).await
    });
    assert!(eventually(Duration::from_secs(10), || async { upstream.started() == 1 }).await);
    // ...so the next one streams: its 401 is passed back, not replayed.
    let refused = post(&binary, "/renewing/status/401", BODY).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(counter(&binary, EXHAUSTED).await, 1.0);
    assert_eq!(counter(&binary, REPLAYS).await, 0.0, "a streamed body is not replayed");
    let held = held.await.expect("the slow request");
    assert_eq!(held.status, StatusCode::OK);
    assert_eq!(held.json()["body_len"], BODY);
    // With the budget free again, a body is kept and replayed.
    let replayed = post(&binary, "/renewing/status/401", BODY).await;
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(counter(&binary, REPLAYS).await, 1.0, "a kept body is replayed");
    // Many at once: whatever the budget takes, every body arrives whole.
    let answers: Vec<_> = (0..8)
        .map(|_| {
            let url = binary.url("/renewing/slow/300");
            tokio::spawn(async move {
                send(
                    Request::post(url)
                        .body(Full::new(Bytes::from(vec![b'c'; BODY])))
                        .expect("valid"),
                )
                .await
            })
        })
        .collect();
    for answer in answers {
        let answer = answer.await.expect("a concurrent request");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.json()["body_len"], BODY);
    }
    assert!(
        counter(&binary, EXHAUSTED).await >= 2.0,
        "the full budget was counted again"
    );
}

/// Sends `head` and the first `sent` bytes of its body on a fresh connection, then nothing more;
/// returns what arrived until the proxy closed the connection, and when that was.
async fn stall(binary: &Binary, head: &str, sent: usize, limit: Duration) -> (String, Duration) {
    let mut stream = TcpStream::connect(binary.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write the head");
    stream
        .write_all(&vec![b's'; sent])
        .await
        .expect("write the body's start");
    let started = Instant::now();
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
            received.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the proxy closes the connection in time");
    (String::from_utf8_lossy(&received).into_owned(), started.elapsed())
}

fn upload_head(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n")
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_after_body_timeout_and_the_upstream_never_sees_it_complete() {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("IMS fake");
    let upstream = Upstream::start().await;
    let binary = start(&ims, &upstream, "body_timeout = \"300ms\"");
    // Streamed (the static tenant never replays): the upstream has the head and 1,000 bytes.
    let (answer, after) = stall(&binary, &upload_head("/plain/upload"), 1000, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.300}");
    assert!(answer.contains("tokenbroker-error: body_timeout"), "{answer:.300}");
    assert!(
        after >= Duration::from_millis(250),
        "cut off after {after:?}, before the timeout"
    );
    let aborted = eventually(Duration::from_secs(3), || async { upstream.aborted() == 1 }).await;
    assert!(aborted, "the upstream saw its request aborted");
    assert!(upstream.recorded().is_empty(), "no upstream request completed");
    // Buffered (the renewing tenant keeps bodies up to 1 MiB): nothing reaches the upstream.
    let (answer, _) = stall(&binary, &upload_head("/renewing/upload"), 1000, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.300}");
    assert_eq!(upstream.started(), 1, "the buffered body never left the proxy");
    let logged = eventually(Duration::from_secs(3), || async {
        let events = binary.json_logs();
        let timeouts = events
            .iter()
            .filter(|e| e["status"] == 408 && e["error"] == "body_timeout");
        timeouts.count() == 2
    });
    assert!(logged.await, "the access log says why: {}", binary.logs());
}

#[tokio::test]
async fn broken_chunk_framing_is_a_400_for_the_caller_without_hyper_details() {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("IMS fake");
    let upstream = Upstream::start().await;
    let binary = start(&ims, &upstream, "");
    let head = "POST /plain/orders HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = "5\r\nhello\r\nzz\r\nnot a chunk\r\n0\r\n\r\n";
    let (answer, _) = stall(&binary, &format!("{head}{body}"), 0, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.400}");
    assert!(answer.contains("tokenbroker-error: bad_request"), "{answer:.400}");
    let detail = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(detail.contains("malformed"), "our own detail: {detail}");
    assert!(
        !detail.contains("chunk size") && !detail.contains("user body") && !detail.contains("hyper"),
        "no hyper internals: {detail}"
    );
    let aborted = eventually(Duration::from_secs(3), || async { upstream.aborted() == 1 }).await;
    assert!(aborted, "the upstream saw its request aborted");
}

/// The measurement behind `replay_buffer_budget` (README, "Behaviour where the spec was silent"):
/// 200 concurrent 1 MB uploads to a renewing tenant whose upstream takes 6 s, and the binary's
/// peak RSS. `MEASURE_BUDGET` sets the budget ("16GiB" stands for none). Run by hand:
/// `MEASURE_BUDGET=64MiB cargo test --test it peak_rss -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, printed; it asserts only that every upload succeeded"]
async fn peak_rss_of_200_concurrent_1mb_uploads() {
    let budget = std::env::var("MEASURE_BUDGET").unwrap_or_else(|_| "64MiB".into());
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("IMS fake");
    let upstream = Upstream::start().await;
    let server = format!("replay_buffer_budget = \"{budget}\"\nbody_timeout = \"60s\"");
    let toml = format!(
        "{}{server}\n{}",
        SERVER.replace("\"5s\"", "\"30s\""),
        tenants(&ims, &upstream)
    );
    let binary = Binary::start(
        &toml,
        &[("IMS_SECRET", sandbox::IMS_CLIENT_SECRET), ("STATIC_VALUE", "unused")],
    );
    assert_eq!(post(&binary, "/renewing/warm", 10).await.status, StatusCode::OK);
    let before = binary.peak_rss_kib();
    let uploads: Vec<_> = (0..200)
        .map(|_| {
            let url = binary.url("/renewing/slow/6000");
            tokio::spawn(async move {
                send(
                    Request::post(url)
                        .body(Full::new(Bytes::from(vec![b'u'; 1_000_000])))
                        .expect("valid"),
                )
                .await
            })
        })
        .collect();
    for upload in uploads {
        assert_eq!(upload.await.expect("an upload").status, StatusCode::OK);
    }
    let exhausted = counter(&binary, EXHAUSTED).await;
    println!(
        "budget {budget}: peak RSS {} KiB (before the uploads {before} KiB); budget exhausted {exhausted} times",
        binary.peak_rss_kib()
    );
}

/// An HTTP/2 upstream: hyper resets the stream of a body that fails but does not say why, so the
/// proxy remembers it. A body too large to keep (over `replay_body_limit`) and a chunked one
/// stream; one stalls, the other breaks.
#[tokio::test]
async fn over_an_http2_upstream_a_stalled_or_broken_body_is_still_the_callers_fault() {
    use tokenbroker::sandbox::{H2Upstream, H2UpstreamOptions};
    let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/auth/http/testdata");
    let options = H2UpstreamOptions::new(testdata.join("server.pem"), testdata.join("server.key"));
    let upstream = H2Upstream::start(options).await.expect("the TLS upstream starts");
    let keys = format!("ca_file = \"{}\"", testdata.join("ca.pem").display());
    let tenant = static_tenant("h2", &upstream.base_url(), &keys);
    let toml = format!("{SERVER}body_timeout = \"300ms\"\n{tenant}");
    let binary = Binary::start(&toml, &[("STATIC_VALUE", "Bearer bodies-static")]);
    let head = "POST /h2/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2000000\r\n\r\n";
    let (answer, _) = stall(&binary, head, 1000, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.300}");
    assert!(answer.contains("tokenbroker-error: body_timeout"), "{answer:.300}");
    let head = "POST /h2/orders HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (answer, _) = stall(
        &binary,
        &format!("{head}5\r\nhello\r\nzz\r\n"),
        0,
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.400}");
    assert!(answer.contains("tokenbroker-error: bad_request"), "{answer:.400}");
}
