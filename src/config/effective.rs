//! The effective configuration, as `tokenbroker check --print` shows it (like `nginx -T`): every
//! key the proxy serves with, defaults and provider presets filled in, each secret shown as
//! [`MASK`]. It is TOML in the shape of the input, so it can be compared with the file, and it
//! reads back: checking the printed text gives the same configuration (secrets aside), which the
//! tests hold it to.
//!
//! `[token]` is printed inside each tenant, where it applies, and derived values (the rate-limit
//! headroom of a preset, the leading caller class) are left out: no key sets them.

use toml::{Table, Value};

use super::{CallerConfig, RateLimitConfig, RuntimeConfig, ServerConfig, StoreConfig, TenantConfig};
pub use crate::schema::print::MASK;
use crate::schema::print::{duration, list, masked, size, text};

/// The configuration as TOML, with a header that says what it is.
pub fn render(config: &RuntimeConfig) -> String {
    let mut root = Table::new();
    root.insert("server".into(), Value::Table(server(&config.server)));
    root.insert("store".into(), Value::Table(store(&config.store)));
    let tenants = config.tenants.iter().map(|t| Value::Table(tenant(t)));
    root.insert("tenant".into(), Value::Array(tenants.collect()));
    if !config.callers.is_empty() {
        let callers = config.callers.iter().map(|c| Value::Table(caller(c)));
        root.insert("caller".into(), Value::Array(callers.collect()));
    }
    if !config.webhooks.is_empty() {
        let webhooks = config.webhooks.iter().map(|w| Value::Table(w.effective(MASK)));
        root.insert("webhook".into(), Value::Array(webhooks.collect()));
    }
    let body = toml::to_string(&root).unwrap_or_else(|error| format!("# cannot print: {error}\n"));
    format!(
        "# The effective configuration: defaults and provider presets filled in, [token] inside each\n\
         # tenant, every secret shown as \"{MASK}\".\n\n{body}"
    )
}

fn server(server: &ServerConfig) -> Table {
    let mut t = Table::new();
    t.insert("listen".into(), text(&server.listen));
    if let Some(admin) = server.admin_listen {
        t.insert("admin_listen".into(), text(&admin));
    }
    if let Some(webhooks) = server.webhook_listen {
        t.insert("webhook_listen".into(), text(&webhooks));
    }
    t.insert("shutdown_grace".into(), duration(server.shutdown_grace));
    t.insert("shutdown_delay".into(), duration(server.shutdown_delay));
    t.insert("request_timeout".into(), duration(server.request_timeout));
    t.insert("max_body".into(), size(server.max_body));
    t.insert("allow_anonymous".into(), Value::Boolean(server.allow_anonymous));
    t.insert("allowed_hosts".into(), list(&server.allowed_hosts));
    t.insert("watch_config".into(), Value::Boolean(server.watch_config));
    t.insert("header_read_timeout".into(), duration(server.header_read_timeout));
    t.insert("idle_timeout".into(), duration(server.idle_timeout));
    let connections = i64::try_from(server.max_connections).unwrap_or(i64::MAX);
    t.insert("max_connections".into(), Value::Integer(connections));
    t.insert("max_request_head".into(), size(server.max_request_head as u64));
    t.insert("max_response_head".into(), size(server.max_response_head as u64));
    t.insert("body_timeout".into(), duration(server.body_timeout));
    t.insert("replay_buffer_budget".into(), size(server.replay_buffer_budget as u64));
    t
}

fn store(store: &StoreConfig) -> Table {
    let mut t = Table::new();
    match store {
        StoreConfig::Memory => {
            t.insert("kind".into(), text("memory"));
        }
        StoreConfig::Redis(redis) => {
            t.insert("kind".into(), text("redis"));
            t.insert("url".into(), text(&mask_password(redis.url.expose())));
            t.insert("key_prefix".into(), text(&redis.key_prefix));
            t.insert("connect_timeout".into(), duration(redis.connect_timeout));
            t.insert("command_timeout".into(), duration(redis.command_timeout));
            if redis.seal_secret.is_some() {
                t.insert("seal_secret".into(), masked());
            }
            redis_topology(&mut t, redis);
        }
    }
    t
}

/// `mode` always (the default spelled out), its keys, and `ca_file`.
fn redis_topology(t: &mut Table, redis: &crate::config::RedisConfig) {
    use crate::config::RedisMode;
    let mode = match &redis.mode {
        RedisMode::Standalone => "standalone",
        RedisMode::Cluster => "cluster",
        RedisMode::Sentinel { sentinels, master_name } => {
            let list = sentinels.iter().map(text).collect();
            t.insert("sentinels".into(), toml::Value::Array(list));
            t.insert("master_name".into(), text(master_name));
            "sentinel"
        }
    };
    t.insert("mode".into(), text(mode));
    if let Some(ca_file) = &redis.ca_file {
        t.insert("ca_file".into(), text(&ca_file.display()));
    }
}

/// A Redis URL with its user info's password (the only secret part) replaced by [`MASK`]:
/// `rediss://app:***@redis:6380/0`. A lone user info is masked whole, since some clients read it
/// as the password. The user info runs to the URL's last `@`, wherever a `/`, `?` or `#` sits: a
/// password holding one of those must still never print, so a stray `@` later in the URL masks
/// too much rather than too little.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return MASK.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{scheme}://{user}:{MASK}@{host}"),
            _ => format!("{scheme}://{MASK}@{host}"),
        },
        None => url.to_owned(),
    }
}

fn tenant(tenant: &TenantConfig) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), text(&tenant.name));
    t.insert("provider".into(), text(tenant.provider.kind().name()));
    t.insert("upstream".into(), text(&tenant.upstream));
    if let Some(listen) = tenant.listen {
        t.insert("listen".into(), text(&listen));
    }
    t.insert("required".into(), Value::Boolean(tenant.required));
    t.insert("max_body".into(), size(tenant.max_body));
    t.insert("http2".into(), Value::Boolean(tenant.http2));
    if let Some(ca_file) = &tenant.ca_file {
        t.insert("ca_file".into(), text(&ca_file.display()));
    }
    t.insert("refresh_before".into(), duration(tenant.token.refresh_before));
    t.insert(
        "retry_on_unauthorized".into(),
        Value::Boolean(tenant.token.retry_on_unauthorized),
    );
    t.insert("replay_body_limit".into(), size(tenant.token.replay_body_limit));
    t.insert("min_token_age".into(), duration(tenant.token.min_token_age));
    tenant.provider.print(&mut t);
    let limit = tenant
        .rate_limit
        .as_ref()
        .map_or(Value::Boolean(false), |l| Value::Table(rate_limit(l)));
    t.insert("rate_limit".into(), limit);
    let rules = tenant.rewrite.iter().map(|rule| {
        let mut r = Table::new();
        r.insert("match".into(), text(rule.pattern.as_str()));
        r.insert("replace".into(), text(&rule.replace));
        Value::Table(r)
    });
    t.insert("rewrite".into(), Value::Array(rules.collect()));
    if !tenant.headers.is_empty() {
        // Values may carry credentials (`headers` takes `{ env }` and `{ file }` too).
        let headers = tenant.headers.iter().map(|(name, _)| (name.to_string(), masked()));
        t.insert("headers".into(), Value::Table(headers.collect()));
    }
    t
}

fn rate_limit(limit: &RateLimitConfig) -> Table {
    let mut t = Table::new();
    t.insert("per_second".into(), Value::Integer(limit.per_second.get().into()));
    t.insert("burst".into(), Value::Integer(limit.burst.get().into()));
    let mut waits = Table::new();
    waits.insert("interactive".into(), duration(limit.max_wait.interactive));
    waits.insert("standard".into(), duration(limit.max_wait.standard));
    waits.insert("batch".into(), duration(limit.max_wait.batch));
    t.insert("max_wait".into(), Value::Table(waits));
    let share = f64::from(limit.batch_share.basis_points()) / 10_000.0;
    t.insert("batch_share".into(), Value::Float(share));
    t
}

fn caller(caller: &CallerConfig) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), text(&caller.name));
    t.insert("key".into(), masked());
    let tenants = caller.tenants.as_ref().map_or_else(|| list(["*"]), list);
    t.insert("tenants".into(), tenants);
    if let Some(methods) = &caller.methods {
        t.insert("methods".into(), list(methods));
    }
    t.insert("class".into(), text(caller.class.as_str()));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NoSecrets, parse};

    /// Printed, read back and printed again: the same text. So every printed value reads back as
    /// the value it was printed from, defaults and presets included.
    fn assert_round_trip(text: &str, origin: &str) -> String {
        let first = parse(text, origin, &NoSecrets).unwrap_or_else(|e| panic!("{origin}: {e}"));
        let printed = render(&first.config);
        let again = parse(&printed, "printed", &NoSecrets).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(
            render(&again.config),
            printed,
            "the printed configuration reads back as itself"
        );
        printed
    }

    #[test]
    fn the_example_prints_with_its_defaults_and_reads_back() {
        let example = include_str!("../../config.example.toml");
        let printed = assert_round_trip(example, "config.example.toml");
        for filled in [
            "shutdown_delay = \"0s\"",
            "max_request_head = \"64KiB\"",
            "min_token_age = \"30s\"",
        ] {
            assert!(printed.contains(filled), "{filled} missing:\n{printed}");
        }
    }

    #[test]
    fn a_redis_url_shows_all_but_its_password() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "rediss://app:pw:with:colons@redis:6380/2",
                "rediss://app:***@redis:6380/2",
            ),
            ("redis://:pw@redis", "redis://:***@redis"),
            (
                "redis://lonely@redis?protocol=resp3",
                "redis://***@redis?protocol=resp3",
            ),
            ("redis://a:p@ss@redis", "redis://a:***@redis"),
            ("redis://:pa/ss@redis:6379/0", "redis://:***@redis:6379/0"),
            ("redis://u:p?w#d@redis", "redis://u:***@redis"),
        ];
        for (url, shown) in cases {
            assert_eq!(mask_password(url), shown);
        }
    }

    #[test]
    fn every_secret_is_masked() {
        let text = r#"
            [server]
            listen = "127.0.0.1:8080"
            [store]
            kind = "redis"
            url = "redis://:hunter2-redis@127.0.0.1:6379"
            seal_secret = "hunter2-seal"
            [[tenant]]
            name = "erp"
            provider = "oauth2"
            upstream = "https://erp.example"
            token_url = "https://login.example/token"
            client_id = "id"
            client_secrets = ["hunter2-one", "hunter2-two"]
            grant = "password"
            username = "svc"
            password = "hunter2-pass"
            headers = { x-api-key = "hunter2-header" }
            [[tenant]]
            name = "shop"
            provider = "shopline"
            handle = "acme"
            app_key = "k"
            app_secret = "hunter2-app"
            code = "hunter2-code"
            [[tenant]]
            name = "cb"
            provider = "cyberbiz"
            token = "hunter2-cyberbiz"
            [[tenant]]
            name = "mg"
            provider = "adobe_commerce"
            upstream = "https://shop.example"
            consumer_key = "hunter2-ck"
            consumer_secret = "hunter2-cs"
            access_token = "hunter2-at"
            access_token_secret = "hunter2-ats"
            [[caller]]
            name = "svc"
            key = "hunter2-caller-key-0123456789"
            class = "batch"
        "#;
        let loaded = parse(text, "inline", &crate::config::MapEnv::new::<String, String>([])).expect("valid");
        let printed = render(&loaded.config);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(printed.matches(&format!("\"{MASK}\"")).count(), 14, "{printed}");
        assert!(printed.contains("url = \"redis://:***@127.0.0.1:6379\""), "{printed}");
        assert_round_trip(text, "inline");
    }
}
