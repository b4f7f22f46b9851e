//! Unit tests of the status mapping and request encoding, plus socket tests against a loopback
//! endpoint for what only a real exchange shows (timeouts, body cap, connect failures).

use super::*;
use crate::auth::testing::{FakeEndpoint, oauth_error, ok, test_http};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::from_static(k),
                HeaderValue::from_str(v).expect("test value"),
            )
        })
        .collect()
}

fn classify_json(status: u16, pairs: &[(&'static str, &str)], body: &str) -> ProviderError {
    let status = StatusCode::from_u16(status).expect("status");
    classify(status, &headers(pairs), Bytes::from(body.to_owned())).expect_err("an error status")
}

#[test]
fn a_2xx_is_the_response() {
    let response = classify(StatusCode::OK, &HeaderMap::new(), Bytes::from_static(b"{}")).expect("200 is success");
    assert_eq!(&response.body[..], b"{}");
}

#[test]
fn oauth_4xx_is_rejected_with_code_description_and_debug_id() {
    let error = classify_json(
        400,
        &[("x-debug-id", "dbg-123")],
        r#"{"error":"invalid_client","error_description":"invalid client_secret parameter"}"#,
    );
    let ProviderError::Rejected {
        status,
        code,
        description,
    } = error
    else {
        panic!("expected Rejected, got {error:?}");
    };
    assert_eq!((status, code.as_str()), (400, "invalid_client"));
    assert_eq!(
        description.as_deref(),
        Some("invalid client_secret parameter (x-debug-id: dbg-123)")
    );
}

#[test]
fn a_4xx_without_json_is_rejected_with_a_status_code() {
    let error = classify_json(403, &[], "<html>forbidden</html>");
    assert!(
        matches!(&error, ProviderError::Rejected { status: 403, code, description: None } if code == "http_403"),
        "{error:?}"
    );
}

#[test]
fn shopline_envelope_errors_read_i18n_code_and_message() {
    let error = classify_json(
        401,
        &[("traceid", "t-9")],
        r#"{"code":401,"i18nCode":"SIGN_ERROR","message":"sign invalid"}"#,
    );
    let ProviderError::Rejected { code, description, .. } = error else {
        panic!("not Rejected")
    };
    assert_eq!(code, "SIGN_ERROR");
    assert_eq!(description.as_deref(), Some("sign invalid (traceid: t-9)"));
}

#[test]
fn throttled_carries_retry_after_seconds() {
    let error = classify_json(429, &[("retry-after", "7")], "{}");
    assert!(matches!(error, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(7)));
    let error = classify_json(429, &[("retry-after", "soon")], "{}");
    assert!(
        matches!(error, ProviderError::Throttled { retry_after: None }),
        "unreadable: the backoff decides"
    );
}

#[test]
fn a_retry_after_counts_up_to_the_backoff_ceiling() {
    for absurd in ["18446744073709551615", "86400", "61", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let error = classify_json(429, &[("retry-after", absurd)], "{}");
        assert!(
            matches!(error, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(60)),
            "{absurd}: {error:?}"
        );
    }
    // An HTTP date counts from now; one already past means "now".
    let soon = httpdate::fmt_http_date(crate::clock::system_now() + Duration::from_secs(20));
    let error = classify_json(429, &[("retry-after", soon.as_str())], "{}");
    let ProviderError::Throttled {
        retry_after: Some(after),
    } = error
    else {
        panic!("throttled: {error:?}")
    };
    assert!(
        (Duration::from_secs(18)..=Duration::from_secs(20)).contains(&after),
        "{after:?}"
    );
    let past = classify_json(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], "{}");
    assert!(
        matches!(
            past,
            ProviderError::Throttled {
                retry_after: Some(Duration::ZERO)
            }
        ),
        "{past:?}"
    );
}

#[test]
fn server_errors_are_unreachable_and_keep_the_debug_id_not_the_body() {
    let error = classify_json(503, &[("x-debug-id", "dbg-9")], r#"{"secret":"s3cr3t"}"#);
    let ProviderError::Unreachable(message) = error else {
        panic!("not Unreachable")
    };
    assert!(message.contains("503") && message.contains("dbg-9"), "{message}");
    assert!(!message.contains("s3cr3t"));
}

#[test]
fn redirects_are_not_followed() {
    let error = classify_json(302, &[("location", "http://elsewhere")], "");
    assert!(matches!(error, ProviderError::BadResponse(_)), "{error:?}");
}

#[test]
fn idp_text_is_shortened_and_kept_on_one_line() {
    let long = format!("line1\nline2{}", "x".repeat(500));
    let error = classify_json(
        400,
        &[],
        &serde_json::json!({"error": "invalid_request", "error_description": long}).to_string(),
    );
    let ProviderError::Rejected {
        description: Some(d), ..
    } = error
    else {
        panic!("no description")
    };
    assert_eq!(d.chars().count(), MAX_DESCRIPTION);
    assert!(!d.contains('\n'));
}

#[test]
fn basic_auth_form_encodes_before_base64() {
    // RFC 6749 2.3.1: "id:1" and "p@ss word/+" are form-urlencoded first.
    let value = basic_auth_header("id:1", "p@ss word/+").expect("header");
    let expected = format!("Basic {}", STANDARD.encode("id%3A1:p%40ss+word%2F%2B"));
    assert_eq!(value.to_str().expect("ascii"), expected);
    assert!(value.is_sensitive());
}

#[test]
fn redacted_uri_drops_query_and_userinfo() {
    let uri: Uri = "https://user:pw@ims.example:8443/ims/token/v3?client_secret=s3cr3t"
        .parse()
        .expect("uri");
    assert_eq!(redacted(&uri), "https://ims.example:8443/ims/token/v3");
}

#[tokio::test]
async fn post_form_sends_the_fields_and_basic_auth() {
    let idp = FakeEndpoint::start(|_, _| ok(serde_json::json!({"access_token": "t"}))).await;
    test_http()
        .post_form(
            &idp.uri("/token"),
            [("grant_type", "client_credentials"), ("scope", "a b")],
            Some(("id", "sec")),
        )
        .await
        .expect("200");
    let got = &idp.received()[0];
    assert_eq!(got.path, "/token");
    assert_eq!(&got.body[..], b"grant_type=client_credentials&scope=a+b");
    assert_eq!(got.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(
        got.headers["authorization"],
        format!("Basic {}", STANDARD.encode("id:sec")).as_str()
    );
}

#[tokio::test]
async fn a_rejection_over_the_wire_is_rejected() {
    let idp = FakeEndpoint::start(|_, _| oauth_error(400, "invalid_grant")).await;
    let error = test_http()
        .post_form(&idp.uri("/t"), [("a", "b")], None)
        .await
        .expect_err("400");
    assert!(matches!(error, ProviderError::Rejected { status: 400, ref code, .. } if code == "invalid_grant"));
}

#[tokio::test]
async fn an_oversized_body_is_unreachable_not_read() {
    let idp = FakeEndpoint::start(|_, _| (200, Vec::new(), "x".repeat(MAX_RESPONSE_BODY + 1))).await;
    let error = test_http()
        .post_json(&idp.uri("/t"), Vec::new(), Bytes::new())
        .await
        .expect_err("too big");
    assert!(matches!(error, ProviderError::Unreachable(_)), "{error:?}");
}

#[tokio::test]
async fn a_refused_connection_is_unreachable_without_the_query() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let uri: Uri = format!("http://{addr}/token?client_secret=s3cr3t")
        .parse()
        .expect("uri");
    let error = test_http()
        .post_form(&uri, [("a", "b")], None)
        .await
        .expect_err("refused");
    let ProviderError::Unreachable(message) = error else {
        panic!("not Unreachable")
    };
    assert!(message.contains(&format!("http://{addr}/token")), "{message}");
    assert!(!message.contains("s3cr3t"), "{message}");
}

#[tokio::test]
async fn a_silent_endpoint_times_out_as_unreachable() {
    // Accepts but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _hold = tokio::spawn(async move {
        let _conn = listener.accept().await;
        std::future::pending::<()>().await;
    });
    let http = TokenHttp::new(TokenHttpOptions {
        native_roots: false,
        timeout: Duration::from_millis(50),
        ..TokenHttpOptions::default()
    })
    .expect("client");
    let uri: Uri = format!("http://{addr}/token").parse().expect("uri");
    let error = http.post_form(&uri, [("a", "b")], None).await.expect_err("timeout");
    assert!(
        matches!(&error, ProviderError::Unreachable(m) if m.contains("no response within")),
        "{error:?}"
    );
}

#[test]
fn bad_tls_files_are_reported_at_construction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not pem").expect("write");
    let options = |ca_file| TokenHttpOptions {
        native_roots: false,
        ca_file,
        ..TokenHttpOptions::default()
    };
    assert!(matches!(
        TokenHttp::new(options(Some(empty.clone()))),
        Err(TokenHttpError::NoCertificate { .. })
    ));
    assert!(matches!(
        TokenHttp::new(options(Some(dir.path().join("missing.pem")))),
        Err(TokenHttpError::Read { .. })
    ));
    let http = TokenHttp::new(options(None)).expect("plain client");
    let mtls = http.with_client_auth(ClientAuthFiles {
        cert_file: empty.clone(),
        key_file: empty,
    });
    assert!(matches!(mtls, Err(TokenHttpError::NoCertificate { .. })));
}

// === TLS: extra CA and RFC 8705 client certificates, against a real rustls server ===

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/auth/http/testdata")
        .join(name)
}

/// The raw request and whether a client certificate was presented, or why serving failed.
type Served = Result<(Vec<u8>, bool), String>;

/// A one-shot HTTPS endpoint (server cert for 127.0.0.1 from the test CA) that demands a client
/// certificate signed by the same CA. The thread yields the raw request and whether a client
/// certificate was presented.
fn mtls_endpoint() -> (std::net::SocketAddr, std::thread::JoinHandle<Served>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(read_certs(&testdata("ca.pem")).expect("ca")[0].clone())
        .expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            read_certs(&testdata("server.pem")).expect("server cert"),
            read_private_key(&testdata("server.key")).expect("server key"),
        )
        .expect("server config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let thread = std::thread::spawn(move || serve_once(&listener, config));
    (addr, thread)
}

fn serve_once(listener: &std::net::TcpListener, config: rustls::ServerConfig) -> Result<(Vec<u8>, bool), String> {
    use std::io::{Read as _, Write as _};
    let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let conn = rustls::ServerConnection::new(Arc::new(config)).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut request = Vec::new();
    let mut buf = [0_u8; 4096];
    while !complete(&request) {
        let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let presented = tls.conn.peer_certificates().is_some_and(|c| !c.is_empty());
    let body = r#"{"access_token":"mtls-token","expires_in":60}"#;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(format!("{head}{body}").as_bytes())
        .map_err(|e| e.to_string())?;
    tls.conn.send_close_notify();
    tls.flush().map_err(|e| e.to_string())?;
    Ok((request, presented))
}

/// Headers read and `content-length` bytes of body after them.
fn complete(request: &[u8]) -> bool {
    let text = String::from_utf8_lossy(request);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + length
}

fn tls_options(client_auth: bool) -> TokenHttpOptions {
    TokenHttpOptions {
        native_roots: false,
        timeout: Duration::from_secs(5),
        ca_file: Some(testdata("ca.pem")),
        client_auth: client_auth.then(|| ClientAuthFiles {
            cert_file: testdata("client.pem"),
            key_file: testdata("client.key"),
        }),
    }
}

#[tokio::test]
async fn https_with_an_extra_ca_and_a_client_certificate() {
    let (addr, server) = mtls_endpoint();
    let http = TokenHttp::new(tls_options(false))
        .expect("client")
        .with_client_auth(ClientAuthFiles {
            cert_file: testdata("client.pem"),
            key_file: testdata("client.key"),
        });
    let uri: Uri = format!("https://{addr}/token").parse().expect("uri");
    let response = http
        .expect("mTLS client")
        .post_form(&uri, [("client_id", "c1")], None)
        .await
        .expect("200 over mTLS");
    assert_eq!(&response.body[..], br#"{"access_token":"mtls-token","expires_in":60}"#);
    let (request, presented) = tokio::task::spawn_blocking(move || server.join().expect("server thread"))
        .await
        .expect("joined")
        .expect("served");
    assert!(presented, "the server must have seen the client certificate");
    assert!(String::from_utf8_lossy(&request).ends_with("\r\n\r\nclient_id=c1"));
}

#[tokio::test]
async fn https_without_the_required_client_certificate_is_unreachable() {
    let (addr, server) = mtls_endpoint();
    let uri: Uri = format!("https://{addr}/token").parse().expect("uri");
    let http = TokenHttp::new(tls_options(false)).expect("client");
    let error = http
        .post_form(&uri, [("client_id", "c1")], None)
        .await
        .expect_err("refused");
    assert!(matches!(error, ProviderError::Unreachable(_)), "{error:?}");
    let served = tokio::task::spawn_blocking(move || server.join().expect("server thread"))
        .await
        .expect("joined");
    assert!(served.is_err(), "the handshake must fail without a client certificate");
}

#[tokio::test]
async fn https_to_an_unknown_issuer_is_unreachable() {
    let (addr, _server) = mtls_endpoint();
    let uri: Uri = format!("https://{addr}/token").parse().expect("uri");
    let options = TokenHttpOptions {
        ca_file: None,
        ..tls_options(true)
    };
    let error = TokenHttp::new(options)
        .expect("client")
        .post_form(&uri, [("a", "b")], None)
        .await
        .expect_err("untrusted");
    assert!(
        matches!(&error, ProviderError::Unreachable(m) if m.contains("certificate")),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_default_client_speaks_plain_http_too() {
    let idp = FakeEndpoint::start(|_, _| ok(serde_json::json!({"access_token": "t"}))).await;
    let response = TokenHttp::default()
        .post_json(&idp.uri("/t"), Vec::new(), Bytes::new())
        .await;
    response.expect("a 2xx is a token response");
}
