//! `[[webhook]]` and `server.webhook_listen`: what verifies each route, and every way a route
//! that could not verify is refused with its location.

use super::tests::{CYBERBIZ, find, location_of, parse_err, parse_ok};
use crate::config::{SignatureEncoding, WebhookSender};

const SHOPLINE: &str = "[[tenant]]\nname = \"sl\"\nprovider = \"shopline\"\nhandle = \"acme\"\napp_key = \"k\"\napp_secret = { env = \"ACME_SHOPLINE_APP_SECRET\" }\n";
const LISTEN: &str = "[server]\nwebhook_listen = \"0.0.0.0:8090\"\n";

fn hook(body: &str) -> String {
    format!("[[webhook]]\nname = \"orders\"\nforward = \"http://127.0.0.1:9000/hooks\"\n{body}")
}

#[test]
fn a_shopline_webhook_verifies_with_the_tenants_app_secret() {
    let text = format!("{LISTEN}{SHOPLINE}{}", hook("tenant = \"sl\"\n"));
    let config = parse_ok(&text).config;
    assert_eq!(
        config.server.webhook_listen,
        Some("0.0.0.0:8090".parse().expect("addr"))
    );
    let webhook = &config.webhooks[0];
    assert_eq!(webhook.sender, WebhookSender::Shopline);
    assert_eq!(webhook.secret.expose(), "shopline-secret-value-2");
    assert_eq!(webhook.signature_header.as_str(), "x-shopline-hmac-sha256");
    assert_eq!(webhook.encoding, SignatureEncoding::HexOrBase64);
    assert_eq!((webhook.max_body, webhook.timeout.as_secs()), (1 << 20, 10));
    // A non-loopback webhook listener needs no caller: it lends no credential.
    assert!(config.callers.is_empty());
}

#[test]
fn a_cyberbiz_webhook_needs_the_tenants_app_secret() {
    let text = format!("{LISTEN}{CYBERBIZ}{}", hook("tenant = \"cb\"\n"));
    let errors = parse_err(&text);
    let error = find(&errors, &["webhook \"orders\"", "`tenant`", "has no `app_secret`"]);
    let line = text[..text.rfind("\"cb\"").expect("written")].matches('\n').count() + 1;
    assert!(
        error.location.starts_with(&format!("t.toml:{line}:")),
        "{}",
        error.location
    );
    let with = format!(
        "{LISTEN}{CYBERBIZ}app_secret = {{ env = \"ACME_ERP_SECRET\" }}\n{}",
        hook("tenant = \"cb\"\n")
    );
    let webhook = &parse_ok(&with).config.webhooks[0];
    assert_eq!(
        (webhook.sender, webhook.secret.expose().as_str()),
        (WebhookSender::Cyberbiz, "erp-secret-value-5")
    );
}

#[test]
fn routes_that_cannot_verify_are_refused_where_they_are_written() {
    let cases = [
        (
            hook("tenant = \"nobody\"\n"),
            "\"nobody\"",
            "no tenant is named `nobody`",
        ),
        (hook("tenant = \"sl\"\nsecret = \"s\"\n"), "secret = \"s\"", "not both"),
        (hook(""), "[[webhook]]", "needs `tenant`"),
        (
            hook("secret = \"s\"\n"),
            "[[webhook]]",
            "`signature_header` is required",
        ),
        (
            hook("secret = \"s\"\nsignature_header = \"x-sig\"\nencoding = \"hex64\"\n"),
            "\"hex64\"",
            "not `hex` or `base64`",
        ),
        (
            hook("tenant = \"sl\"\nencoding = \"hex\"\n"),
            "encoding =",
            "only used with `secret`",
        ),
        (
            "[[webhook]]\nname = \"orders\"\ntenant = \"sl\"\nforward = \"ftp://x/\"\n".to_owned(),
            "\"ftp://x/\"",
            "absolute http:// or https://",
        ),
    ];
    for (webhook, needle, message) in cases {
        let text = format!("{LISTEN}{SHOPLINE}{webhook}");
        let errors = parse_err(&text);
        let error = find(&errors, &[message]);
        assert_eq!(error.location, location_of(&text, needle), "{message}");
    }
}

#[test]
fn names_are_unique_path_segments_and_a_listener_is_needed() {
    let twice = format!(
        "{LISTEN}{SHOPLINE}{}{}",
        hook("tenant = \"sl\"\n"),
        hook("tenant = \"sl\"\n")
    );
    find(&parse_err(&twice), &["duplicate webhook name"]);
    let bad = format!(
        "{LISTEN}{SHOPLINE}{}",
        hook("tenant = \"sl\"\n").replace("\"orders\"", "\"Orders/x\"")
    );
    find(&parse_err(&bad), &["must match"]);
    let unserved = format!("{SHOPLINE}{}", hook("tenant = \"sl\"\n"));
    find(&parse_err(&unserved), &["server.webhook_listen", "not set"]);
    let shared = format!(
        "[server]\nwebhook_listen = \"127.0.0.1:8080\"\n{SHOPLINE}{}",
        hook("tenant = \"sl\"\n")
    );
    find(&parse_err(&shared), &["already used by server.listen"]);
}

#[test]
fn the_generic_form_takes_its_own_secret_header_and_encoding() {
    let text = format!(
        "{LISTEN}{}",
        hook(
            "secret = { env = \"ACME_ERP_SECRET\" }\nsignature_header = \"X-Hub-Signature\"\nencoding = \"base64\"\nmax_body = \"64KiB\"\n"
        )
    );
    let webhook = &parse_ok(&text).config.webhooks[0];
    assert_eq!(webhook.sender, WebhookSender::Generic);
    assert_eq!(webhook.signature_header.as_str(), "x-hub-signature");
    assert_eq!((webhook.encoding, webhook.max_body), (SignatureEncoding::Base64, 65536));
}

#[test]
fn check_print_shows_every_webhook_without_its_secret_and_reads_back() {
    let generic = "[[webhook]]\nname = \"partner\"\nforward = \"https://hooks.internal/p\"\nsecret = { env = \"ACME_ERP_SECRET\" }\nsignature_header = \"x-sig\"\nencoding = \"base64\"\n";
    let text = format!(
        "{LISTEN}{SHOPLINE}{}{generic}",
        hook("tenant = \"sl\"\ntimeout = \"3s\"\n")
    );
    let config = parse_ok(&text).config;
    let printed = crate::config::effective::render(&config);
    assert!(printed.contains("webhook_listen = \"0.0.0.0:8090\""), "{printed}");
    assert!(!printed.contains("erp-secret-value-5") && !printed.contains("shopline-secret-value-2"));
    let again = parse_ok(&printed).config;
    let shape = |c: &crate::config::RuntimeConfig| {
        let webhooks = c.webhooks.iter();
        webhooks
            .map(|w| {
                (
                    w.name.clone(),
                    w.sender,
                    w.forward.to_string(),
                    w.max_body,
                    w.timeout,
                    w.encoding,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&again), shape(&config));
}
