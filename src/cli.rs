//! The command line (the README's "Command line"): `run` (the default), `check` and `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tokenbroker",
    version,
    about = "A reverse proxy that holds commerce-API credentials and rotates their tokens"
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
    Check,
    /// Start the built-in sandbox providers and a proxy wired to them, print curl commands.
    Demo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}
