//! The PHP string functions Magento's OAuth code verifies with, reproduced byte for byte: a
//! signature is only accepted when the proxy encodes, decodes, splits and orders exactly as PHP
//! does. Each follows the PHP manual's documented behaviour, not RFC 3986 or RFC 5849.

use std::cmp::Ordering;

/// PHP `rawurlencode`: every byte but `A-Z a-z 0-9 - _ . ~` becomes `%XX` with upper-case hex.
pub(crate) fn rawurlencode(input: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in input.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xF)] as char);
        }
    }
}

/// [`rawurlencode`] into a new string.
pub(crate) fn rawurlencoded(input: &str) -> String {
    let mut out = String::with_capacity(input.len() + input.len() / 2);
    rawurlencode(input, &mut out);
    out
}

/// PHP `urldecode`: `+` becomes a space and `%XX` (either case) its byte; a `%` not followed by
/// two hex digits stays as it is. Bytes that do not form UTF-8 are replaced (PHP keeps them; a
/// request whose query decodes to invalid UTF-8 is signed over the replacement, a known limit).
pub(crate) fn urldecode(input: &str) -> String {
    decode(input, true)
}

/// PHP `rawurldecode`: like [`urldecode`] but `+` stays a `+`.
pub(crate) fn rawurldecode(input: &str) -> String {
    decode(input, false)
}

fn decode(input: &str, plus: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus => out.push(b' '),
            b'%' if i + 2 < bytes.len() && hex(bytes[i + 1]).is_some() && hex(bytes[i + 2]).is_some() => {
                out.push(hex(bytes[i + 1]).unwrap_or(0) << 4 | hex(bytes[i + 2]).unwrap_or(0));
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// What PHP `parse_str` makes of one `&`-separated piece: `None` for an empty name (PHP skips
/// it), else the name as PHP keys it and the value, `None` when the name makes a nested array
/// (`a[b]=1` sets `$a['b']`, which Magento never signs under the flat name).
///
/// Name rules (PHP's variable-name mangling): leading spaces are dropped; a `[` with a later `]`
/// starts an array; before it, and everywhere when there is none, `.` and spaces become `_`, and
/// an unclosed first `[` becomes `_` too. A piece without `=` is the name with an empty value,
/// and only the first `=` splits, so `a=b=c` is `a` = `b=c`.
pub(crate) fn parse_str_piece(piece: &str) -> Option<(String, Option<String>)> {
    let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
    let name = urldecode(name);
    let name = name.trim_start_matches(' ');
    let open = name.find('[');
    let array = open.is_some_and(|at| name[at..].contains(']'));
    let base = match open {
        Some(at) if array => &name[..at],
        _ => name,
    };
    if base.is_empty() {
        return None;
    }
    let mut key = String::with_capacity(base.len());
    let mut unclosed = !array && open.is_some();
    for c in base.chars() {
        match c {
            '.' | ' ' => key.push('_'),
            '[' if unclosed => {
                key.push('_');
                unclosed = false;
            }
            c => key.push(c),
        }
    }
    Some((key, (!array).then(|| urldecode(value))))
}

/// PHP `ksort` order (SORT_REGULAR) of two array keys as Magento builds them: a key that is a
/// canonical decimal integer is an integer key, and two of those compare as numbers; otherwise
/// the keys compare as bytes (PHP 8 compares an integer with a non-numeric string as strings).
pub(crate) fn ksort_cmp(a: &str, b: &str) -> Ordering {
    match (integer_key(a), integer_key(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.as_bytes().cmp(b.as_bytes()),
    }
}

/// The integer PHP turns an array key into: `0`, or an optional `-` then digits without a leading
/// zero, within `i64`.
fn integer_key(key: &str) -> Option<i64> {
    let digits = key.strip_prefix('-').unwrap_or(key);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && key != "-0";
    canonical.then(|| key.parse().ok()).flatten()
}

/// PHP `strnatcmp`: natural order, case-sensitive. Runs of digits compare as numbers (leading
/// zeros make a run compare digit by digit, as a fraction, the way PHP's `strnatcmp_ex` does),
/// whitespace is skipped, everything else compares byte by byte.
pub(crate) fn strnatcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        while a.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        while b.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        let (Some(&ca), Some(&cb)) = (a.get(i), b.get(j)) else {
            return (a.len() - i.min(a.len())).cmp(&(b.len() - j.min(b.len())));
        };
        if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let fractional = ca == b'0' || cb == b'0';
            let (order, next_i, next_j) = if fractional {
                compare_left(a, i, b, j)
            } else {
                compare_right(a, i, b, j)
            };
            if order != Ordering::Equal {
                return order;
            }
            (i, j) = (next_i, next_j);
            continue;
        }
        if ca != cb {
            return ca.cmp(&cb);
        }
        i += 1;
        j += 1;
    }
}

/// Two digit runs without leading zeros: the longer is larger, else the first differing digit.
fn compare_right(a: &[u8], mut i: usize, b: &[u8], mut j: usize) -> (Ordering, usize, usize) {
    let mut bias = Ordering::Equal;
    loop {
        let da = a.get(i).filter(|c| c.is_ascii_digit());
        let db = b.get(j).filter(|c| c.is_ascii_digit());
        match (da, db) {
            (None, None) => return (bias, i, j),
            (None, Some(_)) => return (Ordering::Less, i, j),
            (Some(_), None) => return (Ordering::Greater, i, j),
            (Some(x), Some(y)) => {
                if bias == Ordering::Equal {
                    bias = x.cmp(y);
                }
            }
        }
        i += 1;
        j += 1;
    }
}

/// Two digit runs where one has a leading zero: compared digit by digit, left aligned.
fn compare_left(a: &[u8], mut i: usize, b: &[u8], mut j: usize) -> (Ordering, usize, usize) {
    loop {
        let da = a.get(i).filter(|c| c.is_ascii_digit());
        let db = b.get(j).filter(|c| c.is_ascii_digit());
        match (da, db) {
            (None, None) => return (Ordering::Equal, i, j),
            (None, Some(_)) => return (Ordering::Less, i, j),
            (Some(_), None) => return (Ordering::Greater, i, j),
            (Some(x), Some(y)) if x != y => return (x.cmp(y), i, j),
            _ => {}
        }
        i += 1;
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rawurlencode_keeps_only_unreserved_bytes() {
        // php -r 'echo rawurlencode("a b+c~d*é/%");' → a%20b%2Bc~d%2A%C3%A9%2F%25
        assert_eq!(rawurlencoded("a b+c~d*é/%"), "a%20b%2Bc~d%2A%C3%A9%2F%25");
        assert_eq!(rawurlencoded("A-Z_a.z09"), "A-Z_a.z09");
        assert_eq!(rawurlencoded("a[1]="), "a%5B1%5D%3D");
    }

    #[test]
    fn urldecode_turns_plus_into_space_and_rawurldecode_does_not() {
        assert_eq!(urldecode("a+b%20c%2Bd"), "a b c+d");
        assert_eq!(rawurldecode("a+b%20c"), "a+b c");
        assert_eq!(urldecode("%zz%4"), "%zz%4", "malformed escapes stay");
        assert_eq!(urldecode("%c3%A9"), "é", "hex in either case");
        assert_eq!(urldecode("100%"), "100%");
    }

    #[test]
    fn parse_str_splits_like_php() {
        let piece = |p| parse_str_piece(p);
        assert_eq!(piece("flag"), Some(("flag".into(), Some(String::new()))));
        assert_eq!(piece("a=b=c"), Some(("a".into(), Some("b=c".into()))));
        assert_eq!(piece("q=a+b%20c"), Some(("q".into(), Some("a b c".into()))));
        assert_eq!(piece("a.b=1"), Some(("a_b".into(), Some("1".into()))));
        assert_eq!(piece(" x y=1"), Some(("x_y".into(), Some("1".into()))));
        assert_eq!(piece("a[b]=1"), Some(("a".into(), None)));
        assert_eq!(piece("a%5B0%5D=1"), Some(("a".into(), None)), "decoded first");
        assert_eq!(piece("a[b=1"), Some(("a_b".into(), Some("1".into()))));
        assert_eq!(piece("=1"), None);
        assert_eq!(piece("[x]=1"), None);
    }

    #[test]
    fn ksort_compares_integer_keys_as_numbers_and_the_rest_as_bytes() {
        assert_eq!(ksort_cmp("9", "10"), Ordering::Less);
        assert_eq!(ksort_cmp("10", "09"), Ordering::Greater, "09 is a string key: bytes");
        assert_eq!(ksort_cmp("10", "9a"), Ordering::Less, "9a is a string key: bytes");
        assert_eq!(ksort_cmp("a[10]", "a[1]"), Ordering::Less, "`0` < `]`");
        assert_eq!(ksort_cmp("B", "a"), Ordering::Less);
    }

    #[test]
    fn strnatcmp_orders_digit_runs_as_numbers() {
        // php -r 'var_dump(strnatcmp("a%5B9%5D", "a%5B10%5D"));' → int(-1)
        assert_eq!(strnatcmp("a%5B9%5D", "a%5B10%5D"), Ordering::Less);
        assert_eq!(strnatcmp("a%5B10%5D", "a%5B1%5D"), Ordering::Greater);
        assert_eq!(strnatcmp("img12", "img10"), Ordering::Greater);
        assert_eq!(strnatcmp("x2", "x2"), Ordering::Equal);
        assert_eq!(strnatcmp("x", "x1"), Ordering::Less);
        assert_eq!(
            strnatcmp("a01", "a1"),
            Ordering::Less,
            "leading zero: compared left aligned"
        );
        assert_eq!(strnatcmp("B", "a"), Ordering::Less, "case-sensitive");
        // Byte order puts `a%5B10%5D` first; natural order `a%5B2%5D`.
        assert_eq!(strnatcmp("a%5B2%5D", "a%5B10%5D"), Ordering::Less);
    }
}
