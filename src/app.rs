//! The process lifecycle: serve a [`Snapshot`] on bound listeners until a shutdown future
//! resolves, apply reloads as they come, then drain.
//!
//! `App` holds the one `ArcSwap<Snapshot>` every listener reads (see [`crate::tenant`] for what a
//! snapshot holds and how a reload carries state over). Reloads are serialised through one queue
//! fed by SIGHUP, the file watcher and [`ReloadHandle`]; a reload that fails changes nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use prometheus_client::registry::Registry;

use crate::admin::metrics::MetricsCollector;
use crate::config::{self, ConfigError, ConfigErrors, RuntimeConfig, ServerConfig, StoreConfig, TenantName};
use crate::metrics::GlobalMetrics;
use crate::reload::{self, ReloadHandle, ReloadRequest, ReloadSource};
use crate::server;
use crate::tenant::{BuildError, Snapshot};

/// The sockets the app serves on, bound before `run` so tests can use port 0.
#[derive(Debug)]
pub struct Listeners {
    pub main: TcpListener,
    pub admin: Option<TcpListener>,
    /// `server.webhook_listen`, when set.
    pub webhooks: Option<TcpListener>,
    /// Tenant listeners with the address their configuration names.
    pub tenants: Vec<(TenantName, SocketAddr, TcpListener)>,
}

impl Listeners {
    pub async fn bind(config: &RuntimeConfig) -> std::io::Result<Self> {
        let main = bind(config.server.listen).await?;
        let admin = match config.server.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let webhooks = match config.server.webhook_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let mut tenants = Vec::new();
        for tenant in &config.tenants {
            if let Some(addr) = tenant.listen {
                tenants.push((tenant.name.clone(), addr, bind(addr).await?));
            }
        }
        Ok(Self {
            main,
            admin,
            webhooks,
            tenants,
        })
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// The running proxy.
pub struct App {
    state: Arc<ArcSwap<Snapshot>>,
    registry: Arc<Registry>,
    globals: Arc<GlobalMetrics>,
    reload_tx: mpsc::Sender<ReloadRequest>,
    reload_rx: mpsc::Receiver<ReloadRequest>,
    /// The file SIGHUP (and `watch_config`) reload from.
    config_path: Option<PathBuf>,
    /// The SIGHUP stream reloads come from, registered before the process said it serves.
    hangups: Option<tokio::signal::unix::Signal>,
    /// The file content last read for a reload, or for the start (shared with the watcher).
    baseline: reload::Baseline,
    /// The store chosen at startup, which reloads keep.
    store: StoreConfig,
}

impl App {
    /// Builds the first snapshot and registers the proxy's metrics in `registry` (created by the
    /// caller, so there is no global registry).
    pub fn build(config: &RuntimeConfig, mut registry: Registry) -> Result<Self, BuildError> {
        let snapshot = Snapshot::build(config, None)?;
        let state = Arc::new(ArcSwap::from_pointee(snapshot));
        let globals = Arc::new(GlobalMetrics::default());
        registry.register_collector(Box::new(MetricsCollector {
            state: Arc::clone(&state),
            globals: Arc::clone(&globals),
        }));
        // Reloads are serialised through this queue; one waiting request is enough, since each
        // reload reads the newest file.
        let (reload_tx, reload_rx) = mpsc::channel(4);
        Ok(Self {
            state,
            registry: Arc::new(registry),
            globals,
            reload_tx,
            reload_rx,
            config_path: None,
            hangups: None,
            baseline: reload::Baseline::default(),
            store: config.store.clone(),
        })
    }

    /// Reload from `path` on SIGHUP, and on change when `server.watch_config` is set.
    /// `loaded_text` is what the running configuration was parsed from: the watcher reloads as
    /// soon as the file differs from it, even if it changed before the watcher started.
    #[must_use]
    pub fn with_config_path(mut self, path: PathBuf, loaded_text: &str, secret_files: &[(PathBuf, [u8; 32])]) -> Self {
        self.config_path = Some(path);
        self.baseline.set_loaded(loaded_text.as_bytes(), secret_files);
        self
    }

    /// Reload on every SIGHUP from `hangups` (see `signals::Signals`); without it, a SIGHUP does
    /// nothing to this app.
    #[must_use]
    pub fn with_hangups(mut self, hangups: Option<tokio::signal::unix::Signal>) -> Self {
        self.hangups = hangups;
        self
    }

    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            tx: self.reload_tx.clone(),
        }
    }

    /// Serves until `shutdown` resolves, applying reloads as they come, then drains in-flight
    /// requests up to `shutdown_grace`.
    pub async fn run(mut self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let mut servers = server::Servers::new(&self.state.load().server, Arc::clone(&self.globals));
        servers.spawn_main(listeners.main, Arc::clone(&self.state));
        for (name, addr, listener) in listeners.tenants {
            servers.add_tenant(name, addr, listener, Arc::clone(&self.state));
        }
        if let Some(webhooks) = listeners.webhooks {
            servers.spawn_webhooks(webhooks, Arc::clone(&self.state));
        }
        if let Some(admin) = listeners.admin {
            servers.spawn_admin(admin, Arc::clone(&self.state), Arc::clone(&self.registry));
        }
        let _triggers = self.spawn_reload_triggers();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(request) = self.reload_rx.recv() => {
                    let outcome = self.apply_reload(request.source, &mut servers).await;
                    if let Some(reply) = request.reply {
                        let _ = reply.send(outcome);
                    }
                }
            }
        }
        let (grace, delay) = {
            let snapshot = self.state.load();
            snapshot.begin_shutdown();
            (snapshot.server.shutdown_grace, snapshot.server.shutdown_delay)
        };
        if !delay.is_zero() {
            // Still serving: the load balancer sees /readyz fail and stops sending before the
            // listeners close, so no new request meets a closed port.
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "shutting down: /readyz answers 503 until the listeners close"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!(
            grace_s = grace.as_secs(),
            "shutting down: no new connections, draining in-flight requests"
        );
        if servers.drain(grace).await {
            tracing::info!("drained");
        } else {
            tracing::warn!("shutdown grace elapsed with requests still in flight");
        }
    }

    /// SIGHUP and file watching, stopped when the returned guard drops.
    fn spawn_reload_triggers(&mut self) -> Vec<AbortOnDrop> {
        let Some(path) = self.config_path.clone() else {
            return Vec::new();
        };
        let handle = self.reload_handle();
        let mut triggers = Vec::new();
        if let Some(hangups) = self.hangups.take() {
            triggers.push(AbortOnDrop(tokio::spawn(reload::on_sighup(
                handle.clone(),
                path.clone(),
                hangups,
            ))));
        }
        if self.state.load().server.watch_config {
            triggers.push(AbortOnDrop(tokio::spawn(reload::watch_file(
                handle,
                path,
                self.baseline.clone(),
            ))));
        }
        triggers
    }

    /// Validates and swaps in a new configuration; on any error nothing changes.
    async fn apply_reload(&self, source: ReloadSource, servers: &mut server::Servers) -> Result<(), ConfigErrors> {
        let started = tokio::time::Instant::now();
        let outcome = self.try_reload(source, servers).await;
        match &outcome {
            Ok(()) => {
                self.state.load().reloads().succeeded(crate::clock::unix_millis());
                // Read, validate, build and swap: the figure operators watch when reloads of many
                // tenants run under load (the benchmark measures it too).
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                tracing::info!(
                    tenants = self.state.load().tenants().count(),
                    elapsed_ms,
                    "configuration reloaded"
                );
            }
            Err(errors) => {
                self.state.load().reloads().failed(crate::clock::unix_millis(), errors);
                tracing::error!(errors = %errors, "configuration reload rejected; the previous configuration keeps serving");
            }
        }
        outcome
    }

    async fn try_reload(&self, source: ReloadSource, servers: &mut server::Servers) -> Result<(), ConfigErrors> {
        // The file's text and the secret files it read, recorded for the watcher only once the
        // reload has taken effect: a rejected file must not move what the watcher follows.
        let mut watched = None;
        let config = match source {
            ReloadSource::File(path) => {
                let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
                    ConfigErrors(vec![ConfigError {
                        location: path.display().to_string(),
                        message: format!("cannot read: {e}"),
                    }])
                })?;
                // Tried, valid or not: the watcher must not read the same content again (a file
                // SIGHUP applied would otherwise be reloaded, and counted, a second time).
                self.baseline.set_read(text.as_bytes()).await;
                let loaded = config::parse(&text, &path.display().to_string(), &config::ProcessEnv)?;
                for warning in &loaded.warnings {
                    tracing::warn!(%warning, "configuration warning");
                }
                watched = Some((text, loaded.secret_files));
                loaded.config
            }
            ReloadSource::Config(config) => *config,
        };
        let old = self.state.load_full();
        check_bound_listener(servers.main_addr(), &config)?;
        warn_about_restart_only_changes(&old.server, &self.store, &config);
        let snapshot = Snapshot::build(&config, Some(&old)).map_err(|e| single_error(e.to_string()))?;
        // Bind new tenant listeners before swapping, so a port conflict rejects the reload whole.
        let wanted: Vec<(TenantName, SocketAddr)> = config
            .tenants
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.listen?)))
            .collect();
        let mut fresh = Vec::new();
        for (name, addr) in &wanted {
            if servers.tenant_addr(name) != Some(*addr) {
                fresh.push((
                    name.clone(),
                    *addr,
                    bind(*addr).await.map_err(|e| single_error(e.to_string()))?,
                ));
            }
        }
        self.state.store(Arc::new(snapshot));
        servers.retain_tenants(|name, addr| wanted.iter().any(|(n, a)| n == name && *a == addr));
        for (name, addr, listener) in fresh {
            servers.add_tenant(name, addr, listener, Arc::clone(&self.state));
        }
        if let Some((text, secret_files)) = watched {
            self.baseline.set_loaded(text.as_bytes(), &secret_files);
        }
        Ok(())
    }
}

/// The running main listener keeps its address across reloads, so validation's rule (no
/// non-loopback listener without callers) must hold for that address too: a file that moves
/// `listen` to loopback and drops every caller would otherwise leave the old non-loopback socket
/// serving the credentials to anyone. Such a reload is rejected whole. (Tenant listeners follow
/// the file: one that changes address is re-bound, so validation already covers it.)
fn check_bound_listener(bound: Option<SocketAddr>, config: &RuntimeConfig) -> Result<(), ConfigErrors> {
    let anonymous = config.callers.is_empty() && !config.server.allow_anonymous;
    match bound {
        Some(addr) if anonymous && !addr.ip().is_loopback() => Err(single_error(format!(
            "the running listener is bound to {addr}, which is not a loopback address (server.listen changes \
             only on restart), and this configuration has no [[caller]]: anyone who reaches it could use the \
             credentials. Keep [[caller]] keys (or set server.allow_anonymous = true), or restart to move the listener"
        ))),
        _ => Ok(()),
    }
}

/// Listeners and the store are taken at startup; a reload that changes them says so, and keeps
/// serving on the ones it has (a store switch would strand every replica's shared state).
fn warn_about_restart_only_changes(old: &ServerConfig, store: &StoreConfig, new: &RuntimeConfig) {
    let addresses = |s: &ServerConfig| (s.listen, s.admin_listen, s.webhook_listen);
    if addresses(old) != addresses(&new.server) {
        tracing::warn!(
            "server.listen, server.admin_listen and server.webhook_listen changes take effect only after a restart"
        );
    }
    let limits = |s: &ServerConfig| {
        (
            s.header_read_timeout,
            s.idle_timeout,
            s.max_connections,
            s.max_response_head,
            s.replay_buffer_budget,
        )
    };
    if limits(old) != limits(&new.server) {
        tracing::warn!(
            "server.header_read_timeout, idle_timeout, max_connections, max_response_head and replay_buffer_budget changes take effect only after a restart"
        );
    }
    if old.max_request_head != new.server.max_request_head {
        tracing::warn!(
            "server.max_request_head: the proxy's check follows the reload; hyper's read bound (the limit + 8 KiB) stays as started until a restart"
        );
    }
    if *store != new.store {
        tracing::warn!("[store] changes take effect only after a restart; the running store is kept");
    }
}

fn single_error(message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        location: "reload".into(),
        message,
    }])
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
