//! `tokenbroker demo`: sandbox providers plus a proxy wired to them. Filled in with the sandbox.

use std::process::ExitCode;

/// Runs the demo until Ctrl-C.
pub async fn run() -> ExitCode {
    eprintln!("the demo needs the sandbox providers, which are not built yet");
    ExitCode::FAILURE
}
