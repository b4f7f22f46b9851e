//! Head size limits over real sockets (README, "Limits"): a request head over `max_request_head`
//! gets 431 problem+json and reaches no upstream, one just under it passes intact, and an upstream
//! response head over `max_response_head` gives 502, from a plain-http upstream and from an https
//! one over HTTP/2 or (`http2 = false`) HTTP/1.1.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokenbroker::sandbox::{H2Alpn, H2Upstream, H2UpstreamOptions};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::tenants::{SERVER, static_tenant};
use crate::support::upstream::Upstream;
use crate::support::{Proxy, env, get};

const LIMIT: usize = 64 * 1024;

async fn start(upstream: &str) -> Proxy {
    let toml = format!("{SERVER}{}", static_tenant("acme", upstream, ""));
    Proxy::start_with_env(&toml, &env(&[("STATIC_VALUE", "Bearer head-static")])).await
}

/// An HTTP/1.1 request for the `acme` tenant whose whole head is exactly `size` bytes, padded by
/// one `x-pad` header; returns it with the pad's length.
fn request_of_size(size: usize) -> (String, usize) {
    let head =
        |pad: &str| format!("GET /acme/items HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nx-pad: {pad}\r\n\r\n");
    let pad = size - head("").len();
    let request = head(&"p".repeat(pad));
    assert_eq!(request.len(), size);
    (request, pad)
}

/// Sends `request` on a fresh connection; returns the whole answer once the proxy closes (or
/// what arrived within 5 s) and whether it closed.
async fn exchange(addr: SocketAddr, request: &str) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A refusal may come (and the connection close) before the whole head is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let mut buffer = [0; 8192];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

fn assert_header_too_large(answer: &str, what: &str) {
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 431"), "{what}: {answer:.200}");
    assert!(
        lower.contains("tokenbroker-error: header_too_large"),
        "{what}: {answer:.400}"
    );
    assert!(lower.contains("content-type: application/problem+json"), "{what}");
    assert!(lower.contains("connection: close"), "{what}");
}

#[tokio::test]
async fn request_heads_over_the_limit_get_431_and_reach_no_upstream() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream.url()).await;
    for (what, size) in [("within hyper's slack", LIMIT + 4 * 1024), ("one byte over", LIMIT + 1)] {
        let (answer, closed) = exchange(proxy.addr, &request_of_size(size).0).await;
        assert_header_too_large(&answer, what);
        assert!(closed, "{what}: the connection is closed after the refusal");
    }
    // Beyond what the proxy reads, hyper refuses on its own and closes.
    for (what, size) in [("a 200 KB head", 200 * 1000), ("a 1 MB head", 1024 * 1024)] {
        let (answer, closed) = exchange(proxy.addr, &request_of_size(size).0).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{what}: {answer:.200}");
        assert!(closed, "{what}: closed");
    }
    assert_eq!(upstream.started(), 0, "nothing reached the upstream");
}

/// hyper's read buffer is what every open connection may fill with an unfinished head, so it
/// stops at the limit plus 8 KiB (README, "Limits"): a head still unfinished past that is refused
/// at once, not buffered until `header_read_timeout`.
#[tokio::test]
async fn an_unfinished_head_past_the_read_buffer_is_refused_at_once_not_held() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream.url()).await;
    let (request, _) = request_of_size(LIMIT + 16 * 1024);
    let unfinished = request.trim_end_matches("\r\n");
    let started = tokio::time::Instant::now();
    let (answer, closed) = exchange(proxy.addr, unfinished).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    assert!(
        !answer.contains("tokenbroker-error"),
        "hyper refused it, the proxy never saw it"
    );
    assert!(closed, "the connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "at once, not at the header timeout"
    );
    // Just inside the buffer, an unfinished head is still waited for (until the header timeout).
    let (request, _) = request_of_size(LIMIT + 4 * 1024);
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(request.trim_end_matches("\r\n").as_bytes())
        .await
        .expect("write");
    let mut buffer = [0; 64];
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await;
    assert!(read.is_err(), "a head within the buffer is not refused before it ends");
}

#[tokio::test]
async fn a_request_head_at_the_limit_passes_intact() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream.url()).await;
    let (request, pad) = request_of_size(LIMIT);
    let (answer, _) = exchange(proxy.addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.300}");
    let recorded = upstream.last();
    assert_eq!(recorded.headers["x-pad"].len(), pad, "the header arrived whole");
    assert!(recorded.headers["x-pad"].as_bytes().iter().all(|b| *b == b'p'));
}

/// An upstream that answers every request with a response head of about `size` bytes.
async fn huge_head_upstream(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0; 8192];
                let _ = stream.read(&mut buffer).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
                    "b".repeat(size)
                );
                let _ = stream.write_all(head.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_response_head_over_the_limit_gives_502() {
    let upstream = huge_head_upstream(1024 * 1024).await;
    let proxy = start(&format!("http://{upstream}")).await;
    let answer = get(&proxy.url("/acme/items")).await;
    assert_eq!(answer.status.as_u16(), 502);
    assert_eq!(answer.headers["tokenbroker-error"], "upstream_unreachable");
    let small = huge_head_upstream(1024).await;
    let proxy = start(&format!("http://{small}")).await;
    let answer = get(&proxy.url("/acme/items")).await;
    assert_eq!(answer.status.as_u16(), 200, "a head under the limit passes");
}

/// The sandbox's TLS upstream (h2 and http/1.1 by ALPN), and the proxy with `acme` on it trusting
/// the test CA, plus `extra` tenant keys.
async fn start_tls(extra: &str) -> (H2Upstream, Proxy) {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/auth/http/testdata");
    let options = H2UpstreamOptions::new(testdata.join("server.pem"), testdata.join("server.key"));
    assert_eq!(options.alpn, H2Alpn::H2OrHttp1);
    let upstream = H2Upstream::start(options).await.expect("the TLS upstream starts");
    let keys = format!("ca_file = \"{}\"\n{extra}", testdata.join("ca.pem").display());
    let toml = format!("{SERVER}{}", static_tenant("acme", &upstream.base_url(), &keys));
    let proxy = Proxy::start_with_env(&toml, &env(&[("STATIC_VALUE", "Bearer head-static")])).await;
    (upstream, proxy)
}

/// Response heads of 80 kB and 1 MB (the limit is 64 KiB) give 502 `upstream_unreachable`; one
/// with a 1 KiB header passes, the header intact. Three requests in all.
async fn assert_response_heads_over_the_limit_give_502(proxy: &Proxy) {
    for bytes in [80_000, 1024 * 1024] {
        let answer = get(&proxy.url(&format!("/acme/big-head/{bytes}"))).await;
        assert_eq!(answer.status.as_u16(), 502, "a {bytes}-byte header: {}", answer.text());
        assert_eq!(answer.headers["tokenbroker-error"], "upstream_unreachable");
    }
    let answer = get(&proxy.url("/acme/big-head/1024")).await;
    assert_eq!(answer.status.as_u16(), 200, "a head under the limit passes");
    assert_eq!(answer.headers["x-big"].len(), 1024);
}

#[tokio::test]
async fn an_h2_upstream_response_head_over_the_limit_gives_502() {
    let (upstream, proxy) = start_tls("").await;
    assert_response_heads_over_the_limit_give_502(&proxy).await;
    assert_eq!(
        (upstream.h2_requests(), upstream.http1_requests()),
        (3, 0),
        "all over h2"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_http1_over_tls_upstream_response_head_over_the_limit_gives_502() {
    let (upstream, proxy) = start_tls("http2 = false").await;
    assert_response_heads_over_the_limit_give_502(&proxy).await;
    assert_eq!(
        (upstream.h2_requests(), upstream.http1_requests()),
        (0, 3),
        "all over HTTP/1.1"
    );
    proxy.stop().await;
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a small frame").to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// h2 keeps an unfinished header block (HEADERS and CONTINUATION frames without END_HEADERS) up
/// to a number of frames set by the header list size the proxy advertises, the limit plus 8 KiB:
/// ~100 KB of block is refused at once (GOAWAY and a close), where at 4 × the limit it was held
/// until `header_read_timeout`.
#[tokio::test]
async fn an_unfinished_http2_header_block_past_the_list_size_is_refused_at_once_not_held() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream.url()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(0x4, 0, 0, &[]));
    let block = vec![0u8; 16 * 1024];
    bytes.extend(h2_frame(0x1, 0, 1, &block));
    for _ in 0..6 {
        bytes.extend(h2_frame(0x9, 0, 1, &block));
    }
    let started = tokio::time::Instant::now();
    let _ = stream.write_all(&bytes).await;
    let mut buffer = [0; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(1..) = stream.read(&mut buffer).await {}
    })
    .await;
    assert!(closed.is_ok(), "still open after {:?}", started.elapsed());
    assert_eq!(upstream.started(), 0, "nothing reached the upstream");
}
