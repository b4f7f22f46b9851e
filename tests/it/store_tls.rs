//! `[store] ca_file` (README, "Redis topologies"): replicas reach a `rediss://` Redis whose
//! certificate a private CA signed, made by the test, and share one token through it; a replica
//! without the `ca_file` does not trust that server and never counts the store as up.

use std::time::Duration;

use http::StatusCode;
use tokenbroker::sandbox;

use crate::sandboxed::{IMS_SECRET_LINE, SERVER, adobe_tenant, ims_with_ttl};
use crate::support::redis::{RedisServer, free_port};
use crate::support::replicas::{self, all_logs};
use crate::support::tls_ca::PrivateCa;
use crate::support::{Binary, eventually, get};

fn store_toml(ca_file: Option<&std::path::Path>) -> String {
    let ca_line = ca_file.map_or(String::new(), |path| format!("ca_file = \"{}\"\n", path.display()));
    format!("[store]\nkind = \"redis\"\nurl = {{ env = \"REDIS_URL\" }}\n{ca_line}")
}

async fn store_up(node: &Binary) -> bool {
    get(&node.admin_url("/tenants")).await.json()["store"]["state"] == "up"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_trusting_a_private_ca_share_over_tls_and_others_do_not_trust_it() {
    let ca = PrivateCa::make();
    let tls_port = free_port();
    let redis = RedisServer::start_with_tls(&ca, tls_port);
    let ims = ims_with_ttl(sandbox::IMS_DEFAULT_TTL).await;
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let envs = [("REDIS_URL", url.as_str()), ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET)];
    let tenant = adobe_tenant("adobe", &ims, &ims.base_url(), IMS_SECRET_LINE);
    let trusting = format!("{SERVER}{}{tenant}", store_toml(Some(&ca.ca_cert())));
    let nodes = replicas::start(2, &trusting, &envs);
    for node in &nodes {
        assert!(
            eventually(Duration::from_secs(10), || store_up(node)).await,
            "the store is up over TLS\n{}",
            all_logs(&nodes)
        );
    }
    for node in nodes.iter().chain(&nodes) {
        let answer = get(&node.url("/adobe/V1/products")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", all_logs(&nodes));
    }
    assert_eq!(ims.token_calls(), 1, "one token shared over TLS\n{}", all_logs(&nodes));
    assert!(
        redis.keys().await.iter().any(|k| k.ends_with(":token")),
        "the token went through the TLS port"
    );

    // The same server without `ca_file`: the system's roots do not know the private CA.
    let doubting = Binary::start(&format!("{SERVER}{}{tenant}", store_toml(None)), &envs);
    let answer = get(&doubting.url("/adobe/V1/products")).await;
    assert_eq!(answer.status, StatusCode::OK, "served on its own token");
    assert!(
        !eventually(Duration::from_secs(3), || store_up(&doubting)).await,
        "an unknown CA is not trusted\n{}",
        doubting.logs()
    );
    assert_eq!(ims.token_calls(), 2, "the doubting replica renewed alone");
}
