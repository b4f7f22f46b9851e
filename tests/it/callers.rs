//! Who may use the proxy (README, "Configuration", callers): caller keys by `Authorization:
//! Bearer` or `tokenbroker-key`, tenant and method lists, the key never reaching the upstream, and
//! the rule that a listener reachable from other machines needs callers (or an explicit
//! `allow_anonymous`).

use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::tenants::{SERVER, static_tenant};
use crate::support::upstream::Upstream;
use crate::support::{Answer, MapEnv, Proxy, env, send};

const ORDERS_KEY: &str = "orders-caller-key-0123456789";
const OPS_KEY: &str = "ops-caller-key-9876543210";
const STATIC_VALUE: &str = "Bearer callers-static-credential";

fn secrets() -> MapEnv {
    env(&[
        ("ORDERS_KEY", ORDERS_KEY),
        ("OPS_KEY", OPS_KEY),
        ("STATIC_VALUE", STATIC_VALUE),
    ])
}

const CALLERS: &str = r#"
[[caller]]
name = "orders-service"
key = { env = "ORDERS_KEY" }
tenants = ["acme"]
methods = ["GET", "PUT"]

[[caller]]
name = "ops"
key = { env = "OPS_KEY" }
tenants = ["*"]
"#;

async fn start(upstream: &Upstream) -> Proxy {
    let toml = format!(
        "{SERVER}{}{}{CALLERS}",
        static_tenant("acme", &upstream.url(), ""),
        // A tenant whose credential is not an Authorization header: the caller's must still go.
        static_tenant("shop", &upstream.url(), "header = \"x-shop-token\""),
    );
    Proxy::start_with_env(&toml, &secrets()).await
}

async fn call(proxy: &Proxy, method: &str, path: &str, header: Option<(&str, &str)>) -> Answer {
    let mut request = Request::builder().method(method).uri(proxy.url(path));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    send(request.body(Full::default()).expect("valid request")).await
}

fn assert_problem(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.headers["tokenbroker-error"], code);
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    let problem = answer.json();
    assert_eq!(problem["status"], status.as_u16());
    assert_eq!(problem["type"], format!("urn:tokenbroker:error:{code}"));
    let text = answer.text();
    assert!(
        !text.contains(ORDERS_KEY) && !text.contains(OPS_KEY),
        "no key in an error body"
    );
}

/// No key, or any key that is not exactly a configured one, is refused before the upstream.
async fn assert_wrong_keys_refused(proxy: &Proxy, upstream: &Upstream) {
    assert_problem(
        &call(proxy, "GET", "/acme/x", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    for wrong in [
        ("tokenbroker-key", "orders-caller-key-012345678"),
        ("tokenbroker-key", "orders-caller-key-0123456789x"),
        ("authorization", "Bearer not-a-key"),
        ("authorization", &format!("Basic {ORDERS_KEY}")),
        ("authorization", ORDERS_KEY),
    ] {
        let answer = call(proxy, "GET", "/acme/x", Some(wrong)).await;
        assert_problem(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(upstream.started(), 0, "refused requests never reach the upstream");
}

/// The orders key is accepted as a bearer token and as `tokenbroker-key`, and replaced by the
/// tenant's credential.
async fn assert_orders_key_accepted_both_ways(proxy: &Proxy, upstream: &Upstream) {
    let bearer = format!("Bearer {ORDERS_KEY}");
    let answer = call(proxy, "GET", "/acme/by-bearer", Some(("authorization", &bearer))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.target, "/by-bearer");
    assert_eq!(
        seen.headers["authorization"], STATIC_VALUE,
        "the tenant's credential, not the key"
    );
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(!seen.headers.contains_key("tokenbroker-key"));

    let answer = call(proxy, "GET", "/acme/by-header", Some(("tokenbroker-key", ORDERS_KEY))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.target, "/by-header");
    assert_eq!(seen.headers["authorization"], STATIC_VALUE);
    assert!(!seen.headers.contains_key("tokenbroker-key"));
}

/// No header of any request the upstream received contains a caller key.
fn assert_no_key_reached(upstream: &Upstream) {
    for recorded in upstream.recorded() {
        for value in recorded.headers.values() {
            let value = value.to_str().unwrap_or_default();
            assert!(
                !value.contains(ORDERS_KEY) && !value.contains(OPS_KEY),
                "a key reached the upstream"
            );
        }
    }
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream).await;

    assert_wrong_keys_refused(&proxy, &upstream).await;
    assert_orders_key_accepted_both_ways(&proxy, &upstream).await;

    // On a tenant whose credential travels in another header, the caller's Authorization is
    // removed rather than passed along.
    let bearer = format!("Bearer {OPS_KEY}");
    let answer = call(&proxy, "GET", "/shop/products", Some(("authorization", &bearer))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-shop-token"], STATIC_VALUE);
    assert!(
        !seen.headers.contains_key("authorization"),
        "the caller key never goes upstream"
    );
    assert_no_key_reached(&upstream);
    proxy.stop().await;
}

#[tokio::test]
async fn tenant_and_method_lists_are_enforced() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream).await;
    let orders = Some(("tokenbroker-key", ORDERS_KEY));

    let answer = call(&proxy, "GET", "/shop/products", orders).await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(answer.json()["tenant"], "shop");
    assert_problem(
        &call(&proxy, "POST", "/acme/orders", orders).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &call(&proxy, "DELETE", "/acme/orders/1", orders).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(upstream.started(), 0, "forbidden requests never reach the upstream");

    assert_eq!(
        call(&proxy, "PUT", "/acme/orders/1", orders).await.status,
        StatusCode::OK
    );
    assert_eq!(upstream.last().method, http::Method::PUT);
    // A caller with ["*"] and no method list may do anything on any tenant.
    let ops = Some(("tokenbroker-key", OPS_KEY));
    assert_eq!(
        call(&proxy, "DELETE", "/acme/orders/1", ops).await.status,
        StatusCode::OK
    );
    assert_eq!(call(&proxy, "POST", "/shop/products", ops).await.status, StatusCode::OK);
    // An unknown tenant is still 404 for a valid caller.
    let answer = call(&proxy, "GET", "/nobody/x", ops).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(upstream.started(), 3);
    proxy.stop().await;
}

#[test]
fn a_non_loopback_listener_needs_callers_or_allow_anonymous() {
    let tenant = static_tenant("acme", "http://127.0.0.1:9", "");
    let parse = |toml: &str| tokenbroker::config::parse(toml, "t.toml", &secrets());

    let errors = parse(&format!("[server]\nlisten = \"0.0.0.0:8080\"\n{tenant}"))
        .expect_err("anonymous on all interfaces is refused")
        .to_string();
    assert!(errors.contains("allow_anonymous"), "{errors}");
    assert!(errors.contains("listen"), "{errors}");

    let own = static_tenant("own", "http://127.0.0.1:9", "listen = \"10.1.2.3:8081\"");
    let errors = parse(&format!("[server]\nlisten = \"127.0.0.1:8080\"\n{own}"))
        .expect_err("a tenant listener off loopback is refused too")
        .to_string();
    assert!(errors.contains("allow_anonymous"), "{errors}");

    parse(&format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\nallow_anonymous = true\n{tenant}"
    ))
    .expect("allowed explicitly");
    parse(&format!("[server]\nlisten = \"0.0.0.0:8080\"\n{tenant}{CALLERS}")).expect("allowed with callers");
    parse(&format!("[server]\nlisten = \"127.0.0.1:8080\"\n{tenant}")).expect("loopback needs no callers");
    parse(&format!("[server]\nlisten = \"[::1]:8080\"\n{tenant}")).expect("IPv6 loopback needs no callers");
}
