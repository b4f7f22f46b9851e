//! Raw → typed validation. STUB: the config helper replaces this file.

use super::{ConfigErrors, Loaded};

/// Where `{ env = "NAME" }` and `{ file = "..." }` secrets are read from. Tests pass a map.
pub trait Env: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String>;
}

/// The real process environment and file system.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

pub(crate) fn validate(_text: &str, _origin: &str, _env: &dyn Env) -> Result<Loaded, ConfigErrors> {
    unimplemented!("config helper")
}
