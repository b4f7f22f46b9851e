//! No secret and no token is ever written anywhere (README, "Configuration"): the real binary at `RUST_LOG=trace`
//! goes through token fetches for three token-fetching providers, requests signed for
//! `adobe_commerce` (its four integration secrets), background renewals, a 401
//! replay, refresh-token fallback, error responses and a SIGHUP reload; then its stderr, `/metrics`,
//! `/tenants`, `/readyz` and every error body are searched for every secret and every token the
//! fakes issued. The same again with the shared store on a password-protected Redis, where the
//! store's URL (with its password) is one more secret.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use tokenbroker::sandbox::{
    self, ImsOptions, ImsSandbox, MagentoOptions, MagentoSandbox, ShoplineOptions, ShoplineSandbox, VantageOptions,
    VantageSandbox,
};

use crate::support::redis::RedisServer;
use crate::support::tenants::SERVER;
use crate::support::upstream::Upstream;
use crate::support::{Answer, Binary, assert_no_secret_in, eventually, get, send, unused_addr};

/// Distinct, recognisable secret values: a hit cannot be a coincidence.
struct Secrets {
    ims: String,
    app_secret: String,
    code: String,
    vantage: String,
    password: String,
    static_token: String,
    caller_key: String,
}

impl Secrets {
    fn new() -> Self {
        let unique = |what: &str| format!("{what}-{:016x}", rand::random::<u64>());
        Self {
            ims: unique("ims-client-secret"),
            app_secret: unique("shopline-app-secret"),
            code: unique("shopline-code"),
            vantage: unique("vantage-client-secret"),
            password: unique("vantage-password"),
            static_token: unique("static-token"),
            caller_key: unique("caller-key"),
        }
    }

    fn all(&self) -> Vec<&str> {
        vec![
            &self.ims,
            &self.app_secret,
            &self.code,
            &self.vantage,
            &self.password,
            &self.static_token,
            &self.caller_key,
        ]
    }
}

const TTL: Duration = Duration::from_secs(3);

struct Fakes {
    ims: ImsSandbox,
    shopline: ShoplineSandbox,
    vantage: VantageSandbox,
    /// Signed on every request with its integration's four secrets.
    magento: MagentoSandbox,
}

async fn fakes(secrets: &Secrets) -> Fakes {
    let ims = ImsSandbox::start(ImsOptions {
        client_secrets: vec![secrets.ims.clone()],
        token_ttl: TTL,
        ..ImsOptions::default()
    });
    let shopline = ShoplineSandbox::start(ShoplineOptions {
        app_secret: secrets.app_secret.clone(),
        codes: vec![secrets.code.clone()],
        token_ttl: TTL,
        ..ShoplineOptions::default()
    });
    let vantage = VantageSandbox::start(VantageOptions {
        client_secrets: vec![secrets.vantage.clone()],
        password: secrets.password.clone(),
        token_ttl: TTL,
        ..VantageOptions::default()
    });
    let magento = MagentoSandbox::start(MagentoOptions::default());
    let (ims, shopline, vantage, magento) = tokio::join!(ims, shopline, vantage, magento);
    Fakes {
        ims: ims.expect("fake IMS"),
        shopline: shopline.expect("fake SHOPLINE"),
        vantage: vantage.expect("fake Vantage"),
        magento: magento.expect("fake Magento"),
    }
}

/// The three token-fetching tenants, one per fake, their secrets from `T_*` variables.
fn token_tenants(fakes: &Fakes) -> String {
    format!(
        r#"
[[tenant]]
name = "ims"
provider = "adobe_ims"
upstream = "{ims_api}"
token_url = "{ims_token}"
client_id = "{ims_client}"
client_secret = {{ env = "T_IMS_SECRET" }}
scopes = ["openid", "AdobeID", "commerce.accs"]
min_token_age = "0s"

[[tenant]]
name = "shop"
provider = "shopline"
handle = "{handle}"
upstream = "{shopline}"
app_key = "{app_key}"
app_secret = {{ env = "T_APP_SECRET" }}
code = {{ env = "T_CODE" }}

[[tenant]]
name = "vantage"
provider = "vantage"
base_url = "{vantage}"
tenant_id = "{vantage_tenant}"
client_id = "{vantage_client}"
client_secret = {{ env = "T_VANTAGE_SECRET" }}
grant = "password"
username = "{username}"
password = {{ env = "T_PASSWORD" }}
offline_access = true
min_token_age = "0s"

[[tenant]]
name = "commerce"
provider = "adobe_commerce"
upstream = "{magento}"
consumer_key = {{ env = "T_CK" }}
consumer_secret = {{ env = "T_CS" }}
access_token = {{ env = "T_AT" }}
access_token_secret = {{ env = "T_ATS" }}
"#,
        ims_api = fakes.ims.api_base_url(),
        ims_token = fakes.ims.token_url(),
        ims_client = sandbox::IMS_CLIENT_ID,
        handle = sandbox::SHOPLINE_HANDLE,
        shopline = fakes.shopline.base_url(),
        app_key = sandbox::SHOPLINE_APP_KEY,
        vantage = fakes.vantage.base_url(),
        vantage_tenant = sandbox::VANTAGE_TENANT_ID,
        vantage_client = sandbox::VANTAGE_CLIENT_ID,
        username = sandbox::VANTAGE_USERNAME,
        magento = fakes.magento.base_url(),
    )
}

/// `fixed` (a static credential, 1 KiB bodies, plus `extra_header`), `down` (an upstream that
/// refuses connections) and the one caller.
fn static_tenants_and_caller(plain_upstream: &str, extra_header: &str) -> String {
    let closed = unused_addr();
    format!(
        r#"
[[tenant]]
name = "fixed"
provider = "static"
upstream = "{plain_upstream}"
value = {{ env = "T_STATIC" }}
max_body = "1KiB"
{extra_header}

[[tenant]]
name = "down"
provider = "static"
upstream = "http://{closed}"
value = {{ env = "T_STATIC" }}

[[caller]]
name = "test"
key = {{ env = "T_CALLER_KEY" }}
tenants = ["*"]
"#
    )
}

/// The whole config; `store` is a `[store]` section or empty (the default memory store).
fn config(fakes: &Fakes, plain_upstream: &str, extra_header: &str, store: &str) -> String {
    format!(
        "{SERVER}{store}{}{}",
        token_tenants(fakes),
        static_tenants_and_caller(plain_upstream, extra_header)
    )
}

/// The variables `config` reads; `static_value` is the whole header value for `fixed` and `down`.
fn binary_env<'a>(secrets: &'a Secrets, static_value: &'a str) -> [(&'static str, &'a str); 11] {
    [
        ("T_IMS_SECRET", secrets.ims.as_str()),
        ("T_APP_SECRET", secrets.app_secret.as_str()),
        ("T_CODE", secrets.code.as_str()),
        ("T_VANTAGE_SECRET", secrets.vantage.as_str()),
        ("T_PASSWORD", secrets.password.as_str()),
        ("T_STATIC", static_value),
        ("T_CALLER_KEY", secrets.caller_key.as_str()),
        ("T_CK", sandbox::MAGENTO_CONSUMER_KEY),
        ("T_CS", sandbox::MAGENTO_CONSUMER_SECRET),
        ("T_AT", sandbox::MAGENTO_ACCESS_TOKEN),
        ("T_ATS", sandbox::MAGENTO_ACCESS_TOKEN_SECRET),
    ]
}

async fn call(binary: &Binary, method: &str, path: &str, key: &str, body: usize) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(binary.url(path))
        .header("tokenbroker-key", key)
        .body(Full::new(vec![b'x'; body].into()))
        .expect("valid request");
    send(request).await
}

const PATHS: [&str; 5] = [
    "/ims/rest/default/V1/products?searchCriteria[pageSize]=1",
    "/shop/admin/openapi/v20230901/products/products.json",
    "/vantage/api/publicapi/v1/skills",
    "/fixed/V1/products",
    "/commerce/rest/default/V1/products?searchCriteria[pageSize]=1",
];

/// Every tenant has renewed at least `n` times (its `renewals_ok` in `/tenants`).
async fn renewed(binary: &Binary, n: u64) -> bool {
    let tenants = get(&binary.admin_url("/tenants")).await.json();
    tenants["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter(|t| ["ims", "shop", "vantage"].contains(&t["name"].as_str().unwrap_or_default()))
        .all(|t| t["token"]["renewals_ok"].as_u64() >= Some(n))
}

/// A GET on every tenant in [`PATHS`] succeeds.
async fn assert_every_tenant_serves(binary: &Binary, key: &str) {
    for path in PATHS {
        let answer = call(binary, "GET", path, key, 0).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
    }
}

/// Background renewals, then 401 → renew → replay; for Vantage the refresh token is revoked too,
/// so the renewal falls back to the password grant.
async fn renew_and_replay(binary: &Binary, fakes: &Fakes, key: &str) {
    // 3 s tokens renew after 1.5–2.4 s.
    assert!(
        eventually(Duration::from_secs(8), || renewed(binary, 2)).await,
        "every token renewed in the background"
    );
    fakes.ims.revoke_all();
    fakes.vantage.revoke_all();
    for path in [PATHS[0], PATHS[2]] {
        let answer = call(binary, "GET", path, key, 0).await;
        assert_eq!(answer.status, StatusCode::OK, "{path} replayed: {}", answer.text());
    }
}

/// Error responses produced by the proxy; returns their bodies.
async fn provoke_errors(binary: &Binary, key: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for (method, path, key, body, status) in [
        ("GET", "/nobody/x", key, 0, StatusCode::NOT_FOUND),
        ("POST", "/fixed/V1/products", key, 2048, StatusCode::PAYLOAD_TOO_LARGE),
        ("GET", "/down/x", key, 0, StatusCode::BAD_GATEWAY),
        ("GET", "/fixed/V1/products", "wrong-key", 0, StatusCode::UNAUTHORIZED),
    ] {
        let answer = call(binary, method, path, key, body).await;
        assert_eq!(answer.status, status, "{path}");
        bodies.push(answer.text());
    }
    bodies
}

/// Rewrites the config file (`fixed` gets a header) and reloads it by SIGHUP.
async fn reload_by_sighup(binary: &Binary, fakes: &Fakes, upstream: &Upstream, store: &str) {
    std::fs::write(
        &binary.config_path,
        config(fakes, &upstream.url(), r#"headers = { "x-team" = "orders" }"#, store),
    )
    .expect("rewrite config");
    binary.signal("HUP");
    let reloaded = binary.logged("configuration reloaded", Duration::from_secs(5)).await;
    assert!(reloaded, "the reload happened");
}

/// What the binary showed: the admin answers, the error `bodies`, and its stderr at trace level.
async fn surfaces(binary: &Binary, bodies: Vec<String>) -> Vec<(&'static str, String)> {
    let mut surfaces = vec![
        ("/metrics", binary.metrics().await),
        ("/tenants", get(&binary.admin_url("/tenants")).await.text()),
        ("/readyz", get(&binary.admin_url("/readyz")).await.text()),
    ];
    surfaces.extend(bodies.into_iter().map(|b| ("an error body", b)));
    // Give the last events a moment to be written, then take stderr.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = binary.logs();
    assert!(logs.contains("\"level\":\"TRACE\""), "the binary logged at trace level");
    surfaces.push(("stderr", logs));
    surfaces
}

/// Every secret, and every token the fakes issued (having issued as many as the run implies).
fn needles(secrets: &Secrets, fakes: &Fakes) -> Vec<String> {
    let mut tokens = fakes.ims.issued_tokens();
    tokens.extend(fakes.shopline.issued_tokens());
    tokens.extend(fakes.vantage.issued_tokens());
    assert!(
        fakes.ims.issued_tokens().len() >= 3,
        "IMS issued first, renewed and replay tokens"
    );
    assert!(fakes.shopline.issued_tokens().len() >= 2);
    assert!(fakes.vantage.issued_tokens().len() >= 4, "access and refresh tokens");
    let mut needles: Vec<String> = secrets.all().into_iter().map(str::to_owned).collect();
    // The integration's four values (the fake holds the sandbox's).
    needles.extend([sandbox::MAGENTO_CONSUMER_KEY, sandbox::MAGENTO_CONSUMER_SECRET].map(str::to_owned));
    needles.extend(fakes.magento.issued_tokens());
    for token in &tokens {
        needles.push(token.clone());
        // A JWT's signature alone would also be a leak (its header segment is not secret).
        if let Some((_, signature)) = token.rsplit_once('.') {
            needles.push(signature.to_owned());
        }
    }
    needles
}

/// The whole run: start at trace level with `store` and `extra_envs`, use every path, search
/// every surface for every secret and token and for each of `extra_needles`.
async fn run_and_search(store: &str, extra_envs: &[(&str, &str)], extra_needles: &[String]) {
    let secrets = Secrets::new();
    let fakes = fakes(&secrets).await;
    let upstream = Upstream::start().await;
    let static_value = format!("Bearer {}", secrets.static_token);
    let mut envs = binary_env(&secrets, &static_value).to_vec();
    envs.extend_from_slice(extra_envs);
    let binary = Binary::start_with_log(&config(&fakes, &upstream.url(), "", store), &envs, "trace");
    let key = secrets.caller_key.as_str();

    let ready = eventually(Duration::from_secs(10), || async {
        get(&binary.admin_url("/readyz")).await.status == StatusCode::OK
    })
    .await;
    assert!(ready, "{}", get(&binary.admin_url("/readyz")).await.text());
    assert_every_tenant_serves(&binary, key).await;
    renew_and_replay(&binary, &fakes, key).await;
    let bodies = provoke_errors(&binary, key).await;
    // Traffic on the reloaded configuration too.
    reload_by_sighup(&binary, &fakes, &upstream, store).await;
    assert_every_tenant_serves(&binary, key).await;

    let surfaces = surfaces(&binary, bodies).await;
    let mut needles = needles(&secrets, &fakes);
    needles.extend_from_slice(extra_needles);
    for (surface, text) in &surfaces {
        assert_no_secret_in(surface, text, &needles);
    }
}

#[tokio::test]
async fn no_secret_or_token_appears_in_logs_metrics_tenants_or_errors() {
    run_and_search("", &[], &[]).await;
}

/// The same with the shared store on a password-protected Redis: tokens now also travel through
/// sealing, commits, adoption and announcements, and the store's URL holds a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_token_or_redis_password_appears_in_redis_mode() {
    let password = format!("redis-password-{:016x}", rand::random::<u64>());
    let redis = RedisServer::start_with_password(&password);
    let url = redis.url();
    let store = "[store]\nkind = \"redis\"\nurl = { env = \"T_REDIS_URL\" }\n";
    run_and_search(store, &[("T_REDIS_URL", &url)], &[password.clone(), url.clone()]).await;
    let stored = redis.keys().await;
    assert!(
        stored.iter().filter(|k| k.ends_with(":token")).count() >= 3,
        "the tokens went through Redis: {stored:?}"
    );
}
