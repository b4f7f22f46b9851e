//! TOML snippets shared by the ops tests: a `[server]` on ephemeral ports and one-tenant blocks
//! for the IMS fake and for a static credential in front of any upstream.

use tokenbroker::sandbox::{self, ImsSandbox};

/// An adobe_ims tenant `name` on `ims`; the upstream is the fake's root so unknown paths get 404.
pub fn ims_tenant(name: &str, ims: &ImsSandbox, extra: &str) -> String {
    format!(
        r#"
[[tenant]]
name = "{name}"
provider = "adobe_ims"
upstream = "{base}"
token_url = "{token}"
client_id = "{client}"
client_secret = {{ env = "IMS_SECRET" }}
scopes = ["openid", "AdobeID", "commerce.accs"]
rewrite = []
{extra}
"#,
        base = ims.base_url(),
        token = ims.token_url(),
        client = sandbox::IMS_CLIENT_ID,
    )
}

/// A static tenant `name` in front of `upstream`, its credential from `STATIC_VALUE`.
pub fn static_tenant(name: &str, upstream: &str, extra: &str) -> String {
    static_tenant_from(name, upstream, "STATIC_VALUE", extra)
}

/// A static tenant `name` in front of `upstream`, its credential from the variable `value_env`.
pub fn static_tenant_from(name: &str, upstream: &str, value_env: &str, extra: &str) -> String {
    format!(
        "\n[[tenant]]\nname = \"{name}\"\nprovider = \"static\"\nupstream = \"{upstream}\"\nvalue = {{ env = \"{value_env}\" }}\n{extra}\n"
    )
}

pub const SERVER: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nrequest_timeout = \"5s\"\n";
