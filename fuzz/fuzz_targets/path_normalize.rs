//! Fuzzes the path normaliser with the property its seeded test checks: it never panics, and a path
//! it accepts, appended to a tenant's base path, stays below that base path even for the laxest
//! upstream (the model in `src/routing/path/tests/lenient.rs`, shared with the property test so both
//! check the same thing). Normalising an accepted path again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenbroker::routing::path::normalize;

#[path = "../../src/routing/path/tests/lenient.rs"]
mod lenient;

const BASE: &str = "/tenant-a";

fuzz_target!(|data: &[u8]| {
    // The proxy only ever sees a `&str` path (hyper has parsed it), so other bytes are not inputs.
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok(normal) = normalize(path) else { return };
    assert!(
        lenient::stays_below(BASE, &normal),
        "{path:?} was accepted as {normal:?}, which a lax upstream resolves to {:?}",
        lenient::resolve(BASE, &normal)
    );
    assert_eq!(
        normalize(&normal).as_deref(),
        Ok(normal.as_ref()),
        "not idempotent on {path:?}"
    );
});
