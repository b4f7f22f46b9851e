//! Property test: random token-endpoint answers (numbers of every size and sign, floats, numeric
//! and date strings, wrong types, huge values, malformed JWTs) through the response parsers and
//! the renewal arithmetic. Nothing may panic, and every token that comes out has a lifetime
//! within `clock::MAX_TOKEN_LIFETIME` and a renewal inside it. Seeded, so a failure reproduces:
//! the seed and case number are in the message.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::refresh::{self, BACKOFF_CAP};
use crate::auth::{Token, http::retry_after, jwt};
use crate::clock::{self, MAX_TOKEN_LIFETIME};
use crate::config::{ExpiresInUnit, ResponseMapping};
use crate::providers::oauth2::response::{parse_token_response, standard_mapping};
use crate::providers::shopline;
use crate::store::StoredToken;

const SEED: u64 = 0x7b21_2026;
const CASES: usize = 20_000;

/// A value where a number is expected: anything an endpoint might put there.
fn number(rng: &mut StdRng) -> Value {
    match rng.random_range(0..12) {
        0 => json!([u64::MAX, i64::MAX as u64, 0, 1, 10_000_000_000_000_000_000_u64][rng.random_range(0..5)]),
        1 => json!(rng.random::<u64>() >> rng.random_range(0..64)),
        2 => json!(-(rng.random::<i64>() >> rng.random_range(0..63)).abs()),
        3 => json!(i64::MIN),
        4 => json!(f64::from_bits(rng.random())), // NaN and infinities become null
        5 => json!(rng.random::<f64>() * 10f64.powi(rng.random_range(-5..320))),
        6 => json!(-rng.random::<f64>() * 10f64.powi(rng.random_range(-5..30))),
        7 => json!(numeric_text(rng)),
        8 => json!(date_text(rng)),
        9 => [json!(null), json!(true), json!([3600]), json!({"s": 3600}), json!("")][rng.random_range(0..5)].clone(),
        10 => json!("9".repeat(rng.random_range(1..5_000))),
        _ => json!(rng.random_range(0..100_000_u64)),
    }
}

fn numeric_text(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => rng.random::<u128>().to_string(),
        1 => format!(" {} ", rng.random::<u32>()),
        2 => format!("-{}", rng.random::<u32>()),
        3 => format!("{}e{}", rng.random::<u8>(), rng.random::<u8>()),
        4 => ["NaN", "inf", "0x10", "1_000", "3600s", "+5"][rng.random_range(0..6)].to_owned(),
        _ => format!("{}.{}", rng.random::<u32>(), rng.random::<u32>()),
    }
}

/// Dates far past and far future, valid and not, with and without zones.
fn date_text(rng: &mut StdRng) -> String {
    let zone = ["Z", "+08:00", "+0800", "", "-23:59", "+99:00"][rng.random_range(0..6)];
    let year = [0, 1, 1969, 1970, 2026, 9999, 10_000, 99_999][rng.random_range(0..8)];
    let fraction = ".".to_owned() + &"1".repeat(rng.random_range(0..30));
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}{zone}",
        rng.random_range(0..14),
        rng.random_range(0..33),
        rng.random_range(0..25),
        rng.random_range(0..61),
        rng.random_range(0..62),
    )
}

/// An access token: opaque, a JWT with a random `exp`, or a broken JWT.
fn access_token(rng: &mut StdRng) -> Value {
    let encode = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    match rng.random_range(0..7) {
        0 => json!("opaque-token"),
        1 | 2 => json!(jwt::encode_unsigned(&json!({ "exp": number(rng) }))),
        3 => json!(format!("h.{}.s", encode(b"[1,2,3]"))),
        4 => json!(format!("h.{}.s", encode(&rng.random::<[u8; 16]>()))),
        5 => json!(["a.b.c", "a.!!!.c", "...", "a.b", ""][rng.random_range(0..5)]),
        _ => number(rng),
    }
}

fn body(rng: &mut StdRng) -> Vec<u8> {
    if rng.random_bool(0.05) {
        return (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
    }
    let mut object = serde_json::Map::new();
    for (field, p) in [
        ("access_token", 0.95),
        ("expires_in", 0.8),
        ("expires_at", 0.3),
        ("refresh_token", 0.3),
    ] {
        if rng.random_bool(p) {
            let value = match field {
                "access_token" => access_token(rng),
                "refresh_token" => json!("refresh"),
                _ => number(rng),
            };
            object.insert(field.to_owned(), value);
        }
    }
    Value::Object(object).to_string().into_bytes()
}

fn mapping(rng: &mut StdRng) -> ResponseMapping {
    let mut mapping = standard_mapping();
    match rng.random_range(0..3) {
        0 => {}
        1 => mapping.expires_in_unit = ExpiresInUnit::Millis,
        _ => mapping.expires_at = Some(vec!["expires_at".into()]),
    }
    mapping
}

fn jitter(rng: &mut StdRng) -> f64 {
    [rng.random(), f64::NAN, f64::INFINITY, -1.0, 2.0][rng.random_range(0..5)]
}

/// A span from outside: any number of seconds, or milliseconds.
fn span(rng: &mut StdRng) -> Duration {
    let n = rng.random::<u64>() >> rng.random_range(0..64);
    if rng.random_bool(0.5) {
        Duration::from_secs(n)
    } else {
        Duration::from_millis(n)
    }
}

/// A token's lifetime is bounded, and its renewal falls inside it.
fn check_token(token: &Token, rng: &mut StdRng, case: &str) {
    let Some(expires_at) = token.expires_at else { return };
    let lifetime = expires_at.saturating_duration_since(token.obtained_at);
    assert!(
        lifetime > Duration::ZERO && lifetime <= MAX_TOKEN_LIFETIME,
        "{case}: {lifetime:?}"
    );
    let delay = refresh::refresh_delay(lifetime, span(rng), jitter(rng));
    assert!(
        delay <= lifetime.mul_f64(0.8) && delay >= lifetime.mul_f64(0.5),
        "{case}: {delay:?}"
    );
    let due = refresh::renewal_at(token.obtained_at, expires_at, delay);
    assert!(due >= token.obtained_at && due <= expires_at, "{case}");
    // Through the store and back, as a peer would read it.
    let back = StoredToken::from_token(token).to_token();
    let left = back.expires_at.map(|at| at.saturating_duration_since(Instant::now()));
    assert!(left.is_some_and(|left| left <= MAX_TOKEN_LIFETIME), "{case}: {left:?}");
}

fn one_case(rng: &mut StdRng, case: &str) -> bool {
    let body = body(rng);
    let default_ttl = rng.random_bool(0.3).then(|| span(rng));
    let Ok(granted) = parse_token_response(&body, &mapping(rng)) else {
        return false;
    };
    let Ok(token) = granted.into_token(0, default_ttl) else {
        return false;
    };
    check_token(&token, rng, case);
    true
}

fn shopline_case(rng: &mut StdRng, case: &str) -> bool {
    let envelope = json!({
        "code": if rng.random_bool(0.9) { json!(200) } else { number(rng) },
        "data": { "accessToken": access_token(rng), "expireTime": number(rng) },
    });
    let parsed = shopline::parse_envelope(envelope.to_string().as_bytes());
    let Some(token) = parsed.ok().and_then(|granted| granted.into_token(0, None).ok()) else {
        return false;
    };
    check_token(&token, rng, case);
    true
}

fn outside_numbers_case(rng: &mut StdRng, case: &str) {
    let mut headers = HeaderMap::new();
    let text = match rng.random_range(0..3) {
        0 => rng.random::<u64>().to_string(),
        1 => numeric_text(rng),
        _ => date_text(rng),
    };
    if let Ok(value) = HeaderValue::from_str(&text) {
        headers.insert(RETRY_AFTER, value);
    }
    assert!(
        retry_after(&headers).is_none_or(|after| after <= BACKOFF_CAP),
        "{case}: {text}"
    );
    assert!(refresh::backoff(rng.random(), jitter(rng)) <= BACKOFF_CAP, "{case}");
    let ahead = clock::deadline_for_unix_secs(rng.random()).saturating_duration_since(Instant::now());
    assert!(ahead <= clock::MAX_CONFIGURED_AHEAD, "{case}");
    let _ = clock::parse_datetime(&date_text(rng));
    let stored = StoredToken {
        access: crate::config::Secret::new("t".to_owned()),
        refresh_token: None,
        obtained_at_ms: rng.random::<u64>() >> rng.random_range(0..64),
        expires_at_ms: Some(rng.random::<u64>() >> rng.random_range(0..64)),
        secret_index: 0,
    };
    let token = stored.to_token();
    let left = token.expires_at.map(|at| at.saturating_duration_since(Instant::now()));
    assert!(left.is_some_and(|left| left <= MAX_TOKEN_LIFETIME), "{case}");
}

#[test]
fn random_token_answers_never_panic_and_give_sane_schedules() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let (mut tokens, mut shopline_tokens) = (0, 0);
    for n in 0..CASES {
        let case = format!("seed {SEED:#x} case {n}");
        tokens += usize::from(one_case(&mut rng, &case));
        shopline_tokens += usize::from(shopline_case(&mut rng, &case));
        outside_numbers_case(&mut rng, &case);
    }
    // The generator must reach the interesting paths, not only the refusals.
    assert!(tokens > CASES / 10, "{tokens} tokens out of {CASES}");
    assert!(
        shopline_tokens > CASES / 20,
        "{shopline_tokens} SHOPLINE tokens out of {CASES}"
    );
}
