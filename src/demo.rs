//! `tokenbroker demo`: the five sandbox providers plus a proxy wired to them, on loopback, with
//! no credentials needed. The proxy is configured through the same TOML path as production (the
//! text is generated here, its secrets come from an in-memory environment), so the demo exercises
//! what operators run.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::app::{App, Listeners};
use crate::config::{self, Loaded, MapEnv};
use crate::sandbox::{self, Sandbox, WebhookEcho};
use crate::signals;

/// Ports the demo prefers, so the printed commands are the same every time when they are free.
const PREFERRED_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
const PREFERRED_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
const PREFERRED_WEBHOOKS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8090);

/// The demo's SHOPLINE delivery: signed with the sandbox app secret when the demo prints it.
const DEMO_WEBHOOK_BODY: &str = r#"{"id":1001,"topic":"orders/create","total_price":"42.00"}"#;

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run() -> ExitCode {
    let sandbox = match Sandbox::start().await {
        Ok(sandbox) => sandbox,
        Err(error) => {
            eprintln!("error: cannot start the sandbox providers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match bind().await {
        Ok(bound) => bound,
        Err(error) => {
            eprintln!("error: cannot listen on loopback: {error}");
            return ExitCode::FAILURE;
        }
    };
    let echo = match WebhookEcho::start().await {
        Ok(echo) => echo,
        Err(error) => {
            eprintln!("error: cannot start the webhook echo target: {error}");
            return ExitCode::FAILURE;
        }
    };
    match serve(&sandbox, &echo, listeners).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The proxy's, the admin and the webhook listener, each on its preferred port when that is free,
/// else on an ephemeral one. They are bound before the configuration names their addresses, so no
/// other process (a second demo, say) can take a port between the choice and the bind.
async fn bind() -> std::io::Result<(TcpListener, TcpListener, TcpListener)> {
    Ok((
        bind_preferred(PREFERRED_LISTEN).await?,
        bind_preferred(PREFERRED_ADMIN).await?,
        bind_preferred(PREFERRED_WEBHOOKS).await?,
    ))
}

async fn bind_preferred(preferred: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(preferred).await {
        Ok(listener) => Ok(listener),
        Err(_) => TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await,
    }
}

async fn serve(
    sandbox: &Sandbox,
    echo: &WebhookEcho,
    (main, admin, webhooks): (TcpListener, TcpListener, TcpListener),
) -> Result<(), Box<dyn std::error::Error>> {
    let (addr, admin_addr, webhook_addr) = (main.local_addr()?, admin.local_addr()?, webhooks.local_addr()?);
    let (mut toml, env) = demo_config(sandbox, addr, admin_addr);
    toml = toml.replacen(
        "[server]\n",
        &format!("[server]\nwebhook_listen = \"{webhook_addr}\"\n"),
        1,
    );
    toml.push_str(&demo_webhook(echo));
    let loaded: Loaded = config::parse(&toml, "demo.toml", &env)
        .map_err(|errors| format!("the generated demo configuration is invalid (a bug):\n{errors}"))?;
    let app = App::build(&loaded.config, prometheus_client::registry::Registry::default())?;
    print!("{}", instructions(addr, admin_addr, webhook_addr));
    let listeners = Listeners {
        main,
        admin: Some(admin),
        webhooks: Some(webhooks),
        tenants: Vec::new(),
    };
    tracing::info!(listen = %addr, "tokenbroker demo serving");
    app.run(listeners, signals::terminate()).await;
    Ok(())
}

/// The demo configuration: one tenant per sandbox provider, secrets by `{ env }` as operators write them.
pub fn demo_config(sandbox: &Sandbox, listen: SocketAddr, admin: SocketAddr) -> (String, MapEnv) {
    (demo_toml(sandbox, listen, admin), demo_env(sandbox))
}

fn demo_toml(sandbox: &Sandbox, listen: SocketAddr, admin: SocketAddr) -> String {
    let scopes = sandbox::ACCS_SCOPES
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[server]
listen = "{listen}"
admin_listen = "{admin}"

[[tenant]]
name = "demo-adobe"
provider = "adobe_ims"
upstream = "{ims_api}"
token_url = "{ims_token}"
client_id = "{ims_client}"
client_secret = {{ env = "DEMO_IMS_CLIENT_SECRET" }}
scopes = [{scopes}]

[[tenant]]
name = "demo-shopline"
provider = "shopline"
handle = "{handle}"
upstream = "{shopline}"
app_key = "{app_key}"
app_secret = {{ env = "DEMO_SHOPLINE_APP_SECRET" }}
code = {{ env = "DEMO_SHOPLINE_CODE" }}

[[tenant]]
name = "demo-vantage"
provider = "vantage"
base_url = "{vantage}"
tenant_id = "{vantage_tenant}"
client_id = "{vantage_client}"
client_secret = {{ env = "DEMO_VANTAGE_CLIENT_SECRET" }}

[[tenant]]
name = "demo-cyberbiz"
provider = "cyberbiz"
upstream = "{cyberbiz}"
token = {{ env = "DEMO_CYBERBIZ_TOKEN" }}

"#,
        ims_api = sandbox.ims.api_base_url(),
        ims_token = sandbox.ims.token_url(),
        ims_client = sandbox::IMS_CLIENT_ID,
        handle = sandbox::SHOPLINE_HANDLE,
        shopline = sandbox.shopline.base_url(),
        app_key = sandbox::SHOPLINE_APP_KEY,
        vantage = sandbox.vantage.base_url(),
        vantage_tenant = sandbox::VANTAGE_TENANT_ID,
        vantage_client = sandbox::VANTAGE_CLIENT_ID,
        cyberbiz = sandbox.cyberbiz.base_url(),
    ) + &commerce_tenant(sandbox)
}

/// The `adobe_commerce` tenant: every request signed for the Magento fake.
fn commerce_tenant(sandbox: &Sandbox) -> String {
    format!(
        r#"[[tenant]]
name = "demo-commerce"
provider = "adobe_commerce"
upstream = "{magento}"
consumer_key = {{ env = "DEMO_MAGENTO_CONSUMER_KEY" }}
consumer_secret = {{ env = "DEMO_MAGENTO_CONSUMER_SECRET" }}
access_token = {{ env = "DEMO_MAGENTO_ACCESS_TOKEN" }}
access_token_secret = {{ env = "DEMO_MAGENTO_ACCESS_TOKEN_SECRET" }}
"#,
        magento = sandbox.magento.base_url(),
    )
}

/// The demo's webhook: SHOPLINE deliveries verified with the SHOPLINE tenant's app secret and
/// forwarded to the echo target.
fn demo_webhook(echo: &WebhookEcho) -> String {
    format!(
        r#"
[[webhook]]
name = "demo-shopline-orders"
tenant = "demo-shopline"
forward = "{echo}"
"#,
        echo = echo.url(),
    )
}

/// A `curl` that sends the demo's SHOPLINE delivery, signed as SHOPLINE signs (lowercase hex
/// HMAC-SHA256 of the raw body with the app secret).
fn webhook_curl(webhooks: SocketAddr) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, sandbox::SHOPLINE_APP_SECRET.as_bytes());
    let signature = hex::encode(ring::hmac::sign(&key, DEMO_WEBHOOK_BODY.as_bytes()));
    format!(
        "curl -s -X POST 'http://{webhooks}/demo-shopline-orders' -H 'content-type: application/json' \\\n    \
         -H 'x-shopline-topic: orders/create' -H 'x-shopline-webhook-id: demo-delivery-1' \\\n    \
         -H 'x-shopline-hmac-sha256: {signature}' \\\n    --data-binary '{DEMO_WEBHOOK_BODY}' -w '%{{http_code}}\\n'"
    )
}

/// The sandbox's own credentials, held in memory: never real ones.
fn demo_env(sandbox: &Sandbox) -> MapEnv {
    MapEnv::new([
        ("DEMO_IMS_CLIENT_SECRET", sandbox::IMS_CLIENT_SECRET.to_owned()),
        ("DEMO_SHOPLINE_APP_SECRET", sandbox::SHOPLINE_APP_SECRET.to_owned()),
        ("DEMO_SHOPLINE_CODE", sandbox::SHOPLINE_AUTH_CODE.to_owned()),
        ("DEMO_VANTAGE_CLIENT_SECRET", sandbox::VANTAGE_CLIENT_SECRET.to_owned()),
        // A realistic 2-hour token: /readyz lists it under `expiring` and stays ready.
        ("DEMO_CYBERBIZ_TOKEN", sandbox.cyberbiz.token()),
        ("DEMO_MAGENTO_CONSUMER_KEY", sandbox::MAGENTO_CONSUMER_KEY.to_owned()),
        (
            "DEMO_MAGENTO_CONSUMER_SECRET",
            sandbox::MAGENTO_CONSUMER_SECRET.to_owned(),
        ),
        ("DEMO_MAGENTO_ACCESS_TOKEN", sandbox::MAGENTO_ACCESS_TOKEN.to_owned()),
        (
            "DEMO_MAGENTO_ACCESS_TOKEN_SECRET",
            sandbox::MAGENTO_ACCESS_TOKEN_SECRET.to_owned(),
        ),
    ])
}

/// Ready-to-paste commands (`-g` keeps curl from globbing the brackets of Magento queries).
fn instructions(addr: SocketAddr, admin: SocketAddr, webhooks: SocketAddr) -> String {
    let base = format!("http://{addr}");
    let mut text = String::from("\ntokenbroker demo: sandbox providers and a proxy, all on loopback. Try:\n\n");
    for (what, path) in [
        (
            "Adobe Commerce (IMS token, /rest/<store>/V1 preset, Store header)",
            "/demo-adobe/rest/default/V1/products?searchCriteria[pageSize]=2",
        ),
        (
            "SHOPLINE (signed token/create, then token/refresh)",
            "/demo-shopline/admin/openapi/v20230901/products/products.json",
        ),
        (
            "ABBYY Vantage (client credentials)",
            "/demo-vantage/api/publicapi/v1/skills",
        ),
        ("CYBERBIZ (static JWT, 5 requests/s)", "/demo-cyberbiz/v1/products"),
        (
            "Adobe Commerce on cloud infrastructure / on-premises (every request OAuth 1.0a signed)",
            "/demo-commerce/rest/default/V1/products?searchCriteria[pageSize]=2",
        ),
    ] {
        let _ = writeln!(text, "  # {what}\n  curl -sg '{base}{path}'\n");
    }
    let _ = writeln!(
        text,
        "  # Adobe's customer REST tutorial, its token step deleted (README, \"Try a vendor tutorial\"):\n  REST_ENDPOINT=\"{base}/demo-adobe\"\n"
    );
    let _ = writeln!(
        text,
        "  # Readiness, and each tenant's token state (never the token itself)\n  curl -s http://{admin}/readyz\n  curl -s http://{admin}/tenants\n"
    );
    let _ = writeln!(
        text,
        "  # The status page, for a browser: each tenant's token, limiter and readiness, the store, reloads\n  http://{admin}/\n"
    );
    let _ = writeln!(
        text,
        "  # Send a webhook: a SHOPLINE delivery signed with the app secret only the broker holds,\n  \
         # verified and forwarded to a demo echo target (a repeat is answered 200, not forwarded)\n  {}\n",
        webhook_curl(webhooks)
    );
    text.push_str("Ctrl-C stops everything.\n");
    text
}
