//! Signature checks: HMAC-SHA256 of the raw body, keyed with the webhook's secret, written in hex
//! (either case) or base64 in one header. `ring::hmac::verify` compares in constant time, so how
//! long a refusal takes says nothing about how much of a forged signature was right.

use base64::Engine;
use http::HeaderValue;
use ring::hmac;

use crate::config::SignatureEncoding;

/// An HMAC-SHA256 tag is 32 bytes: 64 hex digits, or 44 base64 characters with padding.
const TAG_LEN: usize = 32;

/// Whether `signature` is `key`'s tag of `body`, written as `encoding` allows. A missing,
/// malformed or wrong signature is simply not valid: the caller gets one answer for all three.
pub(crate) fn is_valid(
    key: &hmac::Key,
    encoding: SignatureEncoding,
    signature: Option<&HeaderValue>,
    body: &[u8],
) -> bool {
    let Some(text) = signature.and_then(|v| v.to_str().ok()).map(str::trim) else {
        return false;
    };
    let tag = match encoding {
        SignatureEncoding::Hex => from_hex(text),
        SignatureEncoding::Base64 => from_base64(text),
        // 64 characters are hex; base64 of 32 bytes is 43 or 44, so the two never overlap.
        SignatureEncoding::HexOrBase64 if text.len() == 2 * TAG_LEN => from_hex(text),
        SignatureEncoding::HexOrBase64 => from_base64(text),
    };
    tag.is_some_and(|tag| hmac::verify(key, body, &tag).is_ok())
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok().filter(|tag| tag.len() == TAG_LEN)
}

fn from_base64(text: &str) -> Option<Vec<u8>> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let unpadded = &base64::engine::general_purpose::STANDARD_NO_PAD;
    (engine.decode(text).ok())
        .or_else(|| unpadded.decode(text).ok())
        .filter(|tag| tag.len() == TAG_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        hmac::sign(&key, body).as_ref().to_vec()
    }

    #[test]
    fn hex_in_either_case_and_base64_are_accepted_where_allowed() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"app-secret");
        let body = br#"{"id":1}"#;
        let tag = sign("app-secret", body);
        let lower = HeaderValue::from_str(&hex::encode(&tag)).expect("ascii");
        let upper = HeaderValue::from_str(&hex::encode_upper(&tag)).expect("ascii");
        let b64 = HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(&tag)).expect("ascii");
        for value in [&lower, &upper, &b64] {
            assert!(is_valid(&key, SignatureEncoding::HexOrBase64, Some(value), body));
        }
        assert!(is_valid(&key, SignatureEncoding::Hex, Some(&upper), body));
        assert!(!is_valid(&key, SignatureEncoding::Hex, Some(&b64), body));
        assert!(is_valid(&key, SignatureEncoding::Base64, Some(&b64), body));
        assert!(!is_valid(&key, SignatureEncoding::Base64, Some(&lower), body));
    }

    #[test]
    fn a_changed_body_a_wrong_key_or_no_signature_is_refused() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"app-secret");
        let body = br#"{"id":1}"#;
        let good = HeaderValue::from_str(&hex::encode(sign("app-secret", body))).expect("ascii");
        assert!(!is_valid(
            &key,
            SignatureEncoding::HexOrBase64,
            Some(&good),
            br#"{"id":2}"#
        ));
        let other = HeaderValue::from_str(&hex::encode(sign("other", body))).expect("ascii");
        assert!(!is_valid(&key, SignatureEncoding::HexOrBase64, Some(&other), body));
        assert!(!is_valid(&key, SignatureEncoding::HexOrBase64, None, body));
        let short = HeaderValue::from_static("abcd");
        assert!(!is_valid(&key, SignatureEncoding::HexOrBase64, Some(&short), body));
    }
}
