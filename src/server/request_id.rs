//! The request id: the caller's own `x-request-id` when it is plain, else a cheap process-unique
//! one. The access event carries it and every response echoes it. Kept apart from the pipeline so
//! its rules are tested on their own.

use std::fmt;

use http::header::HeaderValue;
use http::{HeaderMap, HeaderName};

/// The header a caller's id arrives in and every answer echoes.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming `x-request-id` that is logged as given; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// A request's id, formatted only if the access log is written: building it costs no allocation
/// (a caller's id is a reference-counted header value, a generated one two integers).
#[derive(Debug, Clone)]
pub(crate) enum RequestId {
    /// The caller's own `x-request-id`, checked to be short and plain.
    Given(HeaderValue),
    /// A per-process random prefix (ids from replicas and restarts do not collide) and a counter.
    Generated { prefix: u32, n: u64 },
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Checked plain ASCII on the way in.
            Self::Given(id) => f.write_str(id.to_str().unwrap_or_default()),
            Self::Generated { prefix, n } => write!(f, "{prefix:08x}-{n:x}"),
        }
    }
}

impl RequestId {
    /// The id as the `x-request-id` a response echoes: the caller's own value as it came, or the
    /// generated one written out (at most 25 bytes, formatted without an intermediate `String`).
    pub(crate) fn to_header(&self) -> HeaderValue {
        match self {
            Self::Given(id) => id.clone(),
            Self::Generated { prefix, n } => {
                let mut text = [0u8; 8 + 1 + 16];
                let len = write_hex(*prefix, n, &mut text);
                HeaderValue::from_bytes(&text[..len]).expect("hex digits and a dash")
            }
        }
    }
}

/// Writes `{prefix:08x}-{n:x}` into `out` and returns its length: by hand, because `write!` costs
/// a few hundred instructions on every request that has no id of its own.
fn write_hex(prefix: u32, n: &u64, out: &mut [u8; 25]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out[..8].iter_mut().enumerate() {
        *byte = DIGITS[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    out[8] = b'-';
    let digits = (16 - n.leading_zeros() as usize / 4).max(1);
    for (i, byte) in out[9..9 + digits].iter_mut().enumerate() {
        *byte = DIGITS[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    9 + digits
}

/// The caller's `x-request-id` when it is short and plain (letters, digits, `-_.:`), so a log
/// line cannot be forged or bloated through it; otherwise a new id. The caller's own header
/// passes upstream unchanged; a generated id is only logged and echoed, never sent upstream.
pub(crate) fn of(headers: &HeaderMap) -> RequestId {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let given = headers.get(HEADER).filter(|id| {
        let id = id.as_bytes();
        !id.is_empty()
            && id.len() <= MAX_REQUEST_ID
            && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    match given {
        Some(id) => RequestId::Given(id.clone()),
        None => RequestId::Generated {
            prefix: *PREFIX.get_or_init(rand::random),
            n: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_str(value).expect("valid header"));
        headers
    }

    #[test]
    fn a_plain_incoming_id_is_kept_and_anything_else_is_replaced() {
        assert_eq!(
            of(&with("0b5e0f6c-5a5e:4b1e_9d2c.1")).to_string(),
            "0b5e0f6c-5a5e:4b1e_9d2c.1"
        );
        for bad in ["", "has space", "quote\"", "a=b", &"x".repeat(MAX_REQUEST_ID + 1)] {
            let id = of(&with(bad)).to_string();
            assert_ne!(id, bad);
            assert!(id.contains('-') && id.len() <= 25, "{id}");
        }
    }

    #[test]
    fn the_echo_is_the_logged_id() {
        for id in [
            of(&with("req-7")),
            of(&HeaderMap::new()),
            RequestId::Generated {
                prefix: u32::MAX,
                n: u64::MAX,
            },
        ] {
            assert_eq!(id.to_header().to_str().expect("plain"), id.to_string());
        }
    }

    #[test]
    fn generated_ids_differ() {
        let (a, b) = (of(&HeaderMap::new()).to_string(), of(&HeaderMap::new()).to_string());
        assert_ne!(a, b);
        assert_eq!(a.split('-').next(), b.split('-').next(), "one prefix per process");
    }
}
