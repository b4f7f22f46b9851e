//! The HTTP/1 pool against real loopback upstreams: reuse, idle limits, closed connections.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::service::service_fn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// `server.max_response_head` at its default.
const TEST_HEAD: usize = 64 * 1024;

/// A hyper upstream on 127.0.0.1 answering every request with `answer(path)`; counts the
/// connections it accepted.
async fn upstream(
    keep_alive: bool,
    answer: fn(&Request<Incoming>) -> Response<Full<Bytes>>,
) -> (Http1Pool, Arc<AtomicUsize>) {
    serve(move |stream| {
        let service =
            service_fn(move |request: Request<Incoming>| std::future::ready(Ok::<_, Infallible>(answer(&request))));
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(keep_alive)
            .serve_connection(TokioIo::new(stream), service);
        async move {
            let _ = connection.await;
        }
    })
    .await
}

async fn bind() -> (TcpListener, Authority) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr.to_string().parse().expect("authority"))
}

/// A pool for an upstream on 127.0.0.1 that runs `connection` on each accepted connection in
/// its own task, and the count of connections accepted.
async fn serve<F, Fut>(connection: F) -> (Http1Pool, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (listener, authority) = bind().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(connection(stream));
        }
    });
    (Http1Pool::new(&authority, TEST_HEAD), accepted)
}

fn ok(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/host" => Response::new(Full::new(Bytes::copy_from_slice(
            request.headers()[http::header::HOST].as_bytes(),
        ))),
        "/empty" => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::default())
            .expect("response"),
        "/large" => Response::new(Full::new(Bytes::from(vec![b'x'; 4 << 20]))),
        _ => Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}"))),
    }
}

fn get(path: &str) -> Request<UpstreamBody> {
    request(Method::GET, path)
}

fn request(method: Method, path: &str) -> Request<UpstreamBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Either::Left(Full::new(Bytes::new())))
        .expect("request")
}

/// The whole exchange, bounded: a connection nobody drives would hang it.
async fn read_all(pool: &Http1Pool, request: Request<UpstreamBody>) -> (StatusCode, Bytes) {
    let exchange = async {
        let response = pool.send(request).await.expect("upstream answers");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the exchange completes")
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (pool, accepted) = upstream(true, ok).await;
    for _ in 0..3 {
        assert_eq!(
            read_all(&pool, get("/a")).await,
            (StatusCode::OK, Bytes::from_static(b"{\"ok\":true}"))
        );
        assert_eq!(pool.inner.idle_count(), 1, "back in the pool once the body has ended");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_requests_open_connections_that_are_all_kept() {
    let (pool, accepted) = upstream(true, ok).await;
    let (a, b) = tokio::join!(read_all(&pool, get("/a")), read_all(&pool, get("/b")));
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.inner.idle_count(), 2);
    read_all(&pool, get("/c")).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the third request reuses one");
}

#[tokio::test]
async fn empty_bodies_leave_the_connection_reusable_without_being_polled() {
    let (pool, accepted) = upstream(true, ok).await;
    let response = pool.send(get("/empty")).await.expect("204");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    drop(response);
    let response = pool.send(request(Method::HEAD, "/a")).await.expect("HEAD");
    assert!(response.body().is_end_stream());
    drop(response);
    assert_eq!(read_all(&pool, get("/a")).await.0, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_response_dropped_before_its_end_closes_its_connection() {
    let (pool, accepted) = upstream(true, ok).await;
    let mut body = pool.send(get("/large")).await.expect("answer").into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.is_data());
    drop(body);
    assert_eq!(
        pool.inner.idle_count(),
        0,
        "half-read response: the connection cannot be reused"
    );
    assert_eq!(read_all(&pool, get("/a")).await.0, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_large_body_streams_whole_through_the_driven_connection() {
    let (pool, _) = upstream(true, ok).await;
    let (status, body) = read_all(&pool, get("/large")).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 4 << 20));
    assert_eq!(pool.inner.idle_count(), 1);
}

#[tokio::test]
async fn connection_close_answers_are_not_pooled() {
    let (pool, accepted) = upstream(false, ok).await;
    read_all(&pool, get("/a")).await;
    assert_eq!(pool.inner.idle_count(), 0);
    read_all(&pool, get("/a")).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connections_idle_past_the_timeout_are_closed_not_reused() {
    let (pool, accepted) = upstream(true, ok).await;
    read_all(&pool, get("/a")).await;
    pool.inner.age_idle(POOL_IDLE_TIMEOUT);
    pool.inner.sweep();
    assert_eq!(pool.inner.idle_count(), 0, "the sweep closes it");
    read_all(&pool, get("/a")).await;
    pool.inner.age_idle(POOL_IDLE_TIMEOUT);
    read_all(&pool, get("/a")).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "checkout skips the stale one too");
    assert_eq!(pool.inner.idle_count(), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_dropped_and_replaced() {
    // An upstream that answers with keep-alive semantics, then closes the connection.
    let (pool, accepted) = serve(|mut stream| async move {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    })
    .await;
    assert_eq!(
        read_all(&pool, get("/a")).await,
        (StatusCode::OK, Bytes::from_static(b"ok"))
    );
    // The close reaches the pool once the upstream task has run and the reactor has seen the
    // FIN; `yield_now` lets both happen (it resumes after the I/O driver is polled). Bounded.
    for _ in 0..1_000 {
        pool.inner.sweep();
        if pool.inner.idle_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.inner.idle_count(), 0, "the closed connection left the pool");
    assert_eq!(read_all(&pool, get("/a")).await.0, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_connect_error() {
    let (listener, authority) = bind().await;
    drop(listener);
    let error = Http1Pool::new(&authority, TEST_HEAD)
        .send(get("/a"))
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, Http1Error::Connect(_)), "{error:?}");
    assert!(
        std::error::Error::source(&error).is_some_and(|e| e.to_string().contains("refused")),
        "{error}"
    );
}

#[test]
fn a_connection_is_cheap_to_move() {
    assert!(size_of::<Conn>() <= 32, "{} bytes", size_of::<Conn>());
}

#[test]
fn ipv6_hosts_lose_their_brackets_and_the_port_defaults_to_80() {
    let pool = Http1Pool::new(&"[::1]".parse().expect("authority"), TEST_HEAD);
    assert_eq!(
        (pool.inner.endpoint.host.as_str(), pool.inner.endpoint.port),
        ("::1", 80)
    );
}

#[tokio::test]
async fn every_request_carries_the_upstreams_host() {
    let (pool, _) = upstream(true, ok).await;
    let (_, host) = read_all(&pool, get("/host")).await;
    assert_eq!(host, pool.inner.host_header.as_bytes());
    assert!(host.starts_with(b"127.0.0.1:"));
}

#[test]
fn host_is_what_hyper_util_would_send_port_80_omitted() {
    let host = |authority: &str| {
        let pool = Http1Pool::new(&authority.parse().expect("authority"), TEST_HEAD);
        pool.inner.host_header.to_str().expect("ascii").to_owned()
    };
    assert_eq!(host("127.0.0.1:8080"), "127.0.0.1:8080");
    assert_eq!(host("api.example.com:80"), "api.example.com");
    assert_eq!(host("api.example.com"), "api.example.com");
    assert_eq!(host("[::1]:9000"), "[::1]:9000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_connection_idle_on_another_thread_is_taken_before_opening_one() {
    let (pool, accepted) = upstream(true, ok).await;
    let (handle, other) = (tokio::runtime::Handle::current(), pool.clone());
    // `block_on` from a thread of its own: the request, and the idle list it returns the
    // connection to, are that thread's.
    std::thread::spawn(move || handle.block_on(read_all(&other, get("/a"))))
        .join()
        .expect("the other thread's request");
    assert_eq!(pool.inner.idle_count(), 1);
    assert_eq!(read_all(&pool, get("/b")).await.0, StatusCode::OK);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the idle connection was taken, none opened"
    );
}

#[test]
fn only_an_http_1_1_answer_without_a_close_token_keeps_its_connection() {
    let answer = |version: http::Version, connection: Option<&'static str>| {
        let mut response = Response::builder().version(version);
        if let Some(value) = connection {
            response = response.header(http::header::CONNECTION, value);
        }
        keeps_alive(&response.body(()).expect("a valid response"))
    };
    assert!(answer(http::Version::HTTP_11, None));
    assert!(answer(http::Version::HTTP_11, Some("keep-alive, x-trace")));
    assert!(!answer(http::Version::HTTP_11, Some("close")));
    assert!(!answer(http::Version::HTTP_11, Some("Keep-Alive ,  CLOSE")));
    assert!(!answer(http::Version::HTTP_10, Some("keep-alive")));
}
