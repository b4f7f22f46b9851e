//! What asks for a reload: SIGHUP, a change of the configuration file (`server.watch_config`), or
//! a [`ReloadHandle`] (tests, future admin calls). All of them feed one channel that `App::run`
//! serves, so reloads never run concurrently.
//!
//! The file is watched by polling its *content*, not by inotify: editors that write a temp file and
//! rename it, and Kubernetes ConfigMaps that swap a `..data` symlink, all change what the path
//! reads, and a poll sees that without re-adding watches after inode swaps. A change is acted on
//! once the content has stayed the same for one more poll (debounce), so a half-written file is not
//! reloaded. The content it compares against is a [`Baseline`] shared with the app, which moves it
//! on every reload from the file, so a file SIGHUP already reloaded is not reloaded again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::config::{ConfigErrors, RuntimeConfig};

/// How often the watched file is read: quick enough for operators, negligible I/O.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where the new configuration comes from.
pub enum ReloadSource {
    /// Read and validate this file.
    File(PathBuf),
    /// An already validated configuration (tests).
    Config(Box<RuntimeConfig>),
}

/// One reload request; `reply` learns the outcome.
pub struct ReloadRequest {
    pub source: ReloadSource,
    pub reply: Option<oneshot::Sender<Result<(), ConfigErrors>>>,
}

/// Asks a running app to reload.
#[derive(Clone)]
pub struct ReloadHandle {
    pub(crate) tx: mpsc::Sender<ReloadRequest>,
}

impl ReloadHandle {
    /// Reloads from `source` and waits for the outcome.
    pub async fn reload(&self, source: ReloadSource) -> Result<(), ConfigErrors> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || {
            ConfigErrors(vec![crate::config::ConfigError {
                location: "reload".into(),
                message: "the proxy is shutting down".into(),
            }])
        };
        self.tx
            .send(ReloadRequest {
                source,
                reply: Some(reply),
            })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    fn request(&self, path: &std::path::Path) {
        let request = ReloadRequest {
            source: ReloadSource::File(path.to_path_buf()),
            reply: None,
        };
        // A full queue already holds a reload that will read the newest file.
        let _ = self.tx.try_send(request);
    }
}

/// Reloads `path` on every SIGHUP until the app stops.
pub(crate) async fn on_sighup(handle: ReloadHandle, path: PathBuf) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload by signal is unavailable");
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!(path = %path.display(), "SIGHUP received: reloading the configuration");
        handle.request(&path);
    }
}

/// The fingerprint of the configuration file's content as last read for a reload, or for the
/// start. The app sets it on every reload from the file (SIGHUP's included, whether the content
/// was valid or not) and the watcher when it asks for one, so neither trigger makes the proxy read
/// the same content twice.
#[derive(Debug, Clone, Default)]
pub(crate) struct Baseline(Arc<Mutex<Option<[u8; 32]>>>);

impl Baseline {
    /// Records `text` as the content last read.
    pub(crate) fn set(&self, text: &[u8]) {
        self.set_fingerprint(fingerprint_of(text));
    }

    fn set_fingerprint(&self, fingerprint: [u8; 32]) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fingerprint);
    }

    fn get(&self) -> Option<[u8; 32]> {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reloads `path` whenever its content differs from `baseline` and then settles. The app starts
/// the baseline from the text its configuration came from: starting from what the file holds when
/// the watcher starts instead would silently adopt a change made in between.
pub(crate) async fn watch_file(handle: ReloadHandle, path: PathBuf, baseline: Baseline) {
    if baseline.get().is_none() {
        if let Some(now) = fingerprint(&path).await {
            baseline.set_fingerprint(now);
        }
    }
    let mut pending: Option<[u8; 32]> = None;
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let now = fingerprint(&path).await;
        let applied = baseline.get();
        match (now, pending) {
            (Some(now), Some(seen)) if now == seen && Some(now) != applied => {
                tracing::info!(path = %path.display(), "configuration file changed: reloading");
                handle.request(&path);
                // Set here too, not only when the reload runs: the next poll must not ask again
                // while this request waits in the queue.
                baseline.set_fingerprint(now);
                pending = None;
            }
            (Some(now), _) if Some(now) != applied => pending = Some(now),
            _ => pending = None,
        }
    }
}

/// A hash of what the path reads now (through any symlinks); `None` while it cannot be read.
async fn fingerprint(path: &std::path::Path) -> Option<[u8; 32]> {
    let bytes = tokio::fs::read(path).await.ok()?;
    Some(fingerprint_of(&bytes))
}

/// The watcher's notion of "the same file": a hash of its bytes.
fn fingerprint_of(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
