//! `[[caller]]`: who may use the proxy (`docs/architecture.md#phase-caller`). Names and keys must
//! be unique (two callers sharing a key could not be told apart), tenant lists must name real
//! tenants, methods must be HTTP method tokens.

use http::Method;

use crate::config::{CallerClass, CallerConfig, Secret, TenantName};
use crate::schema::check::{Ctx, Scope};
use crate::schema::fields::optional;
use crate::schema::raw::RawCaller;

/// Shorter keys are accepted with a warning: they can be guessed.
const MIN_KEY_LEN: usize = 16;

/// Every `[[caller]]`; `None` when any is invalid.
pub(super) fn callers(ctx: &mut Ctx<'_>) -> Option<Vec<CallerConfig>> {
    let tenant_names: Vec<String> = (0..ctx.src.len("tenant"))
        .filter_map(|i| ctx.src.str_at(&format!("tenant.{i}.name")).map(str::to_owned))
        .collect();
    let mut seen = Seen::default();
    let mut callers = Vec::new();
    let mut all_valid = true;
    for index in 0..ctx.src.len("caller") {
        let scope = Scope::caller(index, ctx.src);
        all_valid &= seen.name(ctx, &scope);
        let Some(raw) = ctx.section::<RawCaller>(&scope.path_of(""), scope.label()) else {
            all_valid = false;
            continue;
        };
        let key = caller_key(ctx, &scope, &raw);
        all_valid &= key.as_ref().is_none_or(|key| seen.key(ctx, &scope, key));
        match caller(ctx, &scope, &raw, key, &tenant_names) {
            Some(caller) => callers.push(caller),
            None => all_valid = false,
        }
    }
    all_valid.then_some(callers)
}

/// Names and keys of the callers checked so far, with the label of the caller that used them.
#[derive(Default)]
struct Seen {
    names: Vec<(String, String)>,
    keys: Vec<(Secret<String>, String)>,
}

impl Seen {
    /// False (and reported) when an earlier caller has the same name.
    fn name(&mut self, ctx: &mut Ctx<'_>, scope: &Scope) -> bool {
        let Some(name) = ctx.src.str_at(&scope.path_of("name")) else {
            return true;
        };
        let first = self
            .names
            .iter()
            .find(|(other, _)| other == name)
            .map(|(_, label)| label.clone());
        self.names.push((name.to_owned(), scope.label().to_owned()));
        match first {
            Some(first) => {
                ctx.error(scope, "name", format!("duplicate caller name (first used by {first})"));
                false
            }
            None => true,
        }
    }

    /// False (and reported) when an earlier caller has the same key; compared, never printed.
    fn key(&mut self, ctx: &mut Ctx<'_>, scope: &Scope, key: &Secret<String>) -> bool {
        let first = self
            .keys
            .iter()
            .find(|(other, _)| other.expose() == key.expose())
            .map(|(_, label)| label.clone());
        self.keys.push((key.clone(), scope.label().to_owned()));
        match first {
            Some(first) => {
                ctx.error(scope, "key", format!("same key as {first}: each caller needs its own"));
                false
            }
            None => true,
        }
    }
}

fn caller_key(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawCaller) -> Option<Secret<String>> {
    let why = "(the caller's API key, sent as `Authorization: Bearer <key>`)";
    let key = ctx.required(scope, "key", raw.key.as_ref(), why)?;
    let key = ctx.secret(scope, "key", key)?;
    if ctx.resolved(&key).is_some_and(|k| k.chars().count() < MIN_KEY_LEN) {
        ctx.warn(
            scope,
            "key",
            format!("is shorter than {MIN_KEY_LEN} characters and could be guessed"),
        );
    }
    Some(key)
}

fn caller(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawCaller,
    key: Option<Secret<String>>,
    tenant_names: &[String],
) -> Option<CallerConfig> {
    let name = ctx.non_empty(
        scope,
        "name",
        raw.name.as_ref(),
        "(it names the caller in logs and metrics)",
    );
    let tenants = optional(raw.tenants.as_ref(), |list| tenants(ctx, scope, list, tenant_names));
    let methods = optional(raw.methods.as_ref(), |list| methods(ctx, scope, list));
    let class = match raw.class.as_deref() {
        None => Some(CallerClass::default()),
        Some(text) => CallerClass::parse(text).or_else(|| {
            ctx.reject(
                scope,
                "class",
                format!("`{text}` is not a class; use \"interactive\", \"standard\" or \"batch\""),
            )
        }),
    };
    let key = key?;
    Some(CallerConfig {
        name: name?.to_owned(),
        key_digest: crate::config::KeyDigest::of(key.expose().as_bytes()),
        key,
        // `["*"]` came back as an empty list: every tenant.
        tenants: tenants?.filter(|list| !list.is_empty()),
        methods: methods?,
        class: class?,
    })
}

/// `["*"]` → empty (all tenants, `None` in the model); otherwise names of existing tenants.
fn tenants(ctx: &mut Ctx<'_>, scope: &Scope, list: &[String], tenant_names: &[String]) -> Option<Vec<TenantName>> {
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
