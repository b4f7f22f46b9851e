//! The admin listener under crowding, through the real binary (README, "Limits": the admin
//! listener). A kubelet opens a new connection for every probe and restarts the pod when a few in a
//! row go unanswered, so probes must be answered whatever other clients hold: many keep-alive
//! clients polling `/healthz`, HTTP/2 connections left open, or connections that send half a head
//! and stall (slowloris). Every run is a few seconds and every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout};

use crate::support::Binary;
use crate::support::tenants::{SERVER, static_tenant};

/// How long a fresh probe may take to be answered (a kubelet's default `timeoutSeconds` is 1).
const PROBE_BOUND: Duration = Duration::from_secs(1);
/// How often each keep-alive client asks.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Half a request head: no blank line ends it, and nothing more is ever sent.
const HALF_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: slow.test\r\n";

/// The binary with a static tenant and the default `[server]` timeouts (30 s): the admin
/// listener's own shorter bounds are what the tests see.
fn start() -> Binary {
    let toml = format!("{SERVER}{}", static_tenant("acme", "http://127.0.0.1:9", ""));
    Binary::start(&toml, &[("STATIC_VALUE", "Bearer crowding-static")])
}

/// One answer read from `stream`: its status line and whether it carried `Connection: close`;
/// `None` when the connection closed (or broke) before the answer was complete.
async fn read_answer(stream: &mut TcpStream) -> Option<(String, bool)> {
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let n = stream.read(&mut buffer).await.ok().filter(|n| *n > 0)?;
        answer.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let header = |name: &str| {
            text[..head_end]
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let length: usize = header("content-length:")?.parse().ok()?;
        if answer.len() >= head_end + 4 + length {
            let close = header("connection:").is_some_and(|v| v == "close");
            return Some((text.lines().next().unwrap_or_default().to_owned(), close));
        }
    }
}

/// A keep-alive client: asks `/healthz` every `POLL_EVERY` on one connection until `until`,
/// reconnecting when the proxy closes it. Returns (answers with 200, answers with
/// `Connection: close`).
async fn keep_alive_client(addr: SocketAddr, until: Instant) -> (usize, usize) {
    let (mut answered, mut told_to_close) = (0, 0);
    let mut stream: Option<TcpStream> = None;
    while Instant::now() < until {
        if stream.is_none() {
            stream = timeout(PROBE_BOUND, TcpStream::connect(addr))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some(open) = stream.as_mut() {
            let asked = open
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: load.test\r\n\r\n")
                .await;
            let answer = match asked {
                Ok(()) => timeout(PROBE_BOUND, read_answer(open)).await.ok().flatten(),
                Err(_) => None,
            };
            match answer {
                Some((status, close)) if status == "http/1.1 200 ok" => {
                    answered += 1;
                    told_to_close += usize::from(close);
                    if close {
                        stream = None;
                    }
                }
                _ => stream = None,
            }
        }
        sleep(POLL_EVERY).await;
    }
    (answered, told_to_close)
}

/// A kubelet-style probe: a new connection, one `GET /healthz` with `Connection: close`. Whether
/// it got 200 within `PROBE_BOUND`.
async fn fresh_probe(addr: SocketAddr) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = b"GET /healthz HTTP/1.1\r\nHost: kubelet.test\r\nConnection: close\r\n\r\n";
        stream.write_all(request).await.ok()?;
        read_answer(&mut stream).await
    };
    matches!(timeout(PROBE_BOUND, probe).await, Ok(Some((status, _))) if status == "http/1.1 200 ok")
}

/// `n` connections that each sent `HALF_HEAD` and stall.
async fn stalled_heads(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut stalled = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            continue;
        };
        if stream.write_all(HALF_HEAD).await.is_ok() {
            stalled.push(stream);
        }
    }
    stalled
}

/// Ten fresh probes, 150 ms apart; how many got 200 in time.
async fn ten_probes(addr: SocketAddr) -> usize {
    let mut answered = 0;
    for _ in 0..10 {
        answered += usize::from(fresh_probe(addr).await);
        sleep(Duration::from_millis(150)).await;
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_while_keep_alive_clients_and_stalled_heads_crowd_the_admin_listener() {
    let binary = start();
    let admin = binary.admin_addr.expect("an admin listener");
    let _early_stalled = stalled_heads(admin, 8).await;
    let until = Instant::now() + Duration::from_secs(5);
    let mut clients = JoinSet::new();
    for _ in 0..80 {
        clients.spawn(keep_alive_client(admin, until));
    }
    // Every client has connected and asked at least once.
    sleep(Duration::from_secs(1)).await;
    let _late_stalled = stalled_heads(admin, 8).await;

    let probes = ten_probes(admin).await;
    let results = clients.join_all().await;
    assert_eq!(probes, 10, "fresh probes answered with 200 within {PROBE_BOUND:?}");
    let unanswered = results.iter().filter(|(answered, _)| *answered == 0).count();
    assert_eq!(unanswered, 0, "keep-alive clients never answered: {results:?}");
    assert!(
        results.iter().any(|(_, close)| *close > 0),
        "a busy admin listener closes connections after answering: {results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_on_the_admin_listener_neither_starves_probes_nor_stays() {
    let binary = start();
    let admin = binary.admin_addr.expect("an admin listener");
    let opened = Instant::now();
    let mut stalled = stalled_heads(admin, 100).await;
    assert_eq!(stalled.len(), 100, "every stalled connection is accepted");

    assert_eq!(
        ten_probes(admin).await,
        10,
        "fresh probes answered within {PROBE_BOUND:?}"
    );

    // The survivors are closed by the admin listener's own head bound, not the configured 30 s.
    let mut closed = 0;
    for stream in &mut stalled {
        let deadline = opened + Duration::from_secs(5);
        let mut byte = [0; 1];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut byte)).await;
        closed += usize::from(matches!(read, Ok(Ok(0) | Err(_))));
    }
    assert_eq!(closed, 100, "stalled heads closed within 5 s of opening");
}

#[tokio::test]
async fn an_idle_admin_connection_is_closed_long_before_the_proxy_timeouts() {
    let binary = start();
    let admin = binary.admin_addr.expect("an admin listener");
    let mut stream = TcpStream::connect(admin).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        .await
        .expect("ask");
    let (status, close) = read_answer(&mut stream).await.expect("an answer");
    assert_eq!(
        (status.as_str(), close),
        ("http/1.1 200 ok", false),
        "kept alive while quiet"
    );
    let answered = Instant::now();
    let mut byte = [0; 1];
    let read = timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "closed within 5 s of idling (the configured timeouts are 30 s): {read:?}"
    );
    assert!(answered.elapsed() >= Duration::from_secs(1), "not closed at once");
}

/// An HTTP/2 connection (prior knowledge) that has asked `/healthz` once and stays open while its
/// sender is kept; its driver task ends when the proxy closes the connection.
type H2Connection = (SendRequest<Empty<Bytes>>, JoinHandle<hyper::Result<()>>);

async fn answered_h2_connection(addr: SocketAddr) -> H2Connection {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    let driver = tokio::spawn(conn);
    let request = Request::get(format!("http://{addr}/healthz"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.expect("the body");
    (sender, driver)
}

#[tokio::test]
async fn a_full_admin_listener_closes_its_idle_connection_gracefully_to_take_a_probe() {
    let binary = start();
    let admin = binary.admin_addr.expect("an admin listener");
    // HTTP/2 answers never carry `Connection: close`, so 64 of them fill the table.
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(answered_h2_connection(admin).await);
    }
    assert!(
        fresh_probe(admin).await,
        "a probe is answered although every place was taken"
    );

    let (_sender, oldest) = held.remove(0);
    let oldest = timeout(Duration::from_secs(2), oldest)
        .await
        .expect("the connection quiet longest is closed")
        .expect("task");
    assert!(oldest.is_ok(), "closed gracefully (GOAWAY), not cut: {oldest:?}");
    assert!(
        held.iter().all(|(_, driver)| !driver.is_finished()),
        "only one was evicted for one probe"
    );
}
