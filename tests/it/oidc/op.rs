//! Runs `tests/oidc/server.js` (a real OpenID provider) as a child process for one test, and
//! speaks to it the way a resource server would: discovery and RFC 7662 introspection.
//!
//! The node dependencies are installed on first use (`npm ci`, bounded in time) so a fresh
//! checkout needs nothing but `cargo test`. Missing node or npm is a failure that says what to
//! install: these tests exist to prove standards compliance and must not pass by skipping.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::support::{get, send};

/// The node project: `package.json`, its lockfile, `server.js`, the TEST-ONLY client keys.
pub const OIDC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");
/// The one resource server `server.js` knows (RFC 8707).
pub const RESOURCE: &str = "https://api.tokenbroker.test";
/// `ttl.ClientCredentials` in `server.js`.
pub const TOKEN_TTL_S: u64 = 600;
/// Client secrets in `server.js`: characters Basic credentials must form-encode (RFC 6749 2.3.1).
pub const BASIC_SECRET: &str = "b4sic s3cret:+/%&=";
pub const POST_SECRET: &str = "p0st s3cret:+/%&=";
/// The client that introspects, as a resource server would.
const INTROSPECTOR: (&str, &str) = ("introspector", "introspector-secret");

/// `npm ci` of 40 small packages takes seconds; the bound only stops a hung registry.
const NPM_CI_LIMIT: Duration = Duration::from_secs(180);
const START_LIMIT: Duration = Duration::from_secs(20);

/// The provider's endpoints, from `/.well-known/openid-configuration`.
pub struct Endpoints {
    pub token: String,
    pub introspection: String,
    pub auth_methods: Vec<String>,
}

/// A running `server.js`, killed on drop (also when an assertion fails).
pub struct OpenIdProvider {
    child: Child,
    /// `http://127.0.0.1:<port>`, as the provider names itself.
    pub issuer: String,
    stderr: Arc<Mutex<String>>,
}

impl OpenIdProvider {
    /// Installs the node dependencies if needed, starts the server, waits for `LISTENING <port>`.
    pub fn start() -> Self {
        ensure_node_deps();
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(OIDC_DIR)
            // Held open: the server exits when this pipe closes, so no orphan outlives a crash.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node tests/oidc/server.js");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let mut op = Self {
            child,
            issuer: String::new(),
            stderr,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            lines.for_each(drop);
        });
        let line = rx.recv_timeout(START_LIMIT).ok().flatten();
        let port = line
            .as_deref()
            .and_then(|l| l.strip_prefix("LISTENING "))
            .map(str::trim);
        let port = port.unwrap_or_else(|| panic!("server.js did not report its port: {:?}\n{}", line, op.stderr()));
        op.issuer = format!("http://127.0.0.1:{port}");
        op
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Discovery (OpenID Connect Discovery 1.0): the test never hardcodes an endpoint path.
    pub async fn discover(&self) -> Endpoints {
        let answer = get(&format!("{}/.well-known/openid-configuration", self.issuer)).await;
        assert_eq!(answer.status, StatusCode::OK, "discovery: {}", answer.text());
        let doc = answer.json();
        assert_eq!(doc["issuer"], self.issuer.as_str());
        let field = |name: &str| {
            doc[name]
                .as_str()
                .unwrap_or_else(|| panic!("discovery has {name}"))
                .to_owned()
        };
        let auth_methods = doc["token_endpoint_auth_methods_supported"]
            .as_array()
            .map(|methods| methods.iter().filter_map(Value::as_str).map(str::to_owned).collect());
        Endpoints {
            token: field("token_endpoint"),
            introspection: field("introspection_endpoint"),
            auth_methods: auth_methods.unwrap_or_default(),
        }
    }

    /// RFC 7662: what the provider says about `token`.
    pub async fn introspect(&self, endpoints: &Endpoints, token: &str) -> Value {
        let (id, secret) = INTROSPECTOR;
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("token", token), ("client_id", id), ("client_secret", secret)])
            .finish();
        let request = Request::post(&endpoints.introspection)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .expect("valid introspection request");
        let answer = send(request).await;
        assert_eq!(answer.status, StatusCode::OK, "introspection: {}", answer.text());
        answer.json()
    }
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects a child's stderr on a thread, for failure messages (and so it never blocks on a
/// full pipe).
fn drain(mut stderr: ChildStderr) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buffer = String::new();
        let _ = stderr.read_to_string(&mut buffer);
        sink.lock().expect("stderr lock").push_str(&buffer);
    });
    text
}

/// Once per test binary; every test fails with the same message if it cannot be done.
fn ensure_node_deps() {
    static DEPS: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = DEPS.get_or_init(install_node_deps) {
        panic!("{why}");
    }
}

fn install_node_deps() -> Result<(), String> {
    require_tool("node")?;
    require_tool("npm")?;
    let dir = Path::new(OIDC_DIR);
    if dir.join("node_modules/oidc-provider/package.json").is_file() {
        return Ok(());
    }
    let mut npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `npm ci` in {OIDC_DIR}: {e}"))?;
    let output = drain(npm.stderr.take().expect("piped stderr"));
    let step = Duration::from_millis(100);
    for _ in 0..NPM_CI_LIMIT.as_millis() / step.as_millis() {
        match npm.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                std::thread::sleep(step); // let the drain thread finish
                let output = output.lock().expect("stderr lock").clone();
                return Err(format!("`npm ci` in {OIDC_DIR} failed ({status}):\n{output}"));
            }
            None => std::thread::sleep(step),
        }
    }
    let _ = npm.kill();
    let _ = npm.wait();
    Err(format!(
        "`npm ci` in {OIDC_DIR} did not finish within {NPM_CI_LIMIT:?} (registry unreachable?)"
    ))
}

/// `node`/`npm` must exist: these tests fail, never skip, without them.
fn require_tool(tool: &str) -> Result<(), String> {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    Err(format!(
        "tests/it/oidc.rs runs a real OpenID provider (tests/oidc/server.js) and needs `{tool}` on PATH: \
         install Node.js 20 or later with npm (e.g. `apt-get install nodejs npm`, or from https://nodejs.org)"
    ))
}
