//! A real Redis Cluster for the shared-store tests: three primaries (and, when asked, one
//! replica each) on 127.0.0.1, each a `RedisServer` with `--cluster-enabled yes`, joined by
//! `redis-cli --cluster create`, killed on drop. Node timeouts are one second, so a primary's
//! failover takes about two. Helpers look at every node, move a slot, and fail a primary.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::redis::{RedisServer, free_port, redis_cli};

/// A cluster's nodes agree within this on a loaded machine; the bound only stops a wedge.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// A node's silence after which the others fail it over.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

pub struct RedisCluster {
    /// Primaries first (in `redis-cli`'s order), then replicas.
    pub nodes: Vec<RedisServer>,
}

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    /// Three primaries, with `replicas` replicas each (0 or 1).
    pub fn start(replicas: usize) -> Self {
        let args = || {
            ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"]
                .iter()
                .chain(&["--cluster-replica-validity-factor", "0"])
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>()
        };
        let nodes: Vec<_> = (0..3 * (1 + replicas))
            .map(|_| RedisServer::start_with_args(args(), cluster_port))
            .collect();
        let mut create = Command::new(redis_cli());
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        run(&mut create);
        let cluster = Self { nodes };
        cluster.settle();
        cluster
    }

    /// `redis://127.0.0.1:PORT` of the first node: what tokenbroker is given.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Waits until every live node says the cluster is ok and sees every slot covered.
    pub fn settle(&self) {
        let step = Duration::from_millis(50);
        let mut tries = SETTLE_LIMIT.as_millis() / step.as_millis();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let info = cli(node.port(), &["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    break;
                }
                tries = tries.saturating_sub(1);
                assert!(tries > 0, "the cluster did not settle:\n{info}");
                std::thread::sleep(step);
            }
        }
    }

    /// The primary that serves `slot` now.
    pub fn owner_of(&self, slot: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.is_running() && is_primary(n.port()) && owns(n.port(), slot))
            .expect("a primary serves the slot")
    }

    /// The slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        let slot = cli(self.live().port(), &["CLUSTER", "KEYSLOT", key]);
        slot.trim().parse().expect("a slot number")
    }

    /// Any running node.
    pub fn live(&self) -> &RedisServer {
        self.nodes.iter().find(|n| n.is_running()).expect("a running node")
    }

    /// Every key on every running primary, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            if is_primary(node.port()) {
                keys.extend(node.keys().await);
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Moves `slot` from the node that owns it to `to` with keys, the way `redis-cli --cluster
    /// reshard` does: IMPORTING/MIGRATING, MIGRATE in batches, then SETSLOT NODE everywhere.
    pub fn migrate_slot(&self, slot: u16, to: &RedisServer) {
        let from = self.owner_of(slot);
        let slot_text = slot.to_string();
        let from_id = node_id(from.port());
        let to_id = node_id(to.port());
        cli(to.port(), &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id]);
        cli(from.port(), &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id]);
        loop {
            let keys = cli(from.port(), &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            cli(from.port(), &args);
        }
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            cli(node.port(), &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
        }
    }
}

/// Whether the node on `port` lists `slot` among its own.
fn owns(port: u16, slot: u16) -> bool {
    let myself = cli(port, &["CLUSTER", "MYID"]);
    let nodes = cli(port, &["CLUSTER", "NODES"]);
    nodes
        .lines()
        .find(|line| line.starts_with(myself.trim()))
        .is_some_and(|line| {
            line.split_whitespace().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
            })
        })
}

fn is_primary(port: u16) -> bool {
    cli(port, &["ROLE"]).starts_with("master")
}

fn node_id(port: u16) -> String {
    cli(port, &["CLUSTER", "MYID"]).trim().to_owned()
}

/// One `redis-cli` command against the node on `port`; its output (raw, one value per line).
pub fn cli(port: u16, args: &[&str]) -> String {
    run(Command::new(redis_cli())
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
        .args(args))
}

/// Runs `command` (bounded by redis-cli's own timeouts on loopback); panics with its output on failure.
fn run(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && !text.starts_with("ERR"),
        "{command:?} failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}
