//! A real Sentinel deployment for the shared-store tests: a primary, one replica of it and three
//! `redis-sentinel` processes watching them as `tokenbroker`, all on 127.0.0.1, killed on drop.
//! The sentinels judge a primary down after one second of silence, so a failover takes about
//! three. `redis-sentinel` comes from Debian's redis-sentinel package, installed the way the
//! server is when it is missing; otherwise the test fails naming it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis::{RedisServer, find_on_path, free_port, install_package};
use super::redis_cluster::cli;

pub const MASTER_NAME: &str = "tokenbroker";
/// The sentinels' `down-after-milliseconds`.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// A deployment's processes agree within this on a loaded machine; the bound only stops a wedge.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

pub struct RedisSentinel {
    /// The primary at the start, then its replica.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<(Child, u16)>,
    dir: tempfile::TempDir,
}

fn redis_sentinel() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_on_path("redis-sentinel", &path)
        .or_else(|| {
            install_package("redis-sentinel");
            find_on_path("redis-sentinel", &path)
        })
        .unwrap_or_else(|| {
            panic!("redis-sentinel is required by the Sentinel tests: apt-get install -y redis-sentinel")
        })
}

impl RedisSentinel {
    /// A deployment ready to fail over: every sentinel knows the replica and the other two.
    pub fn start() -> Self {
        let deployment = Self::launch();
        deployment.settle(true);
        deployment
    }

    /// A deployment that only has to name its primary (no failover planned): each sentinel
    /// answers, without waiting the seconds they take to find each other.
    pub fn start_serving() -> Self {
        let deployment = Self::launch();
        deployment.settle(false);
        deployment
    }

    fn launch() -> Self {
        let program = redis_sentinel();
        let primary = RedisServer::start();
        let replica_of = [
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary.port().to_string(),
        ];
        let replica = RedisServer::start_with_args(replica_of.to_vec(), free_port);
        let dir = tempfile::tempdir().expect("temp dir");
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let conf = dir.path().join(format!("sentinel-{i}.conf"));
                let text = format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} {down}\nsentinel failover-timeout {MASTER_NAME} 10000\n",
                    dir = dir.path().display(),
                    primary = primary.port(),
                    down = DOWN_AFTER.as_millis(),
                );
                std::fs::write(&conf, text).expect("write the sentinel's configuration");
                let child = Command::new(&program)
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run redis-sentinel: {e}"));
                (child, port)
            })
            .collect();
        Self {
            servers: vec![primary, replica],
            sentinels,
            dir,
        }
    }

    /// `host:port` of every sentinel, as `[store] sentinels` lists them.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(_, port)| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The `[store]` section: the URL (from `REDIS_URL`) gives only the scheme here.
    pub fn store_toml(&self) -> String {
        let list: Vec<String> = self.addresses().iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[store]\nkind = \"redis\"\nmode = \"sentinel\"\nurl = {{ env = \"REDIS_URL\" }}\n\
             sentinels = [{}]\nmaster_name = \"{MASTER_NAME}\"\n",
            list.join(", ")
        )
    }

    /// The port the sentinels name as primary now.
    pub fn primary_port(&self) -> u16 {
        let (_, port) = self
            .sentinels
            .iter()
            .find(|(_, p)| answers(*p))
            .expect("a sentinel runs");
        let answer = cli(*port, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
        answer
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .expect("a primary's port")
    }

    /// The running server the sentinels name as primary.
    pub fn primary(&self) -> &RedisServer {
        let port = self.primary_port();
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .expect("the primary is one of ours")
    }

    /// Kills the current primary (SIGKILL: nothing flushed); returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        let server = self.servers.iter_mut().find(|s| s.port() == port).expect("the primary");
        server.kill();
        port
    }

    /// Waits until every sentinel names the primary and, with `for_failover`, knows the replica
    /// and the two other sentinels: a failover can then happen.
    fn settle(&self, for_failover: bool) {
        let step = Duration::from_millis(100);
        let mut tries = SETTLE_LIMIT.as_millis() / step.as_millis();
        for (_, port) in &self.sentinels {
            loop {
                let ready = answers(*port) && {
                    let master = cli(*port, &["SENTINEL", "master", MASTER_NAME]);
                    let field = |name: &str| {
                        let mut lines = master.lines();
                        lines.find(|l| *l == name).and(lines.next()).map(str::to_owned)
                    };
                    !for_failover
                        || field("num-slaves").as_deref() == Some("1")
                            && field("num-other-sentinels").as_deref() == Some("2")
                };
                if ready {
                    break;
                }
                tries = tries.saturating_sub(1);
                assert!(tries > 0, "the sentinels did not settle within {SETTLE_LIMIT:?}");
                std::thread::sleep(step);
            }
        }
    }

    /// Where the sentinels keep their configuration (they rewrite it).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// Whether something answers PING on `port`.
fn answers(port: u16) -> bool {
    Command::new(super::redis::redis_cli())
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for (child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
