//! Validation helpers that several providers' blocks share: rotating client secrets, scope lists
//! and optional free text.

use crate::schema::Secret;
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::RawTenant;

/// `client_secret` or `client_secrets` (at most `max`); required.
pub(crate) fn client_secrets(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
    max: Option<usize>,
) -> Option<Vec<Secret<String>>> {
    match (&raw.client_secret, &raw.client_secrets) {
        (Some(one), None) => Some(vec![ctx.secret(scope, "client_secret", one)?]),
        (None, Some(list)) if list.is_empty() || max.is_some_and(|max| list.len() > max) => {
            let bound = max.map_or("at least one".to_owned(), |max| format!("one to {max}"));
            ctx.error(
                scope,
                "client_secrets",
                format!("must hold {bound} secrets (tried in order on invalid_client)"),
            );
            None
        }
        (None, Some(list)) => {
            let resolved: Vec<_> = list
                .iter()
                .enumerate()
                .map(|(i, s)| ctx.secret(scope, &format!("client_secrets.{i}"), s))
                .collect();
            resolved.into_iter().collect()
        }
        (Some(_), Some(_)) => {
            ctx.key_error(
                scope,
                "client_secrets",
                "give `client_secret` or `client_secrets`, not both",
            );
            None
        }
        (None, None) => {
            ctx.error(
                scope,
                "",
                "`client_secret` (or `client_secrets` for rotation) is required",
            );
            None
        }
    }
}

/// `scopes`: `default` (or empty) when absent; each a single non-empty token.
pub(crate) fn scopes(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    raw: &RawTenant,
    default: Option<&[&str]>,
) -> Option<Vec<String>> {
    let Some(list) = &raw.scopes else {
        return Some(default.unwrap_or_default().iter().map(|s| (*s).to_owned()).collect());
    };
    let mut valid = true;
    for (index, item) in list.iter().enumerate() {
        if item.is_empty() || item.chars().any(char::is_whitespace) {
            ctx.error(
                scope,
                &format!("scopes.{index}"),
                "a scope must be one non-empty word; list several as separate strings",
            );
            valid = false;
        }
    }
    valid.then(|| list.clone())
}

/// An optional free-text key that, when given, must not be blank.
pub(crate) fn optional_text(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    key: &str,
    raw: Option<&String>,
) -> Option<Option<String>> {
    match raw {
        Some(text) if text.trim().is_empty() => ctx.reject(scope, key, "must not be empty (omit the key instead)"),
        other => Some(other.cloned()),
    }
}
