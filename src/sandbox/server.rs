//! The accept loop shared by every fake: one `127.0.0.1:0` listener, one hyper connection task per
//! socket, and a handle that stops all of it.
//!
//! Connection tasks live in a `JoinSet` owned by the accept task, so aborting that one task (what
//! `Drop` does) tears down every open connection too: a dropped sandbox leaves nothing running.
//! `shutdown()` is the polite variant: stop accepting, let in-flight requests finish for a short
//! grace period, then drop what is left.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::common::Body;

/// How long `shutdown()` waits for in-flight requests before cutting connections. Short: these
/// are test fakes, and a streamed gigabyte must not hold a test run hostage.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// One fake's request handler. Implementations are cheap to share (`Arc<Self>`).
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// A running fake server; dropping it stops the server and closes its connections.
#[derive(Debug)]
pub(crate) struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Binds `127.0.0.1:0` and serves `handler` on the current tokio runtime.
    pub(crate) async fn start<H: Handler>(handler: Arc<H>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, handler, stopped));
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, gives in-flight requests a short grace period, then closes everything.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The loop may already be gone (runtime shutting down); nothing left to stop then.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // A panicked or aborted loop has already released its sockets.
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop<H: Handler>(listener: TcpListener, handler: Arc<H>, mut stopped: oneshot::Receiver<()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let handler = Arc::clone(&handler);
                    let service = service_fn(move |req| {
                        let handler = Arc::clone(&handler);
                        async move { Ok::<_, Infallible>(handler.handle(req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    connections.spawn(graceful.watch(conn));
                }
                Err(error) => {
                    tracing::debug!(%error, "sandbox accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    // Connections still open after the grace period are aborted when `connections` drops.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}
