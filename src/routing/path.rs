//! Request-path handling: split off the tenant prefix and normalise the rest so that no encoding
//! trick climbs out of the tenant.
//!
//! The proxy forwards `/<tenant>/<rest>` to `<upstream base path>/<rest>`. Two things must hold:
//! the tenant is exactly the first raw segment, and `<rest>` can never reach above the upstream base
//! path (the ACCS tenant id, a SHOPLINE API version, ...). Dot segments are resolved here, clamped at
//! the tenant root, whether written as `..` or percent-encoded (`%2e%2e`, `.%2E`). Encoded slashes
//! and backslashes stay encoded (Magento SKUs legitimately contain `%2F`), but a segment that would
//! *decode* into a traversal (`..%2f..`, `%2e%2e%5c`) is refused: an upstream that decodes it would
//! otherwise climb. The query string is not touched here; it passes through byte for byte.

use std::borrow::Cow;

/// The path is unusable and the request gets `400 bad_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("the path contains an encoded traversal")]
    EncodedTraversal,
    #[error("the path is not in origin form")]
    NotOriginForm,
}

/// Splits `/<tenant>/<rest>` into the tenant segment and `/<rest>` (`""` for `/<tenant>`).
pub(crate) fn split_tenant(path: &str) -> Option<(&str, &str)> {
    let tail = path.strip_prefix('/')?;
    match tail.find('/') {
        Some(i) => Some((&tail[..i], &tail[i..])),
        None => Some((tail, "")),
    }
}

/// Resolves dot segments (plain or encoded) without ever climbing above `/`, and refuses segments
/// that decode into a traversal. Borrows when the path is already clean (the common case).
pub(crate) fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    if !needs_work(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match classify(segment)? {
            Segment::Current => {}
            Segment::Parent => {
                out.pop();
            }
            Segment::Normal => out.push(segment),
        }
        // `/a/..` and `/a/.` end in a directory: keep the trailing slash like RFC 3986 does.
        if i == last && !matches!(classify(segment)?, Segment::Normal) {
            out.push("");
        }
    }
    let mut normal = String::with_capacity(path.len());
    for segment in &out {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Cheap pre-check: only a segment starting with a dot, a percent escape or a backslash can need
/// rewriting (`products.json` does not).
fn needs_work(path: &str) -> bool {
    path.contains("/.") || path.bytes().any(|b| b == b'%' || b == b'\\')
}

enum Segment {
    Current,
    Parent,
    Normal,
}

fn classify(segment: &str) -> Result<Segment, PathError> {
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
    match decoded.as_ref() {
        "." => return Ok(Segment::Current),
        ".." => return Ok(Segment::Parent),
        _ => {}
    }
    // A segment that only becomes a traversal once decoded (`..%2F..`, `%2e%2e%5Cx`) is refused.
    if decoded.contains(['/', '\\']) && decoded.split(['/', '\\']).any(|part| part == "." || part == "..") {
        return Err(PathError::EncodedTraversal);
    }
    // A literal backslash is a separator to some servers.
    if segment.contains('\\') && segment.split('\\').any(|part| part == "." || part == "..") {
        return Err(PathError::EncodedTraversal);
    }
    Ok(Segment::Normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_tenant_segment() {
        assert_eq!(split_tenant("/acme/V1/products"), Some(("acme", "/V1/products")));
        assert_eq!(split_tenant("/acme"), Some(("acme", "")));
        assert_eq!(split_tenant("/acme/"), Some(("acme", "/")));
        assert_eq!(split_tenant("/"), Some(("", "")));
        assert_eq!(split_tenant("acme"), None);
    }

    #[test]
    fn clean_paths_are_borrowed_unchanged() {
        let path = "/admin/openapi/v20230901/products/products.json";
        assert!(matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path));
        assert_eq!(normalize("").as_deref(), Ok("/"));
    }

    #[test]
    fn dot_segments_resolve_and_never_climb_out() {
        let cases = [
            ("/a/b/../c", "/a/c"),
            ("/a/./b", "/a/b"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/%2e%2e/%2E%2e/x", "/x"),
            ("/a/.%2e/b", "/b"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/v1.2/file.json", "/v1.2/file.json"),
            ("/products/sku%2Fwith%2Fslash", "/products/sku%2Fwith%2Fslash"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn encoded_traversals_are_refused() {
        for input in [
            "/a/..%2f..%2fother",
            "/a/%2e%2e%2F",
            "/a/..%5c..",
            "/a/..\\..",
            "/a/x%2f%2e%2e%2fy",
        ] {
            assert_eq!(normalize(input), Err(PathError::EncodedTraversal), "{input}");
        }
    }

    #[test]
    fn not_origin_form_is_refused() {
        assert_eq!(normalize("x/y"), Err(PathError::NotOriginForm));
    }
}
