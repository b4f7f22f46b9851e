//! Reading (never verifying) JWT claims: the expiry of static credentials and of tokens whose
//! response carries no `expires_in`. The proxy is not the audience of these tokens, so it has no
//! key to verify them with and no need to: it only wants to know when they stop working.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The claims object of a compact JWS, or `None` when `token` is not one.
pub(crate) fn claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // Some issuers pad; the alphabet is URL-safe either way.
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The `exp` claim in unix seconds, if `token` is a JWT that has one.
pub(crate) fn exp(token: &str) -> Option<u64> {
    unsigned(claims(token)?.get("exp")?)
}

/// A non-negative integer given as a JSON number or a numeric string (`"86400000"`: Adobe's JWT
/// claims and some gateways quote numbers). A fraction is dropped; a number too large for `u64`
/// (a float's `as` saturates, and so does a longer digit string) reads as `u64::MAX`, which the
/// expiry clamp then makes a year; a negative one is no number.
pub(crate) fn unsigned(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        serde_json::Value::String(s) => match s.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Some(u64::MAX),
            Err(_) => None,
        },
        _ => None,
    }
}

/// Builds an unsigned-looking JWT with the given claims.
#[cfg(test)]
pub(crate) fn encode_unsigned(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp_of_the_cyberbiz_sample() {
        // The documented CYBERBIZ sample decodes to iat 1689132489, exp 1689139689 (2 h).
        let token = encode_unsigned(&serde_json::json!({
            "iat": 1689132489, "exp": 1689139689, "shop_id": 7109,
            "scopes": "public shop_api", "shop_domain": "demo.cyberbiz.co"
        }));
        assert_eq!(exp(&token), Some(1689139689));
    }

    #[test]
    fn not_a_jwt_has_no_exp() {
        assert_eq!(exp("opaque-token"), None);
        assert_eq!(exp("a.b"), None);
        assert_eq!(exp("a.!!!.c"), None);
        assert_eq!(exp(&encode_unsigned(&serde_json::json!({"sub": "x"}))), None);
    }
}
