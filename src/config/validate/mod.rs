//! Raw → typed validation: turns the TOML text into a [`RuntimeConfig`] or into *every* problem
//! it has, each located at `file:line:column`.
//!
//! ```text
//!  text ─Source::parse─▶ spanned tree ─deserialize per section─▶ raw::Raw* ─per-section fns─▶ RuntimeConfig
//!        (syntax errors)                 (unknown keys, types)          (meaning, defaults, secrets)
//! ```
//!
//! One file per section (`server`, `store`, `tenant`, `callers`); each provider checks its own
//! keys (`src/providers/`), and the shared field parsers are in `schema::fields`. Every check records its error in [`Ctx`] and carries on with
//! `None`, so one run reports everything (linkerd: "defer returning any errors until all of them
//! have been parsed"); the config is only returned when nothing was recorded.

mod callers;
mod limits;
mod server;
mod store;
mod store_topology;
mod tenant;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_classes;
#[cfg(test)]
mod tests_providers;
#[cfg(test)]
mod tests_store;
#[cfg(test)]
mod tests_webhooks;
mod webhooks;

use super::{Loaded, RuntimeConfig};
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::{RawServer, RawStore, RawToken};
use crate::schema::source::Source;
use crate::schema::{ConfigErrors, Env};

pub(crate) fn validate(text: &str, origin: &str, env: &dyn Env) -> Result<Loaded, ConfigErrors> {
    let source = Source::parse(text, origin).map_err(ConfigErrors)?;
    let mut ctx = Ctx::new(&source, env);
    let config = build(&mut ctx);
    let secrets_not_read = std::mem::take(&mut ctx.not_read);
    let secret_files = std::mem::take(&mut ctx.files_read);
    let (errors, warnings) = ctx.into_findings();
    match config {
        Some(config) if errors.is_empty() => Ok(Loaded {
            config,
            warnings,
            secrets_not_read,
            secret_files,
        }),
        _ if errors.is_empty() => Err(ConfigErrors(vec![source.error(None, "invalid configuration".into())])),
        _ => Err(ConfigErrors(errors)),
    }
}

const SECTIONS: [&str; 6] = ["server", "token", "store", "tenant", "caller", "webhook"];

fn build(ctx: &mut Ctx<'_>) -> Option<RuntimeConfig> {
    for (key, span) in ctx.src.keys("") {
        if !SECTIONS.contains(&key.as_str()) {
            let message = format!("unknown section `{key}`; expected one of {}", SECTIONS.join(", "));
            ctx.push_error(Some(span), message);
        }
    }
    for (section, header) in [
        ("tenant", "[[tenant]]"),
        ("caller", "[[caller]]"),
        ("webhook", "[[webhook]]"),
    ] {
        let value = ctx.src.get(section).map(|v| v.get_ref());
        if value.is_some_and(|v| !matches!(v, toml::de::DeValue::Array(_))) {
            let message = format!("must be an array of tables: write `{header}`");
            ctx.error(&Scope::new(section, format!("`{section}`")), "", message);
        }
    }
    let raw_server = ctx.section::<RawServer>("server", "[server]");
    let raw_token = ctx.section::<RawToken>("token", "[token]");
    let raw_store = ctx.section::<RawStore>("store", "[store]");
    let server = raw_server.and_then(|raw| server::server(ctx, &raw));
    let token = raw_token.and_then(|raw| server::token_policy(ctx, &raw));
    let store = raw_store.and_then(|raw| store::store(ctx, &raw));
    let tenants = tenant::tenants(ctx, server.as_ref(), token.as_ref());
    let callers = callers::callers(ctx);
    let webhooks = webhooks::webhooks(ctx, tenants.as_deref());
    if let (Some(server), Some(tenants), Some(callers)) = (&server, &tenants, &callers) {
        server::check_listeners(ctx, server, tenants, callers.is_empty());
    }
    if let (Some(server), Some(webhooks)) = (&server, &webhooks) {
        webhooks::check_listener(ctx, server.webhook_listen, webhooks);
    }
    let (mut tenants, callers, webhooks) = (tenants?, callers?, webhooks?);
    limits::lead_classes(&mut tenants, &callers);
    Some(RuntimeConfig {
        server: server?,
        store: store?,
        tenants,
        callers,
        webhooks,
    })
}
