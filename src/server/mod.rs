//! The inbound side: accept loops on bound listeners, one hyper connection task per client,
//! HTTP/1.1 and HTTP/2 (prior knowledge) by `hyper_util`'s auto builder, and graceful drain.
//! What bounds a connection (the cap on open ones, header and idle timeouts) is in [`connection`];
//! how the admin listener keeps probes answered whatever its other clients hold, in
//! [`admin_listener`].

mod access_log;
mod admin_listener;
pub(crate) mod callers;
mod connection;
mod exchange;
mod inbound;
mod origin;
pub(crate) mod pipeline;
mod request_body;
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
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ServerConfig, TenantName};
use crate::metrics::GlobalMetrics;
use crate::tenant::Snapshot;
use crate::upstream::ReplayBudget;
use connection::{ACCEPT_ERROR_PAUSE, Activity, Gate, Limits, Tracked};
pub(crate) use inbound::{Binding, Inbound};

/// One running accept loop and the switch that stops it.
struct AcceptLoop {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The accept loops of one app. Tenant listeners can be added and removed by a reload; all are
/// stopped and drained together at shutdown.
pub(crate) struct Servers {
    /// Turns true at shutdown; every connection task holds a receiver until it ends, so the drain
    /// is over when the last receiver is gone.
    drain: watch::Sender<bool>,
    limits: Limits,
    /// `server.max_connections`, shared by the main and tenant listeners.
    proxy_gate: Arc<Gate>,
    /// `server.replay_buffer_budget`, shared by every request on the proxy listeners.
    replay_budget: Arc<ReplayBudget>,
    fixed: Vec<AcceptLoop>,
    /// The address the main listener is bound to (set by [`Self::spawn_main`]).
    main_addr: Option<SocketAddr>,
    /// Tenant listeners by tenant, with the configured address they serve.
    tenants: HashMap<TenantName, (SocketAddr, AcceptLoop)>,
}

impl Servers {
    /// Servers with the `[server]` connection limits (taken once: they are restart-only), counting
    /// the proxy listeners' connections in `globals`.
    pub(crate) fn new(config: &ServerConfig, globals: Arc<GlobalMetrics>) -> Self {
        Self {
            drain: watch::Sender::new(false),
            limits: Limits {
                header_read_timeout: config.header_read_timeout,
                idle_timeout: config.idle_timeout,
                max_request_head: config.max_request_head,
            },
            replay_budget: ReplayBudget::new(config.replay_buffer_budget, Arc::clone(&globals)),
            proxy_gate: Gate::new(config.max_connections, Some(globals)),
            fixed: Vec::new(),
            main_addr: None,
            tenants: HashMap::new(),
        }
    }

    /// Serves the main listener.
    pub(crate) fn spawn_main(&mut self, listener: TcpListener, state: Arc<ArcSwap<Snapshot>>) {
        self.main_addr = listener.local_addr().ok();
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

    /// The address the main listener is bound to. Reloads never move it, so the rule about who
    /// may reach the credentials is checked against this, not against `server.listen`.
    pub(crate) fn main_addr(&self) -> Option<SocketAddr> {
        self.main_addr
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
        // The address actually bound, not the configured one: they differ in tests (port 0), and
        // the check must follow the socket.
        let loopback = listener.local_addr().is_ok_and(|addr| addr.ip().is_loopback());
        let replay_budget = Arc::clone(&self.replay_budget);
        // One reference count per request for all three.
        let inbound = Arc::new(Inbound {
            binding,
            loopback,
            replay_budget,
        });
        let gate = Arc::clone(&self.proxy_gate);
        self.spawn(listener, gate, move |request: Request<Incoming>, peer: SocketAddr| {
            // One snapshot per request, held to its end: a reload never changes a request midway.
            let snapshot = state.load_full();
            let inbound = Arc::clone(&inbound);
            // Boxed: hyper moves the service future twice per request, and moving a pointer
            // costs less than copying ~4.9 KB twice, even with the allocation (benches/README.md,
            // "The request future").
            Box::pin(async move { Ok::<_, Infallible>(pipeline::handle(&snapshot, &inbound, peer, request).await) })
        })
    }

    /// Serves the `[[webhook]]` routes on `listener`, under the proxy listeners' connection cap and
    /// timeouts: a flood of webhook connections is a flood like any other.
    pub(crate) fn spawn_webhooks(&mut self, listener: TcpListener, state: Arc<ArcSwap<Snapshot>>) {
        let gate = Arc::clone(&self.proxy_gate);
        let bodies = Arc::clone(&self.replay_budget);
        let accept_loop = self.spawn(listener, gate, move |request: Request<Incoming>, peer: SocketAddr| {
            // One snapshot per request, as on the proxy listeners.
            let snapshot = state.load_full();
            let bodies = Arc::clone(&bodies);
            Box::pin(async move {
                let listener = crate::webhook::Listener {
                    server: &snapshot.server,
                    bodies: &bodies,
                };
                let response = crate::webhook::handle(snapshot.webhooks(), listener, peer, request).await;
                Ok::<_, Infallible>(response)
            })
        });
        self.fixed.push(accept_loop);
    }

    /// Serves the admin endpoints on `listener`, with its own connection table (its own pool, so
    /// that a proxy at `max_connections` still answers probes and scrapes; see [`admin_listener`]).
    pub(crate) fn spawn_admin(
        &mut self,
        listener: TcpListener,
        state: Arc<ArcSwap<Snapshot>>,
        registry: Arc<Registry>,
    ) {
        let stop = watch::Sender::new(false);
        let pool = admin_listener::Pool::new(self.limits, self.drain.subscribe());
        let task = tokio::spawn(admin_listener::accept_loop(
            listener,
            state,
            registry,
            pool,
            stop.subscribe(),
        ));
        self.fixed.push(AcceptLoop { stop, task });
    }

    fn spawn<F, Fut, B>(&self, listener: TcpListener, gate: Arc<Gate>, handler: F) -> AcceptLoop
    where
        F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stop = watch::Sender::new(false);
        let pool = Pool {
            gate,
            limits: self.limits,
            drain: self.drain.subscribe(),
        };
        let task = tokio::spawn(accept_loop(listener, handler, pool, stop.subscribe()));
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
        self.drain.send_replace(true);
        tokio::time::timeout(grace, self.drain.closed()).await.is_ok()
    }
}

/// What an accept loop gives each connection it takes.
struct Pool {
    gate: Arc<Gate>,
    limits: Limits,
    drain: watch::Receiver<bool>,
}

async fn accept_loop<F, Fut, B>(listener: TcpListener, handler: F, pool: Pool, mut stop: watch::Receiver<bool>)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = connection::builder(pool.limits);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Refused by accepting and closing at once: the client gets a fast error instead of
        // waiting in the kernel's backlog for a slot that may not free for minutes.
        let Some(slot) = pool.gate.admit() else {
            tracing::debug!("connection limit reached; closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let tracker = Arc::clone(&activity);
        let handler = handler.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let in_flight = tracker.begin();
            let response = handler(request, peer);
            async move { response.await.map(|r| r.map(|body| Tracked::new(body, in_flight))) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let drain = pool.drain.clone();
        let limits = pool.limits;
        tokio::spawn(async move {
            connection::serve(conn, activity, limits, drain).await;
            drop(slot);
        });
    }
}
