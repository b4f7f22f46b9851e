//! Several replicas of one deployment: real binaries started together on one config that shares
//! a Redis store, as a sidecar per pod would be.

use std::time::Duration;

use http::StatusCode;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Binary, get};

/// The `[store]` section every replica reads; the URL (it may hold a password) comes from the
/// `REDIS_URL` variable.
pub const REDIS_STORE: &str = "[store]\nkind = \"redis\"\nurl = { env = \"REDIS_URL\" }\n";

/// Starts `n` binaries on `toml` with `envs`, all at once (one thread each), so that they race
/// for their first tokens the way pods started by one rollout do. In start order.
pub fn start(n: usize, toml: &str, envs: &[(&str, &str)]) -> Vec<Binary> {
    start_with_log(
        n,
        toml,
        envs,
        &std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
    )
}

/// As [`start`], with `RUST_LOG=rust_log`.
pub fn start_with_log(n: usize, toml: &str, envs: &[(&str, &str)], rust_log: &str) -> Vec<Binary> {
    std::thread::scope(|scope| {
        let started: Vec<_> = (0..n)
            .map(|_| scope.spawn(|| Binary::start_with_log(toml, envs, rust_log)))
            .collect();
        started
            .into_iter()
            .map(|s| s.join().expect("a replica starts"))
            .collect()
    })
}

/// Every replica's log, each under a header naming its pid: for assertion messages.
pub fn all_logs(replicas: &[Binary]) -> String {
    replicas
        .iter()
        .map(|r| format!("--- replica pid {} ---\n{}", r.pid(), r.logs()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Steady traffic while a store fails over: two callers per replica and path, each GETting every
/// 20 ms until `until`; each returns every status it got.
pub fn steady(nodes: &[Binary], paths: &[&str], until: Instant) -> Vec<JoinHandle<Vec<StatusCode>>> {
    let urls: Vec<String> = nodes
        .iter()
        .flat_map(|n| paths.iter().flat_map(|p| [n.url(p), n.url(p)]))
        .collect();
    urls.into_iter()
        .map(|url| {
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while Instant::now() < until {
                    statuses.push(get(&url).await.status);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                statuses
            })
        })
        .collect()
}

/// How many requests [`steady`]'s callers sent, and the statuses that were not 200.
pub async fn failures(drivers: Vec<JoinHandle<Vec<StatusCode>>>) -> (usize, Vec<StatusCode>) {
    let mut all = Vec::new();
    for driver in drivers {
        all.extend(driver.await.expect("a traffic task"));
    }
    let failed = all.iter().copied().filter(|s| *s != StatusCode::OK).collect();
    (all.len(), failed)
}
