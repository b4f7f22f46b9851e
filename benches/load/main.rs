//! Helper binary of the load benchmark (`bash benches/run.sh` drives it; see benches/README.md).
//!
//! It exists so that every case of the benchmark talks to the *same* fast upstream and the same
//! token endpoint, started from the crate's own sandbox, without any extra dependency:
//! - `serve`: a minimal hyper upstream (fixed ~300-byte JSON, keep-alive), the IMS sandbox for the
//!   token endpoint (optionally behind a delaying front, so "cold" requests really wait), and a
//!   control endpoint reporting the sandbox's token-call counter. Prints its addresses as one JSON
//!   line on stdout and serves until killed.
//! - `cold`: fires N concurrent requests spread over T tenants through the proxy (HTTP/2 prior
//!   knowledge, one connection per tenant, so 10,000 requests fit in the file-descriptor limit)
//!   and prints the status counts as JSON.
//! - `floor`: the least a proxy on tokenbroker's stack does for the benchmark's request (the
//!   yardstick of benches/README.md, "The stack's floor").
//!
//! Declared as a `[[bench]]` with `harness = false` (not an example) so it lives next to the
//! driver script under `benches/`, and is built in the release profile with the binary it measures.

mod cold;
mod floor;
mod upstream;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "load", about = "tokenbroker load-benchmark helper (run benches/run.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the upstream, the IMS sandbox and the control endpoint; print their addresses.
    Serve {
        /// Delay every token call by this many milliseconds (0: no delaying front).
        #[arg(long, default_value_t = 0)]
        token_delay_ms: u64,
    },
    /// Send concurrent first requests through the proxy and count the answers.
    Cold(cold::ColdArgs),
    /// Proxy the benchmark's request with nothing but hyper's connections (one thread).
    Floor(floor::FloorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        // `cargo bench --bench load` lands here: the benchmark is the driver script.
        None => Err(BenchError::Usage),
        Some(Command::Serve { token_delay_ms }) => current_thread().and_then(|rt| rt.block_on(serve(token_delay_ms))),
        Some(Command::Cold(args)) => multi_thread().and_then(|rt| rt.block_on(cold::run(args))),
        Some(Command::Floor(args)) => current_thread().and_then(|rt| rt.block_on(floor::run(args))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "load: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Why the helper stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    #[error("this is the helper of the load benchmark; run `bash benches/run.sh`")]
    Usage,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("request failed: {0}")]
    Http(String),
}

/// The servers share one core with the proxy under test: a single-threaded runtime is the
/// cheapest way to serve there.
fn current_thread() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn multi_thread() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn serve(token_delay_ms: u64) -> Result<(), BenchError> {
    let servers = upstream::Servers::start(token_delay_ms).await?;
    let line = serde_json::json!({
        "upstream": servers.upstream_addr.to_string(),
        "token_url": servers.token_url,
        "control": servers.control_addr.to_string(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    drop(stdout);
    tokenbroker::signals::terminate().await;
    Ok(())
}
