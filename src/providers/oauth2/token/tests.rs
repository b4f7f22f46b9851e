//! Request building, response parsing, client assertions and the generic provider on the wire.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use super::*;
use crate::auth::jwt;
use crate::auth::testing::{FakeEndpoint, fetch, oauth_error, ok};
use crate::clock::parse_datetime;
use crate::config::ExpiresInUnit;
use crate::providers::oauth2::response::{Expiry, standard_mapping};

fn pairs(form: &Form) -> Vec<(&str, &str)> {
    form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn config(auth_method: OAuth2AuthMethod, grant: OAuth2Grant) -> OAuth2Config {
    OAuth2Config {
        token_url: "http://127.0.0.1:1/token".parse().expect("uri"),
        client_id: "client-1".into(),
        client_secrets: vec![Secret::from("s1")],
        grant,
        scopes: Vec::new(),
        scope_separator: " ".into(),
        auth_method,
        extra_params: Vec::new(),
        audience: None,
        default_ttl: Duration::from_secs(3600),
        response: standard_mapping(),
    }
}

// === request building ===

#[test]
fn grant_forms_carry_exactly_the_wire_fields() {
    let scope = join_scopes(&strings(&["a", "b"]), " ");
    assert_eq!(
        pairs(&grant_form(Grant::ClientCredentials, scope)),
        [("grant_type", "client_credentials"), ("scope", "a b")]
    );
    let password = Grant::Password {
        username: "u@x",
        password: "p w",
    };
    assert_eq!(
        pairs(&grant_form(password, None)),
        [("grant_type", "password"), ("username", "u@x"), ("password", "p w")]
    );
    assert_eq!(
        pairs(&grant_form(Grant::RefreshToken("rt"), None)),
        [("grant_type", "refresh_token"), ("refresh_token", "rt")]
    );
}

#[test]
fn scopes_join_with_the_separator_and_vanish_when_empty() {
    assert_eq!(
        join_scopes(&strings(&["openid", "AdobeID"]), ",").as_deref(),
        Some("openid,AdobeID")
    );
    assert_eq!(join_scopes(&strings(&["a", "b"]), " ").as_deref(), Some("a b"));
    assert_eq!(join_scopes(&[], " "), None);
    assert_eq!(join_scopes(&strings(&[""]), " "), None);
}

#[test]
fn generic_form_adds_audience_and_extra_params_and_no_empty_scope() {
    let mut cfg = config(OAuth2AuthMethod::ClientSecretPost, OAuth2Grant::ClientCredentials);
    cfg.audience = Some("https://api.example".into());
    cfg.extra_params = vec![("resource".into(), "r1".into())];
    let provider = OAuth2::new(cfg);
    let (form, redeemed) = provider.form(None);
    assert_eq!(
        pairs(&form),
        [
            ("grant_type", "client_credentials"),
            ("audience", "https://api.example"),
            ("resource", "r1")
        ]
    );
    assert_eq!(redeemed, None);
}

#[test]
fn refresh_grant_prefers_the_refresh_token_of_the_previous_fetch() {
    let grant = OAuth2Grant::RefreshToken {
        refresh_token: Secret::from("initial"),
    };
    let provider = OAuth2::new(config(OAuth2AuthMethod::ClientSecretPost, grant));
    assert_eq!(provider.form(None).1, Some("initial"));
    let mut previous = test_token();
    previous.refresh_token = Some(Secret::from("rotated"));
    let (form, redeemed) = provider.form(Some(&previous));
    assert_eq!(redeemed, Some("rotated"));
    assert!(pairs(&form).contains(&("refresh_token", "rotated")));
}

fn test_token() -> Token {
    Token {
        access: Secret::from("old"),
        obtained_at: tokio::time::Instant::now(),
        expires_at: None,
        refresh_token: None,
        secret_index: 0,
    }
}

// === response parsing ===

fn mapping(token: &str, expires_in: &str, unit: ExpiresInUnit, expires_at: Option<&str>) -> ResponseMapping {
    let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
    ResponseMapping {
        token: path(token),
        expires_in: path(expires_in),
        expires_in_unit: unit,
        expires_at: expires_at.map(path),
    }
}

#[test]
fn standard_response_reads_token_expiry_and_refresh_token() {
    let body = json!({"access_token": "at", "expires_in": 86399, "refresh_token": "rt"}).to_string();
    let granted = parse_token_response(body.as_bytes(), &standard_mapping()).expect("parsed");
    assert_eq!(granted.access.expose(), "at");
    assert_eq!(granted.expiry, Some(Expiry::In(Duration::from_secs(86399))));
    assert_eq!(granted.refresh_token.as_ref().map(|t| t.expose().as_str()), Some("rt"));
    let quoted = json!({"access_token": "at", "expires_in": "3600"}).to_string();
    let granted = parse_token_response(quoted.as_bytes(), &standard_mapping()).expect("parsed");
    assert_eq!(granted.expiry, Some(Expiry::In(Duration::from_secs(3600))));
}

#[test]
fn mapping_follows_dotted_paths_and_millisecond_units() {
    let body = json!({"data": {"accessToken": "at", "ttl": 90_000}}).to_string();
    let granted = parse_token_response(
        body.as_bytes(),
        &mapping("data.accessToken", "data.ttl", ExpiresInUnit::Millis, None),
    )
    .expect("parsed");
    assert_eq!(granted.access.expose(), "at");
    assert_eq!(granted.expiry, Some(Expiry::In(Duration::from_secs(90))));
}

#[test]
fn mapping_reads_absolute_expiry_as_unix_seconds_or_rfc3339() {
    let m = mapping("token", "unused", ExpiresInUnit::Seconds, Some("meta.expiresAt"));
    let secs = json!({"token": "at", "meta": {"expiresAt": 1_900_000_000}}).to_string();
    let granted = parse_token_response(secs.as_bytes(), &m).expect("parsed");
    assert_eq!(
        granted.expiry,
        Some(Expiry::At(UNIX_EPOCH + Duration::from_secs(1_900_000_000)))
    );
    let text = json!({"token": "at", "meta": {"expiresAt": "2030-03-17T17:46:40Z"}}).to_string();
    let granted = parse_token_response(text.as_bytes(), &m).expect("parsed");
    assert_eq!(
        granted.expiry,
        Some(Expiry::At(UNIX_EPOCH + Duration::from_secs(1_900_000_000)))
    );
}

#[test]
fn a_200_without_a_token_is_a_bad_response_naming_the_path_only() {
    let m = mapping("data.accessToken", "expires_in", ExpiresInUnit::Seconds, None);
    let error = parse_token_response(br#"{"data":{"other":"s3cr3t"}}"#, &m).expect_err("no token");
    assert!(
        matches!(&error, ProviderError::BadResponse(msg) if msg.contains("data.accessToken") && !msg.contains("s3cr3t"))
    );
    assert!(matches!(
        parse_token_response(b"<html>", &m),
        Err(ProviderError::BadResponse(_))
    ));
    assert!(matches!(
        parse_token_response(br#"{"access_token":""}"#, &standard_mapping()),
        Err(ProviderError::BadResponse(_))
    ));
}

#[test]
fn datetimes_parse_with_offsets_fractions_and_zulu() {
    let at = |secs: u64, nanos: u32| Some(UNIX_EPOCH + Duration::new(secs, nanos));
    // 2024-01-10T12:00:00Z = 1704888000.
    assert_eq!(
        parse_datetime("2024-01-10T20:00:00.123+08:00"),
        at(1_704_888_000, 123_000_000)
    );
    assert_eq!(parse_datetime("2024-01-10T12:00:00Z"), at(1_704_888_000, 0));
    assert_eq!(parse_datetime("2024-01-10 07:00:00-0500"), at(1_704_888_000, 0));
    assert_eq!(
        parse_datetime("2025-10-20T19:18:08.465+00:00"),
        at(1_760_987_888, 465_000_000)
    );
    assert_eq!(
        parse_datetime("2024-02-29T00:00:00.123456789123z"),
        at(1_709_164_800, 123_456_789)
    );
    assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), at(0, 0));
}

#[test]
fn datetimes_without_zone_or_out_of_range_are_refused() {
    for text in [
        "2024-01-10T20:00:00",
        "2024-01-10",
        "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-10T24:00:00Z",
        "2024-01-10T20:00:00.+08:00",
        "2024-01-10T20:00:00+8",
        "1969-12-31T23:59:59Z",
        "+024-01-10T20:00:00Z",
        "2024-01-10T20:00:00+ü0",
        "",
    ] {
        assert_eq!(parse_datetime(text), None, "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn expiry_precedence_is_response_then_jwt_then_default() {
    let now = tokio::time::Instant::now();
    let far = crate::clock::unix_millis() / 1000 + 7200;
    let jwt = jwt::encode_unsigned(&json!({ "exp": far }));
    let granted = |access: &str, expiry| Granted {
        access: Secret::from(access),
        expiry,
        refresh_token: None,
    };

    let token = granted(&jwt, Some(Expiry::In(Duration::from_secs(60)))).into_token(1, Some(Duration::from_secs(5)));
    let token = token.expect("token");
    assert_eq!(token.expires_at, Some(now + Duration::from_secs(60)));
    assert_eq!(token.secret_index, 1);

    let token = granted(&jwt, None)
        .into_token(0, Some(Duration::from_secs(5)))
        .expect("token");
    let left = token.expires_at.expect("expiry") - now;
    assert!(
        left > Duration::from_secs(7100) && left <= Duration::from_secs(7200),
        "{left:?}"
    );

    let token = granted("opaque", None)
        .into_token(0, Some(Duration::from_secs(5)))
        .expect("token");
    assert_eq!(token.expires_at, Some(now + Duration::from_secs(5)));

    assert!(matches!(
        granted("opaque", None).into_token(0, None),
        Err(ProviderError::BadResponse(_))
    ));
    let expired = granted("opaque", Some(Expiry::In(Duration::ZERO))).into_token(0, None);
    assert!(matches!(expired, Err(ProviderError::BadResponse(_))));
}

#[tokio::test(start_paused = true)]
async fn never_expiring_answers_are_used_for_a_year() {
    let year = crate::clock::MAX_TOKEN_LIFETIME;
    let huge_jwt = jwt::encode_unsigned(&json!({ "exp": 10_000_000_000_000_000_000_u64 }));
    let cases = [
        (
            r#"{"access_token":"t","expires_in":9223372036854775807}"#.to_owned(),
            mapping("access_token", "expires_in", ExpiresInUnit::Seconds, None),
        ),
        (
            r#"{"access_token":"t","expires_in":18446744073709551615}"#.to_owned(),
            mapping("access_token", "expires_in", ExpiresInUnit::Millis, None),
        ),
        (
            r#"{"access_token":"t","expires_in":1e300}"#.to_owned(),
            standard_mapping(),
        ),
        (
            r#"{"access_token":"t","expires_at":"99999999999999999999"}"#.to_owned(),
            mapping("access_token", "x", ExpiresInUnit::Seconds, Some("expires_at")),
        ),
        (format!(r#"{{"access_token":"{huge_jwt}"}}"#), standard_mapping()),
    ];
    for (body, m) in cases {
        let token = parse_token_response(body.as_bytes(), &m)
            .expect("parsed")
            .into_token(0, None);
        let token = token.unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(token.expires_at, Some(token.obtained_at + year), "{body}");
    }
    // A negative or unreadable lifetime counts as absent: the default applies.
    for body in [
        r#"{"access_token":"t","expires_in":-5}"#,
        r#"{"access_token":"t","expires_in":"soon"}"#,
    ] {
        let token = parse_token_response(body.as_bytes(), &standard_mapping()).expect("parsed");
        let token = token.into_token(0, Some(Duration::from_secs(5))).expect("token");
        assert_eq!(
            token.expires_at,
            Some(token.obtained_at + Duration::from_secs(5)),
            "{body}"
        );
    }
}

// === client assertions ===

const RSA_PEM: &str = include_str!("../testdata/rsa_test_key.pem");

fn decode_segment(segment: &str) -> serde_json::Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("json")
}

fn check_assertion(signer: &AssertionSigner, verify: &'static dyn ring::signature::VerificationAlgorithm) {
    let jwt = signer
        .assertion("client-1", "https://idp.example/token", 1_700_000_000)
        .expect("signed");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(decode_segment(parts[0]), json!({"alg": signer.alg(), "typ": "JWT"}));
    let claims = decode_segment(parts[1]);
    assert_eq!(claims["iss"], "client-1");
    assert_eq!(claims["sub"], "client-1");
    assert_eq!(claims["aud"], "https://idp.example/token");
    assert_eq!(
        (claims["iat"].as_u64(), claims["exp"].as_u64()),
        (Some(1_700_000_000), Some(1_700_000_300))
    );
    assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
    let message = format!("{}.{}", parts[0], parts[1]);
    ring::signature::UnparsedPublicKey::new(verify, signer.public_key())
        .verify(message.as_bytes(), &signature)
        .expect("signature verifies with the public key");
    let again = signer
        .assertion("client-1", "https://idp.example/token", 1_700_000_000)
        .expect("signed");
    assert_ne!(
        decode_segment(again.split('.').nth(1).expect("claims"))["jti"],
        claims["jti"]
    );
}

#[test]
fn rs256_assertions_verify() {
    let signer = AssertionSigner::from_pem(RSA_PEM).expect("RSA PKCS#8");
    assert_eq!(signer.alg(), "RS256");
    check_assertion(&signer, &ring::signature::RSA_PKCS1_2048_8192_SHA256);
}

#[test]
fn es256_assertions_verify() {
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &ring::rand::SystemRandom::new()).expect("generate");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    let signer = AssertionSigner::from_pem(&pem).expect("EC PKCS#8");
    assert_eq!(signer.alg(), "ES256");
    check_assertion(&signer, &ring::signature::ECDSA_P256_SHA256_FIXED);
}

#[test]
fn unusable_keys_are_refused_without_showing_them() {
    assert_eq!(
        AssertionSigner::from_pem("no pem here").map(|_| ()),
        Err(KeyError::NoKey)
    );
    let garbage = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(b"garbage")
    );
    let error = AssertionSigner::from_pem(&garbage).expect_err("not a key");
    assert!(matches!(error, KeyError::Unsupported(_)));
    let signer = AssertionSigner::from_pem(RSA_PEM).expect("key");
    assert_eq!(format!("{signer:?}"), "AssertionSigner { alg: \"RS256\", .. }");
}

// === on the wire ===

fn at(idp: &FakeEndpoint, mut cfg: OAuth2Config) -> OAuth2 {
    cfg.token_url = idp.uri("/oauth/token");
    OAuth2::new(cfg)
}

#[tokio::test]
async fn client_secret_basic_sends_credentials_in_the_header_only() {
    let idp = FakeEndpoint::start(|_, _| ok(json!({"access_token": "at", "expires_in": 60}))).await;
    let mut cfg = config(OAuth2AuthMethod::ClientSecretBasic, OAuth2Grant::ClientCredentials);
    cfg.scopes = strings(&["read", "write"]);
    cfg.client_secrets = vec![Secret::from("s e:c")];
    let token = fetch(&at(&idp, cfg), None).await.expect("token");
    assert_eq!(token.access.expose(), "at");
    let got = &idp.received()[0];
    assert_eq!(
        got.form(),
        [
            ("grant_type".into(), "client_credentials".into()),
            ("scope".into(), "read write".into())
        ]
    );
    let expected = format!("Basic {}", STANDARD.encode("client-1:s+e%3Ac"));
    assert_eq!(got.headers["authorization"], expected.as_str());
}

#[tokio::test]
async fn client_secret_post_rotates_on_invalid_client_only() {
    let idp = FakeEndpoint::start(|n, _| match n {
        0 => oauth_error(401, "invalid_client"),
        _ => ok(json!({"access_token": "at"})),
    })
    .await;
    let mut cfg = config(OAuth2AuthMethod::ClientSecretPost, OAuth2Grant::ClientCredentials);
    cfg.client_secrets = vec![Secret::from("old"), Secret::from("new")];
    let token = fetch(&at(&idp, cfg.clone()), None).await.expect("second secret works");
    assert_eq!(token.secret_index, 1);
    let got = idp.received();
    assert_eq!(
        (got[0].field("client_secret"), got[1].field("client_secret")),
        (Some("old".into()), Some("new".into()))
    );
    assert!(got[0].headers.get("authorization").is_none());

    let idp = FakeEndpoint::start(|_, _| oauth_error(400, "invalid_scope")).await;
    let error = fetch(&at(&idp, cfg), None).await.expect_err("rejected");
    assert!(matches!(error, ProviderError::Rejected { ref code, .. } if code == "invalid_scope"));
    assert_eq!(
        idp.received().len(),
        1,
        "a non-invalid_client answer must not try the next secret"
    );
}

#[tokio::test]
async fn refresh_grant_keeps_the_redeemed_token_when_none_is_returned() {
    let idp = FakeEndpoint::start(|n, _| match n {
        0 => ok(json!({"access_token": "a1", "expires_in": 60, "refresh_token": "r2"})),
        _ => ok(json!({"access_token": "a2", "expires_in": 60})),
    })
    .await;
    let grant = OAuth2Grant::RefreshToken {
        refresh_token: Secret::from("r1"),
    };
    let provider = at(&idp, config(OAuth2AuthMethod::ClientSecretPost, grant));
    let first = fetch(&provider, None).await.expect("first");
    let second = fetch(&provider, Some(&first)).await.expect("second");
    let got = idp.received();
    assert_eq!(
        (got[0].field("refresh_token"), got[1].field("refresh_token")),
        (Some("r1".into()), Some("r2".into()))
    );
    assert_eq!(second.refresh_token.as_ref().map(|t| t.expose().as_str()), Some("r2"));
}

#[tokio::test]
async fn private_key_jwt_sends_a_signed_assertion_and_no_secret() {
    let idp = FakeEndpoint::start(|_, _| ok(json!({"access_token": "at", "expires_in": 60}))).await;
    let method = OAuth2AuthMethod::PrivateKeyJwt {
        private_key: Secret::from(RSA_PEM),
    };
    let provider = at(&idp, config(method, OAuth2Grant::ClientCredentials));
    fetch(&provider, None).await.expect("token");
    let got = &idp.received()[0];
    assert_eq!(got.field("client_assertion_type").as_deref(), Some(JWT_BEARER));
    assert_eq!(got.field("client_id").as_deref(), Some("client-1"));
    assert_eq!(got.field("client_secret"), None);
    let assertion = got.field("client_assertion").expect("assertion");
    let claims = jwt::claims(&assertion).expect("a JWT");
    assert_eq!(claims["aud"], idp.uri("/oauth/token").to_string().as_str());
}

#[tokio::test]
async fn tls_client_auth_with_unreadable_identity_is_unreachable() {
    let method = OAuth2AuthMethod::TlsClientAuth {
        client_cert: "/nonexistent/cert.pem".into(),
        client_key: "/nonexistent/key.pem".into(),
        content: crate::config::KeyDigest::of(b""),
    };
    let provider = OAuth2::new(config(method, OAuth2Grant::ClientCredentials));
    let error = fetch(&provider, None).await.expect_err("no identity");
    assert!(
        matches!(&error, ProviderError::Unreachable(m) if m.contains("cert.pem")),
        "{error:?}"
    );
}

#[tokio::test]
async fn tls_client_auth_sends_the_client_id_and_no_secret() {
    let idp = FakeEndpoint::start(|_, _| ok(json!({"access_token": "at", "expires_in": 60}))).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/providers/oauth2/testdata");
    let method = OAuth2AuthMethod::TlsClientAuth {
        client_cert: dir.join("client_cert.pem"),
        client_key: dir.join("rsa_test_key.pem"),
        content: crate::config::KeyDigest::of(b""),
    };
    let provider = at(&idp, config(method, OAuth2Grant::ClientCredentials));
    fetch(&provider, None).await.expect("token");
    let got = &idp.received()[0];
    assert_eq!(got.field("client_id").as_deref(), Some("client-1"));
    assert_eq!(
        (got.field("client_secret"), got.field("client_assertion")),
        (None, None)
    );
}

#[test]
fn debug_shows_neither_secrets_nor_the_private_key() {
    let method = OAuth2AuthMethod::PrivateKeyJwt {
        private_key: Secret::from(RSA_PEM),
    };
    let grant = OAuth2Grant::Password {
        username: "u".into(),
        password: Secret::from("pa55word"),
    };
    let mut cfg = config(method, grant);
    cfg.client_secrets = vec![Secret::from("client-s3cret")];
    let text = format!("{:?}", OAuth2::new(cfg));
    let key_body = RSA_PEM.lines().nth(1).expect("a base64 line");
    for secret in ["pa55word", "client-s3cret", key_body] {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }
}

/// `with_secret_rotation` over secrets `a`, `b`, `c` from `first`, where only `valid` works (with
/// `valid = "none-down"`, none does and `b`'s endpoint is down): the secrets tried, in order, and
/// the outcome (index, or the error's text).
async fn rotate_from(first: usize, valid: &str) -> (Vec<String>, Result<usize, String>) {
    let secrets = [Secret::from("a"), Secret::from("b"), Secret::from("c")];
    let tried = std::cell::RefCell::new(Vec::new());
    let outcome = with_secret_rotation(&secrets, first, |secret| {
        tried.borrow_mut().push(secret.to_owned());
        let answer = match secret {
            _ if secret == valid => Ok(()),
            "b" if valid == "none-down" => Err(ProviderError::Unreachable("down".into())),
            _ => Err(ProviderError::Rejected {
                status: 400,
                code: "invalid_client".into(),
                description: None,
            }),
        };
        std::future::ready(answer)
    })
    .await;
    let outcome = outcome.map(|((), index)| index).map_err(|e| e.to_string());
    (tried.into_inner(), outcome)
}

#[tokio::test]
async fn secret_rotation_starts_at_the_last_working_secret_and_wraps_around() {
    assert_eq!(
        rotate_from(1, "b").await,
        (strings(&["b"]), Ok(1)),
        "the last that worked first"
    );
    assert_eq!(
        rotate_from(1, "a").await,
        (strings(&["b", "c", "a"]), Ok(0)),
        "round to the start"
    );
    assert_eq!(
        rotate_from(7, "a").await,
        (strings(&["a"]), Ok(0)),
        "out of range: from 0"
    );
    let (tried, outcome) = rotate_from(2, "none").await;
    assert_eq!(tried, strings(&["c", "a", "b"]), "each once");
    assert!(outcome.is_err_and(|e| e.contains("invalid_client")));
    let (tried, _) = rotate_from(0, "none-down").await;
    assert_eq!(tried, strings(&["a", "b"]), "an outage stops the round");
}
