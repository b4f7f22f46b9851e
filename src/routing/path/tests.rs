//! The normaliser's unit tests, and a seeded property test: thousands of hostile paths built from
//! traversal pieces, each accepted one checked against the laxest upstream model in `lenient`.

mod lenient;

use std::borrow::Cow;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
    for path in [
        "/admin/openapi/v20230901/products/products.json",
        "/V1/products;v=2/x",
        "/V1/carts/mine;jsessionid=abc",
    ] {
        assert!(matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path), "{path}");
    }
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
fn encodings_without_a_traversal_pass_byte_for_byte() {
    for path in [
        "/products/sku%2Fwith%2Fslash",
        "/products/a%5Cb",
        "/search/50%25off",
        "/search/%2525",
        "/caf%C3%A9/%E2%9C%93",
        "/a/.hidden/..x/...;y",
        "/a/x;..",
        "/a/%2e%2ex",
    ] {
        assert_eq!(normalize(path).as_deref(), Ok(path), "{path}");
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
        "/a/%252e%252e",
        "/a/%252e%252e%252fx",
        "/a/x%255c..",
        "/a/..%3fx",
    ] {
        assert_eq!(normalize(input), Err(PathError::EncodedTraversal), "{input}");
    }
}

#[test]
fn parameters_on_dot_segments_are_refused() {
    for input in [
        "/mine/..;/%25/..;/V1/other/x",
        "/a/..;",
        "/a/..;jsessionid=x/b",
        "/a/.;x/b",
        "/a/%2e%2e;x/b",
        "/a/.%2E;/b",
        "/a/..%3b/b",
        "/a/..%3B",
        "/a/%2e%3b",
        "/a/..%253b/b",
        "/a/x%2f..;y",
    ] {
        assert_eq!(normalize(input), Err(PathError::DotSegmentParameter), "{input}");
    }
}

#[test]
fn nul_overlong_utf8_and_deep_nesting_are_refused() {
    for input in [
        "/a/..%00",
        "/a/x%00y",
        "/a/%2500",
        "/a/%c0%ae%c0%ae",
        "/a/%C0%AF",
        "/a/x%c1%9cy",
        "/a/%e0%80%ae",
        "/a/%f0%80%80%ae",
        "/a/%25c0%25ae",
        "/a/%2525252e",
    ] {
        assert_eq!(normalize(input), Err(PathError::AmbiguousEncoding), "{input}");
    }
}

#[test]
fn not_origin_form_is_refused() {
    assert_eq!(normalize("x/y"), Err(PathError::NotOriginForm));
    assert_eq!(normalize("*"), Err(PathError::NotOriginForm));
}

#[test]
fn the_lenient_model_sees_what_lax_servers_see() {
    let cases = [
        ("/..;/x", "/x"),
        ("/a/%252e%252e/x", "/x"),
        ("/a/%c0%ae%c0%ae/x", "/x"),
        ("/a/%e0%80%ae%e0%80%ae%c0%afx", "/x"),
        ("/a\\..\\..\\x", "/x"),
        ("/a/b/..%00/c", "/a/"),
        ("/a/..%3fx", "/"),
        ("/a;x/b", "/a/b"),
    ];
    for (path, expected) in cases {
        assert_eq!(lenient::resolve("", path), expected, "{path}");
    }
    assert!(lenient::stays_below("/tenant-a", "/x/../y"));
    assert!(!lenient::stays_below("/tenant-a", "/..;/tenant-b"));
    assert!(
        !lenient::stays_below("/tenant-a", "-b/x"),
        "a sibling with the same prefix is outside"
    );
}

/// The pieces hostile paths are made of: dot segments in every spelling, parameters, separators in
/// every spelling, NUL, overlong UTF-8, nested encoding, and harmless names.
const PIECES: &[&str] = &[
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2e",
    ";",
    ";x=1",
    "%3b",
    "/",
    "%2f",
    "%2F",
    "\\",
    "%5c",
    "%00",
    "%c0%ae",
    "%c0%af",
    "%e0%80%ae",
    "%25",
    "%252e",
    "a",
    "V1",
    "..;",
    "//",
];
const SEED: u64 = 0x7E7A_11A5_0011;
const CASES: usize = 50_000;
const BASE: &str = "/tenant-a";

#[test]
fn no_generated_path_escapes_the_base_path() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut accepted = 0;
    for _ in 0..CASES {
        let mut path = String::from("/");
        for _ in 0..rng.random_range(1..=12) {
            path.push_str(PIECES[rng.random_range(0..PIECES.len())]);
        }
        let Ok(normal) = normalize(&path) else { continue };
        accepted += 1;
        assert!(
            lenient::stays_below(BASE, &normal),
            "{path:?} was accepted as {normal:?}, which a lax upstream resolves to {:?}",
            lenient::resolve(BASE, &normal)
        );
        assert!(normal.starts_with('/'), "{path:?} → {normal:?}");
        assert_eq!(
            normalize(&normal).as_deref(),
            Ok(normal.as_ref()),
            "not idempotent on {path:?}"
        );
    }
    // A generator that only produced refusals would prove nothing.
    assert!(accepted > CASES / 10, "only {accepted} of {CASES} accepted");
    println!("seed {SEED:#x}: {CASES} paths generated, {accepted} accepted, none escaped {BASE}");
}
