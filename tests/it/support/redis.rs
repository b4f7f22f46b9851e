//! A real `redis-server` for the shared-store tests, one per test: on 127.0.0.1 at an ephemeral
//! port, with nothing on disk, killed on drop; and a small client to look at what it holds.
//!
//! `redis-server` is looked up on PATH. When it is missing, the first test that needs it installs
//! it from Debian's packages (only as root with apt-get), once per test process; otherwise every
//! such test fails saying what to install. These tests never pass by skipping.
//!
//! The async helpers bound their waits with tokio timers, so they belong in real-time tests (a
//! paused clock would fire those bounds at once).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use redis::aio::MultiplexedConnection;

/// What a test that needs the server says when it cannot have one.
pub const MISSING: &str = "redis-server is required by the shared-store tests: apt-get install -y redis-server";
/// A start takes about 20 ms; the bound only stops a wedged machine.
const READY_LIMIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);
/// Fresh ports tried when another process binds the one picked before redis-server does.
const PORT_ATTEMPTS: usize = 5;
/// `restart_empty` keeps its port, so it waits (this many tries, 100 ms apart) for it to be free.
const SAME_PORT_ATTEMPTS: usize = 20;
/// Any command or connection of the async client.
const COMMAND_LIMIT: Duration = Duration::from_secs(10);
/// `apt-get update` and `apt-get install`, each; the bound only stops a hung mirror.
const INSTALL_LIMIT: Duration = Duration::from_secs(600);

/// A `redis-server` child process; SIGKILLed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    /// What the server wrote on stdout and stderr (its log), for failure messages.
    log: Arc<Mutex<String>>,
    /// Its `--dir`: stays empty, since nothing is saved.
    dir: tempfile::TempDir,
    /// More `redis-server` arguments (TLS, cluster), given at every (re)start.
    extra: Vec<String>,
}

/// One key and everything stored under it, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: Vec<u8>,
    /// Redis's `TYPE`: `string`, `hash`, `list`, `set` or `zset`.
    pub kind: String,
    /// A string's value; a hash's fields and values, alternating; the members of the others.
    pub values: Vec<Vec<u8>>,
}

impl RedisServer {
    /// Starts a server without a password; panics (saying why) if it cannot.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Starts a server that requires `password` (`requirepass`, given on stdin, not in `ps`).
    pub fn start_with_password(password: &str) -> Self {
        Self::launch(Some(password.to_owned()))
    }

    /// Starts a server that also serves TLS on `tls_port` with `tls`'s certificate (clients are
    /// not asked for one). Its plain port stays, for the harness's own client.
    pub fn start_with_tls(tls: &crate::support::tls_ca::PrivateCa, tls_port: u16) -> Self {
        let extra = [
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            tls.server_cert().display().to_string(),
            "--tls-key-file".to_owned(),
            tls.server_key().display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            tls.ca_cert().display().to_string(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        Self::launch_with(None, extra.to_vec(), free_port)
    }

    /// Starts a server with `extra` arguments on a port `port` picks (retried when taken).
    pub fn start_with_args(extra: Vec<String>, port: impl FnMut() -> u16) -> Self {
        Self::launch_with(None, extra, port)
    }

    fn launch(password: Option<String>) -> Self {
        Self::launch_with(password, Vec::new(), free_port)
    }

    fn launch_with(password: Option<String>, extra: Vec<String>, mut port: impl FnMut() -> u16) -> Self {
        let mut server = Self {
            child: None,
            port: 0,
            password,
            log: Arc::default(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra,
        };
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = port();
            match server.spawn() {
                Ok(()) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "redis-server did not start on any of {PORT_ATTEMPTS} ports:\n{}",
            failures.join("\n---\n")
        );
    }

    /// `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT` with the password
    /// percent-encoded. It holds the password: never put it in a message.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!(
                "redis://:{}@127.0.0.1:{}",
                utf8_percent_encode(password, NON_ALPHANUMERIC),
                self.port
            ),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Whether the server runs (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory, where it would save if it saved anything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far (it never logs the password).
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// SIGKILL, and waits until it is gone: a crash, nothing flushed. Does nothing if not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts a new, empty one on the same port with the same
    /// password, so `url()` is unchanged. Panics if the port stays taken.
    pub fn restart_empty(&mut self) {
        self.kill();
        let mut failures = Vec::new();
        for _ in 0..SAME_PORT_ATTEMPTS {
            match self.spawn() {
                Ok(()) => return,
                Err(why) => failures.push(why),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "redis-server did not restart on port {} in {SAME_PORT_ATTEMPTS} tries; the last:\n{}",
            self.port,
            failures.pop().unwrap_or_default()
        );
    }

    /// Runs `redis-server` on `self.port` and waits until that very process answers PING.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new(redis_server())
            // `-`: the rest of the configuration (the password) is read from stdin.
            .arg("-")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--logfile", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let config = match &self.password {
            Some(password) => format!("requirepass {}\n", config_quoted(password)),
            None => String::new(),
        };
        let mut stdin = child.stdin.take().expect("piped stdin");
        let written = stdin.write_all(config.as_bytes());
        drop(stdin); // the end of the configuration: redis-server starts once stdin closes
        self.log = Arc::default();
        drain(child.stdout.take().expect("piped stdout"), &self.log);
        drain(child.stderr.take().expect("piped stderr"), &self.log);
        let ready = written
            .map_err(|e| format!("cannot write the configuration: {e}"))
            .and_then(|()| self.wait_ready(&mut child));
        if let Err(why) = ready {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(POLL); // lets the drain threads catch the last lines
            return Err(format!("port {}: {why}\n{}", self.port, self.log()));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Polls until `child` itself (by pid: not another server that holds the port) answers.
    fn wait_ready(&self, child: &mut Child) -> Result<(), String> {
        let client = redis::Client::open(self.url()).map_err(|e| format!("the URL does not parse: {e}"))?;
        let mut last = String::from("no answer yet");
        for _ in 0..READY_LIMIT.as_millis() / POLL.as_millis() {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("redis-server exited ({status})"));
            }
            match answering_pid(&client) {
                Ok(pid) if pid == child.id() => return Ok(()),
                Ok(pid) => last = format!("another redis-server (pid {pid}) answers there"),
                Err(why) => last = why,
            }
            std::thread::sleep(POLL);
        }
        Err(format!("no answer to PING within {READY_LIMIT:?}: {last}"))
    }

    /// A new connection (authenticated when the server has a password).
    pub async fn connection(&self) -> MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("the server's URL parses");
        bounded(client.get_multiplexed_async_connection())
            .await
            .unwrap_or_else(|e| panic!("connect to the test redis-server: {e}"))
    }

    /// Every key, sorted (read with SCAN, not KEYS).
    pub async fn keys(&self) -> Vec<String> {
        let keys = scan(&mut self.connection().await).await;
        keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
    }

    /// Every key with what it holds, sorted by key. Panics on a type it cannot read, so that
    /// nothing escapes a check for secrets in clear.
    pub async fn dump_all(&self) -> Vec<Stored> {
        let mut connection = self.connection().await;
        let mut dump = Vec::new();
        for key in scan(&mut connection).await {
            let kind: String = ask(&mut connection, redis::cmd("TYPE").arg(&key)).await;
            let values = match kind.as_str() {
                "none" => continue, // expired since the scan
                "string" => vec![ask(&mut connection, redis::cmd("GET").arg(&key)).await],
                "hash" => ask(&mut connection, redis::cmd("HGETALL").arg(&key)).await,
                "list" => ask(&mut connection, redis::cmd("LRANGE").arg(&key).arg(0).arg(-1)).await,
                "set" => ask(&mut connection, redis::cmd("SMEMBERS").arg(&key)).await,
                "zset" => ask(&mut connection, redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1)).await,
                other => panic!("dump_all cannot read a Redis {other} yet: teach it before a test stores one"),
            };
            dump.push(Stored { key, kind, values });
        }
        dump
    }

    /// `dump_all` as text, a key and then its values, one per line (bytes that are not UTF-8
    /// replaced): what `support::assert_no_secret_in` reads.
    pub async fn dump_text(&self) -> String {
        let mut text = String::new();
        for stored in self.dump_all().await {
            for bytes in std::iter::once(&stored.key).chain(&stored.values) {
                text.push_str(&String::from_utf8_lossy(bytes));
                text.push('\n');
            }
        }
        text
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        ask(&mut self.connection().await, redis::cmd("GET").arg(key)).await
    }

    /// A hash's fields and values (empty when the key is missing).
    pub async fn hgetall(&self, key: &str) -> BTreeMap<String, Vec<u8>> {
        ask(&mut self.connection().await, redis::cmd("HGETALL").arg(key)).await
    }

    /// Redis's `PTTL`: milliseconds left, -1 for a key without expiry, -2 for a missing key.
    pub async fn ttl_ms(&self, key: &str) -> i64 {
        ask(&mut self.connection().await, redis::cmd("PTTL").arg(key)).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A string in redis.conf's double quotes.
fn config_quoted(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// Appends what `from` yields to `log`, on a thread (so the child never blocks on a full pipe).
fn drain(mut from: impl Read + Send + 'static, log: &Arc<Mutex<String>>) {
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        let mut buffer = [0; 4096];
        while let Ok(n @ 1..) = from.read(&mut buffer) {
            log.lock()
                .expect("log lock")
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
}

/// PING, then the pid of the server that answered (from `INFO server`).
fn answering_pid(client: &redis::Client) -> Result<u32, String> {
    let mut connection = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .map_err(|e| e.to_string())?;
    let limit = Some(Duration::from_secs(1));
    connection.set_read_timeout(limit).map_err(|e| e.to_string())?;
    let pong: String = redis::cmd("PING").query(&mut connection).map_err(|e| e.to_string())?;
    if pong != "PONG" {
        return Err(format!("PING answered {pong:?}"));
    }
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut connection)
        .map_err(|e| e.to_string())?;
    let pid = info.lines().find_map(|line| line.strip_prefix("process_id:"));
    pid.and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| "INFO server has no process_id".to_owned())
}

async fn bounded<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(COMMAND_LIMIT, work)
        .await
        .expect("the test redis-server answers in time")
}

/// Runs `command`; panics on an error (Redis's errors do not repeat a command's arguments).
async fn ask<T: redis::FromRedisValue>(connection: &mut MultiplexedConnection, command: &redis::Cmd) -> T {
    bounded(command.query_async(connection))
        .await
        .unwrap_or_else(|e| panic!("the test redis-server refused a command: {e}"))
}

/// Every key, sorted and without the repeats SCAN may give.
async fn scan(connection: &mut MultiplexedConnection) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) =
            ask(connection, redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000)).await;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The `redis-server` to run: from PATH, else installed once per test process when it can be.
fn redis_server() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let installer: &dyn Fn() -> Result<(), String> = &apt_install;
        locate(&path, can_apt_install(&path).then_some(installer))
    });
    match found {
        Ok(program) => program.clone(),
        Err(why) => panic!("{why}"),
    }
}

/// `redis-cli` (Debian's redis-tools, which redis-server depends on): installed with the server
/// when it has to be.
pub fn redis_cli() -> PathBuf {
    let server = redis_server();
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_on_path("redis-cli", &path)
        .or_else(|| Some(server.with_file_name("redis-cli")).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("redis-cli is required by the Cluster tests: apt-get install -y redis-tools"))
}

/// `redis-server` on `path` (a PATH value); if it is not there, runs `install` (when given) and
/// looks again. The error starts with [`MISSING`].
pub fn locate(path: &OsStr, install: Option<&dyn Fn() -> Result<(), String>>) -> Result<PathBuf, String> {
    if let Some(found) = find_on_path("redis-server", path) {
        return Ok(found);
    }
    let Some(install) = install else {
        return Err(MISSING.to_owned());
    };
    let installed = install();
    match (find_on_path("redis-server", path), installed) {
        (Some(found), _) => Ok(found),
        (None, Ok(())) => Err(format!("{MISSING} (the install left none on PATH)")),
        (None, Err(why)) => Err(format!("{MISSING} (installing it failed: {why})")),
    }
}

/// The first executable file called `program` in the directories of `path` (a PATH value).
pub fn find_on_path(program: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The effective uid in a `/proc/<pid>/status` text (its `Uid:` line: real, effective, …).
pub fn effective_uid(status: &str) -> Option<u32> {
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

fn can_apt_install(path: &OsStr) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    effective_uid(&status) == Some(0) && find_on_path("apt-get", path).is_some()
}

/// `apt-get update`, then `apt-get install -y redis-server` from Debian's packages.
fn apt_install() -> Result<(), String> {
    apt_get(&["update"])?;
    apt_get(&["install", "-y", "redis-server"])
}

fn apt_get(args: &[&str]) -> Result<(), String> {
    run_bounded(
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Installs Debian's `package` (after `apt-get update`), once per test process, when this runs
/// as root with apt-get; a failure is printed, and the caller then fails naming the package.
pub fn install_package(package: &'static str) {
    static DONE: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = std::env::var_os("PATH").unwrap_or_default();
    if done.contains(&package) || !can_apt_install(&path) {
        return;
    }
    done.push(package);
    if let Err(why) = apt_get(&["update"]).and_then(|()| apt_get(&["install", "-y", package])) {
        eprintln!("installing {package} failed: {why}");
    }
}

/// Runs `command` for at most [`INSTALL_LIMIT`], saying so on stderr; its output goes in the error.
fn run_bounded(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    eprintln!("a Redis program is not on PATH; running {shown}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let output = Arc::default();
    drain(child.stdout.take().expect("piped stdout"), &output);
    drain(child.stderr.take().expect("piped stderr"), &output);
    let step = Duration::from_millis(100);
    for _ in 0..INSTALL_LIMIT.as_millis() / step.as_millis() {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                std::thread::sleep(step); // lets the drain threads finish
                let output = output.lock().expect("output lock").clone();
                return Err(format!("{shown} failed ({status}):\n{output}"));
            }
            None => std::thread::sleep(step),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("{shown} did not finish within {INSTALL_LIMIT:?}"))
}
