//! The inbound side: accept loops on bound listeners, one hyper connection task per client,
//! HTTP/1.1 and HTTP/2 (prior knowledge) by `hyper_util`'s auto builder, and graceful drain.

pub(crate) mod callers;
pub(crate) mod pipeline;
mod request_id;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use std::future::Future;

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::TenantName;
use crate::tenant::Snapshot;

/// Which listener a request arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binding {
    /// The main listener: the first path segment names the tenant.
    Main,
    /// A tenant's own listener: every request is this tenant, with no prefix.
    Tenant(TenantName),
}

/// Accept errors such as EMFILE are retried after a pause instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// One running accept loop and the switch that stops it.
struct AcceptLoop {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The accept loops of one app. Tenant listeners can be added and removed by a reload; all are
/// stopped and drained together at shutdown.
pub(crate) struct Servers {
    graceful: Arc<GracefulShutdown>,
    fixed: Vec<AcceptLoop>,
    /// Tenant listeners by tenant, with the configured address they serve.
    tenants: HashMap<TenantName, (SocketAddr, AcceptLoop)>,
}

impl Servers {
    pub(crate) fn new() -> Self {
        Self {
            graceful: Arc::new(GracefulShutdown::new()),
            fixed: Vec::new(),
            tenants: HashMap::new(),
        }
    }

    /// Serves the main listener.
    pub(crate) fn spawn_main(&mut self, listener: TcpListener, state: Arc<ArcSwap<Snapshot>>) {
        let accept_loop = self.spawn_proxy(listener, Binding::Main, state);
        self.fixed.push(accept_loop);
    }

    /// Serves a tenant's own listener (configured as `addr`).
    pub(crate) fn add_tenant(
        &mut self,
        name: TenantName,
        addr: SocketAddr,
        listener: TcpListener,
        state: Arc<ArcSwap<Snapshot>>,
    ) {
        let accept_loop = self.spawn_proxy(listener, Binding::Tenant(name.clone()), state);
        if let Some((_, old)) = self.tenants.insert(name, (addr, accept_loop)) {
            let _ = old.stop.send(true);
        }
    }

    /// The configured address a tenant's listener serves, if it has one running.
    pub(crate) fn tenant_addr(&self, name: &TenantName) -> Option<SocketAddr> {
        self.tenants.get(name).map(|(addr, _)| *addr)
    }

    /// Stops the tenant listeners `keep` rejects; their open connections finish normally.
    pub(crate) fn retain_tenants(&mut self, keep: impl Fn(&TenantName, SocketAddr) -> bool) {
        self.tenants.retain(|name, (addr, accept_loop)| {
            let kept = keep(name, *addr);
            if !kept {
                tracing::info!(tenant = %name, %addr, "closing the tenant's listener");
                let _ = accept_loop.stop.send(true);
            }
            kept
        });
    }

    fn spawn_proxy(&self, listener: TcpListener, binding: Binding, state: Arc<ArcSwap<Snapshot>>) -> AcceptLoop {
        let binding = Arc::new(binding);
        self.spawn(listener, move |request: Request<Incoming>| {
            // One snapshot per request, held to its end: a reload never changes a request midway.
            let snapshot = state.load_full();
            let binding = Arc::clone(&binding);
            async move { Ok::<_, Infallible>(pipeline::handle(&snapshot, &binding, request).await) }
        })
    }

    /// Serves the admin endpoints on `listener`.
    pub(crate) fn spawn_admin(
        &mut self,
        listener: TcpListener,
        state: Arc<ArcSwap<Snapshot>>,
        registry: Arc<Registry>,
    ) {
        let accept_loop = self.spawn(listener, move |request: Request<Incoming>| {
            let response = admin::handle(&state.load(), &registry, &request);
            std::future::ready(Ok::<_, Infallible>(response))
        });
        self.fixed.push(accept_loop);
    }

    fn spawn<F, Fut, B>(&self, listener: TcpListener, handler: F) -> AcceptLoop
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let graceful = Arc::clone(&self.graceful);
        let stop = watch::Sender::new(false);
        let task = tokio::spawn(accept_loop(listener, handler, graceful, stop.subscribe()));
        AcceptLoop { stop, task }
    }

    /// Stops accepting, then waits up to `grace` for open connections to finish their requests.
    /// Returns whether everything drained in time.
    pub(crate) async fn drain(self, grace: Duration) -> bool {
        let loops: Vec<AcceptLoop> = self
            .fixed
            .into_iter()
            .chain(self.tenants.into_values().map(|(_, l)| l))
            .collect();
        for accept_loop in &loops {
            let _ = accept_loop.stop.send(true);
        }
        for accept_loop in loops {
            let _ = accept_loop.task.await;
        }
        let graceful = Arc::into_inner(self.graceful).expect("accept loops have ended and dropped their handles");
        tokio::time::timeout(grace, graceful.shutdown()).await.is_ok()
    }
}

async fn accept_loop<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) where
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
        let connection = builder
            .serve_connection(TokioIo::new(stream), service_fn(handler.clone()))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}
