//! The alert rules and the Grafana dashboard under deploy/ against what the binary really exports
//! (README, "Alerts and dashboard"): the real `tokenbroker demo` is started and its admin
//! `/metrics` scraped, and every metric name used by a rule expression, a panel query or the
//! dashboard's tenant variable must be there. The shared-store families exist only with a Redis
//! store, which the demo does not use, so a second real binary on a real `redis-server` is
//! scraped for those. A renamed metric fails here, naming the file and the name.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

use http::StatusCode;
use regex::Regex;

use crate::sandboxed::SERVER;
use crate::support::redis::RedisServer;
use crate::support::tenants::static_tenant;
use crate::support::{Binary, eventually, get, sample};

/// `tokenbroker demo` as a child process, killed on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo and returns it with its admin base URL, as it printed it.
fn start_demo() -> (Demo, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tokenbroker demo");
    let stdout = child.stdout.take().expect("piped stdout");
    let demo = Demo(child);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(url) = line
            .trim()
            .strip_prefix("curl -s ")
            .and_then(|u| u.strip_suffix("/readyz"))
        {
            return (demo, url.to_owned());
        }
    }
    panic!("the demo printed no readiness command");
}

fn repo_file(relative: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

// === PromQL: the metric names an expression reads ===

static STRINGS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`"#).expect("regex"));
/// Label matchers, ranges and subqueries: label names and durations, never metric names.
static BRACKETS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{[^}]*\}|\[[^\]]*\]").expect("regex"));
static GROUPING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)").expect("regex"));
/// Grafana's variables (`$tenant`, `${datasource}`, `$__rate_interval`) and `offset 5m`.
static VARIABLES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$\{?\w+\}?|\boffset\s+-?\w+").expect("regex"));
/// Grafana's `label_values(metric, label)`: only the first argument is a metric.
static LABEL_VALUES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\blabel_values\s*\(([^,)]*)(?:,[^)]*)?\)").expect("regex"));
/// An identifier (not the tail of a number like `1e3`), and whether a `(` follows it (a function).
static IDENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?").expect("regex"));
/// Operators and literals that read like identifiers. Functions and aggregations are told by the
/// `(` after them; these stand alone.
const KEYWORDS: [&str; 13] = [
    "and",
    "or",
    "unless",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "inf",
    "nan",
];

fn metric_names(expr: &str) -> BTreeSet<String> {
    let expr = LABEL_VALUES.replace_all(expr, " $1 ");
    let expr = STRINGS.replace_all(&expr, " ");
    let expr = BRACKETS.replace_all(&expr, " ");
    let expr = GROUPING.replace_all(&expr, " ");
    let expr = VARIABLES.replace_all(&expr, " ");
    IDENT
        .captures_iter(&expr)
        .filter(|c| c.get(2).is_none())
        .map(|c| c[1].to_owned())
        .filter(|name| !KEYWORDS.contains(&name.to_ascii_lowercase().as_str()))
        .collect()
}

#[test]
fn the_extraction_keeps_metrics_and_drops_functions_labels_and_keywords() {
    let expr = r#"sum by (tenant, le) (rate(a_bucket{status=~"4..|5..", source="upstream"}[5m] offset 1h)) / on (tenant) group_left (provider) b_info
        and 2 * 1e3 > bool histogram_quantile(0.95, c_seconds_bucket[$__rate_interval]) unless max without (pod) (d{x="y"}) or time() - e"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(names, ["a_bucket", "b_info", "c_seconds_bucket", "d", "e"]);
    let variable: Vec<String> = metric_names("label_values(tokenbroker_tenant_info, tenant)")
        .into_iter()
        .collect();
    assert_eq!(variable, ["tokenbroker_tenant_info"]);
}

// === where the expressions are ===

/// Every `expr:` of a rule file (block scalars `|`/`>` followed by their indented lines, or one
/// line). Both rule files are YAML written by people; nothing here needs a YAML parser.
fn rule_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !rest.starts_with('|') && !rest.starts_with('>') {
            exprs.push(rest.trim_matches(['"', '\'']).to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let body = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent);
        exprs.push(body.copied().collect::<Vec<_>>().join("\n"));
    }
    exprs
}

/// Every panel target's `expr` (rows nest panels) and every query variable's query.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            if map.get("type").and_then(|t| t.as_str()) == Some("query") {
                if let Some(query) = map.get("definition").and_then(|d| d.as_str()) {
                    out.push(query.to_owned());
                }
            }
            map.values().for_each(|v| dashboard_exprs(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Metric name -> the files that use it.
fn used_names() -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut used: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    let mut add = |file: &'static str, exprs: Vec<String>| {
        assert!(exprs.len() >= 10, "{file}: only {} expressions found", exprs.len());
        for name in exprs.iter().flat_map(|e| metric_names(e)) {
            used.entry(name).or_default().insert(file);
        }
    };
    for file in [
        "deploy/prometheus/tokenbroker.rules.yml",
        "deploy/k8s/prometheusrule.yaml",
    ] {
        add(file, rule_exprs(&repo_file(file).1));
    }
    let file = "deploy/grafana/tokenbroker.json";
    let dashboard: serde_json::Value = serde_json::from_str(&repo_file(file).1).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    add(file, exprs);
    used
}

// === what the binary exports ===

/// Every sample name a scrape can hold: the sample lines' own names, and for each `# TYPE`
/// family the names its type exposes even while it has no series yet.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let (name, kind) = family.split_once(' ').expect("# TYPE name type");
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The demo's scrape once every tenant holds its token (so the token families have series).
async fn demo_scrape(admin: &str) -> String {
    let ready = eventually(Duration::from_secs(20), || async {
        get(&format!("{admin}/readyz")).await.status == StatusCode::OK
    })
    .await;
    assert!(ready, "the demo gets ready");
    let answer = get(&format!("{admin}/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.text()
}

/// A real binary on a real Redis: the families that exist only with a shared store.
async fn store_scrape() -> String {
    let redis = RedisServer::start();
    let toml = format!(
        "{SERVER}[store]\nkind = \"redis\"\nurl = {{ env = \"REDIS_URL\" }}\n{}",
        static_tenant("plain", "http://127.0.0.1:9", "")
    );
    let url = redis.url();
    let binary = Binary::start(
        &toml,
        &[("REDIS_URL", url.as_str()), ("STATIC_VALUE", "not-a-real-token")],
    );
    let text = get(&binary.admin_url("/metrics")).await.text();
    assert!(text.contains("tokenbroker_store_up 1"), "the store is up:\n{text}");
    text
}

/// The families the alerts join on, as the demo exports them: every demo tenant ready, the
/// static CYBERBIZ token marked as not renewing, and each renewing token's margin inside its
/// lifetime and below its time to expiry (the renewal is not overdue).
fn assert_alert_joins(scrape: &str) {
    for tenant in ["demo-adobe", "demo-shopline", "demo-vantage", "demo-cyberbiz"] {
        let ready = format!("tokenbroker_tenant_ready{{tenant=\"{tenant}\"}}");
        assert_eq!(sample(scrape, &ready), Some(1.0), "{ready}");
        let renews = if tenant == "demo-cyberbiz" { "false" } else { "true" };
        let provider = tenant.trim_start_matches("demo-").replace("adobe", "adobe_ims");
        let info = format!(
            "tokenbroker_tenant_info{{tenant=\"{tenant}\",provider=\"{provider}\",renews=\"{renews}\",required=\"true\"}}"
        );
        assert_eq!(sample(scrape, &info), Some(1.0), "{info} in:\n{scrape}");
        let margin = sample(
            scrape,
            &format!("tokenbroker_token_refresh_margin_seconds{{tenant=\"{tenant}\"}}"),
        );
        let expires = sample(
            scrape,
            &format!("tokenbroker_token_expires_in_seconds{{tenant=\"{tenant}\"}}"),
        );
        match (renews, margin, expires) {
            ("false", None, Some(_)) => {}
            ("true", Some(margin), Some(expires)) => assert!(
                margin > 0.0 && margin < expires,
                "{tenant}: margin {margin} s, expires in {expires} s"
            ),
            other => panic!("{tenant}: unexpected margin/expiry {other:?}"),
        }
    }
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
    let used = used_names();
    for expected in [
        "tokenbroker_token_expires_in_seconds",
        "tokenbroker_store_up",
        "tokenbroker_request_duration_seconds_bucket",
        "process_cpu_seconds_total",
    ] {
        assert!(used.contains_key(expected), "{expected} is read: {used:?}");
    }
    let (demo, admin) = start_demo();
    let scrape = demo_scrape(&admin).await;
    assert_alert_joins(&scrape);
    drop(demo);
    let mut exported = exported_names(&scrape);
    exported.extend(exported_names(&store_scrape().await));
    let missing: Vec<String> = (used.iter())
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, files)| format!("{name} (used in {files:?})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics not exported by tokenbroker:\n  {}\nexported: {exported:?}",
        missing.join("\n  ")
    );
}
