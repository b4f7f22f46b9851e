//! Logging: `tracing` events to stderr as JSON (machines) or pretty text (terminals), level from
//! `RUST_LOG` (default `info`).
//!
//! Level policy (after pingora's `error_log.md`): `error` needs an operator (a store locked by its
//! provider, a tenant without a token); `warn` is a degraded state the proxy is handling itself
//! (token call failed and will be retried, upstream 429); `info` is the access log and lifecycle
//! (token obtained, reload, shutdown); `debug`/`trace` are for development. No level ever carries a
//! token or secret: they are held in types that cannot be formatted.

pub mod traces;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(format: Option<LogFormat>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}
