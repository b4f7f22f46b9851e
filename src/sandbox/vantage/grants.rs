//! The grants of the fake Vantage token endpoint: `client_credentials`, `password` and one-time
//! `refresh_token`, plus scope checking and token minting (`docs/providers.md#abbyy-vantage`).
//! Errors follow IdentityServer: 400 with `invalid_grant`, `invalid_scope`, `unauthorized_client`.

use http::StatusCode;
use hyper::Response;
use serde_json::json;
use tokio::time::Instant;

use super::super::common::{self, Body, OAuthError, bump, json, lock};
use super::{Fields, OFFLINE_ACCESS, RefreshGrant, VantageState};
use crate::clock;

/// The outcome of presenting a refresh token.
enum Redemption {
    Granted(RefreshGrant),
    Reused,
    Invalid,
}

impl VantageState {
    pub(super) fn client_credentials(&self, fields: &Fields) -> Result<Response<Body>, OAuthError> {
        bump(&self.counters.client_credentials);
        let scope = self.requested_scope(fields)?;
        if scope.split(' ').any(|s| s == OFFLINE_ACCESS) {
            // IdentityServer: no refresh tokens for the client credentials flow.
            return Err(OAuthError(
                "invalid_scope",
                "offline_access is not allowed for client_credentials",
            ));
        }
        Ok(self.issue(scope, None))
    }

    pub(super) fn password(&self, fields: &Fields) -> Result<Response<Body>, OAuthError> {
        bump(&self.counters.password);
        if !self.options.allow_password_grant {
            return Err(OAuthError("unauthorized_client", ""));
        }
        let user = fields.get("username").map(String::as_str).unwrap_or_default();
        let password = fields.get("password").map(String::as_str).unwrap_or_default();
        if user != self.options.username || !common::secret_eq(password, &self.options.password) {
            return Err(OAuthError("invalid_grant", "invalid_username_or_password"));
        }
        let scope = self.requested_scope(fields)?;
        Ok(self.issue(scope, Some(user.to_owned())))
    }

    pub(super) fn refresh(&self, fields: &Fields) -> Result<Response<Body>, OAuthError> {
        bump(&self.counters.refresh_token);
        let Some(presented) = fields.get("refresh_token") else {
            return Err(OAuthError("invalid_request", "refresh_token is missing"));
        };
        match self.redeem(presented) {
            Redemption::Granted(grant) => {
                bump(&self.counters.refresh_token_uses);
                Ok(self.issue(grant.scope, grant.subject))
            }
            Redemption::Reused => {
                bump(&self.counters.refresh_token_reuses);
                Err(OAuthError("invalid_grant", ""))
            }
            Redemption::Invalid => Err(OAuthError("invalid_grant", "")),
        }
    }

    /// One-time use: the first redemption marks the refresh token used.
    fn redeem(&self, presented: &str) -> Redemption {
        let mut refresh_tokens = lock(&self.refresh_tokens);
        match refresh_tokens.get_mut(presented) {
            Some(grant) if grant.used => Redemption::Reused,
            Some(grant) if grant.expires_at <= Instant::now() => Redemption::Invalid,
            Some(grant) => {
                grant.used = true;
                Redemption::Granted(grant.clone())
            }
            None => Redemption::Invalid,
        }
    }

    /// The space-separated scope asked for, or every allowed scope when none was given.
    fn requested_scope(&self, fields: &Fields) -> Result<String, OAuthError> {
        let Some(scope) = fields.get("scope").filter(|s| !s.trim().is_empty()) else {
            return Ok(self.options.allowed_scopes.join(" "));
        };
        let allowed = |s: &str| {
            self.options.allowed_scopes.iter().any(|a| a == s)
                || (s == OFFLINE_ACCESS && self.options.allow_offline_access)
        };
        if scope.split_whitespace().all(allowed) {
            Ok(scope.split_whitespace().collect::<Vec<_>>().join(" "))
        } else {
            Err(OAuthError("invalid_scope", ""))
        }
    }

    fn issue(&self, scope: String, subject: Option<String>) -> Response<Body> {
        let ttl = self.core.ttl();
        let now = clock::unix_millis() / 1000;
        let claims = json!({
            "iss": "https://vantage-sandbox/auth2", "nbf": now, "iat": now, "exp": now + ttl.as_secs(),
            "aud": "global", "client_id": self.options.client_id, "sub": subject,
            "scope": scope.split(' ').collect::<Vec<_>>(), "jti": common::random_string(),
        });
        let access_token = common::mint_jwt("RS256", &claims);
        self.core.tokens.insert(access_token.clone(), ttl);
        let mut body = json!({
            "access_token": access_token, "expires_in": ttl.as_secs(), "token_type": "Bearer", "scope": scope,
        });
        if scope.split(' ').any(|s| s == OFFLINE_ACCESS) {
            let refresh_token = common::random_string();
            let grant = RefreshGrant {
                scope,
                subject,
                expires_at: Instant::now() + self.options.refresh_token_ttl,
                used: false,
            };
            lock(&self.refresh_tokens).insert(refresh_token.clone(), grant);
            body["refresh_token"] = json!(refresh_token);
        }
        json(StatusCode::OK, &body)
    }
}
