//! `provider = "cyberbiz"`: one API token from the merchant admin. Upstream, rate limit (5/s,
//! burst 1) and body cap (2 MB) come from the presets in `mod.rs`.

use super::CyberbizConfig;
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::RawTenant;

pub(crate) fn build(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<CyberbizConfig> {
    let why = "for provider `cyberbiz` (the API token from the merchant admin)";
    let token = ctx.required(scope, "token", raw.token.as_ref(), why)?;
    Some(CyberbizConfig {
        token: ctx.secret(scope, "token", token)?,
    })
}
