//! Several replicas of one deployment: real binaries started together on one config that shares
//! a Redis store, as a sidecar per pod would be.

use super::Binary;

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
