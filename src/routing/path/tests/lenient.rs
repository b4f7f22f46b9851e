//! A model of the laxest upstream the normaliser must survive, for the property test beside it and
//! the fuzz target (`fuzz/fuzz_targets/path_normalize.rs` includes this file by path, so it uses
//! nothing but std). It is written independently of the normaliser on purpose: it decodes the whole
//! path again and again, reads overlong UTF-8 as ASCII, stops at a NUL, `?` or `#`, reads `\` as
//! `/`, strips `;parameters` from every segment and only then resolves dot segments (RFC 3986
//! section 5.2.4). Whatever the normaliser accepts must still land below the base path after that.

/// Whether `base` + `normalized`, read by the laxest upstream, stays at or below `base`.
pub(crate) fn stays_below(base: &str, normalized: &str) -> bool {
    let resolved = resolve(base, normalized);
    resolved == base || resolved.starts_with(&format!("{base}/"))
}

/// `base` + `normalized` as the laxest upstream resolves it.
pub(crate) fn resolve(base: &str, normalized: &str) -> String {
    let mut bytes = format!("{base}{normalized}").into_bytes();
    loop {
        let next = fold_overlong(&percent_decode(&bytes));
        if next == bytes {
            break;
        }
        bytes = next;
    }
    if let Some(end) = bytes.iter().position(|&b| matches!(b, 0 | b'?' | b'#')) {
        bytes.truncate(end);
    }
    let text: String = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let segments: Vec<&str> = text
        .split('/')
        .skip(1)
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect();
    remove_dot_segments(&segments)
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Reads any UTF-8-shaped sequence (lead byte, continuation bytes) whose value is below 0x80 as
/// that ASCII byte, the way decoders that skip the shortest-form check do.
fn fold_overlong(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let lead = bytes[i];
        let extra = match lead {
            0xC0..=0xDF => 1,
            0xE0..=0xEF => 2,
            0xF0..=0xF7 => 3,
            0xF8..=0xFB => 4,
            0xFC..=0xFD => 5,
            _ => 0,
        };
        let tail = bytes.get(i + 1..i + 1 + extra);
        if let Some(tail) = tail.filter(|t| extra > 0 && t.iter().all(|&b| b & 0xC0 == 0x80)) {
            let mask = 0x7F_u32 >> (extra + 1);
            let value = tail
                .iter()
                .fold(u32::from(lead) & mask, |v, &b| (v << 6) | u32::from(b & 0x3F));
            if value < 0x80 {
                out.push(value as u8);
                i += 1 + extra;
                continue;
            }
        }
        out.push(lead);
        i += 1;
    }
    out
}

/// RFC 3986 section 5.2.4 on an absolute path given as its segments (after the leading `/`).
fn remove_dot_segments(segments: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for (i, &segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
        if last && matches!(segment, "." | "..") {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}
