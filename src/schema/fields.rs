//! Parsers for the kinds of value that recur across sections: durations, sizes, addresses,
//! URLs, files and secrets. Each records a located error and returns `None` on failure, so a
//! section can check all its keys before giving up.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::check::{Ctx, Scope};
use super::raw::{RawQuantity, RawSecret};
use super::{KeyDigest, Secret, units};

impl Ctx<'_> {
    /// A duration such as `"90s"`; `default` when absent.
    pub(crate) fn duration(
        &mut self,
        scope: &Scope,
        key: &str,
        raw: Option<&RawQuantity>,
        default: Duration,
    ) -> Option<Duration> {
        let parsed = match raw {
            None => return Some(default),
            Some(RawQuantity::Integer(n)) => Err(format!(
                "`{n}` has no unit; write a string such as \"{n}s\" (units: ms, s, m, h, d)"
            )),
            Some(RawQuantity::Text(text)) => units::parse_duration(text).map_err(|e| e.to_string()),
        };
        parsed.map_err(|message| self.error(scope, key, message)).ok()
    }

    /// A duration that must not be zero (a timeout or lifetime of 0 s would make nothing work).
    pub(crate) fn positive_duration(
        &mut self,
        scope: &Scope,
        key: &str,
        raw: Option<&RawQuantity>,
        default: Duration,
    ) -> Option<Duration> {
        let duration = self.duration(scope, key, raw, default)?;
        if duration.is_zero() {
            return self.reject(scope, key, "must be longer than 0s");
        }
        Some(duration)
    }

    /// A size such as `"2MiB"` or a bare number of bytes; `default` when absent.
    pub(crate) fn size(&mut self, scope: &Scope, key: &str, raw: Option<&RawQuantity>, default: u64) -> Option<u64> {
        let parsed = match raw {
            None => return Some(default),
            Some(RawQuantity::Integer(n)) => {
                u64::try_from(*n).map_err(|_| format!("`{n}` is negative; sizes cannot be"))
            }
            Some(RawQuantity::Text(text)) => units::parse_size(text).map_err(|e| e.to_string()),
        };
        parsed.map_err(|message| self.error(scope, key, message)).ok()
    }

    /// A key the scope cannot do without.
    pub(crate) fn required<'r, T>(&mut self, scope: &Scope, key: &str, raw: Option<&'r T>, why: &str) -> Option<&'r T> {
        if raw.is_none() {
            self.error(scope, "", format!("`{key}` is required {why}"));
        }
        raw
    }

    /// A non-empty string.
    pub(crate) fn non_empty<'r>(
        &mut self,
        scope: &Scope,
        key: &str,
        raw: Option<&'r String>,
        why: &str,
    ) -> Option<&'r str> {
        let value = self.required(scope, key, raw, why)?;
        if value.trim().is_empty() {
            self.error(scope, key, "must not be empty");
            return None;
        }
        Some(value)
    }

    /// `IP:port`, e.g. `127.0.0.1:8080` or `[::1]:8080`.
    pub(crate) fn socket_addr(&mut self, scope: &Scope, key: &str, text: &str) -> Option<SocketAddr> {
        let parsed = text.parse();
        if parsed.is_err() {
            self.error(
                scope,
                key,
                format!("`{text}` is not an IP:port address such as 127.0.0.1:8080 (host names are not resolved)"),
            );
        }
        parsed.ok()
    }

    /// An absolute `http`/`https` URL with a host, no credentials and no fragment.
    pub(crate) fn http_url(&mut self, scope: &Scope, key: &str, text: &str, allow_query: bool) -> Option<http::Uri> {
        match check_http_url(text, allow_query) {
            Ok(uri) => Some(uri),
            Err(problem) => {
                self.error(scope, key, format!("`{text}` {problem}"));
                None
            }
        }
    }

    /// A token endpoint: like [`Self::http_url`], and a warning when credentials would cross the
    /// network in clear.
    pub(crate) fn token_url(&mut self, scope: &Scope, key: &str, text: &str) -> Option<http::Uri> {
        let uri = self.http_url(scope, key, text, true)?;
        if uri.scheme_str() == Some("http") && !uri.host().is_some_and(is_loopback_host) {
            self.warn(
                scope,
                key,
                format!("`{text}` is plain http to a non-loopback host: credentials would cross the network in clear"),
            );
        }
        Some(uri)
    }

    /// A credential file named by path (a TLS client certificate or key): like
    /// [`Self::existing_file`], but with `check --no-secrets` it is listed as not read instead,
    /// since a pipeline without the secrets has none of these files either.
    pub(crate) fn credential_file(&mut self, scope: &Scope, key: &str, path: &str) -> Option<PathBuf> {
        if !self.env.shape_only() {
            if let Ok(content) = std::fs::read(path) {
                self.record_file(std::path::Path::new(path), &content);
            }
            return self.existing_file(scope, key, path);
        }
        let span = self.src.value_span(&scope.path_of(key));
        let note = self
            .src
            .error(span, scope.message(key, format!("not read: file `{path}`")));
        self.not_read.push(note);
        Some(PathBuf::from(path))
    }

    /// One digest over what the files `paths` held when validation read them (all zeros for one
    /// it did not read), so a config holds the content of the credential files it names.
    pub(crate) fn files_digest(&self, paths: &[&std::path::Path]) -> KeyDigest {
        let mut hashes = Vec::with_capacity(paths.len() * 32);
        for path in paths {
            let hash = self
                .files_read
                .iter()
                .find(|(seen, _)| seen == path)
                .map(|(_, hash)| *hash);
            hashes.extend_from_slice(&hash.unwrap_or_default());
        }
        KeyDigest::of(&hashes)
    }

    /// Notes a credential file and what it held, for the `watch_config` watcher.
    fn record_file(&mut self, path: &std::path::Path, content: &[u8]) {
        use sha2::Digest;
        if !self.files_read.iter().any(|(seen, _)| seen == path) {
            self.files_read
                .push((path.to_path_buf(), sha2::Sha256::digest(content).into()));
        }
    }

    /// A file that must exist and be readable now, not at the first request.
    pub(crate) fn existing_file(&mut self, scope: &Scope, key: &str, path: &str) -> Option<PathBuf> {
        match std::fs::File::open(path) {
            Ok(_) => Some(PathBuf::from(path)),
            Err(e) => {
                self.error(scope, key, format!("cannot open `{path}`: {e}"));
                None
            }
        }
    }

    /// Resolves a credential. Errors and warnings name the scope, the key and where the value
    /// was looked for, never the value.
    pub(crate) fn secret(&mut self, scope: &Scope, key: &str, raw: &RawSecret) -> Option<Secret<String>> {
        let resolved = match raw {
            RawSecret::Literal(value) => {
                self.warn(
                    scope,
                    key,
                    "secret written literally in the configuration; prefer { env = \"NAME\" } or { file = \"/path\" }",
                );
                Ok(value.clone())
            }
            RawSecret::Env(reference) if reference.env.is_empty() => Err("`env` names no variable".to_owned()),
            RawSecret::Env(reference) => self
                .env
                .var(&reference.env)
                .ok_or_else(|| format!("environment variable `{}` is not set", reference.env)),
            RawSecret::File(reference) => {
                let path = std::path::Path::new(&reference.file);
                let read = self.env.read_file(path);
                if let Ok(content) = &read {
                    self.record_file(path, content.as_bytes());
                }
                read.map(|content| content.trim().to_owned())
                    .map_err(|e| format!("cannot read secret file `{}`: {e}", reference.file))
            }
        };
        if self.env.shape_only() && !matches!(raw, RawSecret::Literal(_)) {
            let span = self.src.value_span(&scope.path_of(key));
            let note = self
                .src
                .error(span, scope.message(key, format!("not read: {}", describe(raw))));
            self.not_read.push(note);
        }
        match resolved {
            Ok(value) if value.is_empty() => {
                self.error(scope, key, format!("secret is empty ({})", describe(raw)));
                None
            }
            Ok(value) => Some(Secret::new(value)),
            Err(message) => {
                self.error(scope, key, message);
                None
            }
        }
    }

    /// Like [`Self::secret`] for an optional key.
    pub(crate) fn opt_secret(
        &mut self,
        scope: &Scope,
        key: &str,
        raw: Option<&RawSecret>,
    ) -> Option<Option<Secret<String>>> {
        match raw {
            None => Some(None),
            Some(raw) => self.secret(scope, key, raw).map(Some),
        }
    }
}

/// An optional key: `Some(None)` when absent, `Some(Some(_))` when present and valid, `None` when
/// present and invalid (already reported).
pub(crate) fn optional<R, T>(raw: Option<R>, parse: impl FnOnce(R) -> Option<T>) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(raw) => parse(raw).map(Some),
    }
}

/// Where a secret came from, for messages.
fn describe(raw: &RawSecret) -> String {
    match raw {
        RawSecret::Literal(_) => "literal".to_owned(),
        RawSecret::Env(r) => format!("environment variable `{}`", r.env),
        RawSecret::File(r) => format!("file `{}`", r.file),
    }
}

pub(crate) fn check_http_url(text: &str, allow_query: bool) -> Result<http::Uri, &'static str> {
    // `http::Uri` silently drops a fragment; a `#` in a base URL is always a mistake.
    if text.contains('#') {
        return Err("must not have a #fragment");
    }
    let uri: http::Uri = text.parse().map_err(|_| "is not a valid URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must be an absolute http:// or https:// URL");
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials (user:password@); use the provider's keys");
    }
    if authority.host().is_empty() {
        return Err("has no host");
    }
    if !allow_query && uri.query().is_some() {
        return Err("must not have a ?query");
    }
    Ok(uri)
}

/// `localhost`, `*.localhost`, `127.0.0.0/8`, `::1`: traffic that never leaves the machine.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Headers a tenant may not fix: connection management (hop-by-hop, framing) and the ones the
/// proxy owns (`host` is the upstream's, `authorization` is the provider's credential).
pub(crate) const FORBIDDEN_HEADERS: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "authorization",
];
