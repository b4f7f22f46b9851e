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
    crate::auth::oauth2::response::unsigned(claims(token)?.get("exp")?)
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
