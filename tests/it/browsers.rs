//! A web page cannot use an anonymous proxy (README, "Callers"): on a loopback listener without
//! callers, a foreign `Host` (DNS rebinding) gets 421 and a browser's cross-site request 403,
//! before anything reaches the upstream; with callers the key decides, whatever the host.

use std::net::SocketAddr;

use crate::support::tenants::{SERVER, static_tenant};
use crate::support::upstream::Upstream;
use crate::support::{Proxy, env, raw_status_line};

const STATIC_VALUE: &str = "Bearer browsers-static-credential";
const KEY: &str = "browsers-caller-key-0123456789";

/// `GET /acme/x` on a fresh connection with `headers` (each a `name: value` line); the status code.
async fn status(addr: SocketAddr, headers: &[String]) -> u16 {
    let mut request = String::from("GET /acme/x HTTP/1.1\r\nconnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let line = raw_status_line(addr, &request).await;
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {line:?}"))
}

async fn start(upstream: &Upstream, extra: &str) -> Proxy {
    let toml = format!(
        "{SERVER}allowed_hosts = [\"tokenbroker.internal\"]\n{}{extra}",
        static_tenant("acme", &upstream.url(), "")
    );
    Proxy::start_with_env(&toml, &env(&[("STATIC_VALUE", STATIC_VALUE), ("KEY", KEY)])).await
}

#[tokio::test]
async fn an_anonymous_loopback_listener_answers_local_programs_only() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "").await;
    let port = proxy.addr.port();
    let host = |name: &str| format!("host: {name}");

    for refused in [
        "attacker.example",
        "attacker.example:8080",
        "10.1.2.3",
        "127.0.0.1.nip.io",
    ] {
        assert_eq!(status(proxy.addr, &[host(refused)]).await, 421, "Host: {refused}");
    }
    let local = host(&format!("127.0.0.1:{port}"));
    for cross_site in [
        "origin: https://attacker.example".to_owned(),
        "origin: null".to_owned(),
        "sec-fetch-site: cross-site".to_owned(),
    ] {
        assert_eq!(
            status(proxy.addr, &[local.clone(), cross_site.clone()]).await,
            403,
            "{cross_site}"
        );
    }
    assert_eq!(upstream.started(), 0, "nothing refused reached the upstream");

    let origin = format!("origin: http://localhost:{port}");
    for passed in [
        vec![local.clone()],
        vec![host(&format!("localhost:{port}"))],
        vec![host(&format!("[::1]:{port}"))],
        vec![host("TokenBroker.Internal")],
        vec![local.clone(), origin, "sec-fetch-site: same-site".to_owned()],
    ] {
        assert_eq!(status(proxy.addr, &passed).await, 200, "{passed:?}");
    }
    assert_eq!(upstream.recorded().len(), 5);
    assert_eq!(upstream.last().headers["authorization"], STATIC_VALUE);
}

#[tokio::test]
async fn with_callers_the_key_decides_and_no_tenant_name_is_revealed_without_one() {
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, "[[caller]]\nname = \"orders\"\nkey = { env = \"KEY\" }\n").await;
    let key = format!("tokenbroker-key: {KEY}");
    let foreign = "host: attacker.example".to_owned();
    assert_eq!(status(proxy.addr, &[foreign.clone(), key.clone()]).await, 200);
    assert_eq!(status(proxy.addr, &[foreign, "origin: null".to_owned()]).await, 401);

    // A keyless request learns nothing from the path: a real tenant and a made-up one both get
    // 401 (the tenant is looked up only once the key is known).
    let keyless = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    for path in ["/acme/x", "/nosuch/x", "/"] {
        let line = raw_status_line(proxy.addr, &keyless(path)).await;
        assert!(line.starts_with("HTTP/1.1 401"), "{path}: {line}");
    }
    let line = raw_status_line(
        proxy.addr,
        &format!("GET /nosuch/x HTTP/1.1\r\nhost: 127.0.0.1\r\n{key}\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(
        line.starts_with("HTTP/1.1 404"),
        "with a key, an unknown tenant is 404: {line}"
    );
}
