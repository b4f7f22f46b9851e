//! Header hygiene between downstream and upstream.
//!
//! Hop-by-hop headers (RFC 9110 7.6.1) describe one connection and must not be forwarded, nor may
//! any header the `Connection` header names. On the way up we also drop the caller's
//! `Authorization` (the proxy sets the real one), `Proxy-Authorization`, the caller key, `Host`
//! (the client sets the upstream's) and `Expect` (hyper answered it already).

use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;

/// The header a caller may present its key in (`docs/architecture.md#phase-caller`).
pub(crate) const CALLER_KEY_HEADER: HeaderName = HeaderName::from_static("tokenbroker-key");

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// A request head's size as it arrived, in HTTP/1 terms: request line, each `name: value` line and
/// the blank line. The proxy and webhook listeners both count it against
/// `server.max_request_head`, the same way for HTTP/1 and HTTP/2.
pub(crate) fn head_size(request: &Parts) -> usize {
    let target = request.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = request.method.as_str().len() + target + " HTTP/1.1\r\n".len() + 1;
    let fields: usize = (request.headers.iter())
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    line + fields + "\r\n".len()
}

/// Removes hop-by-hop headers, including those listed in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present is cheaper than hashing
    // nine names to remove (this runs twice per request).
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(name) || name == header::TRANSFER_ENCODING)
    {
        return;
    }
    // Names listed in Connection are connection-specific too; collect before removing it.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Prepares downstream request headers for the upstream: hop-by-hop and caller credentials out.
pub(crate) fn sanitize_request(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    const CALLER_ONLY: [HeaderName; 4] = [header::AUTHORIZATION, CALLER_KEY_HEADER, header::HOST, header::EXPECT];
    let mut present = CALLER_ONLY.map(|_| false);
    for name in headers.keys() {
        if let Some(index) = CALLER_ONLY.iter().position(|n| n == name) {
            present[index] = true;
        }
    }
    for (name, present) in CALLER_ONLY.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn each_stripped_header_goes_even_when_it_is_the_only_one() {
        let stripped = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "upgrade",
            "transfer-encoding",
        ];
        for name in stripped
            .iter()
            .chain(&["authorization", "tokenbroker-key", "host", "expect"])
        {
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            let mut response = headers.clone();
            sanitize_request(&mut headers);
            assert_eq!(
                headers.keys().collect::<Vec<_>>(),
                [header::ACCEPT],
                "{name} on the way up"
            );
            strip_hop_by_hop(&mut response);
            let kept = if stripped.contains(name) { 1 } else { 2 };
            assert_eq!(response.len(), kept, "{name} on the way down");
        }
    }

    #[test]
    fn request_headers_lose_hop_by_hop_credentials_and_connection_listed_names() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("authorization", "Bearer caller"),
            ("tokenbroker-key", "k"),
            ("host", "127.0.0.1:8080"),
            ("transfer-encoding", "chunked"),
            ("accept", "application/json"),
            ("store", "default"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        sanitize_request(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "store"]);
    }
}
