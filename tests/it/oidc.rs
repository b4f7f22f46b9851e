//! The generic `oauth2` provider against a real, OpenID Certified authorization server
//! (panva/node-oidc-provider, `tests/oidc/server.js`), not only against our own fakes.
//!
//! For each client authentication method the proxy obtains a token from the real token
//! endpoint (found by discovery), uses it upstream, and the provider itself then vouches for
//! that exact token through RFC 7662 introspection: active, issued to the right client, with
//! the right scope and audience. A wrong secret must surface as the provider's `invalid_client`.
//!
//! Needs `node` and `npm` on PATH (this machine kind has them): the first run installs the
//! pinned package with `npm ci`, so `cargo test` stays the single test command. Without them
//! these tests fail with what to install; they never pass silently.

mod op;

use http::StatusCode;
use http::header::AUTHORIZATION;
use serde_json::Value;

use self::op::{Endpoints, OIDC_DIR, OpenIdProvider, RESOURCE};
use crate::sandboxed::SERVER;
use crate::support::upstream::Upstream;
use crate::support::{Answer, Proxy, env, get};

/// What one request through a freshly started proxy produced.
struct Run {
    answer: Answer,
    /// The token the upstream received after `Bearer `.
    bearer: Option<String>,
    /// The proxy's own view of the token's remaining lifetime (`/tenants`).
    expires_in_s: Option<u64>,
}

/// A proxy with one `oauth2` tenant (`auth` holds its client and auth lines), one request
/// through it, then a clean stop. `OIDC_SECRET` in the tenant resolves to `secret`.
async fn run_tenant(endpoints: &Endpoints, auth: &str, secret: &str) -> Run {
    let upstream = Upstream::start().await;
    let toml = format!(
        r#"{SERVER}
[[tenant]]
name = "oidc"
provider = "oauth2"
upstream = "{upstream}/api"
token_url = "{token_url}"
scopes = ["api:read", "api:write"]
{auth}
"#,
        upstream = upstream.url(),
        token_url = endpoints.token,
    );
    let proxy = Proxy::start_with_env(&toml, &env(&[("OIDC_SECRET", secret)])).await;
    let answer = get(&proxy.url("/oidc/v1/orders?page=2")).await;
    let bearer = upstream.recorded().last().map(|seen| {
        let value = seen.headers[AUTHORIZATION].to_str().expect("ASCII authorization");
        let token = value.strip_prefix("Bearer ");
        token
            .unwrap_or_else(|| panic!("a Bearer credential upstream, got another scheme"))
            .to_owned()
    });
    let tenants = get(&proxy.admin_url("/tenants")).await.json();
    let expires_in_s = tenants["tenants"][0]["token"]["expires_in_s"].as_u64();
    proxy.stop().await;
    Run {
        answer,
        bearer,
        expires_in_s,
    }
}

/// The request went through with a token the provider says is live, for `client_id`, with
/// `scope`; the proxy scheduled it by the provider's `expires_in`, not its own default.
async fn assert_accepted(op: &OpenIdProvider, endpoints: &Endpoints, run: &Run, client_id: &str, scope: &str) -> Value {
    assert_eq!(run.answer.status, StatusCode::OK, "{}", run.answer.text());
    assert_eq!(
        run.answer.json()["target"],
        "/api/v1/orders?page=2",
        "the request reached the upstream"
    );
    let token = run.bearer.as_deref().expect("the upstream saw the request");
    let seen = op.introspect(endpoints, token).await;
    assert_eq!(seen["active"], true, "the provider knows the token: {seen}");
    assert_eq!(seen["client_id"], client_id, "{seen}");
    assert_eq!(
        seen["scope"], scope,
        "space-separated scopes reached the provider: {seen}"
    );
    assert_eq!(seen["token_type"], "Bearer", "{seen}");
    assert_eq!(seen["iss"], op.issuer.as_str(), "{seen}");
    let lifetime = seen["exp"]
        .as_u64()
        .zip(seen["iat"].as_u64())
        .map(|(exp, iat)| exp - iat);
    assert_eq!(lifetime, Some(op::TOKEN_TTL_S), "{seen}");
    let remaining = run.expires_in_s.expect("the proxy holds a token with an expiry");
    assert!(
        (op::TOKEN_TTL_S - 30..=op::TOKEN_TTL_S).contains(&remaining),
        "expiry from `expires_in` ({} s), not default_ttl: {remaining} s left",
        op::TOKEN_TTL_S
    );
    seen
}

#[tokio::test]
async fn client_secret_basic_token_is_active_at_the_provider() {
    let op = OpenIdProvider::start();
    let endpoints = op.discover().await;
    assert!(endpoints.auth_methods.iter().any(|m| m == "client_secret_basic"));
    let auth = "client_id = \"basic-client\"\nclient_secret = { env = \"OIDC_SECRET\" }\n\
                auth_method = \"client_secret_basic\"";
    // The secret holds ` :+/%&=`: only RFC 6749 2.3.1 form-encoding inside Basic gets it through.
    let run = run_tenant(&endpoints, auth, op::BASIC_SECRET).await;
    assert_accepted(&op, &endpoints, &run, "basic-client", "api:read api:write").await;
}

#[tokio::test]
async fn client_secret_post_token_is_active_at_the_provider() {
    let op = OpenIdProvider::start();
    let endpoints = op.discover().await;
    assert!(endpoints.auth_methods.iter().any(|m| m == "client_secret_post"));
    let auth = "client_id = \"post-client\"\nclient_secret = { env = \"OIDC_SECRET\" }\n\
                auth_method = \"client_secret_post\"";
    let run = run_tenant(&endpoints, auth, op::POST_SECRET).await;
    assert_accepted(&op, &endpoints, &run, "post-client", "api:read api:write").await;
}

#[tokio::test]
async fn private_key_jwt_rs256_and_es256_tokens_are_active_at_the_provider() {
    let op = OpenIdProvider::start();
    let endpoints = op.discover().await;
    assert!(endpoints.auth_methods.iter().any(|m| m == "private_key_jwt"));
    for (client, key) in [
        ("rs256-client", "rs256-test-key.pem"),
        ("es256-client", "es256-test-key.pem"),
    ] {
        let auth = format!(
            "client_id = \"{client}\"\nauth_method = \"private_key_jwt\"\nprivate_key = {{ file = \"{OIDC_DIR}/{key}\" }}"
        );
        let run = run_tenant(&endpoints, &auth, "unused").await;
        assert_accepted(&op, &endpoints, &run, client, "api:read api:write").await;
    }
}

#[tokio::test]
async fn a_wrong_secret_answers_token_unavailable_with_the_providers_invalid_client() {
    let op = OpenIdProvider::start();
    let endpoints = op.discover().await;
    for (client, method) in [
        ("basic-client", "client_secret_basic"),
        ("post-client", "client_secret_post"),
    ] {
        let auth = format!(
            "client_id = \"{client}\"\nclient_secret = {{ env = \"OIDC_SECRET\" }}\nauth_method = \"{method}\""
        );
        let run = run_tenant(&endpoints, &auth, "not-the-secret").await;
        assert_eq!(
            run.answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method}: {}",
            run.answer.text()
        );
        assert_eq!(run.answer.headers["tokenbroker-error"], "token_unavailable", "{method}");
        let problem = run.answer.json();
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("invalid_client"),
            "{method}: the provider's error code: {detail}"
        );
        assert!(!detail.contains("not-the-secret"), "{method}: no secret in the problem");
        assert!(run.bearer.is_none(), "{method}: nothing reached the upstream");
    }
}

#[tokio::test]
async fn a_resource_indicator_in_extra_params_binds_the_token_to_that_audience() {
    let op = OpenIdProvider::start();
    let endpoints = op.discover().await;
    let auth = |resource: &str| {
        format!(
            "client_id = \"post-client\"\nclient_secret = {{ env = \"OIDC_SECRET\" }}\n\
             extra_params = {{ resource = \"{resource}\" }}"
        )
    };
    // RFC 8707: the provider mints the token for that resource server, whose only scope is
    // `api:read`; `api:write` is dropped by the provider, not by us.
    let run = run_tenant(&endpoints, &auth(RESOURCE), op::POST_SECRET).await;
    let seen = assert_accepted(&op, &endpoints, &run, "post-client", "api:read").await;
    assert_eq!(seen["aud"], RESOURCE, "the resource shaped the token: {seen}");

    // A resource the provider does not serve is refused there: proof the parameter travels.
    let run = run_tenant(&endpoints, &auth("https://unknown.tokenbroker.test"), op::POST_SECRET).await;
    assert_eq!(
        run.answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        run.answer.text()
    );
    let problem = run.answer.json();
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("invalid_target"),
        "the provider's RFC 8707 error: {detail}"
    );
}

#[tokio::test]
async fn a_retired_first_secret_is_refused_with_invalid_client_and_the_next_one_is_used() {
    let op = OpenIdProvider::start();
    let endpoints = op.discover().await;
    // The provider answers Basic-auth failures with 401 invalid_client (RFC 6749 5.2): that
    // status must count as "try the next secret", as a 400 does.
    let auth = "client_id = \"basic-client\"\nauth_method = \"client_secret_basic\"\n\
                client_secrets = [\"retired-secret\", { env = \"OIDC_SECRET\" }]";
    let run = run_tenant(&endpoints, auth, op::BASIC_SECRET).await;
    assert_accepted(&op, &endpoints, &run, "basic-client", "api:read api:write").await;
}
