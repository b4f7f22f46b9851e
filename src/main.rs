//! Thin entry point: parse the command line, set up logging, load configuration, run, and map
//! failures to exit codes (78 = EX_CONFIG for a configuration the proxy cannot serve).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use tokenbroker::app::{App, Listeners};
use tokenbroker::cli::{Cli, Command};
use tokenbroker::config::{self, ConfigErrors, Loaded};
use tokenbroker::{signals, telemetry};

/// sysexits.h EX_CONFIG.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = runtime();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(cli.config.as_deref()),
        Command::Run => runtime.block_on(run(cli.config.as_deref())),
        Command::Demo => runtime.block_on(tokenbroker::demo::run()),
    }
}

/// `TOKENBROKER_WORKER_THREADS=1` serves everything from one thread on a current-thread runtime
/// (like nginx's `worker_processes 1`: no work-stealing queues, no cross-thread wake-ups); `N > 1`
/// gives N workers. Unset: tokio's default (`TOKIO_WORKER_THREADS`, else one worker per core).
fn runtime() -> tokio::runtime::Runtime {
    let workers = std::env::var("TOKENBROKER_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0);
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().expect("the tokio runtime starts")
}

fn config_path(path: Option<&Path>) -> Result<PathBuf, ConfigErrors> {
    path.map(Path::to_path_buf).ok_or_else(|| {
        ConfigErrors(vec![config::ConfigError {
            location: "command line".into(),
            message: "no configuration file: pass --config FILE or set TOKENBROKER_CONFIG".into(),
        }])
    })
}

/// The validated configuration and the text it came from (the file watcher's baseline).
fn load(path: Option<&Path>) -> Result<(Loaded, String), ConfigErrors> {
    let (loaded, text) = config::load_with_text(&config_path(path)?)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    Ok((loaded, text))
}

fn check(path: Option<&Path>) -> ExitCode {
    match load(path) {
        Ok((loaded, _)) => {
            eprintln!("configuration is valid: {} tenant(s)", loaded.config.tenants.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: Option<&Path>) -> ExitCode {
    let path = match config_path(path) {
        Ok(path) => path,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (loaded, text) = match load(Some(&path)) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match Listeners::bind(&loaded.config).await {
        Ok(listeners) => listeners,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let app = match App::build(&loaded.config, prometheus_client::registry::Registry::default()) {
        Ok(app) => app,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listen = listeners
        .main
        .local_addr()
        .map_or_else(|_| loaded.config.server.listen.to_string(), |a| a.to_string());
    // The bound admin address too: with port 0 in the config, the log is the only place it shows.
    let admin = listeners
        .admin
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    tracing::info!(
        listen,
        admin,
        tenants = loaded.config.tenants.len(),
        "tokenbroker serving"
    );
    app.with_config_path(path, &text)
        .run(listeners, signals::terminate())
        .await;
    ExitCode::SUCCESS
}
