//! `provider = "adobe_ims"`: Adobe IMS server-to-server credentials for Adobe Commerce (ACCS).
//! IMS refuses a token request without scope, and ACCS needs `commerce.accs`, the one scope
//! operators forget, hence the warning.

use super::AdobeImsConfig;
use crate::providers::fields::{client_secrets, optional_text, scopes};
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::RawTenant;

const ADOBE_TOKEN_URL: &str = "https://ims-na1.adobelogin.com/ims/token/v3";

pub(crate) fn build(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<AdobeImsConfig> {
    let why = "for provider `adobe_ims`";
    let client_id = ctx.non_empty(scope, "client_id", raw.client_id.as_ref(), why);
    let client_secrets = client_secrets(ctx, scope, raw, Some(2));
    let scopes = scopes(ctx, scope, raw, None).filter(|list| {
        if list.is_empty() {
            ctx.error(
                scope,
                "",
                "`scopes` is required for provider `adobe_ims` (IMS refuses a token request without one)",
            );
        } else if !list.iter().any(|s| s == "commerce.accs") {
            ctx.warn(
                scope,
                "scopes",
                "does not include `commerce.accs`, which the Adobe Commerce (ACCS) REST API requires",
            );
        }
        !list.is_empty()
    });
    let token_url = raw.token_url.as_deref().unwrap_or(ADOBE_TOKEN_URL);
    let token_url = ctx.token_url(scope, "token_url", token_url);
    let org_id = optional_text(ctx, scope, "org_id", raw.org_id.as_ref());
    Some(AdobeImsConfig {
        client_id: client_id?.to_owned(),
        client_secrets: client_secrets?,
        scopes: scopes?,
        token_url: token_url?,
        org_id: org_id?,
    })
}
