//! The integration harness: a proxy built from TOML on ephemeral ports (in process), the real
//! binary as a child process, and a plain HTTP client.

pub mod upstream;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
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
use tokenbroker::config::{self, Env};
use tokio::sync::oneshot;

/// Secrets for tests come from this map, never from the process environment.
pub struct MapEnv(pub HashMap<String, String>);

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

pub fn env(pairs: &[(&str, &str)]) -> MapEnv {
    MapEnv(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
}

/// A proxy running in this process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub tenant_addrs: HashMap<String, SocketAddr>,
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
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(listeners, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            admin_addr,
            tenant_addrs,
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
    pub stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Binary {
    pub fn start(toml: &str, envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokenbroker.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(&path)
            .envs(envs.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
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
        Self {
            child,
            addr,
            stderr,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name}");
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
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
