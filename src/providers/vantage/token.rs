//! `vantage`: ABBYY Vantage tokens from its IdentityServer-style endpoint
//! (`docs/providers.md#abbyy-vantage`).
//!
//! The wire: `POST {token_url}` (resolved by config: `{base}/auth2/connect/token` or the
//! tenant-scoped `{base}/auth2/{tenantId}/connect/token`), form-encoded, `client_id` and
//! `client_secret` in the form, scopes **space**-separated (`openid permissions global.wildcard`).
//! Primary grant: `client_credentials`, or `password` with `username`/`password` (ROPC).
//!
//! With `offline_access` the scope asks for a refresh token, and a renewal first redeems the one
//! the previous fetch returned (`grant_type=refresh_token`). IdentityServer's default is one-time
//! use, so the response's new refresh token goes into the returned [`Token`]; if the old one is
//! refused (`invalid_grant`: used, expired or revoked) the primary grant runs instead, so a lost
//! refresh token costs one extra call, never an outage. A client may hold several secrets; as for
//! Adobe, only `invalid_client` moves on to the next.

use super::{PasswordOrClient, VantageConfig};
use crate::auth::{FetchCtx, FetchToken, ProviderError, Token};
use crate::providers::oauth2::response::standard_mapping;
use crate::providers::oauth2::{
    Form, Grant, SecretPlacement, grant_form, is_invalid_grant, join_scopes, keep_refresh_token, request_with_secrets,
};

/// The scope that makes IdentityServer issue a refresh token.
const OFFLINE_ACCESS: &str = "offline_access";

#[derive(Debug)]
pub(crate) struct Vantage {
    config: VantageConfig,
}

impl Vantage {
    pub(crate) fn new(config: VantageConfig) -> Self {
        Self { config }
    }

    /// The configured scopes, plus `offline_access` when refresh tokens are wanted.
    fn scope(&self) -> Option<String> {
        let mut scopes = self.config.scopes.clone();
        if self.config.offline_access && !scopes.iter().any(|s| s == OFFLINE_ACCESS) {
            scopes.push(OFFLINE_ACCESS.to_owned());
        }
        join_scopes(&scopes, " ")
    }

    /// The client-credentials or password request.
    fn primary_form(&self) -> Form {
        let grant = match &self.config.grant {
            PasswordOrClient::ClientCredentials => Grant::ClientCredentials,
            PasswordOrClient::Password { username, password } => Grant::Password {
                username,
                password: password.expose(),
            },
        };
        grant_form(grant, self.scope())
    }

    /// One request with secret rotation (from `ctx.first_secret`); `redeemed` is the refresh
    /// token it spends, if any.
    async fn request(&self, ctx: &FetchCtx<'_>, form: &Form, redeemed: Option<&str>) -> Result<Token, ProviderError> {
        let config = &self.config;
        let client = (config.client_id.as_str(), config.client_secrets.as_slice());
        let (url, first, mapping) = (&config.token_url, ctx.first_secret, standard_mapping());
        let (granted, index) =
            request_with_secrets(ctx.http, url, form, client, first, SecretPlacement::Form, &mapping).await?;
        keep_refresh_token(granted, redeemed).into_token(index, None)
    }
}

impl FetchToken for Vantage {
    async fn fetch(&self, ctx: FetchCtx<'_>) -> Result<Token, ProviderError> {
        let refresh_token = ctx.previous.and_then(|p| p.refresh_token.as_ref());
        if let (true, Some(refresh_token)) = (self.config.offline_access, refresh_token) {
            let refresh_token = refresh_token.expose();
            let form = grant_form(Grant::RefreshToken(refresh_token), None);
            match self.request(&ctx, &form, Some(refresh_token)).await {
                Err(error) if is_invalid_grant(&error) => {
                    tracing::warn!(%error, "refresh token refused; falling back to the primary grant");
                }
                done => return done,
            }
        }
        self.request(&ctx, &self.primary_form(), None).await
    }

    /// Refresh tokens are single use: one spent by a lone renewal is spent for every peer.
    fn solo_renewal_costs_peers(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::auth::testing::{FakeEndpoint, fetch, oauth_error, ok};
    use crate::schema::Secret;

    fn config(token_url: http::Uri, offline_access: bool, grant: PasswordOrClient) -> VantageConfig {
        VantageConfig {
            base_url: "https://vantage-us.abbyy.com".parse().expect("uri"),
            tenant_id: None,
            token_url,
            client_id: "vc".into(),
            client_secrets: vec![Secret::from("vs")],
            grant,
            scopes: ["openid", "permissions", "global.wildcard"].map(String::from).to_vec(),
            offline_access,
        }
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn previous(refresh_token: &str) -> Token {
        Token {
            access: Secret::from("old"),
            obtained_at: tokio::time::Instant::now(),
            expires_at: None,
            refresh_token: Some(Secret::from(refresh_token)),
            secret_index: 0,
        }
    }

    #[test]
    fn password_grant_form_with_offline_access() {
        let grant = PasswordOrClient::Password {
            username: "ops@acme".into(),
            password: Secret::from("pw"),
        };
        let vantage = Vantage::new(config("http://h/t".parse().expect("uri"), true, grant));
        let form = vantage.primary_form();
        let expected = [
            ("grant_type", "password"),
            ("username", "ops@acme"),
            ("password", "pw"),
            ("scope", "openid permissions global.wildcard offline_access"),
        ];
        assert_eq!(form, pairs(&expected));
    }

    #[tokio::test]
    async fn client_credentials_on_the_wire() {
        let idp = FakeEndpoint::start(|_, _| {
            ok(json!({"access_token": "at", "expires_in": 2_592_000, "token_type": "Bearer"}))
        })
        .await;
        let vantage = Vantage::new(config(
            idp.uri("/auth2/connect/token"),
            false,
            PasswordOrClient::ClientCredentials,
        ));
        let token = fetch(&vantage, None).await.expect("token");
        assert_eq!(token.access.expose(), "at");
        assert!(token.refresh_token.is_none());
        let expected = [
            ("grant_type", "client_credentials"),
            ("scope", "openid permissions global.wildcard"),
            ("client_id", "vc"),
            ("client_secret", "vs"),
        ];
        assert_eq!(idp.received()[0].form(), pairs(&expected));
    }

    #[tokio::test]
    async fn redeems_the_refresh_token_and_keeps_the_rotated_one() {
        let idp =
            FakeEndpoint::start(|_, _| ok(json!({"access_token": "a2", "expires_in": 3600, "refresh_token": "r2"})))
                .await;
        let vantage = Vantage::new(config(idp.uri("/t"), true, PasswordOrClient::ClientCredentials));
        let old = previous("r1");
        let token = fetch(&vantage, Some(&old)).await.expect("token");
        assert_eq!(token.refresh_token.as_ref().map(|t| t.expose().as_str()), Some("r2"));
        let got = idp.received();
        assert_eq!(got.len(), 1);
        let expected = [
            ("grant_type", "refresh_token"),
            ("refresh_token", "r1"),
            ("client_id", "vc"),
            ("client_secret", "vs"),
        ];
        assert_eq!(got[0].form(), pairs(&expected));
    }

    #[tokio::test]
    async fn a_refused_refresh_token_falls_back_to_the_primary_grant() {
        let idp = FakeEndpoint::start(|_, req| match req.field("grant_type").as_deref() {
            Some("refresh_token") => oauth_error(400, "invalid_grant"),
            _ => ok(json!({"access_token": "a3", "expires_in": 3600, "refresh_token": "r3"})),
        })
        .await;
        let vantage = Vantage::new(config(idp.uri("/t"), true, PasswordOrClient::ClientCredentials));
        let old = previous("spent");
        let token = fetch(&vantage, Some(&old)).await.expect("token");
        assert_eq!(token.access.expose(), "a3");
        assert_eq!(token.refresh_token.as_ref().map(|t| t.expose().as_str()), Some("r3"));
        let grants: Vec<_> = idp.received().iter().map(|r| r.field("grant_type")).collect();
        assert_eq!(
            grants,
            [Some("refresh_token".into()), Some("client_credentials".into())]
        );
    }

    #[tokio::test]
    async fn an_outage_during_refresh_is_not_masked_by_the_fallback() {
        let idp = FakeEndpoint::start(|_, _| (503, Vec::new(), "{}".into())).await;
        let vantage = Vantage::new(config(idp.uri("/t"), true, PasswordOrClient::ClientCredentials));
        let old = previous("r1");
        let error = fetch(&vantage, Some(&old)).await.expect_err("503");
        assert!(matches!(error, ProviderError::Unreachable(_)));
        assert_eq!(idp.received().len(), 1);
    }

    #[tokio::test]
    async fn without_offline_access_a_held_refresh_token_is_ignored() {
        let idp = FakeEndpoint::start(|_, _| ok(json!({"access_token": "at", "expires_in": 60}))).await;
        let vantage = Vantage::new(config(idp.uri("/t"), false, PasswordOrClient::ClientCredentials));
        let old = previous("r1");
        let token = fetch(&vantage, Some(&old)).await.expect("token");
        assert!(
            token
                .expires_at
                .is_some_and(|at| at - token.obtained_at == Duration::from_secs(60))
        );
        assert_eq!(
            idp.received()[0].field("grant_type").as_deref(),
            Some("client_credentials")
        );
    }

    #[tokio::test]
    async fn rotates_secrets_on_invalid_client() {
        let idp = FakeEndpoint::start(|_, req| match req.field("client_secret").as_deref() {
            Some("new") => ok(json!({"access_token": "at", "expires_in": 60})),
            _ => oauth_error(400, "invalid_client"),
        })
        .await;
        let mut cfg = config(idp.uri("/t"), false, PasswordOrClient::ClientCredentials);
        cfg.client_secrets = vec![Secret::from("expired"), Secret::from("new")];
        let token = fetch(&Vantage::new(cfg), None).await.expect("token");
        assert_eq!(token.secret_index, 1);
    }
}
