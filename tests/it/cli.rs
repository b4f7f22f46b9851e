//! The binary's command line: `check` on the shipped example and on a broken file, `--version`.

use std::process::Command;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");

fn tokenbroker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
}

/// Every `{ env = "NAME" }` in the example, given a dummy value.
fn example_env() -> Vec<(String, String)> {
    let example = std::fs::read_to_string(EXAMPLE).expect("config.example.toml exists");
    let mut names: Vec<String> = example
        .split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| (name, "dummy-secret-value".to_owned()))
        .collect()
}

#[test]
fn check_accepts_the_shipped_example() {
    let output = tokenbroker()
        .args(["check", "--config", EXAMPLE])
        .envs(example_env())
        .output()
        .expect("run tokenbroker check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "check failed:\n{stderr}");
    assert!(!stderr.contains("dummy-secret-value"));
}

#[test]
fn check_rejects_a_typo_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[tenant]]\nname = \"acme\"\nprovider = \"static\"\nupstream = \"http://127.0.0.1:9\"\nvalue = \"Bearer x\"\nrefresh_befor = \"5m\"\n",
    )
    .expect("write config");
    let output = tokenbroker()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run tokenbroker check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken.toml:9:"),
        "names the line of the typo:\n{stderr}"
    );
    assert!(stderr.contains("refresh_befor"), "names the key:\n{stderr}");
}

#[test]
fn run_with_a_bad_config_exits_78_without_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[tenant]]\nname = \"Bad Name\"\n").expect("write config");
    let output = tokenbroker()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run tokenbroker");
    assert_eq!(output.status.code(), Some(78));
}

#[test]
fn version_and_help() {
    let output = tokenbroker().arg("--version").output().expect("run");
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    // `tokenbroker 0.1.0 (<revision>)`: the source revision is git's short id of HEAD when the
    // build had git, as it does here.
    let revision = version
        .strip_prefix(concat!("tokenbroker ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("version and revision: {version}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs");
    assert_eq!(revision, String::from_utf8_lossy(&head.stdout).trim(), "{version}");
    let output = tokenbroker().arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in ["run", "check", "demo", "Exit codes", "78", "TOKENBROKER_WORKER_THREADS"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

/// `check --no-secrets` reads no secret: the shipped example passes with none of its variables
/// set, names each reference it skipped, and still reports every other error.
#[test]
fn check_without_secrets_validates_everything_else() {
    let mut command = tokenbroker();
    command.args(["check", "--no-secrets", "--config", EXAMPLE]);
    for (name, _) in example_env() {
        command.env_remove(name);
    }
    let output = command.output().expect("run tokenbroker check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Every variable an active (uncommented) line of the example refers to.
    let example = std::fs::read_to_string(EXAMPLE).expect("config.example.toml exists");
    let active = example.lines().filter(|line| !line.trim_start().starts_with('#'));
    let names: Vec<&str> = active
        .flat_map(|line| line.split("env = \"").skip(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        assert!(
            stderr.contains(&format!("not read: environment variable `{name}`")),
            "{name}:\n{stderr}"
        );
    }
    assert!(stderr.contains("configuration is valid (secrets not read)"), "{stderr}");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("files.toml");
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[[tenant]]\nname = \"acme\"\nprovider = \"static\"\n\
                upstream = \"http://127.0.0.1:9\"\nvalue = { file = \"/run/secrets/absent/acme\" }\n";
    std::fs::write(&path, text).expect("write config");
    let without = tokenbroker()
        .args(["check", "--no-secrets", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(without.status.success(), "{stderr}");
    assert!(
        stderr.contains("files.toml:8:9: tenant \"acme\", key `value`: not read: file `/run/secrets/absent/acme`"),
        "{stderr}"
    );
    let with = tokenbroker()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(
        with.status.code(),
        Some(1),
        "without the flag the file is read, and missing"
    );

    std::fs::write(&path, text.replace("provider = \"static\"", "provider = \"statik\"")).expect("write config");
    let broken = tokenbroker()
        .args(["check", "--no-secrets", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(broken.status.code(), Some(1), "other errors are still errors");
    assert!(String::from_utf8_lossy(&broken.stderr).contains("statik"));
}

#[test]
fn the_readme_configuration_example_is_valid() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let block = readme
        .split("A minimal file:\n\n```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows a minimal TOML file");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readme.toml");
    std::fs::write(&path, block).expect("write config");
    let output = tokenbroker()
        .args(["check", "--config"])
        .arg(&path)
        .envs(
            [
                "ACME_IMS_SECRET",
                "ACME_IMS_SECRET_NEXT",
                "ACME_SHOPLINE_APP_SECRET",
                "ACME_SHOPLINE_CODE",
            ]
            .map(|name| (name, "dummy-secret-value")),
        )
        .output()
        .expect("run tokenbroker check");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn check_judges_a_redis_store_url_by_shape_without_connecting_or_echoing_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.toml");
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\nkind = \"redis\"\nurl = { env = \"TB_REDIS\" }\n";
    std::fs::write(&path, config).expect("write config");
    // Nothing listens on port 9: a check that connected would fail or hang.
    let check = |url: &str| {
        tokenbroker()
            .args(["check", "--config"])
            .arg(&path)
            .env("TB_REDIS", url)
            .output()
            .expect("run tokenbroker check")
    };
    let started = tokio::time::Instant::now();
    let good = check("redis://:hunter2-pw@127.0.0.1:9/0");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "no connection attempt"
    );
    let bad = check("redis://:hunter2-pw@127.0.0.1:notaport");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("store.toml:6:") && stderr.contains("not a valid Redis URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2-pw"), "{stderr}");
}

/// `check --print` shows the effective configuration on stdout (like `nginx -T`): defaults filled
/// in, every secret masked, and the printed text checks as valid and prints as itself again.
#[test]
fn check_prints_the_effective_configuration_which_reads_back() {
    let output = tokenbroker()
        .args(["check", "--print", "--config", EXAMPLE])
        .envs(example_env())
        .output()
        .expect("run tokenbroker check --print");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains("dummy-secret-value"), "{stdout}");
    assert!(stdout.contains("client_secrets = [\"***\"]"), "{stdout}");
    // Defaults the example leaves out, now spelled out.
    for filled in [
        "shutdown_delay = \"0s\"",
        "body_timeout = \"1m\"",
        "min_token_age = \"30s\"",
    ] {
        assert!(stdout.contains(filled), "{filled}:\n{stdout}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, stdout.as_bytes()).expect("write");
    let again = tokenbroker()
        .args(["check", "--no-secrets", "--print", "--config"])
        .arg(&printed)
        .output()
        .expect("run");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout, "a fixed point");
}
