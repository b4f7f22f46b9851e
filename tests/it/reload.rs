//! Hot reload (README, "Operating it"): adding, changing and removing tenants under continuous load with no
//! failed request and no extra token call for unchanged tenants; invalid reloads change nothing;
//! SIGHUP and `watch_config` on the real binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokenbroker::reload::ReloadSource;
use tokenbroker::sandbox::{self, ImsOptions, ImsSandbox};
use tokio::task::JoinHandle;

use crate::support::tenants::{SERVER, ims_tenant, static_tenant};
use crate::support::upstream::Upstream;
use crate::support::{Answer, Binary, MapEnv, Proxy, assert_reload_counts, env, eventually, get, sample, unused_addr};

const STATIC_VALUE: &str = "Bearer reload-static-credential";
const ROTATED_SECRET: &str = "sandbox-secret-rotated";

fn secrets() -> MapEnv {
    env(&[
        ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET),
        ("STATIC_VALUE", STATIC_VALUE),
        ("ROTATED_SECRET", ROTATED_SECRET),
    ])
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

/// The fakes behind the reload-under-load test: `stay` keeps its configuration throughout,
/// `rotating` gets a new secret, and the static tenants share one upstream.
struct Fakes {
    stay_ims: ImsSandbox,
    rotating_ims: ImsSandbox,
    upstream: Upstream,
}

impl Fakes {
    async fn start() -> Self {
        Self {
            stay_ims: ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS"),
            rotating_ims: ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS"),
            upstream: Upstream::start().await,
        }
    }
}

/// The tenant blocks the reload steps are made of.
struct Tenants {
    stay: String,
    rotating: String,
    /// `rotating` with its secret read from `ROTATED_SECRET`.
    rotated: String,
    charlie_v1: String,
    /// `charlie` with other fixed headers.
    charlie_v2: String,
    delta: String,
    bravo: String,
    /// A tenant with its own listener on `own_port`, a port that was free a moment ago: the
    /// harness only learns addresses bound at start-up, so a reload's listener is chosen here.
    echo: String,
    own_port: u16,
}

impl Tenants {
    fn new(fakes: &Fakes) -> Self {
        let url = fakes.upstream.url();
        let rotating = ims_tenant("rotating", &fakes.rotating_ims, "");
        let own_port = unused_addr().port();
        Self {
            stay: ims_tenant("stay", &fakes.stay_ims, ""),
            rotated: rotating.replace("env = \"IMS_SECRET\"", "env = \"ROTATED_SECRET\""),
            rotating,
            charlie_v1: static_tenant("charlie", &url, r#"headers = { "x-team" = "one" }"#),
            charlie_v2: static_tenant("charlie", &url, r#"headers = { "x-team" = "two" }"#),
            delta: static_tenant("delta", &url, ""),
            bravo: static_tenant("bravo", &url, ""),
            echo: static_tenant("echo", &url, &format!("listen = \"127.0.0.1:{own_port}\"")),
            own_port,
        }
    }

    fn initial(&self) -> String {
        with_server(&[&self.stay, &self.rotating, &self.charlie_v1, &self.delta])
    }

    fn with_bravo(&self) -> String {
        with_server(&[&self.stay, &self.rotating, &self.charlie_v1, &self.delta, &self.bravo])
    }

    fn charlie_changed_delta_removed(&self) -> String {
        with_server(&[&self.stay, &self.rotating, &self.charlie_v2, &self.bravo])
    }

    fn rotated_with_echo(&self) -> String {
        with_server(&[&self.stay, &self.rotated, &self.charlie_v2, &self.bravo, &self.echo])
    }

    fn rotated_without_echo(&self) -> String {
        with_server(&[&self.stay, &self.rotated, &self.charlie_v2, &self.bravo])
    }
}

/// A config file of `[server]` and `tenants`, in order.
fn with_server(tenants: &[&str]) -> String {
    format!("{SERVER}{}", tenants.concat())
}

const STAY_PRODUCTS: &str = "/stay/sandbox-tenant/V1/products";
const ROTATING_PRODUCTS: &str = "/rotating/sandbox-tenant/V1/products";

/// Both IMS tenants serve, each after one token call; returns `stay`'s token calls.
async fn assert_both_ims_tenants_serve(proxy: &Proxy, fakes: &Fakes) -> usize {
    assert_eq!(get(&proxy.url(STAY_PRODUCTS)).await.status, StatusCode::OK);
    assert_eq!(get(&proxy.url(ROTATING_PRODUCTS)).await.status, StatusCode::OK);
    let (stay_calls, rotating_calls) = (fakes.stay_ims.token_calls(), fakes.rotating_ims.token_calls());
    assert_eq!((stay_calls, rotating_calls), (1, 1));
    stay_calls
}

/// Step 1: a reload adds bravo.
async fn add_bravo(proxy: &Proxy, tenants: &Tenants) {
    proxy
        .reload_with_env(&tenants.with_bravo(), &secrets())
        .await
        .expect("add bravo");
    assert_eq!(get(&proxy.url("/bravo/hello")).await.status, StatusCode::OK);
}

/// Steps 2 and 3: one reload changes charlie's headers and removes delta while `slow`, a request
/// on delta, is in flight.
async fn change_charlie_and_remove_delta(
    proxy: &Proxy,
    tenants: &Tenants,
    upstream: &Upstream,
    slow: JoinHandle<Answer>,
) {
    proxy
        .reload_with_env(&tenants.charlie_changed_delta_removed(), &secrets())
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
}

/// Step 4: invalid reloads (bad TOML, unknown key) change nothing.
async fn invalid_reloads_change_nothing(proxy: &Proxy, tenants: &Tenants) {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad_toml = dir.path().join("bad.toml");
    let current = tenants.charlie_changed_delta_removed();
    std::fs::write(&bad_toml, format!("{current}\n[[tenant]\nname = ")).expect("write");
    let unknown_key = dir.path().join("typo.toml");
    let bravo = &tenants.bravo;
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
    assert_eq!(get(&proxy.url(ROTATING_PRODUCTS)).await.status, StatusCode::OK);
}

/// Step 5: a reload adds a tenant with its own listener and rotates the other IMS tenant's secret.
async fn add_own_listener_and_rotate_secret(proxy: &Proxy, tenants: &Tenants, fakes: &Fakes) {
    let valid = vec![sandbox::IMS_CLIENT_SECRET.to_owned(), ROTATED_SECRET.to_owned()];
    fakes.rotating_ims.set_valid_secrets(valid);
    proxy
        .reload_with_env(&tenants.rotated_with_echo(), &secrets())
        .await
        .expect("add echo, rotate");
    let own = get(&format!("http://127.0.0.1:{}/direct", tenants.own_port)).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(
        fakes.upstream.last().target,
        "/direct",
        "the own listener routes without prefix"
    );
    assert_eq!(get(&proxy.url(ROTATING_PRODUCTS)).await.status, StatusCode::OK);
    assert_eq!(
        fakes.rotating_ims.token_calls(),
        2,
        "changed credentials get a new token"
    );
}

/// Step 6: a reload removes the own listener again, and its port closes.
async fn remove_own_listener(proxy: &Proxy, tenants: &Tenants) {
    proxy
        .reload_with_env(&tenants.rotated_without_echo(), &secrets())
        .await
        .expect("remove echo");
    let closed = eventually(Duration::from_secs(2), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", tenants.own_port))
            .await
            .is_err()
    })
    .await;
    assert!(closed, "a removed tenant's listener closes");
}

#[tokio::test]
async fn reloads_under_load_fail_no_request_and_keep_unchanged_tokens() {
    let fakes = Fakes::start().await;
    let tenants = Tenants::new(&fakes);
    let proxy = Proxy::start_with_env(&tenants.initial(), &secrets()).await;
    let stay_calls = assert_both_ims_tenants_serve(&proxy, &fakes).await;

    let load = Load::start(&proxy.url(STAY_PRODUCTS), 4);
    // An in-flight request on a tenant that a reload removes finishes on its old configuration.
    let slow = tokio::spawn({
        let url = proxy.url("/delta/slow/800");
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    add_bravo(&proxy, &tenants).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    change_charlie_and_remove_delta(&proxy, &tenants, &fakes.upstream, slow).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    invalid_reloads_change_nothing(&proxy, &tenants).await;
    add_own_listener_and_rotate_secret(&proxy, &tenants, &fakes).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    remove_own_listener(&proxy, &tenants).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (ok, failed) = load.finish().await;
    assert!(failed.is_empty(), "requests failed during reloads: {failed:?}");
    assert!(ok > 20, "the load ran ({ok} requests)");
    assert_eq!(
        fakes.stay_ims.token_calls(),
        stay_calls,
        "no extra token call for the unchanged tenant"
    );
    let metrics = proxy.metrics().await;
    assert_reload_counts(&metrics, 4.0, 2.0);
    let stay_200 = sample(
        &metrics,
        r#"tokenbroker_requests_total{tenant="stay",status="200",source="upstream"}"#,
    );
    assert_eq!(stay_200, Some((ok + 1) as f64), "the unchanged tenant kept its metrics");
    proxy.stop().await;
}

fn binary_config(upstream: &Upstream, watch: bool, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nwatch_config = {watch}\n{}{extra}",
        static_tenant("alpha", &upstream.url(), "")
    )
}

/// The binary serving tenant `alpha` only (so `beta` is unknown), watching its file or not.
async fn start_binary_with_alpha(upstream: &Upstream, watch: bool) -> Binary {
    let binary = Binary::start(&binary_config(upstream, watch, ""), &[("STATIC_VALUE", STATIC_VALUE)]);
    assert_eq!(get(&binary.url("/beta/x")).await.status, StatusCode::NOT_FOUND);
    binary
}

/// Replaces the binary's file with one that adds tenant `beta`.
fn write_config_with_beta(binary: &Binary, upstream: &Upstream, watch: bool) {
    binary.replace_config(&binary_config(
        upstream,
        watch,
        &static_tenant("beta", &upstream.url(), ""),
    ));
}

/// Polls `/beta/x` for up to `limit` until it answers `status`; returns whether it did.
async fn beta_turns(binary: &Binary, status: StatusCode, limit: Duration) -> bool {
    eventually(limit, || async { get(&binary.url("/beta/x")).await.status == status }).await
}

#[tokio::test]
async fn sighup_reloads_the_file_and_rejects_an_invalid_one() {
    let upstream = Upstream::start().await;
    let binary = start_binary_with_alpha(&upstream, false).await;

    write_config_with_beta(&binary, &upstream, false);
    binary.signal("HUP");
    let added = beta_turns(&binary, StatusCode::OK, Duration::from_secs(5)).await;
    assert!(added, "SIGHUP applied the new file:\n{}", binary.logs());
    assert!(binary.logs().contains("configuration reloaded"));

    binary.replace_config("[server]\nlisten = \"127.0.0.1:0\"\nunknown_key = 1\n");
    binary.signal("HUP");
    let rejected = binary
        .logged("configuration reload rejected", Duration::from_secs(5))
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
    assert_reload_counts(&binary.metrics().await, 1.0, 1.0);
}

#[tokio::test]
async fn watch_config_picks_up_a_renamed_over_file() {
    let upstream = Upstream::start().await;
    let binary = start_binary_with_alpha(&upstream, true).await;
    write_config_with_beta(&binary, &upstream, true);
    let started = tokio::time::Instant::now();
    let added = beta_turns(&binary, StatusCode::OK, Duration::from_secs(6)).await;
    assert!(added, "the watcher reloaded the changed file:\n{}", binary.logs());
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(binary.logs().contains("configuration file changed"));

    // The watcher keeps watching after a reload: a second edit removes beta again.
    binary.replace_config(&binary_config(&upstream, true, ""));
    let removed = beta_turns(&binary, StatusCode::NOT_FOUND, Duration::from_secs(6)).await;
    assert!(removed, "the second change was applied:\n{}", binary.logs());
    let metrics = binary.metrics().await;
    assert_eq!(
        sample(&metrics, r#"tokenbroker_config_reloads_total{outcome="success"}"#),
        Some(2.0),
        "one reload per change, none spurious"
    );
}

#[tokio::test]
async fn with_watch_config_a_sighup_reload_is_not_applied_again_by_the_watcher() {
    let upstream = Upstream::start().await;
    let binary = start_binary_with_alpha(&upstream, true).await;
    write_config_with_beta(&binary, &upstream, true);
    binary.signal("HUP");
    let added = beta_turns(&binary, StatusCode::OK, Duration::from_secs(5)).await;
    assert!(added, "SIGHUP applied the new file:\n{}", binary.logs());
    // The watcher polls once a second and acts on a change seen by two polls in a row: three
    // seconds give it every chance to reload the file SIGHUP already applied.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_reload_counts(&binary.metrics().await, 1.0, 0.0);
    assert!(
        !binary.logs().contains("configuration file changed"),
        "the watcher took the applied file for a change:\n{}",
        binary.logs()
    );

    // The same for content SIGHUP tried and rejected: one failure, not two.
    binary.replace_config("[server]\nlisten = \"127.0.0.1:0\"\nunknown_key = 1\n");
    binary.signal("HUP");
    let rejected = binary
        .logged("configuration reload rejected", Duration::from_secs(5))
        .await;
    assert!(rejected, "{}", binary.logs());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_reload_counts(&binary.metrics().await, 1.0, 1.0);
}

/// A reload cannot lend the credentials to the network: the running listener keeps its address
/// until a restart, so a file that moves `listen` to loopback and drops the callers is rejected
/// whole while the socket is still on 0.0.0.0, and keyless requests stay refused.
#[tokio::test]
async fn a_reload_never_leaves_a_non_loopback_listener_without_callers() {
    let upstream = Upstream::start().await;
    let tenant = static_tenant("alpha", &upstream.url(), "");
    let with_caller = format!(
        "[server]\nlisten = \"0.0.0.0:0\"\nadmin_listen = \"127.0.0.1:0\"\n{tenant}\n\
         [[caller]]\nname = \"orders\"\nkey = {{ env = \"ORDERS_KEY\" }}\n"
    );
    let envs = [("STATIC_VALUE", STATIC_VALUE), ("ORDERS_KEY", "orders-key-0123456789")];
    let binary = Binary::start(&with_caller, &envs);
    assert!(
        binary.addr.ip().is_unspecified(),
        "bound to every address: {}",
        binary.addr
    );
    let keyless = format!("http://127.0.0.1:{}/alpha/x", binary.addr.port());
    assert_eq!(get(&keyless).await.status, StatusCode::UNAUTHORIZED);

    let port = binary.addr.port();
    binary.replace_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\n{tenant}"
    ));
    binary.signal("HUP");
    let rejected = binary
        .logged("configuration reload rejected", Duration::from_secs(5))
        .await;
    assert!(rejected, "the reload is refused:\n{}", binary.logs());
    assert!(binary.logs().contains("not a loopback address"), "{}", binary.logs());
    let answer = get(&keyless).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
    assert_eq!(upstream.started(), 0, "no keyless request reached the upstream");
    assert_reload_counts(&binary.metrics().await, 0.0, 1.0);
}

/// A rotated `{ file }` secret is used without a restart (`watch_config`): the file is swapped as
/// Kubernetes swaps a mounted Secret (a new timestamped directory, then `..data` renamed over to
/// point at it). Only the tenant whose credential changed is rebuilt: the IMS tenant keeps its
/// token (one token call in all).
#[tokio::test]
async fn watch_config_picks_up_a_rotated_secret_file() {
    let upstream = Upstream::start().await;
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS");
    let secrets = tempfile::tempdir().expect("temp dir");
    let mount = secrets.path();
    let publish = |version: &str, value: &str| {
        let dir = mount.join(format!("..2026_12_07_{version}"));
        std::fs::create_dir(&dir).expect("version dir");
        std::fs::write(dir.join("static_value"), value).expect("secret file");
        let staged = mount.join("..data_tmp");
        std::os::unix::fs::symlink(dir.file_name().expect("name"), &staged).expect("symlink");
        std::fs::rename(&staged, mount.join("..data")).expect("swap ..data");
    };
    publish("v1", "Bearer rotated-one\n");
    std::os::unix::fs::symlink("..data/static_value", mount.join("static_value")).expect("symlink");
    let value = format!("value = {{ file = \"{}\" }}", mount.join("static_value").display());
    let alpha = format!(
        "\n[[tenant]]\nname = \"alpha\"\nprovider = \"static\"\nupstream = \"{}\"\n{value}\n",
        upstream.url()
    );
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nwatch_config = true\n{}{alpha}",
        ims_tenant("stay", &ims, ""),
    );
    let binary = Binary::start(&toml, &[("IMS_SECRET", sandbox::IMS_CLIENT_SECRET)]);
    assert_eq!(get(&binary.url("/alpha/x")).await.status, StatusCode::OK);
    assert_eq!(upstream.last().headers["authorization"], "Bearer rotated-one");
    assert_eq!(
        get(&binary.url("/stay/x")).await.status,
        StatusCode::NOT_FOUND,
        "the IMS fake's own 404"
    );

    publish("v2", "Bearer rotated-two\n");
    let rotated = eventually(Duration::from_secs(6), || async {
        get(&binary.url("/alpha/x")).await;
        upstream.last().headers["authorization"] == "Bearer rotated-two"
    })
    .await;
    assert!(rotated, "the new secret is used:\n{}", binary.logs());
    assert_reload_counts(&binary.metrics().await, 1.0, 0.0);
    assert_eq!(ims.token_calls(), 1, "the unchanged tenant kept its token");
}
