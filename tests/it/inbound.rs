//! Inbound limits over real sockets (README, "Limits"): the header-read timeout on HTTP/1 heads and
//! on connections that never send a request (silent, or a stalled HTTP/2 preface), the idle
//! timeout on HTTP/1 and HTTP/2, the cap on open connections, and the open-file limit raised at
//! startup. Timeouts are a few hundred milliseconds and every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::tenants::static_tenant;
use crate::support::upstream::Upstream;
use crate::support::{Binary, Proxy, env, eventually, get, sample};

/// The timeout the tests configure, and how early a close would mean it was not honoured.
const SHORT: Duration = Duration::from_millis(300);
const NOT_BEFORE: Duration = Duration::from_millis(250);
/// How long a close the tests expect may take, scheduling on a busy machine included.
const CLOSES_WITHIN: Duration = Duration::from_secs(3);

/// A proxy with `[server]` `limits` and a static tenant `acme` in front of `upstream`.
async fn start(upstream: &Upstream, limits: &str) -> Proxy {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nrequest_timeout = \"5s\"\n{limits}\n{}",
        static_tenant("acme", &upstream.url(), "")
    );
    Proxy::start_with_env(&toml, &env(&[("STATIC_VALUE", "Bearer inbound-static")])).await
}

/// Reads (and keeps) whatever arrives until the peer closes (EOF or reset); returns how long that
/// took and what arrived, or `None` if the connection was still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    let closing = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(limit, closing).await.ok()?;
    Some((started.elapsed(), received))
}

/// Asserts that `stream` is still open `NOT_BEFORE` - 150 ms from now and closed within
/// `CLOSES_WITHIN`, not before `NOT_BEFORE`; returns what arrived before the close.
async fn assert_closed_by_timeout(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let started = Instant::now();
    assert!(
        closed_within(stream, Duration::from_millis(100)).await.is_none(),
        "{what}: closed before the timeout"
    );
    let (_, received) = closed_within(stream, CLOSES_WITHIN)
        .await
        .unwrap_or_else(|| panic!("{what}: still open {CLOSES_WITHIN:?} after a {SHORT:?} timeout"));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= NOT_BEFORE,
        "{what}: closed after {elapsed:?}, before the timeout"
    );
    received
}

/// Sends a complete GET on `stream` and reads one answer with its body; returns the status line.
async fn exchange(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write a request");
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    let read_answer = async {
        loop {
            let n = stream.read(&mut buffer).await.expect("read the answer");
            assert!(n > 0, "the connection closed before the answer was complete");
            answer.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&answer);
            let Some(head_end) = text.find("\r\n\r\n") else {
                continue;
            };
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a content-length answer");
            if answer.len() >= head_end + 4 + length {
                return text.lines().next().unwrap_or_default().to_owned();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_answer)
        .await
        .expect("the answer arrives in time")
}

#[tokio::test]
async fn a_stalled_http1_head_is_closed_after_header_read_timeout_without_an_answer() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "header_read_timeout = \"300ms\"\nidle_timeout = \"10s\"").await;

    // The first head on a connection.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /acme/x HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let received = assert_closed_by_timeout(&mut stream, "first head").await;
    assert!(
        received.is_empty(),
        "hyper closes without a 408: {:?}",
        String::from_utf8_lossy(&received)
    );

    // A later head on a keep-alive connection: only hyper's timer can close it here, since the
    // proxy's own idle deadline is 10 s away.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    assert_eq!(exchange(&mut stream, "/acme/x").await, "HTTP/1.1 200 OK");
    stream
        .write_all(b"GET /acme/x HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let received = assert_closed_by_timeout(&mut stream, "second head").await;
    assert!(received.is_empty(), "{:?}", String::from_utf8_lossy(&received));
    proxy.stop().await;
}

#[tokio::test]
async fn connections_that_never_send_a_request_are_closed_after_header_read_timeout() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "header_read_timeout = \"300ms\"\nidle_timeout = \"10s\"").await;
    let cases: [(&str, &[u8]); 3] = [
        ("a silent connection", b""),
        ("half an HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
        // hyper answers the preface with its SETTINGS and then waits for the client's.
        (
            "an HTTP/2 preface without SETTINGS",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ),
    ];
    for (what, sent) in cases {
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        stream.write_all(sent).await.expect("write");
        assert_closed_by_timeout(&mut stream, what).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn http1_connections_close_after_idle_timeout_but_not_while_busy() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "header_read_timeout = \"10s\"\nidle_timeout = \"300ms\"").await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    // Busy for three idle periods: neither the request nor the connection is cut.
    assert_eq!(exchange(&mut stream, "/acme/slow/900").await, "HTTP/1.1 200 OK");
    assert_eq!(exchange(&mut stream, "/acme/x").await, "HTTP/1.1 200 OK");
    let received = assert_closed_by_timeout(&mut stream, "an idle HTTP/1 connection").await;
    assert!(received.is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn http2_connections_close_after_idle_timeout_with_goaway() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "header_read_timeout = \"10s\"\nidle_timeout = \"300ms\"").await;
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let request = Request::get(format!("http://{}/acme/slow/900", proxy.addr))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.expect("the body");
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(CLOSES_WITHIN, conn).await;
    let elapsed = idle_from.elapsed();
    let ended = ended
        .expect("the server closed the idle HTTP/2 connection")
        .expect("task");
    assert!(ended.is_ok(), "a graceful close (GOAWAY), not an error: {ended:?}");
    assert!(
        elapsed >= NOT_BEFORE,
        "closed after {elapsed:?}, before the idle timeout"
    );
    proxy.stop().await;
}

async fn open_connections(proxy: &Proxy) -> Option<f64> {
    sample(&proxy.metrics().await, "tokenbroker_connections_open")
}

/// Waits until the proxy reports `n` open connections.
async fn assert_open(proxy: &Proxy, n: f64) {
    let reached = eventually(Duration::from_secs(3), || async {
        open_connections(proxy).await == Some(n)
    })
    .await;
    assert!(
        reached,
        "{n} open connections; metrics say {:?}",
        open_connections(proxy).await
    );
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test]
async fn beyond_max_connections_new_connections_are_closed_at_once_and_counted() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "max_connections = 3\nheader_read_timeout = \"10s\"").await;
    let mut held = vec![
        connect(proxy.addr).await,
        connect(proxy.addr).await,
        connect(proxy.addr).await,
    ];
    assert_open(&proxy, 3.0).await;

    let mut refused = connect(proxy.addr).await;
    let (elapsed, received) = closed_within(&mut refused, Duration::from_secs(2))
        .await
        .expect("the fourth connection is closed at once");
    assert!(received.is_empty() && elapsed < Duration::from_secs(1), "{elapsed:?}");
    let metrics = proxy.metrics().await;
    assert_eq!(sample(&metrics, "tokenbroker_connections_refused_total"), Some(1.0));
    assert_eq!(sample(&metrics, "tokenbroker_connections_open"), Some(3.0));
    for stream in &mut held {
        assert_eq!(
            exchange(stream, "/acme/x").await,
            "HTTP/1.1 200 OK",
            "the held ones serve"
        );
    }

    drop(held.pop());
    assert_open(&proxy, 2.0).await;
    let mut fresh = connect(proxy.addr).await;
    assert_eq!(
        exchange(&mut fresh, "/acme/x").await,
        "HTTP/1.1 200 OK",
        "a freed slot serves"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(sample(&metrics, "tokenbroker_connections_refused_total"), Some(1.0));
    proxy.stop().await;
}

/// `Max open files` of `pid` as (soft, hard).
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (fields[0].to_owned(), fields[1].to_owned())
}

#[tokio::test]
async fn the_binary_raises_its_soft_open_file_limit_to_the_hard_one() {
    let upstream = Upstream::start().await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
        static_tenant("acme", &upstream.url(), "")
    );
    let (_, own_hard) = open_file_limits(std::process::id());
    if own_hard.parse::<u64>().is_ok_and(|hard| hard <= 256) {
        eprintln!("the hard open-file limit is {own_hard}: no room to show a raise; skipped");
        return;
    }
    let binary = Binary::start_with_soft_nofile(&toml, &[("STATIC_VALUE", "Bearer inbound-static")], 256);
    let (soft, hard) = open_file_limits(binary.child.id());
    assert_eq!(soft, hard, "soft raised to hard (it started at 256)");
    assert!(
        binary.logs().contains("raised the soft open-file limit"),
        "{}",
        binary.logs()
    );
    assert_eq!(get(&binary.url("/acme/x")).await.status, StatusCode::OK);
}
