//! Request-path handling: split off the tenant prefix and normalise the rest so that no encoding
//! trick climbs out of the tenant.
//!
//! The proxy forwards `/<tenant>/<rest>` to `<upstream base path>/<rest>`. Two things must hold:
//! the tenant is exactly the first raw segment, and `<rest>` can never reach above the upstream base
//! path (the ACCS tenant id, a SHOPLINE API version, ...), not even on an upstream that decodes more
//! leniently than RFC 3986 says. Dot segments are resolved here, clamped at the tenant root, whether
//! written as `..` or percent-encoded (`%2e%2e`, `.%2E`). Everything else that some server reads as
//! a dot segment is refused rather than resolved, because resolving would mean picking one server's
//! reading: a dot segment with `;parameters` (`..;`, `.;jsessionid=x`, `..%3b`, which servlet
//! containers treat as `..`), a segment that decodes into a traversal once or repeatedly
//! (`..%2f..`, `%2e%2e%5c`, `%252e%252e`), a NUL, and overlong UTF-8 (`%c0%ae` is `.` to a lax
//! decoder). Encoded slashes and backslashes that do not form a traversal stay encoded (Magento SKUs
//! legitimately contain `%2F`). The query string is not touched here; it passes through byte for
//! byte. The README ("Not an open proxy") states the rules for callers.

use std::borrow::Cow;

/// The path is unusable and the request gets `400 bad_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// A segment decodes (once or repeatedly, `\` read as `/`) into a `.` or `..` segment.
    #[error("{}", self.message())]
    EncodedTraversal,
    /// A `.` or `..` segment carrying `;parameters` (`..;`, `.;x=1`, `..%3b`).
    #[error("{}", self.message())]
    DotSegmentParameter,
    /// A NUL, an overlong UTF-8 sequence, or percent-encoding nested deeper than any client
    /// needs: what an upstream makes of them is anyone's guess.
    #[error("{}", self.message())]
    AmbiguousEncoding,
    /// The path does not start with `/`.
    #[error("{}", self.message())]
    NotOriginForm,
}

impl PathError {
    /// The problem+json detail for this refusal (a static string: it never echoes the path).
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::EncodedTraversal => "the path contains an encoded traversal",
            Self::DotSegmentParameter => "the path has a parameter on a dot segment",
            Self::AmbiguousEncoding => "the path contains a NUL, an overlong UTF-8 sequence or nested percent-encoding",
            Self::NotOriginForm => "the path is not in origin form",
        }
    }
}

/// Percent-decoding passes a segment gets before it must be stable: `%252e` needs two, and no
/// client encodes more than twice on purpose. Bounding it also bounds the work per segment.
const DECODE_PASSES: usize = 4;

/// Splits `/<tenant>/<rest>` into the tenant segment and `/<rest>` (`""` for `/<tenant>`).
pub(crate) fn split_tenant(path: &str) -> Option<(&str, &str)> {
    let tail = path.strip_prefix('/')?;
    match tail.find('/') {
        Some(i) => Some((&tail[..i], &tail[i..])),
        None => Some((tail, "")),
    }
}

/// Normalises the path below a tenant (`/<rest>`, or `""`): resolves dot segments (plain or
/// percent-encoded) without ever climbing above `/`, and refuses every segment that some upstream
/// could read as a dot segment though it is not one here (see the module documentation). Borrows
/// when the path is already clean, the common case; otherwise the result is `/` plus segments none
/// of which is, or decodes into, a dot segment, so appending it to a base path stays below it.
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
        let kind = classify(segment)?;
        match kind {
            Segment::Current => {}
            Segment::Parent => {
                out.pop();
            }
            Segment::Normal => out.push(segment),
        }
        // `/a/..` and `/a/.` end in a directory: keep the trailing slash like RFC 3986 does.
        if i == last && !matches!(kind, Segment::Normal) {
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

/// Cheap pre-check: only a segment starting with a dot, or holding a percent escape, a backslash
/// or a NUL, can need rewriting or refusing (`products.json` and `v1;x=1` do not: what a server
/// cuts off at `;` leaves a name that does not start with a dot).
fn needs_work(path: &str) -> bool {
    path.contains("/.") || path.bytes().any(|b| matches!(b, b'%' | b'\\' | 0))
}

#[derive(Clone, Copy)]
enum Segment {
    Current,
    Parent,
    Normal,
}

fn classify(segment: &str) -> Result<Segment, PathError> {
    // A segment that RFC 3986 itself calls a dot segment once decoded is resolved here, so the
    // upstream never sees it.
    let once: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
    match once.as_slice() {
        b"." => return Ok(Segment::Current),
        b".." => return Ok(Segment::Parent),
        _ => {}
    }
    let lenient = lenient_decode(segment)?;
    // What the laxest reader sees: `\` is a separator too, and a name ends at `;` (servlet path
    // parameters), or at `?` / `#` for a hop that re-parses a decoded path.
    for part in lenient.split(|&b| b == b'/' || b == b'\\') {
        let name = part
            .split(|&b| matches!(b, b';' | b'?' | b'#'))
            .next()
            .unwrap_or_default();
        if name == b"." || name == b".." {
            return Err(if part.get(name.len()) == Some(&b';') {
                PathError::DotSegmentParameter
            } else {
                PathError::EncodedTraversal
            });
        }
    }
    Ok(Segment::Normal)
}

/// The segment's bytes after percent-decoding until nothing changes, refusing what has no single
/// reading: NUL (C servers stop there), overlong UTF-8 (a lax decoder turns `%c0%ae` into `.`) and
/// nesting deeper than [`DECODE_PASSES`].
fn lenient_decode(segment: &str) -> Result<Vec<u8>, PathError> {
    let mut bytes = segment.as_bytes().to_vec();
    let mut stable = false;
    for _ in 0..DECODE_PASSES {
        let next: Vec<u8> = percent_encoding::percent_decode(&bytes).collect();
        stable = next == bytes;
        bytes = next;
        if stable {
            break;
        }
    }
    // Decoding never removes a byte that is not part of an escape, so checking the final bytes
    // covers what every intermediate pass produced.
    if !stable || bytes.contains(&0) || has_overlong_lead(&bytes) {
        return Err(PathError::AmbiguousEncoding);
    }
    Ok(bytes)
}

/// Whether `bytes` hold the start of an overlong UTF-8 sequence: a lead byte that can only begin
/// an over-long encoding of a shorter one (`C0`, `C1`; `E0 80..9F`; `F0 80..8F`; the obsolete
/// five- and six-byte `F8 80..87`, `FC 80..83`). Valid UTF-8 never contains one; in Latin-1 text
/// only `À`/`Á` (`C0`/`C1`) would be caught, a price worth paying.
fn has_overlong_lead(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        match b {
            0xC0 | 0xC1 => true,
            0xE0 => (0x80..=0x9F).contains(&next),
            0xF0 => (0x80..=0x8F).contains(&next),
            0xF8 => (0x80..=0x87).contains(&next),
            0xFC => (0x80..=0x83).contains(&next),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests;
