//! What asks for a reload: SIGHUP, a change of the configuration file (`server.watch_config`), or
//! a [`ReloadHandle`] (tests, future admin calls). All of them feed one channel that `App::run`
//! serves, so reloads never run concurrently.
//!
//! The file is watched by polling its *content*, not by inotify: editors that write a temp file and
//! rename it, and Kubernetes ConfigMaps that swap a `..data` symlink, all change what the path
//! reads, and a poll sees that without re-adding watches after inode swaps. A change is acted on
//! once the content has stayed the same for one more poll (debounce), so a half-written file is not
//! reloaded. Every file a `{ file }` secret was read from is watched the same way, so a rotated
//! Kubernetes Secret, Vault Agent file or CSI volume is used without a restart. The content it
//! compares against is a [`Baseline`] shared with the app, which moves it on every reload from the
//! file, so a file SIGHUP already reloaded is not reloaded again.

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

/// Reloads `path` on every SIGHUP (from `hangups`, registered before the process said it serves)
/// until the app stops.
pub(crate) async fn on_sighup(handle: ReloadHandle, path: PathBuf, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        tracing::info!(path = %path.display(), "SIGHUP received: reloading the configuration");
        handle.request(&path);
    }
}

/// What the watcher compares against: a fingerprint of the configuration file's content and of
/// every secret file the configuration read, as last read for a reload or for the start. The app
/// sets it on every reload from the file (SIGHUP's included, whether the content was valid or
/// not) and the watcher when it asks for one, so neither trigger makes the proxy read the same
/// content twice.
#[derive(Debug, Clone, Default)]
pub(crate) struct Baseline(Arc<Mutex<Watched>>);

#[derive(Debug, Default)]
struct Watched {
    fingerprint: Option<[u8; 32]>,
    /// The secret files of the configuration that last validated.
    secret_files: Vec<PathBuf>,
}

impl Baseline {
    /// Records a configuration that validated: its text and the secret files as it read them.
    pub(crate) fn set_loaded(&self, text: &[u8], secret_files: &[(PathBuf, [u8; 32])]) {
        let hashes = secret_files.iter().map(|(path, hash)| (path.as_path(), Some(*hash)));
        let fingerprint = combine(text, hashes);
        let mut watched = self.lock();
        watched.secret_files = secret_files.iter().map(|(path, _)| path.clone()).collect();
        watched.fingerprint = Some(fingerprint);
    }

    /// Records `text` as read for a reload that did not validate: the secret files stay those of
    /// the running configuration, as they read now.
    pub(crate) async fn set_read(&self, text: &[u8]) {
        let files = self.lock().secret_files.clone();
        let fingerprint = combine(text, file_hashes(&files).await.iter().map(|(p, h)| (p.as_path(), *h)));
        self.lock().fingerprint = Some(fingerprint);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reloads `path` whenever what it and its secret files hold differs from `baseline` and then
/// settles. The app starts the baseline from what its configuration was read from: starting from
/// what the files hold when the watcher starts instead would silently adopt a change made in
/// between.
pub(crate) async fn watch_file(handle: ReloadHandle, path: PathBuf, baseline: Baseline) {
    let mut pending: Option<[u8; 32]> = None;
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let now = fingerprint(&path, &baseline).await;
        let applied = baseline.lock().fingerprint;
        match (now, pending) {
            (Some(now), Some(seen)) if now == seen && Some(now) != applied => {
                tracing::info!(path = %path.display(), "configuration file changed (or a secret file it reads): reloading");
                handle.request(&path);
                // Set here too, not only when the reload runs: the next poll must not ask again
                // while this request waits in the queue.
                baseline.lock().fingerprint = Some(now);
                pending = None;
            }
            (Some(now), _) if Some(now) != applied => pending = Some(now),
            _ => pending = None,
        }
    }
}

/// What the configuration file (through any symlinks) and the baseline's secret files read now;
/// `None` while the configuration file cannot be read. A secret file that cannot be read counts
/// as a change (a Kubernetes volume mid-swap settles within a poll or two).
async fn fingerprint(path: &std::path::Path, baseline: &Baseline) -> Option<[u8; 32]> {
    let text = tokio::fs::read(path).await.ok()?;
    let files = baseline.lock().secret_files.clone();
    let hashes = file_hashes(&files).await;
    Some(combine(&text, hashes.iter().map(|(p, h)| (p.as_path(), *h))))
}

async fn file_hashes(files: &[PathBuf]) -> Vec<(PathBuf, Option<[u8; 32]>)> {
    let mut hashes = Vec::with_capacity(files.len());
    for file in files {
        let hash = tokio::fs::read(file)
            .await
            .ok()
            .map(|bytes| Sha256::digest(&bytes).into());
        hashes.push((file.clone(), hash));
    }
    hashes
}

/// The watcher's notion of "the same files": one hash over the configuration's bytes and each
/// secret file's path and content hash, in order.
fn combine<'p>(text: &[u8], files: impl Iterator<Item = (&'p std::path::Path, Option<[u8; 32]>)>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(Sha256::digest(text));
    for (path, hash) in files {
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(hash.unwrap_or_default());
    }
    hasher.finalize().into()
}

// === reload outcomes ===

/// The longest reload error kept for the status page; a file with hundreds of mistakes is still
/// whole in the log.
const MAX_KEPT_ERROR: usize = 4096;

/// How reloads went, for the life of the process: carried from snapshot to snapshot, counted by
/// `/metrics` and shown on the status page. Written only by the app, once per reload.
#[derive(Debug)]
pub struct ReloadStatus(Mutex<ReloadRecord>);

/// What [`ReloadStatus`] holds at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRecord {
    pub succeeded: u64,
    pub failed: u64,
    /// When the running configuration was loaded: the start, or the last successful reload
    /// (Unix milliseconds).
    pub loaded_unix_ms: u64,
    /// The last reload tried since the start, if any.
    pub last: Option<LastReload>,
}

/// One reload: when it ran and, if it was rejected, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastReload {
    pub at_unix_ms: u64,
    pub error: Option<String>,
}

impl ReloadRecord {
    /// Whether the last reload was rejected (false when none was tried).
    pub fn last_failed(&self) -> bool {
        self.last.as_ref().is_some_and(|last| last.error.is_some())
    }
}

impl ReloadStatus {
    /// A process whose configuration loaded at `now_unix_ms`.
    pub fn started(now_unix_ms: u64) -> Self {
        Self(Mutex::new(ReloadRecord {
            succeeded: 0,
            failed: 0,
            loaded_unix_ms: now_unix_ms,
            last: None,
        }))
    }

    pub(crate) fn succeeded(&self, now_unix_ms: u64) {
        let mut record = self.lock();
        record.succeeded += 1;
        record.loaded_unix_ms = now_unix_ms;
        record.last = Some(LastReload {
            at_unix_ms: now_unix_ms,
            error: None,
        });
    }

    pub(crate) fn failed(&self, now_unix_ms: u64, errors: &ConfigErrors) {
        let mut error = errors.to_string();
        if error.len() > MAX_KEPT_ERROR {
            let mut end = MAX_KEPT_ERROR;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
            error.push_str(" …");
        }
        let mut record = self.lock();
        record.failed += 1;
        record.last = Some(LastReload {
            at_unix_ms: now_unix_ms,
            error: Some(error),
        });
    }

    pub fn read(&self) -> ReloadRecord {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReloadRecord> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    fn errors(message: &str) -> ConfigErrors {
        ConfigErrors(vec![ConfigError {
            location: "tokenbroker.toml".into(),
            message: message.into(),
        }])
    }

    #[test]
    fn a_rejected_reload_keeps_the_loaded_time_and_a_later_success_clears_the_error() {
        let status = ReloadStatus::started(1_000);
        assert!(!status.read().last_failed(), "nothing tried yet");
        status.failed(2_000, &errors("bad rate"));
        let record = status.read();
        assert_eq!((record.succeeded, record.failed, record.loaded_unix_ms), (0, 1, 1_000));
        let last = record.last.expect("the rejected reload");
        assert_eq!(last.at_unix_ms, 2_000);
        assert!(last.error.as_deref().is_some_and(|e| e.contains("bad rate")));

        status.succeeded(3_000);
        let record = status.read();
        assert!(!record.last_failed());
        assert_eq!((record.succeeded, record.failed, record.loaded_unix_ms), (1, 1, 3_000));
    }

    #[test]
    fn a_long_error_is_cut_on_a_character_boundary() {
        let status = ReloadStatus::started(0);
        status.failed(1, &errors(&"é".repeat(MAX_KEPT_ERROR)));
        let kept = status.read().last.and_then(|l| l.error).expect("an error");
        assert!(kept.len() <= MAX_KEPT_ERROR + " …".len() && kept.ends_with(" …"));
    }
}
