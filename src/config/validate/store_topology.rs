//! `[store]`'s topology keys for `kind = "redis"`: `mode` (standalone, cluster, sentinel), its
//! `sentinels` and `master_name`, and `ca_file` for `rediss://`. Apart from the rest of `[store]`
//! so that each combination the store cannot honour is refused here, at its line, rather than
//! by a connection that fails at runtime.

use std::path::PathBuf;

use redis::IntoConnectionInfo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::RedisMode;
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::RawStore;

/// A deployment names three to five sentinels; more than this is a typo or a list of something
/// else.
const MAX_SENTINELS: usize = 16;

/// The topology keys set in `raw`, for the check that `kind = "memory"` has none of them.
pub(super) fn keys_set(raw: &RawStore) -> [(&'static str, bool); 4] {
    [
        ("mode", raw.mode.is_some()),
        ("sentinels", raw.sentinels.is_some()),
        ("master_name", raw.master_name.is_some()),
        ("ca_file", raw.ca_file.is_some()),
    ]
}

/// `mode` with its keys, and `ca_file`. `url` is the resolved URL when it could be read (not
/// under `check --no-secrets`), for the checks that depend on it.
pub(super) fn topology(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawStore,
    url: Option<&str>,
) -> Option<(RedisMode, Option<PathBuf>)> {
    let mode = mode(ctx, scope, raw, url);
    let ca_file = match raw.ca_file.as_deref() {
        None => Some(None),
        Some(path) => ca_file(ctx, scope, path, url).map(Some),
    };
    Some((mode?, ca_file?))
}

fn mode(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawStore, url: Option<&str>) -> Option<RedisMode> {
    let name = raw.mode.as_deref().unwrap_or("standalone");
    if name != "sentinel" {
        for (key, _) in [
            ("sentinels", raw.sentinels.is_some()),
            ("master_name", raw.master_name.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        {
            ctx.key_error(scope, key, "only used with mode = \"sentinel\"");
        }
    }
    match name {
        "standalone" => Some(RedisMode::Standalone),
        "cluster" => match url.map(database) {
            Some(Some(db)) if db != 0 => ctx.reject(
                scope,
                "url",
                format!("names database {db}; a Redis Cluster has only database 0"),
            ),
            _ => Some(RedisMode::Cluster),
        },
        "sentinel" => sentinel(ctx, scope, raw),
        other => ctx.reject(
            scope,
            "mode",
            format!("unknown mode `{other}`; expected \"standalone\", \"cluster\" or \"sentinel\""),
        ),
    }
}

fn sentinel(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawStore) -> Option<RedisMode> {
    let sentinels = match ctx.required(scope, "sentinels", raw.sentinels.as_ref(), "with mode = \"sentinel\"") {
        None => None,
        Some(list) if list.is_empty() => ctx.reject(scope, "sentinels", "names no sentinel"),
        Some(list) if list.len() > MAX_SENTINELS => ctx.reject(
            scope,
            "sentinels",
            format!("names {} sentinels; at most {MAX_SENTINELS}", list.len()),
        ),
        Some(list) => match list.iter().find_map(|entry| host_port(entry).err()) {
            Some(why) => ctx.reject(scope, "sentinels", why),
            None => Some(list.clone()),
        },
    };
    let master_name = match ctx.required(
        scope,
        "master_name",
        raw.master_name.as_ref(),
        "with mode = \"sentinel\"",
    ) {
        None => None,
        Some(name)
            if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            ctx.reject(scope, "master_name", "must be 1 to 128 characters without spaces")
        }
        Some(name) => Some(name.clone()),
    };
    Some(RedisMode::Sentinel {
        sentinels: sentinels?,
        master_name: master_name?,
    })
}

/// One `sentinels` entry: `host:port`, nothing else (the scheme and credentials come from `url`).
fn host_port(entry: &str) -> Result<(), String> {
    let shown = entry.escape_debug().to_string();
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| format!("`{shown}` is not host:port"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'));
    if !host_ok {
        return Err(format!("`{shown}` is not host:port"));
    }
    match port.parse::<u16>() {
        Ok(1..) => Ok(()),
        _ => Err(format!("`{shown}` has no valid port (1 to 65535)")),
    }
}

/// The database a URL selects, when it parses.
fn database(url: &str) -> Option<i64> {
    url.into_connection_info().ok().map(|info| info.redis_settings().db())
}

/// A file of PEM certificates, at least one, and only with a `rediss://` URL.
fn ca_file(ctx: &mut Ctx<'_>, scope: &Scope, path: &str, url: Option<&str>) -> Option<PathBuf> {
    if url.is_some_and(|url| !url.starts_with("rediss://")) {
        return ctx.reject(scope, "ca_file", "only used with a rediss:// url");
    }
    let path = ctx.existing_file(scope, "ca_file", path)?;
    match std::fs::read(&path).map(|pem| certificates(&pem)) {
        Ok(Ok(0)) => ctx.reject(scope, "ca_file", format!("`{}` holds no certificate", path.display())),
        Ok(Ok(_)) => Some(path),
        Ok(Err(())) => ctx.reject(
            scope,
            "ca_file",
            format!("`{}` is not PEM certificates", path.display()),
        ),
        Err(e) => ctx.reject(scope, "ca_file", format!("cannot read `{}`: {e}", path.display())),
    }
}

/// How many certificates a PEM text holds; an error when one does not parse.
fn certificates(pem: &[u8]) -> Result<usize, ()> {
    CertificateDer::pem_slice_iter(pem)
        .try_fold(0, |n, cert| cert.map(|_| n + 1))
        .map_err(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_entries_are_host_and_port_only() {
        for good in ["10.0.0.1:26379", "sentinel-0.redis:26379", "[::1]:26379"] {
            assert_eq!(host_port(good), Ok(()), "{good}");
        }
        for bad in ["10.0.0.1", "redis://h:26379", "h:0", "h:65536", ":26379", "h :1"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}
