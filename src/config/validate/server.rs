//! `[server]`, `[token]` (and its per-tenant overrides), `[store]`, and the listener rules that
//! span sections: unique addresses, and no non-loopback listener without callers (the proxy lends
//! credentials, so with no caller keys only loopback may reach it).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::config::{ServerConfig, TenantConfig, TokenPolicy};
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::{RawQuantity, RawServer, RawTenant, RawToken};

const MIB: u64 = 1 << 20;

/// `server.max_body` when not set: 10 MiB.
pub(super) const DEFAULT_MAX_BODY: u64 = 10 * MIB;

/// `[token]` when not set.
pub(super) fn default_token_policy() -> TokenPolicy {
    TokenPolicy {
        refresh_before: Duration::from_secs(600),
        retry_on_unauthorized: true,
        replay_body_limit: MIB,
        min_token_age: Duration::from_secs(30),
    }
}

pub(super) fn server(ctx: &mut Ctx<'_>, raw: &RawServer) -> Option<ServerConfig> {
    let scope = Scope::new("server", "[server]");
    let listen = match &raw.listen {
        Some(text) => ctx.socket_addr(&scope, "listen", text),
        None => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))),
    };
    let admin_listen = match raw.admin_listen.as_deref() {
        // The admin port can be switched off for embedded or test deployments.
        Some("off") => Some(None),
        Some(text) => ctx.socket_addr(&scope, "admin_listen", text).map(Some),
        None => Some(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9901)))),
    };
    let webhook_listen = crate::schema::fields::optional(raw.webhook_listen.as_ref(), |text| {
        ctx.socket_addr(&scope, "webhook_listen", text)
    });
    let shutdown_grace = ctx.duration(
        &scope,
        "shutdown_grace",
        raw.shutdown_grace.as_ref(),
        Duration::from_secs(30),
    );
    let shutdown_delay = ctx.duration(&scope, "shutdown_delay", raw.shutdown_delay.as_ref(), Duration::ZERO);
    let timeout = Duration::from_secs(60);
    let request_timeout = ctx.positive_duration(&scope, "request_timeout", raw.request_timeout.as_ref(), timeout);
    let max_body = ctx.size(&scope, "max_body", raw.max_body.as_ref(), DEFAULT_MAX_BODY);
    let inbound = inbound_limits(ctx, &scope, raw);
    let (header_read_timeout, idle_timeout, max_connections) = inbound?;
    let max_request_head = head_limit(ctx, &scope, "max_request_head", raw.max_request_head.as_ref());
    let max_response_head = head_limit(ctx, &scope, "max_response_head", raw.max_response_head.as_ref());
    let (body_timeout, replay_buffer_budget) = body_limits(ctx, &scope, raw);
    Some(ServerConfig {
        listen: listen?,
        admin_listen: admin_listen?,
        webhook_listen: webhook_listen?,
        shutdown_grace: shutdown_grace?,
        shutdown_delay: shutdown_delay?,
        request_timeout: request_timeout?,
        max_body: max_body?,
        allow_anonymous: raw.allow_anonymous.unwrap_or(false),
        allowed_hosts: allowed_hosts(ctx, &scope, raw.allowed_hosts.as_deref().unwrap_or_default())?,
        watch_config: raw.watch_config.unwrap_or(false),
        header_read_timeout,
        idle_timeout,
        max_connections,
        max_request_head: max_request_head?,
        max_response_head: max_response_head?,
        body_timeout: body_timeout?,
        replay_buffer_budget: replay_buffer_budget?,
    })
}

/// `server.allowed_hosts`: host names only (a port, scheme or path would never match a `Host`),
/// kept lowercase because host names compare without case.
fn allowed_hosts(ctx: &mut Ctx<'_>, scope: &Scope, raw: &[String]) -> Option<Vec<String>> {
    let mut hosts = Vec::with_capacity(raw.len());
    let mut valid = true;
    for name in raw {
        let is_name = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if is_name {
            hosts.push(name.to_ascii_lowercase());
        } else {
            valid = false;
            ctx.error(
                scope,
                "allowed_hosts",
                format!("`{name}` is not a host name (letters, digits, `-` and `.`; no port or scheme)"),
            );
        }
    }
    valid.then_some(hosts)
}

/// `server.body_timeout` when not set: nginx's `client_body_timeout`.
pub(super) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest `body_timeout`: an upload that sends nothing for an hour is not coming back.
const MAX_BODY_TIMEOUT: Duration = Duration::from_secs(3600);

/// `server.replay_buffer_budget` when not set: a quarter of the shipped pod's 256 MiB, so a flood of
/// uploads to renewing tenants cannot take the process past its limit.
pub(super) const DEFAULT_REPLAY_BUFFER_BUDGET: u64 = 64 * MIB;
/// The largest `replay_buffer_budget` (a budget too large to bound anything is a typo).
const MAX_REPLAY_BUFFER_BUDGET: u64 = 16 * 1024 * MIB;

/// `body_timeout` and `replay_buffer_budget`.
fn body_limits(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawServer) -> (Option<Duration>, Option<usize>) {
    let timeout = ctx.positive_duration(scope, "body_timeout", raw.body_timeout.as_ref(), DEFAULT_BODY_TIMEOUT);
    let timeout = match timeout {
        Some(t) if t > MAX_BODY_TIMEOUT => ctx.reject(scope, "body_timeout", "must be at most 1h"),
        other => other,
    };
    let budget = ctx.size(
        scope,
        "replay_buffer_budget",
        raw.replay_buffer_budget.as_ref(),
        DEFAULT_REPLAY_BUFFER_BUDGET,
    );
    let budget = match budget {
        Some(b) if b > MAX_REPLAY_BUFFER_BUDGET => ctx.reject(scope, "replay_buffer_budget", "must be at most 16GiB"),
        other => other.and_then(|b| usize::try_from(b).ok()),
    };
    (timeout, budget)
}

/// `server.max_request_head` and `server.max_response_head` when not set. Commerce gateways refuse
/// larger heads anyway (nginx above 4 × 8 KiB, Envoy above 60 KiB), so forwarding one only costs
/// memory and upstream goodwill; a real head with a large cookie or JWT stays far below.
pub(super) const DEFAULT_HEAD_LIMIT: u64 = 64 * 1024;
/// Head limits below this would refuse ordinary requests (and hyper's buffers start at 8 KiB).
const MIN_HEAD_LIMIT: u64 = 8 * 1024;
/// Above this a "head" is a way to hold memory, not a request.
const MAX_HEAD_LIMIT: u64 = 1024 * 1024;

fn head_limit(ctx: &mut Ctx<'_>, scope: &Scope, key: &str, raw: Option<&RawQuantity>) -> Option<usize> {
    let bytes = ctx.size(scope, key, raw, DEFAULT_HEAD_LIMIT)?;
    if !(MIN_HEAD_LIMIT..=MAX_HEAD_LIMIT).contains(&bytes) {
        return ctx.reject(scope, key, format!("`{bytes}` bytes is outside 8KiB..1MiB"));
    }
    usize::try_from(bytes).ok()
}

/// `server.header_read_timeout` when not set: hyper's own default, and nginx's
/// `client_header_timeout` rounded up. A sidecar's clients are on loopback and send a head in
/// microseconds; the figure only has to be short enough that stalled connections cannot pile up.
pub(super) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `server.idle_timeout` when not set: the same as the header timeout, because on HTTP/1 hyper's
/// header timer already runs while a keep-alive connection waits for its next head, so an idle
/// HTTP/1 connection goes at `header_read_timeout` whatever this says; equal defaults make HTTP/2
/// behave alike. It is shorter than client pools keep idle connections (.NET 60 s, Go 90 s), which
/// is safe for a sidecar: on loopback the FIN of an HTTP/1 close reaches the client at once and
/// pools check for it before reusing a connection, and HTTP/2 closes with GOAWAY, which tells the
/// client that no later stream was seen, so it retries on a new connection.
pub(super) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `server.max_connections` when not set. A sidecar serves the few pods beside it, whose pools
/// hold tens of connections; 10,000 is far above any honest use and far below what the process
/// can hold (a connection costs a file descriptor and some KiB), so it only ever stops a leak
/// or a flood from taking every descriptor.
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The largest `max_connections`: the kernel's default ceiling on one process's open files
/// (`fs.nr_open`), which no cap above could ever reach.
const MAX_CONNECTIONS_CEILING: i64 = 1 << 20;

/// `header_read_timeout`, `idle_timeout` and `max_connections`.
fn inbound_limits(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawServer) -> Option<(Duration, Duration, usize)> {
    let header_read_timeout = ctx.positive_duration(
        scope,
        "header_read_timeout",
        raw.header_read_timeout.as_ref(),
        DEFAULT_HEADER_READ_TIMEOUT,
    );
    let idle_timeout = ctx.positive_duration(scope, "idle_timeout", raw.idle_timeout.as_ref(), DEFAULT_IDLE_TIMEOUT);
    let max_connections = match raw.max_connections {
        None => Some(DEFAULT_MAX_CONNECTIONS),
        Some(n) if (1..=MAX_CONNECTIONS_CEILING).contains(&n) => usize::try_from(n).ok(),
        Some(n) => ctx.reject(
            scope,
            "max_connections",
            format!("`{n}` must be a whole number from 1 to {MAX_CONNECTIONS_CEILING}"),
        ),
    };
    Some((header_read_timeout?, idle_timeout?, max_connections?))
}

pub(super) fn token_policy(ctx: &mut Ctx<'_>, raw: &RawToken) -> Option<TokenPolicy> {
    let scope = Scope::new("token", "[token]");
    let defaults = default_token_policy();
    let fields = TokenFields {
        refresh_before: raw.refresh_before.as_ref(),
        retry_on_unauthorized: raw.retry_on_unauthorized,
        replay_body_limit: raw.replay_body_limit.as_ref(),
        min_token_age: raw.min_token_age.as_ref(),
    };
    apply_token_fields(ctx, &scope, &fields, &defaults)
}

/// A tenant's `[token]` keys over the global policy.
pub(super) fn tenant_token_policy(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
    base: &TokenPolicy,
) -> Option<TokenPolicy> {
    let fields = TokenFields {
        refresh_before: raw.refresh_before.as_ref(),
        retry_on_unauthorized: raw.retry_on_unauthorized,
        replay_body_limit: raw.replay_body_limit.as_ref(),
        min_token_age: raw.min_token_age.as_ref(),
    };
    apply_token_fields(ctx, scope, &fields, base)
}

/// The `[token]` keys, wherever they were written.
struct TokenFields<'r> {
    refresh_before: Option<&'r crate::schema::raw::RawQuantity>,
    retry_on_unauthorized: Option<bool>,
    replay_body_limit: Option<&'r crate::schema::raw::RawQuantity>,
    min_token_age: Option<&'r crate::schema::raw::RawQuantity>,
}

fn apply_token_fields(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &TokenFields<'_>,
    base: &TokenPolicy,
) -> Option<TokenPolicy> {
    let refresh_before = ctx.duration(scope, "refresh_before", raw.refresh_before, base.refresh_before);
    let replay_body_limit = ctx.size(
        scope,
        "replay_body_limit",
        raw.replay_body_limit,
        base.replay_body_limit,
    );
    let min_token_age = ctx.duration(scope, "min_token_age", raw.min_token_age, base.min_token_age);
    Some(TokenPolicy {
        refresh_before: refresh_before?,
        retry_on_unauthorized: raw.retry_on_unauthorized.unwrap_or(base.retry_on_unauthorized),
        replay_body_limit: replay_body_limit?,
        min_token_age: min_token_age?,
    })
}

/// Listener rules that need every section: each address bound once, and credentials lent only
/// to loopback clients unless callers authenticate (or the operator opted out).
pub(super) fn check_listeners(ctx: &mut Ctx<'_>, server: &ServerConfig, tenants: &[TenantConfig], no_callers: bool) {
    let server_scope = Scope::new("server", "[server]");
    let mut taken: Vec<(SocketAddr, String)> = vec![(server.listen, "server.listen".to_owned())];
    if let Some(admin) = server.admin_listen {
        claim(ctx, &mut taken, admin, &server_scope, "admin_listen");
    }
    // Not held to the loopback rule below: the webhook listener lends no credential.
    if let Some(webhooks) = server.webhook_listen {
        claim(ctx, &mut taken, webhooks, &server_scope, "webhook_listen");
    }
    let anonymous_ok = !no_callers || server.allow_anonymous;
    if !anonymous_ok && !server.listen.ip().is_loopback() {
        ctx.error(&server_scope, "listen", anonymous_message(server.listen));
    }
    for (index, tenant) in tenants.iter().enumerate() {
        let Some(listen) = tenant.listen else {
            continue;
        };
        let scope = Scope::tenant(index, ctx.src);
        claim(ctx, &mut taken, listen, &scope, "listen");
        if !anonymous_ok && !listen.ip().is_loopback() {
            ctx.error(&scope, "listen", anonymous_message(listen));
        }
    }
}

/// Records `addr` as bound by `scope.key`, or reports who already binds it. Port 0 asks the OS
/// for a fresh port each time, so it never clashes.
fn claim(ctx: &mut Ctx<'_>, taken: &mut Vec<(SocketAddr, String)>, addr: SocketAddr, scope: &Scope, key: &str) {
    if addr.port() != 0 {
        if let Some((_, owner)) = taken.iter().find(|(other, _)| *other == addr) {
            ctx.error(scope, key, format!("{addr} is already used by {owner}"));
            return;
        }
    }
    taken.push((addr, format!("{} `{key}`", scope.label())));
}

fn anonymous_message(addr: SocketAddr) -> String {
    format!(
        "{addr} is not a loopback address and no [[caller]] is configured, so anyone who reaches it could use \
         the credentials; add [[caller]] keys or set server.allow_anonymous = true"
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{find, parse_err, parse_ok};
    use super::*;

    #[test]
    fn inbound_limits_default_and_parse() {
        let server = parse_ok("").config.server;
        assert_eq!(server.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(server.header_read_timeout.as_secs(), 30);
        assert_eq!(server.idle_timeout.as_secs(), 30);
        assert_eq!(server.max_connections, 10_000);
        let text = "[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"2m\"\nmax_connections = 3\n";
        let server = parse_ok(text).config.server;
        assert_eq!(server.header_read_timeout, Duration::from_millis(300));
        assert_eq!(server.idle_timeout, Duration::from_secs(120));
        assert_eq!(server.max_connections, 3);
    }

    #[test]
    fn allowed_hosts_are_host_names_kept_lowercase() {
        assert!(parse_ok("").config.server.allowed_hosts.is_empty());
        let server = parse_ok("[server]\nallowed_hosts = [\"TokenBroker.internal\", \"dev-box\"]\n")
            .config
            .server;
        assert_eq!(server.allowed_hosts, ["tokenbroker.internal", "dev-box"]);
        let errors = parse_err("[server]\nallowed_hosts = [\"ok.example\", \"h:8080\", \"http://h\", \"\"]\n");
        let location = find(&errors, &["allowed_hosts", "`h:8080` is not a host name"])
            .location
            .clone();
        assert!(location.ends_with(":2:17"), "file:line:column of the list: {location}");
        find(&errors, &["allowed_hosts", "`http://h` is not a host name"]);
        find(&errors, &["allowed_hosts", "`` is not a host name"]);
    }

    #[test]
    fn inbound_limits_reject_zero_and_out_of_range() {
        let text = "[server]\nheader_read_timeout = \"0s\"\nidle_timeout = 5\nmax_connections = 0\n";
        let errors = parse_err(text);
        find(&errors, &["header_read_timeout", "longer than 0s"]);
        find(&errors, &["idle_timeout", "has no unit"]);
        find(&errors, &["max_connections", "from 1 to 1048576"]);
        let errors = parse_err("[server]\nmax_connections = 2000000\n");
        find(&errors, &["max_connections", "`2000000`"]);
        let errors = parse_err("[server]\nmax_connections = \"many\"\n");
        find(&errors, &["max_connections"]);
    }

    #[test]
    fn head_limits_default_parse_and_stay_in_range() {
        let server = parse_ok("").config.server;
        assert_eq!((server.max_request_head, server.max_response_head), (65_536, 65_536));
        let server = parse_ok("[server]\nmax_request_head = \"16KiB\"\nmax_response_head = 200000\n")
            .config
            .server;
        assert_eq!((server.max_request_head, server.max_response_head), (16_384, 200_000));
        let errors = parse_err("[server]\nmax_request_head = \"4KiB\"\nmax_response_head = \"2MiB\"\n");
        find(&errors, &["max_request_head", "outside 8KiB..1MiB"]);
        find(&errors, &["max_response_head", "`2097152` bytes"]);
    }
}
