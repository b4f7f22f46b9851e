//! `provider = "cyberbiz"`: one API token from the merchant admin. Upstream, rate limit (5/s,
//! burst 1) and body cap (2 MB) come from the presets in `mod.rs`. The optional `app_secret` only
//! verifies the app's webhooks.

use super::CyberbizConfig;
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::RawTenant;

pub(crate) fn build(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<CyberbizConfig> {
    let why = "for provider `cyberbiz` (the API token from the merchant admin)";
    let token = ctx.required(scope, "token", raw.token.as_ref(), why)?;
    let token = ctx.secret(scope, "token", token);
    let app_secret = ctx.opt_secret(scope, "app_secret", raw.app_secret.as_ref());
    Some(CyberbizConfig {
        token: token?,
        app_secret: app_secret?,
    })
}
