//! Hot reload (SPEC 10): adding, changing and removing tenants under continuous load with no
//! failed request and no extra token call for unchanged tenants; invalid reloads change nothing;
//! SIGHUP and `watch_config` on the real binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokenbroker::reload::ReloadSource;
use tokenbroker::sandbox::{self, ImsOptions, ImsSandbox};

use crate::support::tenants::{SERVER, ims_tenant, static_tenant};
use crate::support::upstream::Upstream;
use crate::support::{Binary, MapEnv, Proxy, env, eventually, get, sample};

const STATIC_VALUE: &str = "Bearer reload-static-credential";
const ROTATED_SECRET: &str = "sandbox-secret-rotated";

fn secrets() -> MapEnv {
    env(&[
        ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET),
        ("STATIC_VALUE", STATIC_VALUE),
        ("ROTATED_SECRET", ROTATED_SECRET),
    ])
}

/// A port that was free a moment ago, for a tenant listener added by a reload (the harness only
/// learns addresses bound at start-up).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Load on the tenant that stays: `tasks` loops until `stop`, counting every answer.
struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, tasks: usize) -> Self {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..tasks)
            .map(|_| {
                let (url, ok, failed, stop) = (url.to_owned(), ok.clone(), failed.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let answer = get(&url).await;
                        if answer.status == StatusCode::OK {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let failure = format!("{} {}", answer.status, answer.text());
                            failed.lock().expect("test lock").push(failure);
                        }
                    }
                })
            })
            .collect();
        Self {
            ok,
            failed,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        let failed = self.failed.lock().expect("test lock").clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

#[tokio::test]
async fn reloads_under_load_fail_no_request_and_keep_unchanged_tokens() {
    let stay_ims = ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS");
    let rotating_ims = ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS");
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let stay = ims_tenant("stay", &stay_ims, "");
    let rotating = ims_tenant("rotating", &rotating_ims, "");
    let (c_v1, c_v2) = (
        static_tenant("charlie", &url, r#"headers = { "x-team" = "one" }"#),
        static_tenant("charlie", &url, r#"headers = { "x-team" = "two" }"#),
    );
    let delta = static_tenant("delta", &url, "");
    let bravo = static_tenant("bravo", &url, "");
    let own_port = free_port();
    let echo = static_tenant("echo", &url, &format!("listen = \"127.0.0.1:{own_port}\""));

    let initial = format!("{SERVER}{stay}{rotating}{c_v1}{delta}");
    let proxy = Proxy::start_with_env(&initial, &secrets()).await;
    let products = proxy.url("/stay/sandbox-tenant/V1/products");
    assert_eq!(get(&products).await.status, StatusCode::OK);
    assert_eq!(
        get(&proxy.url("/rotating/sandbox-tenant/V1/products")).await.status,
        StatusCode::OK
    );
    let (stay_calls, rotating_calls) = (stay_ims.token_calls(), rotating_ims.token_calls());
    assert_eq!((stay_calls, rotating_calls), (1, 1));

    let load = Load::start(&products, 4);
    // An in-flight request on a tenant that a reload removes finishes on its old configuration.
    let slow = tokio::spawn({
        let url = proxy.url("/delta/slow/800");
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 1. Add bravo.
    let step1 = format!("{SERVER}{stay}{rotating}{c_v1}{delta}{bravo}");
    proxy.reload_with_env(&step1, &secrets()).await.expect("add bravo");
    assert_eq!(get(&proxy.url("/bravo/hello")).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 2. Change charlie's headers; 3. remove delta (while its slow request is in flight).
    let step2 = format!("{SERVER}{stay}{rotating}{c_v2}{bravo}");
    proxy
        .reload_with_env(&step2, &secrets())
        .await
        .expect("change charlie, remove delta");
    assert_eq!(get(&proxy.url("/charlie/x")).await.status, StatusCode::OK);
    assert_eq!(upstream.last().headers["x-team"], "two");
    let gone = get(&proxy.url("/delta/x")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.headers["tokenbroker-error"], "unknown_tenant");
    let slow = slow.await.expect("slow request task");
    assert_eq!(
        slow.status,
        StatusCode::OK,
        "in-flight request on a removed tenant finished"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 4. Invalid reloads (bad TOML, unknown key) change nothing.
    let dir = tempfile::tempdir().expect("temp dir");
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, format!("{step2}\n[[tenant]\nname = ")).expect("write");
    let unknown_key = dir.path().join("typo.toml");
    std::fs::write(&unknown_key, format!("{SERVER}{bravo}refresh_befor = \"5m\"\n")).expect("write");
    for file in [bad_toml, unknown_key] {
        let outcome = proxy.reload.reload(ReloadSource::File(file)).await;
        assert!(outcome.is_err(), "an invalid config is rejected");
    }
    assert_eq!(
        get(&proxy.url("/charlie/x")).await.status,
        StatusCode::OK,
        "old config serves"
    );
    assert_eq!(
        get(&proxy.url("/rotating/sandbox-tenant/V1/products")).await.status,
        StatusCode::OK
    );

    // 5. Add a tenant with its own listener, and rotate the other IMS tenant's secret.
    rotating_ims.set_valid_secrets(vec![sandbox::IMS_CLIENT_SECRET.to_owned(), ROTATED_SECRET.to_owned()]);
    let rotated = rotating.replace("env = \"IMS_SECRET\"", "env = \"ROTATED_SECRET\"");
    let step3 = format!("{SERVER}{stay}{rotated}{c_v2}{bravo}{echo}");
    proxy
        .reload_with_env(&step3, &secrets())
        .await
        .expect("add echo, rotate");
    let own = get(&format!("http://127.0.0.1:{own_port}/direct")).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(
        upstream.last().target,
        "/direct",
        "the own listener routes without prefix"
    );
    assert_eq!(
        get(&proxy.url("/rotating/sandbox-tenant/V1/products")).await.status,
        StatusCode::OK
    );
    assert_eq!(rotating_ims.token_calls(), 2, "changed credentials get a new token");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 6. Remove the own listener again.
    let step4 = format!("{SERVER}{stay}{rotated}{c_v2}{bravo}");
    proxy.reload_with_env(&step4, &secrets()).await.expect("remove echo");
    let closed = eventually(Duration::from_secs(2), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", own_port)).await.is_err()
    })
    .await;
    assert!(closed, "a removed tenant's listener closes");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (ok, failed) = load.finish().await;
    assert!(failed.is_empty(), "requests failed during reloads: {failed:?}");
    assert!(ok > 20, "the load ran ({ok} requests)");
    assert_eq!(
        stay_ims.token_calls(),
        stay_calls,
        "no extra token call for the unchanged tenant"
    );

    let metrics = get(&proxy.admin_url("/metrics")).await.text();
    assert_eq!(
        sample(&metrics, r#"tokenbroker_config_reloads_total{outcome="success"}"#),
        Some(4.0)
    );
    assert_eq!(
        sample(&metrics, r#"tokenbroker_config_reloads_total{outcome="failure"}"#),
        Some(2.0)
    );
    let stay_200 = sample(&metrics, r#"tokenbroker_requests_total{tenant="stay",status="200"}"#);
    assert_eq!(stay_200, Some((ok + 1) as f64), "the unchanged tenant kept its metrics");
    proxy.stop().await;
}

fn binary_config(upstream: &Upstream, watch: bool, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nwatch_config = {watch}\n{}{extra}",
        static_tenant("alpha", &upstream.url(), "")
    )
}

#[tokio::test]
async fn sighup_reloads_the_file_and_rejects_an_invalid_one() {
    let upstream = Upstream::start().await;
    let binary = Binary::start(&binary_config(&upstream, false, ""), &[("STATIC_VALUE", STATIC_VALUE)]);
    assert_eq!(get(&binary.url("/beta/x")).await.status, StatusCode::NOT_FOUND);

    binary.replace_config(&binary_config(
        &upstream,
        false,
        &static_tenant("beta", &upstream.url(), ""),
    ));
    binary.signal("HUP");
    let added = eventually(Duration::from_secs(5), || async {
        get(&binary.url("/beta/x")).await.status == StatusCode::OK
    })
    .await;
    assert!(added, "SIGHUP applied the new file:\n{}", binary.logs());
    assert!(binary.logs().contains("configuration reloaded"));

    binary.replace_config("[server]\nlisten = \"127.0.0.1:0\"\nunknown_key = 1\n");
    binary.signal("HUP");
    let rejected = eventually(Duration::from_secs(5), || {
        let logs = binary.logs();
        async move { logs.contains("configuration reload rejected") }
    })
    .await;
    assert!(rejected, "the invalid file is rejected and logged:\n{}", binary.logs());
    let line = binary
        .json_logs()
        .into_iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains("reload rejected")))
        .expect("the rejection as a JSON event");
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["errors"].as_str().is_some_and(|e| e.contains("unknown_key")),
        "{line}"
    );
    for tenant in ["alpha", "beta"] {
        assert_eq!(
            get(&binary.url(&format!("/{tenant}/x"))).await.status,
            StatusCode::OK,
            "{tenant}"
        );
    }
    let metrics = get(&binary.admin_url("/metrics")).await.text();
    assert_eq!(
        sample(&metrics, r#"tokenbroker_config_reloads_total{outcome="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"tokenbroker_config_reloads_total{outcome="failure"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn watch_config_picks_up_a_renamed_over_file() {
    let upstream = Upstream::start().await;
    let binary = Binary::start(&binary_config(&upstream, true, ""), &[("STATIC_VALUE", STATIC_VALUE)]);
    assert_eq!(get(&binary.url("/beta/x")).await.status, StatusCode::NOT_FOUND);
    binary.replace_config(&binary_config(
        &upstream,
        true,
        &static_tenant("beta", &upstream.url(), ""),
    ));
    let started = tokio::time::Instant::now();
    let added = eventually(Duration::from_secs(6), || async {
        get(&binary.url("/beta/x")).await.status == StatusCode::OK
    })
    .await;
    assert!(added, "the watcher reloaded the changed file:\n{}", binary.logs());
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(binary.logs().contains("configuration file changed"));

    // The watcher keeps watching after a reload: a second edit removes beta again.
    binary.replace_config(&binary_config(&upstream, true, ""));
    let removed = eventually(Duration::from_secs(6), || async {
        get(&binary.url("/beta/x")).await.status == StatusCode::NOT_FOUND
    })
    .await;
    assert!(removed, "the second change was applied:\n{}", binary.logs());
    let metrics = get(&binary.admin_url("/metrics")).await.text();
    assert_eq!(
        sample(&metrics, r#"tokenbroker_config_reloads_total{outcome="success"}"#),
        Some(2.0),
        "one reload per change, none spurious"
    );
}
