//! Who may borrow the credentials (`docs/architecture.md#phase-caller`; configured as in the
//! README, "Callers").
//!
//! With no `[[caller]]` configured every request passes (validation already insisted that every
//! listener is then on loopback). Otherwise the request must carry a caller key, as
//! `Authorization: Bearer <key>` (SDKs that insist on sending a token just work) or
//! `tokenbroker-key: <key>`. Keys are compared in constant time against *every* caller, so timing
//! reveals neither a key nor which caller matched. The key never goes upstream: header hygiene
//! strips both headers.

use http::request::Parts;
use http::{Method, header};
use subtle::ConstantTimeEq;

use crate::config::{CallerClass, CallerConfig, KeyDigest, TenantName};
use crate::error::ProxyError;
use crate::upstream::headers::CALLER_KEY_HEADER;

/// Who sent the request: `None` when no callers are configured (every request is anonymous),
/// else the caller whose key it carries, with its index among `callers` (the access log names
/// it by that). Runs before the tenant is looked up, so a request
/// without a valid key learns nothing about which tenants exist (401 for every path).
pub(crate) fn authenticate<'c>(
    callers: &'c [CallerConfig],
    request: &Parts,
) -> Result<Option<(usize, &'c CallerConfig)>, ProxyError> {
    if callers.is_empty() {
        return Ok(None);
    }
    let key = presented_key(request).ok_or(ProxyError::Unauthorized)?;
    find(callers, &KeyDigest::of(key))
        .map(Some)
        .ok_or(ProxyError::Unauthorized)
}

/// Admits `caller` (from [`authenticate`]) to `tenant` and `method`; admitted, its class
/// (`standard` for anonymous requests).
pub(crate) fn authorize(
    caller: Option<&CallerConfig>,
    tenant: &TenantName,
    method: &Method,
) -> Result<CallerClass, ProxyError> {
    let Some(caller) = caller else {
        return Ok(CallerClass::Standard);
    };
    if let Some(tenants) = &caller.tenants {
        if !tenants.contains(tenant) {
            return Err(ProxyError::Forbidden("this caller may not use this tenant"));
        }
    }
    if let Some(methods) = &caller.methods {
        if !methods.contains(method) {
            return Err(ProxyError::Forbidden("this caller may not use this method"));
        }
    }
    Ok(caller.class)
}

fn presented_key(request: &Parts) -> Option<&[u8]> {
    if let Some(key) = request.headers.get(CALLER_KEY_HEADER) {
        return Some(key.as_bytes());
    }
    let authorization = request.headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = authorization.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| &authorization[7..])
}

fn find<'c>(callers: &'c [CallerConfig], presented: &KeyDigest) -> Option<(usize, &'c CallerConfig)> {
    // No early exit, and digests of one length: the time is the same whichever key (if any)
    // matched, and whatever the length of the key presented.
    let mut found = None;
    for (index, caller) in callers.iter().enumerate() {
        if bool::from(caller.key_digest.0.ct_eq(&presented.0)) {
            found = Some((index, caller));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn caller(key: &str, tenants: Option<Vec<&str>>, methods: Option<Vec<http::Method>>) -> CallerConfig {
        CallerConfig {
            name: "orders".into(),
            key: Secret::from(key),
            key_digest: KeyDigest::of(key.as_bytes()),
            tenants: tenants.map(|t| t.into_iter().map(|n| TenantName::try_new(n).expect("valid")).collect()),
            methods,
            class: CallerClass::Batch,
        }
    }

    fn callers_for_class_test() -> [CallerConfig; 1] {
        [caller("k-orders", None, None)]
    }

    fn request(header: Option<(&str, &str)>, method: http::Method) -> Parts {
        let mut builder = http::Request::builder().method(method).uri("/acme/x");
        if let Some((name, value)) = header {
            builder = builder.header(name, value);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    /// Both phases, as the pipeline runs them.
    fn check(callers: &[CallerConfig], tenant: &TenantName, request: &Parts) -> Result<CallerClass, ProxyError> {
        let caller = authenticate(callers, request)?;
        authorize(caller.map(|(_, c)| c), tenant, &request.method)
    }

    #[test]
    fn keys_tenants_and_methods_are_enforced() {
        let acme = TenantName::try_new("acme").expect("valid");
        let callers = [caller("k-orders", Some(vec!["acme"]), Some(vec![http::Method::GET]))];
        let get = http::Method::GET;
        for header in [
            ("tokenbroker-key", "k-orders"),
            ("authorization", "Bearer k-orders"),
            ("authorization", "bearer k-orders"),
        ] {
            assert!(
                check(&callers, &acme, &request(Some(header), get.clone())).is_ok(),
                "{header:?}"
            );
        }
        let code = |r: Result<CallerClass, ProxyError>| r.expect_err("refused").code();
        for header in [
            None,
            Some(("tokenbroker-key", "k-order")),
            Some(("tokenbroker-key", "k-orders-and-more")),
            Some(("tokenbroker-key", "")),
            Some(("authorization", "Basic k-orders")),
        ] {
            assert_eq!(
                code(check(&callers, &acme, &request(header, get.clone()))),
                "unauthorized",
                "{header:?}"
            );
        }
        let key = Some(("tokenbroker-key", "k-orders"));
        assert_eq!(
            code(check(&callers, &acme, &request(key, http::Method::POST))),
            "forbidden"
        );
        let other = TenantName::try_new("other").expect("valid");
        assert_eq!(code(check(&callers, &other, &request(key, get.clone()))), "forbidden");
        assert_eq!(
            check(&[], &other, &request(None, http::Method::DELETE)).ok(),
            Some(CallerClass::Standard),
            "anonymous requests are standard"
        );
        assert_eq!(
            check(&callers_for_class_test(), &other, &request(key, get)).ok(),
            Some(CallerClass::Batch)
        );
    }
}
