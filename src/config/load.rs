//! Loading: a file (or text) through validation into a [`Loaded`] configuration, and the errors
//! it reports, located and all at once.

use std::path::{Path, PathBuf};

use super::RuntimeConfig;
use super::validate;
use crate::schema::{ConfigError, ConfigErrors, Env, ProcessEnv};

/// A validated configuration and the warnings it raised (literal secrets, missing scopes, ...).
#[derive(Debug)]
pub struct Loaded {
    pub config: RuntimeConfig,
    pub warnings: Vec<ConfigError>,
    /// With [`NoSecrets`](super::NoSecrets), every `{ env }` / `{ file }` reference that was not read (where, and
    /// which variable or file); empty otherwise.
    pub secrets_not_read: Vec<ConfigError>,
    /// Every file a secret was read from (`{ file }` secrets, TLS client certificates and keys),
    /// with a SHA-256 of the content as read: `watch_config` reloads when one of them changes.
    pub secret_files: Vec<(PathBuf, [u8; 32])>,
}

/// Reads and validates the file at `path`. Secrets given as `{ env }` or `{ file }` are resolved.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_with_text(path).map(|(loaded, _)| loaded)
}

/// Like [`load`], also returning the text that was validated: the file watcher compares later
/// reads against exactly what was loaded, so a change made just after loading is not missed.
pub fn load_with_text(path: &Path) -> Result<(Loaded, String), ConfigErrors> {
    let text = read(path)?;
    let loaded = parse(&text, &path.display().to_string(), &ProcessEnv)?;
    Ok((loaded, text))
}

/// Reads and validates the file at `path` with secrets from `env` (`check --no-secrets` passes
/// [`NoSecrets`](super::NoSecrets)).
pub fn load_with(path: &Path, env: &dyn Env) -> Result<Loaded, ConfigErrors> {
    parse(&read(path)?, &path.display().to_string(), env)
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            location: path.display().to_string(),
            message: format!("cannot read: {e}"),
        }])
    })
}

/// Validates configuration `text`; `origin` names it in error locations.
pub fn parse(text: &str, origin: &str, env: &dyn Env) -> Result<Loaded, ConfigErrors> {
    validate::validate(text, origin, env)
}
