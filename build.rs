//! Build script: records the source revision the binary is built from, for `--version`, the
//! startup log line and the `tokenbroker_build_info` metric.
//!
//! The revision is `TOKENBROKER_REVISION` when set (container builds, whose context has no
//! `.git`, pass it as a build argument), else git's short commit id of `HEAD`, else `unknown`.
//! It never fails a build: a source tarball without git still compiles.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TOKENBROKER_REVISION");
    let revision = std::env::var("TOKENBROKER_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TOKENBROKER_REVISION={}", revision.trim());
}

/// `HEAD`'s short commit id, asking cargo to run this again when `HEAD` moves (a checkout
/// rewrites `HEAD`; a commit rewrites the branch's ref, or `packed-refs` after a `git gc`).
fn git_revision() -> Option<String> {
    let revision = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    Some(revision)
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
