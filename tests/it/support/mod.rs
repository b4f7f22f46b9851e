//! The integration harness: a proxy built from TOML on ephemeral ports (in process), the real
//! binary as a child process, a real `redis-server` for the shared store, and a plain HTTP client.

pub mod chromium;
pub mod otlp;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod relay;
pub mod replicas;
pub mod tenants;
pub mod tls_ca;
pub mod topology;
pub mod upstream;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokenbroker::app::{App, Listeners};
pub use tokenbroker::config::MapEnv;
use tokenbroker::config::{self, ConfigErrors};
use tokenbroker::reload::{ReloadHandle, ReloadSource};
use tokio::sync::oneshot;

/// Secrets for tests come from a map, never from the process environment.
pub fn env(pairs: &[(&str, &str)]) -> MapEnv {
    MapEnv::new(pairs.iter().copied())
}

/// A proxy running in this process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub tenant_addrs: HashMap<String, SocketAddr>,
    /// Taken before `run` consumes the app, so tests can reload a running proxy.
    pub reload: ReloadHandle,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(toml: &str) -> Self {
        Self::start_with_env(toml, &env(&[])).await
    }

    pub async fn start_with_env(toml: &str, env: &MapEnv) -> Self {
        let loaded = config::parse(toml, "test.toml", env).unwrap_or_else(|e| panic!("test config is valid:\n{e}"));
        let listeners = Listeners::bind(&loaded.config).await.expect("bind 127.0.0.1:0");
        let addr = listeners.main.local_addr().expect("local addr");
        let tenant_addrs = listeners
            .tenants
            .iter()
            .map(|(name, _, l)| (name.as_str().to_owned(), l.local_addr().expect("local addr")))
            .collect();
        let admin_addr = listeners.admin.as_ref().map(|l| l.local_addr().expect("local addr"));
        let app = App::build(&loaded.config, prometheus_client::registry::Registry::default()).expect("app builds");
        let reload = app.reload_handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(listeners, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            admin_addr,
            tenant_addrs,
            reload,
            shutdown: Some(tx),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr.expect("an admin listener"))
    }

    /// Reloads the running proxy with `toml` (validated here, secrets from `env`).
    pub async fn reload_with_env(&self, toml: &str, env: &MapEnv) -> Result<(), ConfigErrors> {
        let loaded = config::parse(toml, "reload.toml", env)?;
        self.reload.reload(ReloadSource::Config(Box::new(loaded.config))).await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        get(&self.admin_url("/metrics")).await.text()
    }

    /// Triggers shutdown and waits until the app has drained.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("drains in time")
            .expect("app task");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read in full.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("json body, got {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// What a sandbox fake saw of the request (method, path, query, body length, ...), from the
    /// `x-sandbox-echo` header it puts beside its documented body.
    pub fn sandbox_echo(&self) -> serde_json::Value {
        let header = self
            .headers
            .get(tokenbroker::sandbox::ECHO_HEADER)
            .unwrap_or_else(|| panic!("a sandbox echo header, got {:?}", self.headers));
        serde_json::from_slice(header.as_bytes()).expect("the echo is JSON")
    }
}

pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(30), client().request(request))
        .await
        .expect("the proxy answers in time")
        .expect("the proxy answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body arrives").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Answer {
    send(Request::get(url).body(Full::default()).expect("valid request")).await
}

/// A GET as the caller whose key is `key` (sent in `tokenbroker-key`).
pub async fn get_as(url: &str, key: &str) -> Answer {
    let request = Request::get(url)
        .header("tokenbroker-key", key)
        .body(Full::default())
        .expect("valid request");
    send(request).await
}

/// Writes raw bytes on a fresh connection and returns the status line of the answer.
pub async fn raw_status_line(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buffer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&buffer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The real binary, started with a config file; reads its listen address from its JSON log.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin listener's bound address, when the config has one.
    pub admin_addr: Option<SocketAddr>,
    /// The webhook listener's bound address, when the config has one.
    pub webhook_addr: Option<SocketAddr>,
    /// The config file the binary reads (and re-reads on SIGHUP or when watching).
    pub config_path: PathBuf,
    pub stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Binary {
    pub fn start(toml: &str, envs: &[(&str, &str)]) -> Self {
        let level = std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        Self::start_with_log(toml, envs, &level)
    }

    /// Starts the binary with `RUST_LOG=rust_log`.
    pub fn start_with_log(toml: &str, envs: &[(&str, &str)], rust_log: &str) -> Self {
        Self::start_from(Command::new(env!("CARGO_BIN_EXE_tokenbroker")), toml, envs, rust_log)
    }

    /// Starts the binary with its soft open-file limit lowered to `soft` (by the shell's `ulimit`,
    /// which then `exec`s it, so the child's pid is the binary's).
    pub fn start_with_soft_nofile(toml: &str, envs: &[(&str, &str)], soft: u64) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -Sn {soft} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_tokenbroker"));
        Self::start_from(command, toml, envs, "info")
    }

    fn start_from(mut command: Command, toml: &str, envs: &[(&str, &str)], rust_log: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokenbroker.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut child = command
            .args(["run", "--log-format", "json", "--config"])
            .arg(&path)
            .envs(envs.iter().copied())
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokenbroker");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().expect("piped stderr"));
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if line.contains("tokenbroker serving") {
                    let _ = tx.send(line.clone());
                }
                collected.lock().expect("test lock").push(line);
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the binary reports that it serves");
        let json: serde_json::Value = serde_json::from_str(&ready).expect("json log line");
        let addr = json["listen"]
            .as_str()
            .expect("listen field")
            .parse()
            .expect("socket address");
        let admin_addr = json["admin"].as_str().map(|a| a.parse().expect("socket address"));
        let webhook_addr = json["webhooks"].as_str().map(|a| a.parse().expect("socket address"));
        Self {
            child,
            addr,
            admin_addr,
            webhook_addr,
            config_path: path,
            stderr,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr.expect("an admin listener"))
    }

    pub fn webhook_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.webhook_addr.expect("a webhook listener"))
    }

    /// Replaces the config file the way editors and ConfigMaps do: write a sibling, rename over.
    pub fn replace_config(&self, toml: &str) {
        let staged = self.config_path.with_extension("toml.new");
        std::fs::write(&staged, toml).expect("write the new config");
        std::fs::rename(&staged, &self.config_path).expect("rename over the config");
    }

    /// Log lines parsed as JSON (lines that are not JSON are skipped).
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        let lines = self.stderr.lock().expect("test lock").clone();
        lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The binary's process id (also when started through `sh -c … exec`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name}");
    }

    /// SIGKILL, and waits until it is gone: a crash, no drain, nothing flushed.
    pub fn kill9(&mut self) -> std::process::ExitStatus {
        self.signal("KILL");
        self.child.wait().expect("wait for the killed binary")
    }

    /// SIGSTOP: the process freezes (a stalled peer), its sockets stay open.
    pub fn stop(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: a process `stop` froze carries on.
    pub fn cont(&self) {
        self.signal("CONT");
    }

    /// Peak resident memory of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM line")
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().expect("test lock").join("\n")
    }

    /// Waits up to `limit` for `text` to appear in stderr; returns whether it did.
    pub async fn logged(&self, text: &str, limit: Duration) -> bool {
        eventually(limit, || {
            let logs = self.logs();
            async move { logs.contains(text) }
        })
        .await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        get(&self.admin_url("/metrics")).await.text()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series in a Prometheus/OpenMetrics text exposition, e.g.
/// `sample(text, r#"tokenbroker_requests_total{tenant="a",status="200",source="upstream"}"#)`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        let value = value.split(' ').next()?;
        match value {
            "+Inf" => Some(f64::INFINITY),
            other => other.parse().ok(),
        }
    })
}

/// Both `tokenbroker_config_reloads_total` series: `success` and `failure` reloads so far.
pub fn assert_reload_counts(metrics: &str, success: f64, failure: f64) {
    assert_eq!(
        sample(metrics, r#"tokenbroker_config_reloads_total{outcome="success"}"#),
        Some(success)
    );
    assert_eq!(
        sample(metrics, r#"tokenbroker_config_reloads_total{outcome="failure"}"#),
        Some(failure)
    );
}

/// One tenant's entry in a `/tenants` answer.
pub fn tenant_entry<'a>(tenants: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    tenants["tenants"]
        .as_array()
        .expect("a tenants array")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("tenant {name} listed"))
}

/// Fails if `text`, what `surface` showed, contains any of `secrets`. The message gives only a
/// secret's length and first six characters, so a failing run does not print the secret.
pub fn assert_no_secret_in(surface: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{surface} contains a secret or token ({} chars, starting {:?})",
            secret.len(),
            &secret[..6]
        );
    }
}

/// An address nobody listens on (bound, then released): an upstream that refuses connections,
/// or a port for a listener that a reload adds.
pub fn unused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// Seconds since the Unix epoch, the unit of the admin API's timestamps and of JWT `exp`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}
