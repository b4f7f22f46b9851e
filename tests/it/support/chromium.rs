//! A real headless Chromium for the status page's browser test: it loads a page from loopback and
//! hands back the DOM it built, or a screenshot, as a person's browser would render it.
//!
//! `chromium` is looked up on PATH. When it is missing, the first test that needs it installs
//! Debian's `chromium` package (only as root with apt-get, each step bounded), once per test
//! process; otherwise the test fails saying what to install. It never passes by skipping.
//!
//! Each run is bounded ([`RUN_LIMIT`], then killed), uses a fresh profile directory, opens no
//! debugging port (so it listens on nothing) and has its background services turned off, so its
//! only traffic is the page it is given.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::redis::{effective_uid, find_on_path};

/// What a test that needs the browser says when it cannot have one.
pub const MISSING: &str = "chromium is required by the status page's browser test: apt-get install -y chromium";
/// One page load takes about a second; the bound only stops a wedged browser.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// `apt-get update` and `apt-get install`, each; the bound only stops a hung mirror.
const INSTALL_LIMIT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(50);

/// The DOM Chromium built from `url` (`--dump-dom`), as HTML text.
pub fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    run(profile.path(), &["--dump-dom", url])
}

/// Renders `url` in a `width` x `height` window and saves it as a PNG at `to`.
pub fn screenshot(url: &str, to: &Path, (width, height): (u32, u32)) {
    let profile = tempfile::tempdir().expect("a profile directory");
    let shot = format!("--screenshot={}", to.display());
    let size = format!("--window-size={width},{height}");
    run(profile.path(), &[&shot, &size, "--hide-scrollbars", url]);
    assert!(to.exists(), "chromium wrote no screenshot at {}", to.display());
}

/// Runs Chromium headless with `args` and a fresh profile, killed after [`RUN_LIMIT`]; what it
/// printed on stdout. Its output goes to files in the profile, so no pipe can fill and stall it.
fn run(profile: &Path, args: &[&str]) -> String {
    let (out, err) = (profile.join("stdout"), profile.join("stderr"));
    let file = |path: &Path| std::fs::File::create(path).expect("an output file");
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .args([
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(file(&out))
        .stderr(file(&err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run chromium: {e}"));
    let read = |path: &Path| String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    for _ in 0..RUN_LIMIT.as_millis() / POLL.as_millis() {
        if let Some(status) = child.try_wait().expect("chromium's status") {
            assert!(status.success(), "chromium {args:?} failed ({status}):\n{}", read(&err));
            return read(&out);
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("chromium {args:?} did not finish within {RUN_LIMIT:?}; killed");
}

/// The `chromium` to run: from PATH, else installed once per test process when it can be.
fn chromium() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(found) = find_on_path("chromium", &path) {
            return Ok(found);
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if effective_uid(&status) != Some(0) || find_on_path("apt-get", &path).is_none() {
            return Err(MISSING.to_owned());
        }
        apt_install().map_err(|why| format!("{MISSING} (installing it failed: {why})"))?;
        find_on_path("chromium", &path).ok_or_else(|| format!("{MISSING} (the install left none on PATH)"))
    });
    match found {
        Ok(program) => program.clone(),
        Err(why) => panic!("{why}"),
    }
}

/// `apt-get update`, then `apt-get install -y chromium` from Debian's packages.
fn apt_install() -> Result<(), String> {
    bounded_install(Command::new("apt-get").args(["update", "-qq"]))?;
    bounded_install(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Runs `command` for at most [`INSTALL_LIMIT`]; its output goes in the error.
fn bounded_install(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    eprintln!("chromium is not on PATH; running {shown}");
    let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    for _ in 0..INSTALL_LIMIT.as_millis() / POLL.as_millis() {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if status.success() {
                return Ok(());
            }
            let said = std::fs::read_to_string(log.path()).unwrap_or_default();
            return Err(format!("{shown}: {status}\n{said}"));
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("{shown} did not finish within {INSTALL_LIMIT:?}"))
}
