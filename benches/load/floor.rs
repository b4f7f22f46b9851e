//! `load floor`: the least a proxy built on tokenbroker's stack (tokio, hyper's HTTP/1.1 server
//! and client connections) can do for the benchmark's request, measured to know how much of
//! tokenbroker's cost per request is the stack and how much is its own work.
//!
//! Per inbound connection one upstream connection, opened with the first request and driven by
//! the request that uses it, as tokenbroker's pool does (no task, no pool, no lock). Each request
//! has its path's first three segments (`/bench/rest/default`) cut, the same three headers
//! tokenbroker adds (`Authorization`, `x-api-key`, `Store`) and the upstream's `Host` put on, and
//! its response streamed back as it came. Nothing else: no routing table, no token, no limits, no
//! timeouts, no header hygiene, no metrics, no logs. Never a product; only a yardstick
//! (benches/README.md, "The stack's floor").

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::BenchError;

/// Where the floor proxy listens and forwards.
#[derive(Debug, clap::Args)]
pub(crate) struct FloorArgs {
    /// The address to listen on (127.0.0.1:PORT).
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream's address (HOST:PORT).
    #[arg(long)]
    upstream: SocketAddr,
    /// The bearer token to send upstream.
    #[arg(long)]
    token: String,
}

type Driver = client::Connection<TokioIo<TcpStream>, Incoming>;

/// One upstream connection: the handle requests go through and the future doing its I/O.
struct Upstream {
    sender: client::SendRequest<Incoming>,
    driver: Pin<Box<Driver>>,
}

/// What every request adds, built once.
struct Added {
    authorization: HeaderValue,
    api_key: HeaderValue,
    store: HeaderValue,
    host: HeaderValue,
}

pub(crate) async fn run(args: FloorArgs) -> Result<(), BenchError> {
    let listener = TcpListener::bind(args.listen).await?;
    let added = Rc::new(Added {
        authorization: HeaderValue::try_from(format!("Bearer {}", args.token))
            .map_err(|e| BenchError::Http(e.to_string()))?,
        api_key: HeaderValue::from_static("sandbox-client"),
        store: HeaderValue::from_static("default"),
        host: HeaderValue::try_from(args.upstream.to_string()).map_err(|e| BenchError::Http(e.to_string()))?,
    });
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let added = Rc::clone(&added);
                let upstream = args.upstream;
                tokio::task::spawn_local(async move {
                    let held: Rc<RefCell<Option<Upstream>>> = Rc::new(RefCell::new(None));
                    let service =
                        service_fn(move |request| forward(request, upstream, Rc::clone(&held), Rc::clone(&added)));
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
        .await
}

async fn forward(
    request: Request<Incoming>,
    upstream: SocketAddr,
    held: Rc<RefCell<Option<Upstream>>>,
    added: Rc<Added>,
) -> Result<Response<Streamed>, Infallible> {
    let Ok(response) = exchange(request, upstream, &held, &added).await else {
        let mut refused = Response::new(Streamed { body: None, held: None });
        *refused.status_mut() = http::StatusCode::BAD_GATEWAY;
        return Ok(refused);
    };
    Ok(response)
}

async fn exchange(
    request: Request<Incoming>,
    upstream: SocketAddr,
    held: &Rc<RefCell<Option<Upstream>>>,
    added: &Added,
) -> Result<Response<Streamed>, BenchError> {
    let (mut parts, body) = request.into_parts();
    // `/bench/rest/default/V1/...` → `/V1/...`: the first three segments go.
    let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let cut = target.match_indices('/').nth(3).map_or(target.len(), |(at, _)| at);
    parts.uri = Uri::try_from(&target[cut..]).map_err(|e| BenchError::Http(e.to_string()))?;
    parts.headers.insert(HOST, added.host.clone());
    parts.headers.insert(AUTHORIZATION, added.authorization.clone());
    parts
        .headers
        .insert(HeaderName::from_static("x-api-key"), added.api_key.clone());
    parts
        .headers
        .insert(HeaderName::from_static("store"), added.store.clone());
    let taken = held.borrow_mut().take();
    let mut conn = match taken {
        Some(conn) => conn,
        None => {
            let stream = TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            let (sender, driver) = client::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| BenchError::Http(e.to_string()))?;
            Upstream {
                sender,
                driver: Box::pin(driver),
            }
        }
    };
    let mut sent = pin!(conn.sender.send_request(Request::from_parts(parts, body)));
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(outcome) = sent.as_mut().poll(cx) {
            return Poll::Ready(outcome);
        }
        let _ = conn.driver.as_mut().poll(cx);
        sent.as_mut().poll(cx)
    })
    .await
    .map_err(|e| BenchError::Http(e.to_string()))?;
    Ok(response.map(|body| Streamed {
        body: Some(body),
        held: Some((conn, Rc::clone(held))),
    }))
}

/// The upstream's body, driving its connection, which goes back for the next request at the end.
struct Streamed {
    body: Option<Incoming>,
    held: Option<(Upstream, Rc<RefCell<Option<Upstream>>>)>,
}

impl Streamed {
    /// Puts the connection back for the connection's next request, when it can carry one.
    fn release(&mut self) {
        if let Some((mut conn, held)) = self.held.take() {
            let _ = conn
                .driver
                .as_mut()
                .poll(&mut Context::from_waker(std::task::Waker::noop()));
            if conn.sender.is_ready() {
                *held.borrow_mut() = Some(conn);
            }
        }
    }
}

impl Drop for Streamed {
    /// hyper stops polling a body that says it has ended: the connection goes back from here.
    fn drop(&mut self) {
        if self.body.as_ref().is_some_and(Body::is_end_stream) {
            self.release();
        }
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(body) = &mut this.body else {
            return Poll::Ready(None);
        };
        let mut frame = Pin::new(&mut *body).poll_frame(cx);
        if frame.is_pending()
            && let Some((conn, _)) = &mut this.held
        {
            let _ = conn.driver.as_mut().poll(cx);
            frame = Pin::new(&mut *body).poll_frame(cx);
        }
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.held = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
