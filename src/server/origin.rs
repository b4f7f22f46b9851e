//! Anonymous listeners answer local programs only, not web pages (README, "Callers").
//!
//! With no `[[caller]]` the credentials go to whoever reaches the listener, which validation keeps
//! on loopback. A browser on the same machine reaches loopback too: a page can post to
//! `http://127.0.0.1:8080/...` (a cross-site request), or make its own host name resolve to
//! 127.0.0.1 after loading (DNS rebinding) and then read the answers as same-origin. Two checks
//! close both, and cost a few byte comparisons per request:
//!
//! - on a loopback listener, the `Host` (or HTTP/2 `:authority`) must be a loopback address,
//!   `localhost`, or a name in `server.allowed_hosts`: a rebound page still sends its own name,
//!   so it gets 421;
//! - a browser's cross-site request (`Sec-Fetch-Site: cross-site`, or an `Origin` that is not
//!   local, `null` included) gets 403.
//!
//! Programs that are not browsers send neither header, or a loopback `Host`, and pass. With callers
//! configured none of this applies: a page does not hold a caller key.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::header::{self, HeaderName};
use http::request::Parts;

use crate::error::ProxyError;

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Refuses what a web page could send to an anonymous listener; `loopback` says whether the
/// listener the request came in on is bound to a loopback address.
pub(crate) fn check(request: &Parts, loopback: bool, allowed_hosts: &[String]) -> Result<(), ProxyError> {
    let seen = Seen::of(request);
    if loopback && !host_is_local(request, seen.host, allowed_hosts) {
        return Err(ProxyError::MisdirectedRequest);
    }
    if is_cross_site(&seen, allowed_hosts) {
        return Err(ProxyError::Forbidden(
            "a browser's cross-site request may not use an anonymous listener",
        ));
    }
    Ok(())
}

/// The first value of each header the checks read, found in one pass over the few headers a
/// request carries (three hashed lookups, one of a name outside the standard table, cost more).
#[derive(Default)]
struct Seen<'a> {
    host: Option<&'a [u8]>,
    origin: Option<&'a [u8]>,
    fetch_site: Option<&'a [u8]>,
}

impl<'a> Seen<'a> {
    fn of(request: &'a Parts) -> Self {
        let mut seen = Self::default();
        for (name, value) in &request.headers {
            let slot = if name == header::HOST {
                &mut seen.host
            } else if name == header::ORIGIN {
                &mut seen.origin
            } else if name == SEC_FETCH_SITE {
                &mut seen.fetch_site
            } else {
                continue;
            };
            slot.get_or_insert(value.as_bytes());
        }
        seen
    }
}

/// HTTP/2 carries the host in the URI (`:authority`), HTTP/1 in `Host`. A request with neither
/// (HTTP/1.0) comes from no browser, so it passes.
fn host_is_local(request: &Parts, host: Option<&[u8]>, allowed_hosts: &[String]) -> bool {
    let authority = match request.uri.authority() {
        Some(authority) => authority.as_str().as_bytes(),
        None => match host {
            Some(host) => host,
            None => return true,
        },
    };
    is_local_authority(authority, allowed_hosts)
}

fn is_cross_site(seen: &Seen<'_>, allowed_hosts: &[String]) -> bool {
    if seen.fetch_site.is_some_and(|v| v.eq_ignore_ascii_case(b"cross-site")) {
        return true;
    }
    let Some(origin) = seen.origin else {
        return false;
    };
    // `scheme://host[:port]`; `null` (sandboxed frames, file pages) and anything else is foreign.
    let authority = ["http://", "https://"]
        .iter()
        .find_map(|scheme| origin.strip_prefix(scheme.as_bytes()));
    !authority.is_some_and(|authority| is_local_authority(authority, allowed_hosts))
}

/// `host[:port]` names this machine: a loopback IP literal, `localhost` or a subdomain of it
/// (browsers resolve those to loopback themselves, RFC 6761), or an allowed name.
fn is_local_authority(authority: &[u8], allowed_hosts: &[String]) -> bool {
    let Some(host) = host_of(authority) else {
        return false;
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if let Some(inner) = host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        return parse::<Ipv6Addr>(inner).is_some_and(|ip| ip.is_loopback());
    }
    // The common case first, by bytes: parsing an address costs a few hundred instructions.
    host == b"127.0.0.1"
        || host.eq_ignore_ascii_case(b"localhost")
        || ends_with_ignore_case(host, b".localhost")
        || parse::<Ipv4Addr>(host).is_some_and(|ip| ip.is_loopback())
        || allowed_hosts
            .iter()
            .any(|name| host.eq_ignore_ascii_case(name.as_bytes()))
}

/// The host part of `host[:port]` (an IPv6 literal keeps its brackets), if the port is digits.
fn host_of(authority: &[u8]) -> Option<&[u8]> {
    let port_colon = match authority.iter().rposition(|&b| b == b':') {
        Some(colon) if !authority[colon..].contains(&b']') => Some(colon),
        _ => None,
    };
    let Some(colon) = port_colon else {
        return Some(authority);
    };
    let (host, port) = (&authority[..colon], &authority[colon + 1..]);
    port.iter().all(u8::is_ascii_digit).then_some(host)
}

fn ends_with_ignore_case(text: &[u8], suffix: &[u8]) -> bool {
    text.len() > suffix.len() && text[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn parse<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().uri("/acme/x");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    fn code(parts: &Parts, loopback: bool, allowed: &[String]) -> Option<&'static str> {
        check(parts, loopback, allowed).err().map(|e| e.code())
    }

    #[test]
    fn loopback_hosts_pass_and_foreign_ones_are_misdirected() {
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
            "localhost:8080",
            "LOCALHOST",
            "localhost.:8080",
            "api.localhost:8080",
        ] {
            assert_eq!(code(&request(&[("host", host)]), true, &[]), None, "{host}");
        }
        for host in [
            "attacker.example:8080",
            "attacker.example",
            "10.0.0.1:8080",
            "[::2]:8080",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8080",
            "127.0.0.1:80x",
            "",
        ] {
            assert_eq!(
                code(&request(&[("host", host)]), true, &[]),
                Some("misdirected_request"),
                "{host}"
            );
        }
        assert_eq!(code(&request(&[]), true, &[]), None, "no Host: not a browser");
    }

    #[test]
    fn allowed_hosts_extend_the_local_names_and_non_loopback_listeners_skip_the_host_check() {
        let allowed = ["tokenbroker.internal".to_owned()];
        let internal = request(&[("host", "TokenBroker.Internal:8080")]);
        assert_eq!(code(&internal, true, &allowed), None);
        assert_eq!(code(&internal, true, &[]), Some("misdirected_request"));
        assert_eq!(
            code(&internal, false, &[]),
            None,
            "allow_anonymous on a routable address"
        );
    }

    #[test]
    fn browsers_cross_site_requests_are_forbidden() {
        let local = ("host", "127.0.0.1:8080");
        for headers in [
            [local, ("sec-fetch-site", "cross-site")],
            [local, ("origin", "https://attacker.example")],
            [local, ("origin", "null")],
            [local, ("origin", "http://127.0.0.1.attacker.example")],
        ] {
            assert_eq!(code(&request(&headers), true, &[]), Some("forbidden"), "{headers:?}");
            assert_eq!(code(&request(&headers), false, &[]), Some("forbidden"), "{headers:?}");
        }
        for headers in [
            [local, ("sec-fetch-site", "same-site")],
            [local, ("sec-fetch-site", "none")],
            [local, ("origin", "http://localhost:3000")],
            [local, ("origin", "http://127.0.0.1:8080")],
        ] {
            assert_eq!(code(&request(&headers), true, &[]), None, "{headers:?}");
        }
    }
}
