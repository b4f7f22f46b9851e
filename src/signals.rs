//! Process signals: SIGTERM and SIGINT end the process gracefully; SIGHUP reloads (see `reload`).
//!
//! Both are registered by [`Signals::install`] before the process says it serves: until a
//! handler is registered, SIGHUP's default action ends the process, so a reload sent right after
//! start (a test, `systemctl reload`, a config watcher) would kill it, and a SIGTERM would skip
//! the drain.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The process's signal handlers, registered when this is made.
#[derive(Debug)]
pub struct Signals {
    term: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    /// Registers the SIGTERM and SIGHUP handlers now (SIGINT is tokio's `ctrl_c`, registered on
    /// first use, and its default action is the one wanted before then).
    pub fn install() -> Self {
        let term = signal(SignalKind::terminate())
            .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the proxy"))
            .ok();
        let hangup = signal(SignalKind::hangup())
            .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP; reload by signal is unavailable"))
            .ok();
        Self { term, hangup }
    }

    /// The SIGHUP stream, for the reload trigger (once).
    pub fn take_hangups(&mut self) -> Option<Signal> {
        self.hangup.take()
    }

    /// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
    pub async fn terminated(mut self) {
        let term = async {
            match self.term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = term => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, registering the handlers on first poll (for callers
/// that have no configuration to reload and say nothing before they serve).
pub async fn terminate() {
    Signals::install().terminated().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The handler exists as soon as `install` returns: a SIGHUP then is received, where before
    /// registration its default action would end this test process.
    #[tokio::test]
    async fn a_hangup_right_after_install_is_received_not_fatal() {
        let mut signals = Signals::install();
        let mut hangups = signals.take_hangups().expect("SIGHUP is registered");
        let pid = std::process::id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let received = tokio::time::timeout(Duration::from_secs(5), hangups.recv()).await;
        assert_eq!(received, Ok(Some(())));
    }
}
