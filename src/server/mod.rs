//! The inbound side: accept loops on bound listeners, one hyper connection task per client,
//! HTTP/1.1 and HTTP/2 (prior knowledge) by `hyper_util`'s auto builder, and graceful drain.

pub(crate) mod callers;
pub(crate) mod pipeline;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use std::future::Future;

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use prometheus_client::registry::Registry;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::app::{Binding, Snapshot};

/// Accept errors such as EMFILE are retried after a pause instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The accept loops of one app, stopped and drained together.
pub(crate) struct Servers {
    graceful: Arc<GracefulShutdown>,
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
}

impl Servers {
    pub(crate) fn new() -> Self {
        Self { graceful: Arc::new(GracefulShutdown::new()), stop: watch::Sender::new(false), loops: Vec::new() }
    }

    /// Serves proxied traffic on `listener`.
    pub(crate) fn spawn_proxy(&mut self, listener: TcpListener, binding: Binding, state: Arc<ArcSwap<Snapshot>>) {
        let binding = Arc::new(binding);
        self.spawn(listener, move |request: Request<Incoming>| {
            // One snapshot per request, held to its end: a reload never changes a request midway.
            let snapshot = state.load_full();
            let binding = Arc::clone(&binding);
            async move { Ok::<_, Infallible>(pipeline::handle(&snapshot, &binding, request).await) }
        });
    }

    /// Serves the admin endpoints on `listener`.
    pub(crate) fn spawn_admin(&mut self, listener: TcpListener, state: Arc<ArcSwap<Snapshot>>, registry: Arc<Registry>) {
        self.spawn(listener, move |request: Request<Incoming>| {
            let response = admin::handle(&state.load(), &registry, &request);
            std::future::ready(Ok::<_, Infallible>(response))
        });
    }

    fn spawn<F, Fut, B>(&mut self, listener: TcpListener, handler: F)
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let graceful = Arc::clone(&self.graceful);
        let stop = self.stop.subscribe();
        self.loops.push(tokio::spawn(accept_loop(listener, handler, graceful, stop)));
    }

    /// Stops accepting, then waits up to `grace` for open connections to finish their requests.
    /// Returns whether everything drained in time.
    pub(crate) async fn drain(self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        for accept_loop in self.loops {
            let _ = accept_loop.await;
        }
        let graceful = Arc::into_inner(self.graceful).expect("accept loops have ended and dropped their handles");
        tokio::time::timeout(grace, graceful.shutdown()).await.is_ok()
    }
}

async fn accept_loop<F, Fut, B>(listener: TcpListener, handler: F, graceful: Arc<GracefulShutdown>, mut stop: watch::Receiver<bool>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service_fn(handler.clone())).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}
