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
        Command::Check { no_secrets, print } => check(cli.config.as_deref(), no_secrets, print),
        Command::Run => runtime.block_on(traced(run(cli.config.as_deref()))),
        Command::Demo => runtime.block_on(traced(tokenbroker::demo::run())),
    }
}

/// Runs `serve` with traces exported as the `OTEL_*` variables ask (none unless an endpoint is
/// named), flushing them at the end. Variables this build cannot honour stop it with EX_CONFIG.
async fn traced(serve: impl Future<Output = ExitCode>) -> ExitCode {
    let traces = match telemetry::traces::init() {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if traces.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    let code = serve.await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    code
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

fn check(path: Option<&Path>, no_secrets: bool, print: bool) -> ExitCode {
    let loaded = if no_secrets {
        config_path(path).and_then(|path| config::load_with(&path, &config::NoSecrets))
    } else {
        load(path).map(|(loaded, _)| loaded)
    };
    match loaded {
        Ok(loaded) => {
            if no_secrets {
                for warning in &loaded.warnings {
                    eprintln!("warning: {warning}");
                }
                for reference in &loaded.secrets_not_read {
                    eprintln!("secret: {reference}");
                }
            }
            let secrets = if no_secrets { " (secrets not read)" } else { "" };
            eprintln!(
                "configuration is valid{secrets}: {} tenant(s)",
                loaded.config.tenants.len()
            );
            if print {
                print!("{}", config::effective::render(&loaded.config));
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as nginx and Envoy advise: the usual soft
/// default (1024) is far below what `max_connections` may need, and raising the soft limit up to
/// the hard one needs no privilege. Never fatal: the proxy serves with the limit it has.
fn raise_open_file_limit(max_connections: usize) {
    let before = match rlimit::Resource::NOFILE.get() {
        Ok((soft, _hard)) => soft,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit; leaving it as it is");
            return;
        }
    };
    // An unlimited hard limit cannot be the soft one on Linux (the ceiling is `fs.nr_open`,
    // 2^20 by default), so that is tried next.
    let raised = rlimit::increase_nofile_limit(u64::MAX).or_else(|_| rlimit::increase_nofile_limit(1 << 20));
    let now = match raised {
        Ok(now) if now > before => {
            tracing::info!(before, now, "raised the soft open-file limit to the hard limit");
            now
        }
        Ok(now) => {
            tracing::debug!(now, "the soft open-file limit is already as high as it can go");
            now
        }
        Err(error) => {
            tracing::warn!(%error, before, "cannot raise the soft open-file limit; keeping it");
            before
        }
    };
    if now <= u64::try_from(max_connections).unwrap_or(u64::MAX) {
        tracing::warn!(
            open_file_limit = now,
            max_connections,
            "the open-file limit is not above server.max_connections: descriptors run out before the cap"
        );
    }
}

/// The one line that says the process serves, with every bound address: with port 0 in the
/// configuration, the log is the only place they show (tests read them from it).
fn log_serving(listeners: &Listeners, config: &tokenbroker::config::RuntimeConfig) {
    let bound = |l: Option<&tokio::net::TcpListener>| l.and_then(|l| l.local_addr().ok()).map(|a| a.to_string());
    let listen = bound(Some(&listeners.main)).unwrap_or_else(|| config.server.listen.to_string());
    tracing::info!(
        listen,
        admin = bound(listeners.admin.as_ref()),
        webhooks = bound(listeners.webhooks.as_ref()),
        tenants = config.tenants.len(),
        version = env!("CARGO_PKG_VERSION"),
        revision = env!("TOKENBROKER_REVISION"),
        "tokenbroker serving"
    );
}

async fn run(path: Option<&Path>) -> ExitCode {
    // First: a SIGHUP before its handler exists would end the process.
    let mut signals = signals::Signals::install();
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
    raise_open_file_limit(loaded.config.server.max_connections);
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
    log_serving(&listeners, &loaded.config);
    let hangups = signals.take_hangups();
    app.with_config_path(path, &text, &loaded.secret_files)
        .with_hangups(hangups)
        .run(listeners, signals.terminated())
        .await;
    ExitCode::SUCCESS
}
