//! Validation tests: the example config, error locations, collecting every error, secrets,
//! listener rules and callers. Provider-specific rules are in `tests_providers.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Env, validate};
use crate::config::{ConfigError, Loaded, StoreConfig};

const EXAMPLE: &str = include_str!("../../../config.example.toml");

/// A map-backed environment and file system.
#[derive(Default)]
pub(super) struct MapEnv {
    pub(super) vars: HashMap<String, String>,
    pub(super) files: HashMap<PathBuf, String>,
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

/// The secret values the example's `{ env }` references resolve to.
pub(super) const EXAMPLE_SECRETS: [(&str, &str); 7] = [
    ("ACME_ADOBE_SECRET", "adobe-secret-value-1"),
    ("ACME_SHOPLINE_APP_SECRET", "shopline-secret-value-2"),
    ("ACME_VANTAGE_SECRET", "vantage-secret-value-3"),
    ("ACME_CYBERBIZ_TOKEN", "cyberbiz-token-value-4"),
    ("ACME_ERP_SECRET", "erp-secret-value-5"),
    ("ACME_STATIC_VALUE", "Bearer static-value-6"),
    ("ORDERS_SERVICE_KEY", "orders-service-key-value-7"),
];

pub(super) fn example_env() -> MapEnv {
    let vars = EXAMPLE_SECRETS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    MapEnv {
        vars,
        files: HashMap::new(),
    }
}

pub(super) fn parse_ok(text: &str) -> Loaded {
    match validate(text, "t.toml", &example_env()) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

pub(super) fn parse_err(text: &str) -> Vec<ConfigError> {
    match validate(text, "t.toml", &example_env()) {
        Ok(loaded) => panic!("expected errors, got a config: {:?}", loaded.config),
        Err(errors) => errors.0,
    }
}

/// `t.toml:LINE:COL` of the first occurrence of `needle` in `text`.
pub(super) fn location_of(text: &str, needle: &str) -> String {
    let offset = text.find(needle).expect("needle is in the text");
    let line = text[..offset].matches('\n').count() + 1;
    let column = text[..offset].rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("t.toml:{line}:{column}")
}

/// Asserts one error mentions every fragment, and returns it.
pub(super) fn find<'e>(errors: &'e [ConfigError], fragments: &[&str]) -> &'e ConfigError {
    errors
        .iter()
        .find(|e| fragments.iter().all(|f| e.message.contains(f)))
        .unwrap_or_else(|| panic!("no error with {fragments:?} in {errors:#?}"))
}

/// A minimal valid tenant to which tests append keys.
pub(super) const CYBERBIZ: &str =
    "[[tenant]]\nname = \"cb\"\nprovider = \"cyberbiz\"\ntoken = { env = \"ACME_CYBERBIZ_TOKEN\" }\n";

#[test]
fn example_validates_without_warnings() {
    let loaded = parse_ok(EXAMPLE);
    let config = &loaded.config;
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let kinds: Vec<_> = config.tenants.iter().map(|t| t.provider.kind().name()).collect();
    assert_eq!(
        kinds,
        ["adobe_ims", "shopline", "vantage", "cyberbiz", "oauth2", "static"]
    );
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.store, StoreConfig::Memory);
    assert_eq!(config.callers.len(), 1);
    assert_eq!(config.callers[0].key.expose(), "orders-service-key-value-7");
    let shopline = &config.tenants[1];
    assert_eq!(shopline.token.refresh_before.as_secs(), 1800, "tenant override");
    assert_eq!(config.tenants[0].token.refresh_before.as_secs(), 600, "global value");
    assert_eq!(config.tenants[4].max_body, 5_000_000);
    assert_eq!(config.tenants[4].token.replay_body_limit, 512 * 1024);
}

#[test]
fn defaults_apply_to_an_almost_empty_config() {
    let config = parse_ok("").config;
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.server.admin_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9901")
    );
    assert_eq!(config.server.shutdown_grace.as_secs(), 30);
    assert_eq!(config.server.request_timeout.as_secs(), 60);
    assert_eq!(config.server.max_body, 10 * 1024 * 1024);
    assert!(!config.server.allow_anonymous && !config.server.watch_config);
    assert!(config.tenants.is_empty() && config.callers.is_empty());
    let tenant = &parse_ok(CYBERBIZ).config.tenants[0];
    assert_eq!(tenant.token.refresh_before.as_secs(), 600);
    assert!(tenant.token.retry_on_unauthorized);
    assert_eq!(tenant.token.replay_body_limit, 1 << 20);
    assert_eq!(tenant.token.min_token_age.as_secs(), 30);
}

#[test]
fn missing_env_var_names_tenant_and_key_at_its_location() {
    let errors = match validate(EXAMPLE, "t.toml", &MapEnv::default()) {
        Ok(_) => panic!("no env: must fail"),
        Err(errors) => errors.0,
    };
    let error = find(
        &errors,
        &[
            "tenant \"acme-adobe\"",
            "key `client_secret`",
            "`ACME_ADOBE_SECRET` is not set",
        ],
    );
    assert_eq!(error.location, location_of(EXAMPLE, "{ env = \"ACME_ADOBE_SECRET\" }"));
    find(
        &errors,
        &["caller \"orders-service\"", "key `key`", "ORDERS_SERVICE_KEY"],
    );
    assert_eq!(
        errors.len(),
        EXAMPLE_SECRETS.len(),
        "one error per missing variable: {errors:#?}"
    );
}

#[test]
fn typo_is_located_at_the_key_and_suggests_the_right_one() {
    let text = format!("[server]\nlisten = \"127.0.0.1:8080\"\n\n{CYBERBIZ}  refresh_befor = \"5m\"\n");
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].location, location_of(&text, "refresh_befor"));
    assert_eq!(errors[0].location, "t.toml:8:3");
    assert!(errors[0].message.contains("tenant \"cb\""), "{}", errors[0].message);
    assert!(
        errors[0].message.contains("did you mean `refresh_before`"),
        "{}",
        errors[0].message
    );
}

#[test]
fn several_independent_errors_are_all_reported_in_file_order() {
    let text = r#"
[server]
request_timeout = "60"

[token]
min_token_age = "-5s"

[[tenant]]
name = "one"
provider = "magic"

[[tenant]]
name = "two"
provider = "cyberbiz"
token = { env = "ACME_CYBERBIZ_TOKEN" }
max_bdy = "1MB"

[[caller]]
name = "svc"
key = { env = "ORDERS_SERVICE_KEY" }
tenants = ["nope"]
"#;
    let errors = parse_err(text);
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert_eq!(
        find(&errors, &["[server]", "request_timeout", "has no unit"]).location,
        location_of(text, "\"60\"")
    );
    assert_eq!(
        find(&errors, &["[token]", "min_token_age", "negative"]).location,
        location_of(text, "\"-5s\"")
    );
    assert_eq!(
        find(&errors, &["tenant \"one\"", "unknown provider `magic`"]).location,
        location_of(text, "\"magic\"")
    );
    assert_eq!(
        find(&errors, &["tenant \"two\"", "unknown key `max_bdy`"]).location,
        location_of(text, "max_bdy")
    );
    assert_eq!(
        find(&errors, &["caller \"svc\"", "unknown tenant `nope`"]).location,
        location_of(text, "\"nope\"")
    );
    let lines: Vec<usize> = errors
        .iter()
        .map(|e| e.location.split(':').nth(1).expect("line").parse().expect("n"))
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "file order: {lines:?}");
}

#[test]
fn syntax_errors_are_located() {
    let errors = parse_err("[server]\nlisten = \"127.0.0.1:8080\nmax_body = 5\n");
    assert!(errors[0].location.starts_with("t.toml:2:"), "{errors:#?}");
    assert!(errors[0].message.starts_with("TOML syntax"), "{errors:#?}");
}

#[test]
fn wrong_types_name_the_key() {
    let text = format!("{CYBERBIZ}rate_limit = {{ per_second = \"ten\" }}\n");
    let errors = parse_err(&text);
    let error = find(&errors, &["tenant \"cb\"", "rate_limit.per_second"]);
    assert_eq!(error.location, location_of(&text, "\"ten\""));
}

#[test]
fn literal_secret_is_accepted_with_a_warning() {
    let text = "[[tenant]]\nname = \"cb\"\nprovider = \"cyberbiz\"\ntoken = \"literal-token-value\"\n";
    let loaded = parse_ok(text);
    assert_eq!(loaded.warnings.len(), 1, "{:#?}", loaded.warnings);
    let warning = &loaded.warnings[0];
    assert!(warning.message.contains("tenant \"cb\", key `token`"), "{warning}");
    assert!(!warning.message.contains("literal-token-value"), "{warning}");
    assert_eq!(warning.location, "t.toml:4:9");
}

#[test]
fn file_secrets_are_trimmed_and_missing_files_are_errors() {
    let text = "[[tenant]]\nname = \"cb\"\nprovider = \"cyberbiz\"\ntoken = { file = \"/run/secrets/cb\" }\n";
    let mut env = MapEnv::default();
    env.files
        .insert(PathBuf::from("/run/secrets/cb"), "  file-token\n".to_owned());
    let loaded = validate(text, "t.toml", &env).expect("valid");
    let crate::config::ProviderConfig::Cyberbiz(cyberbiz) = &loaded.config.tenants[0].provider else {
        panic!("cyberbiz")
    };
    assert_eq!(cyberbiz.token.expose(), "file-token");
    let errors = validate(text, "t.toml", &MapEnv::default()).expect_err("no file").0;
    find(
        &errors,
        &[
            "tenant \"cb\", key `token`",
            "cannot read secret file `/run/secrets/cb`",
        ],
    );
}

#[test]
fn debug_output_never_contains_a_secret() {
    let text = format!(
        "{EXAMPLE}\n[[tenant]]\nname = \"with-headers\"\nprovider = \"cyberbiz\"\ntoken = {{ env = \"ACME_CYBERBIZ_TOKEN\" }}\nheaders = {{ \"x-api-key\" = {{ env = \"ACME_ERP_SECRET\" }} }}\n"
    );
    let loaded = parse_ok(&text);
    let printed = format!("{:?}", loaded.config);
    for (_, value) in EXAMPLE_SECRETS {
        assert!(!printed.contains(value), "secret leaked in {printed}");
    }
    assert!(printed.contains("***"));
}

#[test]
fn non_loopback_listener_needs_callers_or_allow_anonymous() {
    let text = "[server]\nlisten = \"0.0.0.0:8080\"\n";
    let errors = parse_err(text);
    assert_eq!(
        find(&errors, &["[server]", "listen", "not a loopback address"]).location,
        "t.toml:2:10"
    );
    parse_ok("[server]\nlisten = \"0.0.0.0:8080\"\nallow_anonymous = true\n");
    parse_ok("[server]\nlisten = \"0.0.0.0:8080\"\n[[caller]]\nname = \"a\"\nkey = { env = \"ORDERS_SERVICE_KEY\" }\n");
    let tenant = format!("{CYBERBIZ}listen = \"10.0.0.5:8081\"\n");
    find(
        &parse_err(&tenant),
        &["tenant \"cb\", key `listen`", "not a loopback address"],
    );
}

#[test]
fn listener_addresses_are_unique_except_port_zero() {
    let text = format!("[server]\nadmin_listen = \"127.0.0.1:8080\"\n{CYBERBIZ}listen = \"127.0.0.1:8080\"\n");
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    find(&errors, &["admin_listen", "already used by server.listen"]);
    find(&errors, &["tenant \"cb\", key `listen`", "already used"]);
    parse_ok(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{CYBERBIZ}listen = \"127.0.0.1:0\"\n"
    ));
    assert!(
        parse_ok("[server]\nadmin_listen = \"off\"\n")
            .config
            .server
            .admin_listen
            .is_none()
    );
}

#[test]
fn tenant_names_are_checked_and_unique() {
    let text = format!("{CYBERBIZ}{CYBERBIZ}[[tenant]]\nname = \"Bad Name\"\nprovider = \"cyberbiz\"\ntoken = \"x\"\n");
    let errors = parse_err(&text);
    find(&errors, &["duplicate tenant name"]);
    find(&errors, &["`Bad Name` must match"]);
}

#[test]
fn callers_are_validated() {
    let text = format!(
        "{CYBERBIZ}[[caller]]\nname = \"a\"\nkey = {{ env = \"ORDERS_SERVICE_KEY\" }}\ntenants = [\"*\"]\nmethods = [\"get\", \"post\"]\n\
         [[caller]]\nname = \"b\"\nkey = {{ env = \"ORDERS_SERVICE_KEY\" }}\nmethods = [\"G E T\"]\n\
         [[caller]]\nname = \"a\"\nkey = {{ env = \"ACME_ERP_SECRET\" }}\ntenants = [\"cb\", \"*\"]\n"
    );
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    find(&errors, &["caller \"b\"", "same key as caller \"a\""]);
    find(&errors, &["caller \"b\"", "methods[0]", "not an HTTP method"]);
    find(&errors, &["duplicate caller name"]);
    find(&errors, &["tenants[1]", "must be alone"]);
    let ok = parse_ok(&format!(
        "{CYBERBIZ}[[caller]]\nname = \"a\"\nkey = {{ env = \"ORDERS_SERVICE_KEY\" }}\ntenants = [\"cb\"]\nmethods = [\"get\"]\n"
    ));
    let caller = &ok.config.callers[0];
    assert_eq!(caller.methods.as_deref(), Some(&[http::Method::GET][..]));
    assert_eq!(caller.tenants.as_ref().map(|t| t[0].as_str()), Some("cb"));
}

#[test]
fn store_redis_needs_a_url() {
    find(
        &parse_err("[store]\nkind = \"redis\"\n"),
        &["[store]", "`url` is required"],
    );
    find(
        &parse_err("[store]\nurl = \"redis://x\"\n"),
        &["key `url`", "only used with kind = \"redis\""],
    );
    // A well-formed Redis store is accepted with its defaults; a malformed URL is refused without
    // echoing it (it may carry a password).
    let mut env = example_env();
    env.vars.insert("REDIS".into(), "redis://:pw@redis:6379".into());
    env.vars.insert("BAD".into(), "redis://:pw@redis:notaport".into());
    let ok = validate("[store]\nkind = \"redis\"\nurl = { env = \"REDIS\" }\n", "t.toml", &env).expect("valid");
    let crate::config::StoreConfig::Redis(redis) = &ok.config.store else {
        panic!("a redis store: {:?}", ok.config.store);
    };
    assert_eq!(redis.key_prefix, "tokenbroker");
    assert_eq!(redis.url.expose(), "redis://:pw@redis:6379");
    let bad = "[store]\nkind = \"redis\"\nurl = { env = \"BAD\" }\nkey_prefix = \"a{b}\"\n";
    let text = validate(bad, "t.toml", &env).expect_err("refused").to_string();
    assert!(
        text.contains("t.toml:3") && text.contains("not a valid Redis URL"),
        "{text}"
    );
    assert!(text.contains("t.toml:4") && text.contains("key_prefix"), "{text}");
    assert!(!text.contains(":pw@"), "{text}");
    find(
        &parse_err("[store]\nkey_prefix = \"x\"\n"),
        &["key `key_prefix`", "only used with kind = \"redis\""],
    );
}

#[test]
fn store_seal_secret_is_a_redis_secret() {
    let mut env = example_env();
    env.vars.insert("REDIS".into(), "redis://redis:6379".into());
    env.vars.insert("SEAL".into(), "deployment-seal".into());
    env.vars.insert("BLANK".into(), " ".into());
    let redis = "[store]\nkind = \"redis\"\nurl = { env = \"REDIS\" }\n";
    let ok = validate(&format!("{redis}seal_secret = {{ env = \"SEAL\" }}\n"), "t.toml", &env).expect("valid");
    let crate::config::StoreConfig::Redis(store) = &ok.config.store else {
        panic!("a redis store: {:?}", ok.config.store);
    };
    assert_eq!(
        store.seal_secret.as_ref().map(|s| s.expose().as_str()),
        Some("deployment-seal")
    );
    let blank = validate(&format!("{redis}seal_secret = {{ env = \"BLANK\" }}\n"), "t.toml", &env);
    let text = blank.expect_err("refused").to_string();
    assert!(
        text.contains("t.toml:4") && text.contains("must not be empty"),
        "{text}"
    );
    find(
        &parse_err("[store]\nseal_secret = { env = \"SEAL\" }\n"),
        &["key `seal_secret`", "only used with kind = \"redis\""],
    );
}

#[test]
fn unknown_section_is_an_error() {
    find(
        &parse_err("[servr]\nlisten = \"127.0.0.1:1\"\n"),
        &["unknown section `servr`"],
    );
}

#[test]
fn tenant_and_caller_must_be_arrays_of_tables() {
    let errors = parse_err("[tenant]\nname = \"x\"\n[caller]\nname = \"y\"\n");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(find(&errors, &["write `[[tenant]]`"]).location, "t.toml:1:1");
    find(&errors, &["write `[[caller]]`"]);
}

/// `check --no-secrets`: no variable or file is read, the checks of secret values are skipped for
/// the placeholders (a PEM key, a Redis URL, TLS client files), every reference is listed where it
/// is written, and literals are still checked as usual.
#[test]
fn without_secrets_every_reference_is_listed_and_only_values_go_unchecked() {
    let text = "[store]\nkind = \"redis\"\nurl = { env = \"REDIS_URL\" }\n\n\
        [[tenant]]\nname = \"jwt\"\nprovider = \"oauth2\"\nupstream = \"https://api.example.com\"\n\
        token_url = \"https://login.example.com/token\"\nclient_id = \"cid\"\nauth_method = \"private_key_jwt\"\n\
        private_key = { file = \"/run/secrets/jwt.pem\" }\n\n\
        [[tenant]]\nname = \"mtls\"\nprovider = \"oauth2\"\nupstream = \"https://api.example.com\"\n\
        token_url = \"https://login.example.com/token\"\nclient_id = \"cid\"\nauth_method = \"tls_client_auth\"\n\
        client_cert = \"/run/secrets/c.pem\"\nclient_key = \"/run/secrets/k.pem\"\n";
    let loaded =
        validate(text, "t.toml", &crate::schema::NoSecrets).unwrap_or_else(|e| panic!("valid without secrets:\n{e}"));
    let listed: Vec<String> = loaded.secrets_not_read.iter().map(ToString::to_string).collect();
    for (line, needle) in [
        (3, "[store], key `url`: not read: environment variable `REDIS_URL`"),
        (
            12,
            "tenant \"jwt\", key `private_key`: not read: file `/run/secrets/jwt.pem`",
        ),
        (
            21,
            "tenant \"mtls\", key `client_cert`: not read: file `/run/secrets/c.pem`",
        ),
        (
            22,
            "tenant \"mtls\", key `client_key`: not read: file `/run/secrets/k.pem`",
        ),
    ] {
        assert!(
            listed
                .iter()
                .any(|l| l.starts_with(&format!("t.toml:{line}:")) && l.ends_with(needle)),
            "{needle}:\n{listed:#?}"
        );
    }
    assert_eq!(listed.len(), 4, "{listed:#?}");
    // Reading them for real fails on every one (nothing is set, no file exists).
    let errors = validate(text, "t.toml", &MapEnv::default()).expect_err("secrets are missing");
    assert_eq!(errors.0.len(), 4, "{errors}");
    // A literal is a value the file holds, so it is still checked.
    let literal = text.replace("{ env = \"REDIS_URL\" }", "\"http://not-redis\"");
    let errors = validate(&literal, "t.toml", &crate::schema::NoSecrets).expect_err("a literal is checked");
    assert!(errors.to_string().contains("redis://"), "{errors}");
}

#[test]
fn body_timeout_and_replay_buffer_budget_default_and_are_bounded_where_written() {
    let defaults = parse_ok(&format!("[server]\n{CYBERBIZ}")).config.server;
    assert_eq!(defaults.body_timeout, std::time::Duration::from_secs(60));
    assert_eq!(defaults.replay_buffer_budget, 64 << 20, "64 MiB at most by default");
    let text = format!("[server]\nbody_timeout = \"2h\"\nreplay_buffer_budget = \"32GiB\"\n{CYBERBIZ}");
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let timeout = find(&errors, &["[server]", "body_timeout", "at most 1h"]);
    assert_eq!(timeout.location, location_of(&text, "\"2h\""));
    let budget = find(&errors, &["[server]", "replay_buffer_budget", "at most 16GiB"]);
    assert_eq!(budget.location, location_of(&text, "\"32GiB\""));
    let zero = parse_err(&format!("[server]\nbody_timeout = \"0s\"\n{CYBERBIZ}"));
    find(&zero, &["body_timeout", "longer than 0s"]);
}
