//! Validation tests of `[store]`'s topology keys: `mode`, `sentinels`, `master_name`, `ca_file`,
//! each refused at its line when the store could not honour it.

use std::io::Write;

use super::tests::{example_env, find};
use super::validate;
use crate::config::{ConfigError, RedisConfig, RedisMode, StoreConfig};

/// `[store]` on a Redis at `url` (given through the environment), plus `more`.
fn store(url: &str, more: &str) -> Result<RedisConfig, Vec<ConfigError>> {
    let mut env = example_env();
    env.vars.insert("REDIS".into(), url.into());
    let text = format!("[store]\nkind = \"redis\"\nurl = {{ env = \"REDIS\" }}\n{more}");
    match validate(&text, "t.toml", &env) {
        Ok(loaded) => match loaded.config.store {
            StoreConfig::Redis(redis) => Ok(redis),
            other => panic!("a redis store: {other:?}"),
        },
        Err(errors) => Err(errors.0),
    }
}

fn refused(url: &str, more: &str) -> Vec<ConfigError> {
    store(url, more).expect_err("refused")
}

#[test]
fn each_mode_is_accepted_with_its_keys() {
    let plain = store("redis://h:6379", "").expect("valid");
    assert_eq!((plain.mode, plain.ca_file), (RedisMode::Standalone, None));
    let cluster = store("redis://h:6379", "mode = \"cluster\"\n").expect("valid");
    assert_eq!(cluster.mode, RedisMode::Cluster);
    let sentinel = store(
        "redis://:pw@ignored/1",
        "mode = \"sentinel\"\nsentinels = [\"10.0.0.1:26379\", \"s2:26379\"]\nmaster_name = \"tb\"\n",
    )
    .expect("valid");
    assert_eq!(
        sentinel.mode,
        RedisMode::Sentinel {
            sentinels: vec!["10.0.0.1:26379".into(), "s2:26379".into()],
            master_name: "tb".into(),
        }
    );
}

#[test]
fn inconsistent_topologies_are_refused_at_their_line() {
    let at = |errors: &[ConfigError], line: usize, fragments: &[&str]| {
        let error = find(errors, fragments);
        assert!(error.location.starts_with(&format!("t.toml:{line}:")), "{error:?}");
    };
    at(&refused("redis://h", "mode = \"ring\"\n"), 4, &["unknown mode `ring`"]);
    at(
        &refused("redis://h", "sentinels = [\"a:1\"]\nmaster_name = \"m\"\n"),
        4,
        &["key `sentinels`", "only used with mode = \"sentinel\""],
    );
    let errors = refused("redis://h", "mode = \"sentinel\"\n");
    find(&errors, &["`sentinels` is required"]);
    find(&errors, &["`master_name` is required"]);
    let bad_entry = "mode = \"sentinel\"\nmaster_name = \"m\"\nsentinels = [\"redis://a:1\"]\n";
    at(
        &refused("redis://h", bad_entry),
        6,
        &["key `sentinels`", "is not host:port"],
    );
    at(
        &refused(
            "redis://h",
            "mode = \"sentinel\"\nsentinels = []\nmaster_name = \"a b\"\n",
        ),
        6,
        &["key `master_name`", "without spaces"],
    );
    // A Cluster has one database; the URL is named, never shown (it may hold a password).
    let errors = refused("redis://:hunter2@h:6379/3", "mode = \"cluster\"\n");
    at(&errors, 3, &["key `url`", "database 3", "only database 0"]);
    assert!(!format!("{errors:?}").contains("hunter2"));
    // Keys of the shared store are refused with the in-process one.
    let memory = super::tests::parse_err("[store]\nmode = \"cluster\"\nca_file = \"/x\"\n");
    find(&memory, &["key `mode`", "only used with kind = \"redis\""]);
    find(&memory, &["key `ca_file`", "only used with kind = \"redis\""]);
}

#[test]
fn ca_file_must_hold_certificates_and_needs_rediss() {
    let mut pem = tempfile::NamedTempFile::new().expect("temp file");
    let path = pem.path().display().to_string();
    let line = format!("ca_file = \"{path}\"\n");
    pem.write_all(b"not a certificate\n").expect("write");
    find(
        &refused("rediss://h", &line),
        &["key `ca_file`", "holds no certificate"],
    );
    let ca = include_str!("../../auth/http/testdata/ca.pem");
    std::fs::write(pem.path(), ca).expect("write");
    let ok = store("rediss://h", &line).expect("valid");
    assert_eq!(ok.ca_file.as_deref(), Some(pem.path()));
    find(
        &refused("redis://h", &line),
        &["key `ca_file`", "only used with a rediss:// url"],
    );
    find(
        &refused("rediss://h", "ca_file = \"/nonexistent/ca.pem\"\n"),
        &["key `ca_file`", "cannot open"],
    );
}

#[test]
fn check_print_shows_the_topology_and_reads_back_the_same() {
    let mut env = example_env();
    env.vars.insert("REDIS".into(), "redis://:hunter2@ignored:6379".into());
    let text = "[store]\nkind = \"redis\"\nurl = { env = \"REDIS\" }\nmode = \"sentinel\"\n\
                sentinels = [\"s1:26379\", \"s2:26379\"]\nmaster_name = \"tb\"\n";
    let loaded = validate(text, "t.toml", &env).expect("valid");
    let printed = crate::config::effective::render(&loaded.config);
    for line in [
        "mode = \"sentinel\"",
        "sentinels = [\"s1:26379\", \"s2:26379\"]",
        "master_name = \"tb\"",
    ] {
        assert!(printed.contains(line), "{line} in {printed}");
    }
    assert!(!printed.contains("hunter2"), "{printed}");
    let cluster = store("redis://h:6379", "mode = \"cluster\"\n").expect("valid");
    let printed = crate::config::effective::render(&crate::config::RuntimeConfig {
        store: StoreConfig::Redis(cluster),
        ..loaded.config
    });
    assert!(printed.contains("mode = \"cluster\""), "{printed}");
}
