//! Raw → typed validation: turns the TOML text into a [`RuntimeConfig`] or into *every* problem
//! it has, each located at `file:line:column`.
//!
//! ```text
//!  text ─Source::parse─▶ spanned tree ─deserialize per section─▶ raw::Raw* ─per-section fns─▶ RuntimeConfig
//!        (syntax errors)                 (unknown keys, types)          (meaning, defaults, secrets)
//! ```
//!
//! One file per section (`server`, `tenant`, `providers`, `oauth2`, `callers`) plus the shared
//! field parsers in `fields`. Every check records its error in [`Ctx`] and carries on with
//! `None`, so one run reports everything (linkerd: "defer returning any errors until all of them
//! have been parsed"); the config is only returned when nothing was recorded.

mod callers;
mod fields;
mod limits;
mod providers;
mod server;
mod source;
mod store;
mod store_topology;
mod tenant;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_classes;
#[cfg(test)]
mod tests_providers;
#[cfg(test)]
mod tests_store;

use std::fmt::Display;

use self::source::Source;
use super::raw::{RawServer, RawStore, RawToken};
use super::{ConfigError, ConfigErrors, Loaded, RuntimeConfig};

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

pub(crate) fn validate(text: &str, origin: &str, env: &dyn Env) -> Result<Loaded, ConfigErrors> {
    let source = Source::parse(text, origin).map_err(ConfigErrors)?;
    let mut ctx = Ctx {
        src: &source,
        env,
        errors: Vec::new(),
        warnings: Vec::new(),
        regexes: std::collections::HashMap::new(),
        not_read: Vec::new(),
        files_read: Vec::new(),
    };
    let config = build(&mut ctx);
    ctx.finish(config)
}

const SECTIONS: [&str; 5] = ["server", "token", "store", "tenant", "caller"];

fn build(ctx: &mut Ctx<'_>) -> Option<RuntimeConfig> {
    for (key, span) in ctx.src.keys("") {
        if !SECTIONS.contains(&key.as_str()) {
            let message = format!("unknown section `{key}`; expected one of {}", SECTIONS.join(", "));
            ctx.push_error(Some(span), message);
        }
    }
    for (section, header) in [("tenant", "[[tenant]]"), ("caller", "[[caller]]")] {
        let value = ctx.src.get(section).map(|v| v.get_ref());
        if value.is_some_and(|v| !matches!(v, toml::de::DeValue::Array(_))) {
            let message = format!("must be an array of tables: write `{header}`");
            ctx.error(&Scope::new(section, format!("`{section}`")), "", message);
        }
    }
    let raw_server = ctx.section::<RawServer>("server", "[server]");
    let raw_token = ctx.section::<RawToken>("token", "[token]");
    let raw_store = ctx.section::<RawStore>("store", "[store]");
    let server = raw_server.and_then(|raw| server::server(ctx, &raw));
    let token = raw_token.and_then(|raw| server::token_policy(ctx, &raw));
    let store = raw_store.and_then(|raw| store::store(ctx, &raw));
    let tenants = tenant::tenants(ctx, server.as_ref(), token.as_ref());
    let callers = callers::callers(ctx);
    if let (Some(server), Some(tenants), Some(callers)) = (&server, &tenants, &callers) {
        server::check_listeners(ctx, server, tenants, callers.is_empty());
    }
    let (mut tenants, callers) = (tenants?, callers?);
    limits::lead_classes(&mut tenants, &callers);
    Some(RuntimeConfig {
        server: server?,
        store: store?,
        tenants,
        callers,
    })
}

/// A group of keys: where it sits in the document (`tenant.2`) and how messages name it
/// (`tenant "acme-adobe"`).
#[derive(Debug, Clone)]
struct Scope {
    path: String,
    label: String,
}

impl Scope {
    fn new(path: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            label: label.into(),
        }
    }

    /// `tenant.<index>`, named by its `name` when it has a readable one.
    fn tenant(index: usize, src: &Source<'_>) -> Self {
        let path = format!("tenant.{index}");
        let label = match src.str_at(&format!("{path}.name")) {
            Some(name) => format!("tenant {name:?}"),
            None => format!("tenant #{}", index + 1),
        };
        Self { path, label }
    }

    fn caller(index: usize, src: &Source<'_>) -> Self {
        let path = format!("caller.{index}");
        let label = match src.str_at(&format!("{path}.name")) {
            Some(name) => format!("caller {name:?}"),
            None => format!("caller #{}", index + 1),
        };
        Self { path, label }
    }

    fn path_of(&self, key: &str) -> String {
        if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn message(&self, key: &str, message: impl Display) -> String {
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
struct Ctx<'a> {
    src: &'a Source<'a>,
    env: &'a dyn Env,
    errors: Vec<(usize, ConfigError)>,
    warnings: Vec<(usize, ConfigError)>,
    /// Patterns compiled so far: a thousand tenants with the same rule share one compiled program
    /// (`Regex::clone` shares it), which keeps memory flat as tenants grow.
    regexes: std::collections::HashMap<String, std::sync::Arc<regex::Regex>>,
    /// With [`NoSecrets`]: each secret reference that was not read, located and described.
    not_read: Vec<ConfigError>,
    /// Each secret file read, with a hash of what it held (see [`Loaded::secret_files`]).
    files_read: Vec<(std::path::PathBuf, [u8; 32])>,
}

impl Ctx<'_> {
    /// Compiles `pattern`, or shares the one compiled for an identical pattern (with its match
    /// caches): otherwise every Adobe tenant compiles the same preset again, and each copy grows
    /// its own caches under load (`benches/README.md`, "1,000 tenants", has the figures).
    fn regex(&mut self, pattern: &str) -> Result<std::sync::Arc<regex::Regex>, regex::Error> {
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
    fn resolved<'s>(&self, secret: &'s super::Secret<String>) -> Option<&'s str> {
        let value = secret.expose().as_str();
        (!(self.env.shape_only() && value.starts_with(UNRESOLVED))).then_some(value)
    }

    /// An error about the value of `key` in `scope` (or about the scope when `key` is empty).
    fn error(&mut self, scope: &Scope, key: &str, message: impl Display) {
        let span = self.src.value_span(&scope.path_of(key));
        self.push_error(span, scope.message(key, message));
    }

    /// Records an error and yields `None`, for the `match` arms that reject a value.
    fn reject<T>(&mut self, scope: &Scope, key: &str, message: impl Display) -> Option<T> {
        self.error(scope, key, message);
        None
    }

    /// An error about the presence of `key` itself (a key that does not belong there).
    fn key_error(&mut self, scope: &Scope, key: &str, message: impl Display) {
        let span = self.src.key_span(&scope.path_of(key));
        self.push_error(span, scope.message(key, message));
    }

    fn warn(&mut self, scope: &Scope, key: &str, message: impl Display) {
        let span = self.src.value_span(&scope.path_of(key));
        let warning = self.src.error(span.clone(), scope.message(key, message));
        self.warnings.push((span.map_or(0, |s| s.start), warning));
    }

    fn push_error(&mut self, span: Option<std::ops::Range<usize>>, message: String) {
        let error = self.src.error(span.clone(), message);
        self.errors.push((span.map_or(0, |s| s.start), error));
    }

    /// The raw section at `path` (its default when absent), or `None` after recording serde's
    /// complaint about it.
    fn section<T: Default + serde::de::DeserializeOwned>(&mut self, path: &str, label: &str) -> Option<T> {
        match self.src.deserialize::<T>(path, label) {
            Ok(value) => Some(value.unwrap_or_default()),
            Err(error) => {
                let offset = self.src.value_span(path).map_or(0, |s| s.start);
                self.errors.push((offset, error));
                None
            }
        }
    }

    /// Errors in document order, so the operator can fix the file top to bottom.
    fn finish(mut self, config: Option<RuntimeConfig>) -> Result<Loaded, ConfigErrors> {
        self.errors.sort_by_key(|(offset, _)| *offset);
        self.warnings.sort_by_key(|(offset, _)| *offset);
        let warnings = self.warnings.into_iter().map(|(_, w)| w).collect();
        match config {
            Some(config) if self.errors.is_empty() => Ok(Loaded {
                config,
                warnings,
                secrets_not_read: self.not_read,
                secret_files: self.files_read,
            }),
            _ if self.errors.is_empty() => {
                Err(ConfigErrors(vec![self.src.error(None, "invalid configuration".into())]))
            }
            _ => Err(ConfigErrors(self.errors.into_iter().map(|(_, e)| e).collect())),
        }
    }
}
