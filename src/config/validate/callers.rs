//! `[[caller]]`: who may use the proxy (SPEC 7). Names and keys must be unique (two callers
//! sharing a key could not be told apart), tenant lists must name real tenants, methods must be
//! HTTP method tokens.

use http::Method;

use super::{Ctx, Scope};
use crate::config::raw::RawCaller;
use crate::config::{CallerConfig, TenantName};

/// Shorter keys are accepted with a warning: they can be guessed.
const MIN_KEY_LEN: usize = 16;

/// Every `[[caller]]`; `None` when any is invalid.
pub(super) fn callers(ctx: &mut Ctx<'_>) -> Option<Vec<CallerConfig>> {
    let tenant_names: Vec<String> = (0..ctx.src.len("tenant"))
        .filter_map(|i| {
            ctx.src
                .str_at(&format!("tenant.{i}.name"))
                .map(str::to_owned)
        })
        .collect();
    let mut callers: Vec<(Scope, CallerConfig)> = Vec::new();
    let mut all_valid = true;
    for index in 0..ctx.src.len("caller") {
        let scope = Scope::caller(index, ctx.src);
        let raw = ctx.section::<RawCaller>(&scope.path_of(""), scope.label());
        let Some(caller) = raw.and_then(|raw| caller(ctx, &scope, &raw, &tenant_names)) else {
            all_valid = false;
            continue;
        };
        if let Some((first, _)) = callers.iter().find(|(_, other)| other.name == caller.name) {
            ctx.error(
                &scope,
                "name",
                format!("duplicate caller name (first used by {})", first.label()),
            );
            all_valid = false;
        }
        // Compared without ever printing either key.
        if let Some((first, _)) = callers
            .iter()
            .find(|(_, other)| other.key.expose() == caller.key.expose())
        {
            ctx.error(
                &scope,
                "key",
                format!("same key as {}: each caller needs its own", first.label()),
            );
            all_valid = false;
        }
        callers.push((scope, caller));
    }
    all_valid.then(|| callers.into_iter().map(|(_, caller)| caller).collect())
}

fn caller(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawCaller,
    tenant_names: &[String],
) -> Option<CallerConfig> {
    let name = ctx.non_empty(
        scope,
        "name",
        raw.name.as_ref(),
        "(it names the caller in logs and metrics)",
    );
    let key = ctx.required(
        scope,
        "key",
        raw.key.as_ref(),
        "(the caller's API key, sent as `Authorization: Bearer <key>`)",
    );
    let key = key.and_then(|key| ctx.secret(scope, "key", key));
    if key
        .as_ref()
        .is_some_and(|key| key.expose().chars().count() < MIN_KEY_LEN)
    {
        ctx.warn(
            scope,
            "key",
            format!("is shorter than {MIN_KEY_LEN} characters and could be guessed"),
        );
    }
    let tenants = raw
        .tenants
        .as_ref()
        .map(|list| tenants(ctx, scope, list, tenant_names));
    let methods = raw.methods.as_ref().map(|list| methods(ctx, scope, list));
    Some(CallerConfig {
        name: name?.to_owned(),
        key: key?,
        tenants: tenants.map_or(Some(None), |t| t.map(|t| (!t.is_empty()).then_some(t)))?,
        methods: methods.map_or(Some(None), |m| m.map(Some))?,
    })
}

/// `["*"]` → empty (all tenants, `None` in the model); otherwise names of existing tenants.
fn tenants(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    list: &[String],
    tenant_names: &[String],
) -> Option<Vec<TenantName>> {
    if list == ["*"] {
        return Some(Vec::new());
    }
    if list.is_empty() {
        ctx.error(
            scope,
            "tenants",
            "is empty, which would allow nothing; use [\"*\"] for all tenants",
        );
        return None;
    }
    let mut names = Vec::new();
    let mut valid = true;
    for (index, name) in list.iter().enumerate() {
        let key = format!("tenants.{index}");
        match TenantName::try_new(name).filter(|_| tenant_names.contains(name)) {
            Some(tenant) => names.push(tenant),
            None if name == "*" => {
                ctx.error(scope, &key, "\"*\" must be alone in the list");
                valid = false;
            }
            None => {
                ctx.error(scope, &key, format!("unknown tenant `{name}`"));
                valid = false;
            }
        }
    }
    valid.then_some(names)
}

fn methods(ctx: &mut Ctx<'_>, scope: &Scope, list: &[String]) -> Option<Vec<Method>> {
    if list.is_empty() {
        ctx.error(
            scope,
            "methods",
            "is empty, which would allow nothing; omit it to allow every method",
        );
        return None;
    }
    let mut methods = Vec::new();
    let mut valid = true;
    for (index, text) in list.iter().enumerate() {
        match Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
            Ok(method) if !methods.contains(&method) => methods.push(method),
            Ok(_) => {}
            Err(_) => {
                ctx.error(
                    scope,
                    &format!("methods.{index}"),
                    format!("`{text}` is not an HTTP method"),
                );
                valid = false;
            }
        }
    }
    valid.then_some(methods)
}
