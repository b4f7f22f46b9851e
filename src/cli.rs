//! The command line (the README's "Command line"): `run` (the default), `check` and `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `--version`: the release and the source revision it was built from (see `build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TOKENBROKER_REVISION"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "tokenbroker",
    version = VERSION,
    about = "A reverse proxy that holds commerce-API credentials and rotates their tokens",
    after_help = "Exit codes: 0 success; 1 `check` found errors, or a listener could not be bound; \
                  2 bad command line; 78 (EX_CONFIG) `run` got a configuration it cannot serve.\n\
                  Environment: TOKENBROKER_CONFIG (the --config file), RUST_LOG (log level, default info), \
                  TOKENBROKER_WORKER_THREADS (runtime threads: 1 runs everything on one thread, N > 1 \
                  gives N workers; default one per core)."
)]
pub struct Cli {
    /// Configuration file (TOML). Also read from TOKENBROKER_CONFIG.
    #[arg(long, global = true, env = "TOKENBROKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr; default pretty on a terminal, json otherwise. Level from RUST_LOG.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve until SIGTERM/SIGINT, then drain (the default command).
    Run,
    /// Parse and validate the configuration; exit 0 when valid, 1 with every error.
    Check {
        /// Read no secret: each `{ env }` / `{ file }` reference (and TLS client key file) is
        /// checked for shape and listed, not read. For CI and GitOps pipelines without secrets.
        #[arg(long)]
        no_secrets: bool,
        /// Print the effective configuration on stdout (defaults and presets filled in, secrets
        /// shown as "***"), like `nginx -T`.
        #[arg(long)]
        print: bool,
    },
    /// Start the built-in sandbox providers and a proxy wired to them, print curl commands.
    Demo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}
