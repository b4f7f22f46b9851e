//! Who may borrow the credentials (`docs/architecture.md#phase-caller`; configured as in the
//! README, "Callers").
//!
//! With no `[[caller]]` configured every request passes (validation already insisted that every
//! listener is then on loopback). Otherwise the request must carry a caller key, as
//! `Authorization: Bearer <key>` (SDKs that insist on sending a token just work) or
//! `tokenbroker-key: <key>`. Keys are compared in constant time against *every* caller, so timing
//! reveals neither a key nor which caller matched. The key never goes upstream: header hygiene
//! strips both headers.

use http::header;
use http::request::Parts;
use subtle::ConstantTimeEq;

use crate::config::{CallerClass, CallerConfig, TenantName};
use crate::error::ProxyError;
use crate::upstream::headers::CALLER_KEY_HEADER;

/// Admits or refuses a request for `tenant`; admitted, the caller's class (`standard` when no
/// callers are configured).
pub(crate) fn check(callers: &[CallerConfig], tenant: &TenantName, request: &Parts) -> Result<CallerClass, ProxyError> {
    if callers.is_empty() {
        return Ok(CallerClass::Standard);
    }
    let key = presented_key(request).ok_or(ProxyError::Unauthorized)?;
    let caller = find(callers, key).ok_or(ProxyError::Unauthorized)?;
    if let Some(tenants) = &caller.tenants {
        if !tenants.contains(tenant) {
            return Err(ProxyError::Forbidden("this caller may not use this tenant"));
        }
    }
    if let Some(methods) = &caller.methods {
        if !methods.contains(&request.method) {
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

fn find<'c>(callers: &'c [CallerConfig], key: &[u8]) -> Option<&'c CallerConfig> {
    // No early exit: every key is compared whatever matched.
    let mut found = None;
    for caller in callers {
        if bool::from(caller.key.expose().as_bytes().ct_eq(key)) {
            found = Some(caller);
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

    #[test]
    fn keys_tenants_and_methods_are_enforced() {
        let acme = TenantName::try_new("acme").expect("valid");
        let callers = [caller("k-orders", Some(vec!["acme"]), Some(vec![http::Method::GET]))];
        let get = http::Method::GET;
        assert!(
            check(
                &callers,
                &acme,
                &request(Some(("tokenbroker-key", "k-orders")), get.clone())
            )
            .is_ok()
        );
        assert!(
            check(
                &callers,
                &acme,
                &request(Some(("authorization", "Bearer k-orders")), get.clone())
            )
            .is_ok()
        );
        assert!(
            check(
                &callers,
                &acme,
                &request(Some(("authorization", "bearer k-orders")), get.clone())
            )
            .is_ok()
        );
        let code = |r: Result<CallerClass, ProxyError>| r.expect_err("refused").code();
        assert_eq!(
            code(check(&callers, &acme, &request(None, get.clone()))),
            "unauthorized"
        );
        assert_eq!(
            code(check(
                &callers,
                &acme,
                &request(Some(("tokenbroker-key", "k-order")), get.clone())
            )),
            "unauthorized"
        );
        assert_eq!(
            code(check(
                &callers,
                &acme,
                &request(Some(("tokenbroker-key", "k-orders")), http::Method::POST)
            )),
            "forbidden"
        );
        let other = TenantName::try_new("other").expect("valid");
        assert_eq!(
            code(check(
                &callers,
                &other,
                &request(Some(("tokenbroker-key", "k-orders")), get)
            )),
            "forbidden"
        );
        assert_eq!(
            check(&[], &other, &request(None, http::Method::DELETE)).ok(),
            Some(CallerClass::Standard),
            "anonymous requests are standard"
        );
        let key = request(Some(("tokenbroker-key", "k-orders")), http::Method::GET);
        assert_eq!(
            check(&callers_for_class_test(), &other, &key).ok(),
            Some(CallerClass::Batch)
        );
    }
}
