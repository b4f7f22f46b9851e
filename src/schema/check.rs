//! The checking context: every section's validation records its problems here, each located at
//! `file:line:column`, and carries on, so one run reports everything (linkerd: "defer returning
//! any errors until all of them have been parsed"). It lives below both the configuration and the
//! providers, which each validate their own keys with it.

use std::fmt::Display;

use super::Secret;
use super::errors::ConfigError;
use super::source::Source;

/// Where `{ env = "NAME" }` and `{ file = "..." }` secrets are read from. Tests pass a map.
pub trait Env: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String>;
    /// True when secrets are not read at all (`check --no-secrets`): every `{ env }` and
    /// `{ file }` reference then stands for a value that is checked by shape only.
    fn shape_only(&self) -> bool {
        false
    }
}

/// `check --no-secrets`: reads no variable and no file. Each reference resolves to a placeholder
/// that the value checks recognise and skip (see `Ctx::resolved`), so a CI job or a GitOps
/// pipeline that never holds the secrets can still validate everything else.
pub struct NoSecrets;

/// Starts every placeholder [`NoSecrets`] hands out. A header-safe ASCII word, so the checks
/// that do not look at values (the configuration still has to be built) accept it.
pub(crate) const UNRESOLVED: &str = "tokenbroker-unresolved-secret:";

impl Env for NoSecrets {
    fn var(&self, name: &str) -> Option<String> {
        Some(format!("{UNRESOLVED}env:{name}"))
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        Ok(format!("{UNRESOLVED}file:{}", path.display()))
    }
    fn shape_only(&self) -> bool {
        true
    }
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

/// Variables from a map, files from the real file system: the demo's sandbox credentials, and
/// tests, which must not touch the process environment.
pub struct MapEnv(std::collections::HashMap<String, String>);

impl MapEnv {
    pub fn new<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// A group of keys: where it sits in the document (`tenant.2`) and how messages name it
/// (`tenant "acme-adobe"`).
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    path: String,
    label: String,
}

impl Scope {
    pub(crate) fn new(path: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            label: label.into(),
        }
    }

    /// `tenant.<index>`, named by its `name` when it has a readable one.
    pub(crate) fn tenant(index: usize, src: &Source<'_>) -> Self {
        let path = format!("tenant.{index}");
        let label = match src.str_at(&format!("{path}.name")) {
            Some(name) => format!("tenant {name:?}"),
            None => format!("tenant #{}", index + 1),
        };
        Self { path, label }
    }

    pub(crate) fn caller(index: usize, src: &Source<'_>) -> Self {
        let path = format!("caller.{index}");
        let label = match src.str_at(&format!("{path}.name")) {
            Some(name) => format!("caller {name:?}"),
            None => format!("caller #{}", index + 1),
        };
        Self { path, label }
    }

    pub(crate) fn path_of(&self, key: &str) -> String {
        if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn message(&self, key: &str, message: impl Display) -> String {
        if key.is_empty() {
            return format!("{}: {message}", self.label);
        }
        // `rewrite.0.match` reads better as `rewrite[0].match`.
        let mut shown = String::new();
        for segment in key.split('.') {
            match segment.parse::<usize>() {
                Ok(index) => shown.push_str(&format!("[{index}]")),
                Err(_) if shown.is_empty() => shown.push_str(segment),
                Err(_) => shown.push_str(&format!(".{segment}")),
            }
        }
        format!("{}, key `{shown}`: {message}", self.label)
    }
}

/// Collects errors and warnings while the sections are validated.
pub(crate) struct Ctx<'a> {
    pub(crate) src: &'a Source<'a>,
    pub(crate) env: &'a dyn Env,
    pub(crate) errors: Vec<(usize, ConfigError)>,
    pub(crate) warnings: Vec<(usize, ConfigError)>,
    /// Patterns compiled so far: a thousand tenants with the same rule share one compiled program
    /// (`Regex::clone` shares it), which keeps memory flat as tenants grow.
    pub(crate) regexes: std::collections::HashMap<String, std::sync::Arc<regex::Regex>>,
    /// With [`NoSecrets`]: each secret reference that was not read, located and described.
    pub(crate) not_read: Vec<ConfigError>,
    /// Each secret file read, with a hash of what it held (the loaded configuration lists them, so `watch_config` can notice a change).
    pub(crate) files_read: Vec<(std::path::PathBuf, [u8; 32])>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(src: &'a Source<'a>, env: &'a dyn Env) -> Self {
        Self {
            src,
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
            regexes: std::collections::HashMap::new(),
            not_read: Vec::new(),
            files_read: Vec::new(),
        }
    }

    /// Compiles `pattern`, or shares the one compiled for an identical pattern (with its match
    /// caches): otherwise every Adobe tenant compiles the same preset again, and each copy grows
    /// its own caches under load (`benches/README.md`, "1,000 tenants", has the figures).
    pub(crate) fn regex(&mut self, pattern: &str) -> Result<std::sync::Arc<regex::Regex>, regex::Error> {
        if let Some(compiled) = self.regexes.get(pattern) {
            return Ok(std::sync::Arc::clone(compiled));
        }
        let compiled = std::sync::Arc::new(regex::Regex::new(pattern)?);
        self.regexes
            .insert(pattern.to_owned(), std::sync::Arc::clone(&compiled));
        Ok(compiled)
    }

    /// A secret's value for the checks that look at it; `None` for a placeholder of
    /// `check --no-secrets`, whose value is not known (the check is then skipped).
    pub(crate) fn resolved<'s>(&self, secret: &'s Secret<String>) -> Option<&'s str> {
        let value = secret.expose().as_str();
        (!(self.env.shape_only() && value.starts_with(UNRESOLVED))).then_some(value)
    }

    /// An error about the value of `key` in `scope` (or about the scope when `key` is empty).
    pub(crate) fn error(&mut self, scope: &Scope, key: &str, message: impl Display) {
        let span = self.src.value_span(&scope.path_of(key));
        self.push_error(span, scope.message(key, message));
    }

    /// Records an error and yields `None`, for the `match` arms that reject a value.
    pub(crate) fn reject<T>(&mut self, scope: &Scope, key: &str, message: impl Display) -> Option<T> {
        self.error(scope, key, message);
        None
    }

    /// An error about the presence of `key` itself (a key that does not belong there).
    pub(crate) fn key_error(&mut self, scope: &Scope, key: &str, message: impl Display) {
        let span = self.src.key_span(&scope.path_of(key));
        self.push_error(span, scope.message(key, message));
    }

    pub(crate) fn warn(&mut self, scope: &Scope, key: &str, message: impl Display) {
        let span = self.src.value_span(&scope.path_of(key));
        let warning = self.src.error(span.clone(), scope.message(key, message));
        self.warnings.push((span.map_or(0, |s| s.start), warning));
    }

    pub(crate) fn push_error(&mut self, span: Option<std::ops::Range<usize>>, message: String) {
        let error = self.src.error(span.clone(), message);
        self.errors.push((span.map_or(0, |s| s.start), error));
    }

    /// The raw section at `path` (its default when absent), or `None` after recording serde's
    /// complaint about it.
    pub(crate) fn section<T: Default + serde::de::DeserializeOwned>(&mut self, path: &str, label: &str) -> Option<T> {
        match self.src.deserialize::<T>(path, label) {
            Ok(value) => Some(value.unwrap_or_default()),
            Err(error) => {
                let offset = self.src.value_span(path).map_or(0, |s| s.start);
                self.errors.push((offset, error));
                None
            }
        }
    }

    /// The problems recorded, in document order so the operator can fix the file top to bottom:
    /// `(errors, warnings)`.
    pub(crate) fn into_findings(mut self) -> (Vec<ConfigError>, Vec<ConfigError>) {
        self.errors.sort_by_key(|(offset, _)| *offset);
        self.warnings.sort_by_key(|(offset, _)| *offset);
        let strip = |found: Vec<(usize, ConfigError)>| found.into_iter().map(|(_, e)| e).collect();
        (strip(self.errors), strip(self.warnings))
    }
}
