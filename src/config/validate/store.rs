//! `[store]`: `memory` (the default) or `redis`, the store several replicas share.

use std::time::Duration;

use crate::config::{RedisConfig, StoreConfig};
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::RawStore;

const DEFAULT_KEY_PREFIX: &str = "tokenbroker";
/// Long enough for a TLS handshake to a Redis across a zone, short enough that a replica whose
/// Redis is gone learns it before its callers notice.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A healthy Redis answers in well under a millisecond; a second means it is not healthy.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) fn store(ctx: &mut Ctx<'_>, raw: &RawStore) -> Option<StoreConfig> {
    let scope = Scope::new("store", "[store]");
    match raw.kind.as_deref().unwrap_or("memory") {
        "memory" => {
            let redis_only = [
                ("url", raw.url.is_some()),
                ("key_prefix", raw.key_prefix.is_some()),
                ("connect_timeout", raw.connect_timeout.is_some()),
                ("command_timeout", raw.command_timeout.is_some()),
                ("seal_secret", raw.seal_secret.is_some()),
            ]
            .into_iter()
            .chain(super::store_topology::keys_set(raw));
            let mut clean = true;
            for (key, _) in redis_only.filter(|(_, set)| *set) {
                ctx.key_error(&scope, key, "only used with kind = \"redis\"");
                clean = false;
            }
            clean.then_some(StoreConfig::Memory)
        }
        "redis" => redis(ctx, &scope, raw).map(StoreConfig::Redis),
        other => {
            ctx.error(
                &scope,
                "kind",
                format!("unknown store `{other}`; expected \"memory\" or \"redis\""),
            );
            None
        }
    }
}

fn redis(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawStore) -> Option<RedisConfig> {
    let url = ctx
        .required(scope, "url", raw.url.as_ref(), "with kind = \"redis\"")
        .and_then(|raw_url| ctx.secret(scope, "url", raw_url));
    // Checked without echoing it, and without connecting: the URL may carry a password.
    let url = url.and_then(|url| match ctx.resolved(&url).map(url_shape) {
        Some(Err(why)) => ctx.reject(scope, "url", why),
        Some(Ok(())) | None => Some(url),
    });
    let key_prefix = match raw.key_prefix.as_deref() {
        None => Some(DEFAULT_KEY_PREFIX.to_owned()),
        Some(prefix) => match prefix_shape(prefix) {
            Ok(()) => Some(prefix.to_owned()),
            Err(why) => ctx.reject(scope, "key_prefix", why),
        },
    };
    let connect_timeout = ctx.positive_duration(
        scope,
        "connect_timeout",
        raw.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
    );
    let command_timeout = ctx.positive_duration(
        scope,
        "command_timeout",
        raw.command_timeout.as_ref(),
        DEFAULT_COMMAND_TIMEOUT,
    );
    let seal_secret = match &raw.seal_secret {
        None => Some(None),
        Some(raw_secret) => match ctx.secret(scope, "seal_secret", raw_secret) {
            Some(secret) if secret.expose().trim().is_empty() => ctx.reject(scope, "seal_secret", "must not be empty"),
            secret => secret.map(Some),
        },
    };
    let resolved = url.as_ref().and_then(|url| ctx.resolved(url)).map(str::to_owned);
    let topology = super::store_topology::topology(ctx, scope, raw, resolved.as_deref());
    let (mode, ca_file) = topology?;
    Some(RedisConfig {
        url: url?,
        key_prefix: key_prefix?,
        connect_timeout: connect_timeout?,
        command_timeout: command_timeout?,
        seal_secret: seal_secret?,
        mode,
        ca_file,
    })
}

/// The URL's shape as redis-rs reads it (scheme, host, port, database), never its content in the
/// message: the password must not reach a terminal or a log.
fn url_shape(url: &str) -> Result<(), &'static str> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("must start with redis:// or rediss:// (a `redis+unix://` socket is not supported)");
    }
    // redis-rs reads `#insecure` as "skip the certificate check", which this build does not
    // offer: every connection would then fail at runtime, far from the file that asked for it.
    if url.contains('#') {
        return Err(
            "has a `#` fragment; `#insecure` (no certificate check) is not supported: the store always \
                    verifies the server's certificate against the system's roots",
        );
    }
    match redis::Client::open(url) {
        Ok(_) => Ok(()),
        Err(_) => Err("is not a valid Redis URL (expected redis[s]://[[user]:password@]host[:port][/db])"),
    }
}

/// Keys are `<prefix>:{<tenant>:<fingerprint>}:<part>`; braces in the prefix would move the
/// Redis Cluster hash tag, and spaces make keys awkward in every tool.
fn prefix_shape(prefix: &str) -> Result<(), &'static str> {
    let fits = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if fits {
        Ok(())
    } else {
        Err("must be 1 to 64 characters of letters, digits, `-`, `_`, `.` or `:`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_judged_by_shape() {
        for good in [
            "redis://127.0.0.1:6379",
            "rediss://:pw@redis.internal:6380/2",
            "redis://user:pw@h/0",
        ] {
            assert_eq!(url_shape(good), Ok(()), "{good}");
        }
        for bad in [
            "http://h",
            "redis+unix:///tmp/s",
            "redis://",
            "redis://h:notaport",
            "rediss://h:6380/0#insecure",
        ] {
            assert!(url_shape(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_keep_the_hash_tag_in_place() {
        assert!(prefix_shape("tokenbroker").is_ok());
        assert!(prefix_shape("team-a:prod").is_ok());
        for bad in ["", "a{b}", "has space", &"x".repeat(65)] {
            assert!(prefix_shape(bad).is_err(), "{bad}");
        }
    }
}
