//! Which request parameters Magento signs, and in what order, under each of its two rule sets
//! (`docs/providers.md#adobe-commerce`). Shared by the signer and the sandbox's verifier: both
//! must agree with Magento, and the unit tests pin the result against hand-built base strings.
//!
//! ```text
//!  form body (parse_str) ─▶ query pairs of exactly two parts (urldecode) ─▶ [current] query again
//!  through parse_str ─▶ drop oauth_* names and arrays ─▶ sort: ksort (raw names, bytes) or, for
//!  legacy, strnatcmp of the encoded names
//! ```

use std::cmp::Ordering;
use std::collections::HashMap;

use super::php::{self, ksort_cmp, rawurlencoded, strnatcmp, urldecode};

/// Magento's two verifiers: the current code (its own `Hmac` helper) and the laminas-oauth one of
/// older releases (`legacy_signing = true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rules {
    Current,
    Legacy,
}

/// One signed parameter: the raw name (ksort's key), and name and value `rawurlencode`d.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Param {
    pub(crate) raw_name: String,
    pub(crate) name: String,
    pub(crate) value: String,
}

impl Param {
    pub(crate) fn new(raw_name: &str, value: &str) -> Self {
        Self {
            raw_name: raw_name.to_owned(),
            name: rawurlencoded(raw_name),
            value: rawurlencoded(value),
        }
    }
}

/// Whether Magento takes `name` for a protocol parameter: it matches `oauth_[a-z_-]+` anywhere
/// (the pattern is not anchored), so it is left out of the request's own parameters.
pub(crate) fn is_protocol(name: &str) -> bool {
    name.match_indices("oauth_").any(|(at, _)| {
        (name.as_bytes().get(at + "oauth_".len())).is_some_and(|c| c.is_ascii_lowercase() || matches!(c, b'_' | b'-'))
    })
}

/// The request's own parameters as `rules` sign them (the `oauth_*` ones are added by the
/// caller), unsorted. `form` is the body when its `Content-Type` starts with
/// `application/x-www-form-urlencoded`.
pub(crate) fn request_params(rules: Rules, query: Option<&str>, form: Option<&[u8]>) -> Vec<Param> {
    // name → value; `None` for a name PHP made an array of (never signed under that name).
    let mut map: HashMap<String, Option<String>> = HashMap::new();
    if let Some(body) = form {
        let body = String::from_utf8_lossy(body);
        parse_str_into(&body, &mut map);
    }
    let query = query.unwrap_or_default();
    for piece in query.split('&') {
        let mut parts = piece.split('=');
        if let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next())
            && !is_protocol(name)
        {
            map.insert(urldecode(name), Some(urldecode(value)));
        }
    }
    if rules == Rules::Current {
        parse_str_into(query, &mut map);
    }
    map.into_iter()
        .filter_map(|(name, value)| value.map(|value| Param::new(&name, &value)))
        .collect()
}

/// PHP `parse_str` of `text`, assigned into `map` one piece at a time (a later name wins),
/// without protocol parameters.
fn parse_str_into(text: &str, map: &mut HashMap<String, Option<String>>) {
    for piece in text.split('&').filter(|p| !p.is_empty()) {
        if let Some((name, value)) = php::parse_str_piece(piece)
            && !is_protocol(&name)
        {
            map.insert(name, value);
        }
    }
}

/// The order `rules` sign parameters in.
pub(crate) fn compare(rules: Rules, a: &Param, b: &Param) -> Ordering {
    match rules {
        Rules::Current => ksort_cmp(&a.raw_name, &b.raw_name),
        Rules::Legacy => strnatcmp(&a.name, &b.name),
    }
}

/// The URL Magento signs: the current code takes scheme, `Host` and path as they came; the
/// legacy one normalises them (lower-case scheme and host, no default port, path escapes
/// normalised).
pub(crate) fn base_url(rules: Rules, scheme: &str, host: &str, path: &str) -> String {
    match rules {
        Rules::Current => format!("{scheme}://{host}{path}"),
        Rules::Legacy => {
            let scheme = scheme.to_ascii_lowercase();
            let host = host.to_ascii_lowercase();
            let default = if scheme == "https" { ":443" } else { ":80" };
            let host = host.strip_suffix(default).unwrap_or(&host);
            format!("{scheme}://{host}{}", normalize_path(path))
        }
    }
}

/// The legacy path rule: escapes of unreserved characters decoded, every other escape's hex in
/// upper case, and bytes a path may not hold percent-encoded. (Dot segments are already resolved
/// by the proxy's own path normalisation.)
fn normalize_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escape = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .map(|hex| {
                hex.iter()
                    .fold(0u8, |n, d| n << 4 | (*d as char).to_digit(16).unwrap_or(0) as u8)
            });
        match escape {
            Some(decoded) if is_unreserved(decoded) => out.push(decoded as char),
            Some(_) => out.push_str(&path[i..i + 3].to_ascii_uppercase()),
            None if is_unreserved(byte) || b"!$&'()*+,;=:@/".contains(&byte) => out.push(byte as char),
            None => out.push_str(&format!("%{byte:02X}")),
        }
        i += if escape.is_some() { 3 } else { 1 };
    }
    out
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}
