//! `provider = "shopline"`: a store handle and either app credentials (signed token/refresh and
//! token/create) or a private app's static `access_token`; never both, never neither.

use super::is_dns_label;
use super::{ShoplineConfig, ShoplineCredentials};
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::RawTenant;

pub(crate) fn build(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
    upstream: Option<&http::Uri>,
) -> Option<ShoplineConfig> {
    let why = "for provider `shopline` (the store subdomain)";
    let handle = ctx.non_empty(scope, "handle", raw.handle.as_ref(), why).and_then(|h| {
        if is_dns_label(h) {
            return Some(h.to_owned());
        }
        let message = "must be the store subdomain: letters, digits and `-` (`open001` for open001.myshopline.com)";
        ctx.reject(scope, "handle", message)
    });
    let credentials = credentials(ctx, scope, raw);
    // The token endpoint defaults to the store itself; a private app has none.
    let token_url = match (&raw.token_url, upstream) {
        (Some(_), _) if raw.access_token.is_some() => {
            let message = "not used with `access_token` (a private app has no token endpoint)";
            ctx.key_error(scope, "token_url", message);
            None
        }
        (Some(text), _) => ctx.token_url(scope, "token_url", text),
        (None, Some(upstream)) => ctx.token_url(scope, "upstream", &upstream.to_string()),
        // The upstream was invalid and is already reported.
        (None, None) => None,
    };
    Some(ShoplineConfig {
        handle: handle?,
        credentials: credentials?,
        token_url: token_url?,
    })
}

/// `access_token` (private app) or `app_key` + `app_secret` (+ one-time `code`), never both.
fn credentials(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<ShoplineCredentials> {
    match (&raw.access_token, &raw.app_key, &raw.app_secret) {
        (Some(access_token), None, None) => {
            if raw.code.is_some() {
                ctx.key_error(
                    scope,
                    "code",
                    "only used with `app_key`/`app_secret`, not with `access_token`",
                );
                return None;
            }
            Some(ShoplineCredentials::Private {
                access_token: ctx.secret(scope, "access_token", access_token)?,
            })
        }
        (None, Some(app_key), Some(app_secret)) => {
            let app_key = ctx.non_empty(scope, "app_key", Some(app_key), "");
            let app_secret = ctx.secret(scope, "app_secret", app_secret);
            let code = ctx.opt_secret(scope, "code", raw.code.as_ref());
            Some(ShoplineCredentials::OAuth {
                app_key: app_key?.to_owned(),
                app_secret: app_secret?,
                code: code?,
            })
        }
        (Some(_), _, _) => {
            ctx.key_error(
                scope,
                "access_token",
                "give either `access_token` (private app) or `app_key` + `app_secret`, not both",
            );
            None
        }
        (None, None, None) => {
            ctx.error(
                scope,
                "",
                "provider `shopline` needs `app_key` + `app_secret`, or `access_token` for a private app",
            );
            None
        }
        (None, _, _) => {
            ctx.error(scope, "", "`app_key` and `app_secret` go together");
            None
        }
    }
}
