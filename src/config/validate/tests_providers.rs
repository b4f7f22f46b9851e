//! Provider rules: presets (upstream, rate limit, body cap, rewrite), key ownership, credential
//! combinations, URLs and headers.

use super::tests::{CYBERBIZ, find, location_of, parse_err, parse_ok};
use crate::config::{
    OAuth2AuthMethod, OAuth2Grant, PasswordOrClient, ProviderConfig, ShoplineCredentials, SignatureMethod, TenantConfig,
};
use crate::routing::rewrite::RuleEngine;

const SHOPLINE: &str = "[[tenant]]\nname = \"sl\"\nprovider = \"shopline\"\nhandle = \"acme\"\napp_key = \"k\"\napp_secret = { env = \"ACME_SHOPLINE_APP_SECRET\" }\n";
const ADOBE: &str = "[[tenant]]\nname = \"ad\"\nprovider = \"adobe_ims\"\nupstream = \"https://na1.api.commerce.adobe.com/Tenant123/\"\nclient_id = \"cid\"\nclient_secret = { env = \"ACME_ADOBE_SECRET\" }\nscopes = [\"openid\", \"commerce.accs\"]\n";
const OAUTH2: &str = "[[tenant]]\nname = \"o2\"\nprovider = \"oauth2\"\nupstream = \"https://api.example.com\"\ntoken_url = \"https://login.example.com/token\"\nclient_id = \"cid\"\n";

fn only_tenant(text: &str) -> TenantConfig {
    parse_ok(text).config.tenants.into_iter().next().expect("one tenant")
}

#[test]
fn shopline_defaults_upstream_token_url_and_rate_limit() {
    let tenant = only_tenant(SHOPLINE);
    assert_eq!(tenant.upstream.to_string(), "https://acme.myshopline.com");
    let limit = tenant.rate_limit.expect("provider default");
    assert_eq!(
        (
            limit.per_second.get(),
            limit.burst.get(),
            limit.max_wait.standard.as_secs()
        ),
        (4, 40, 5)
    );
    let ProviderConfig::Shopline(shopline) = &tenant.provider else {
        panic!("shopline")
    };
    assert_eq!(shopline.token_url.host(), Some("acme.myshopline.com"));
    assert!(matches!(&shopline.credentials, ShoplineCredentials::OAuth { app_key, code: None, .. } if app_key == "k"));
}

#[test]
fn rate_limit_false_disables_the_provider_default() {
    assert!(
        only_tenant(&format!("{SHOPLINE}rate_limit = false\n"))
            .rate_limit
            .is_none()
    );
    let custom = only_tenant(&format!("{SHOPLINE}rate_limit = {{ per_second = 2 }}\n"))
        .rate_limit
        .expect("set");
    assert_eq!(
        (
            custom.per_second.get(),
            custom.burst.get(),
            custom.max_wait.standard.as_secs()
        ),
        (2, 2, 5)
    );
    find(
        &parse_err(&format!("{SHOPLINE}rate_limit = true\n")),
        &["rate_limit", "`true` says nothing"],
    );
    find(
        &parse_err(&format!("{SHOPLINE}rate_limit = {{ per_second = 0 }}\n")),
        &["rate_limit.per_second", "from 1"],
    );
}

#[test]
fn shopline_credentials_are_one_kind_or_the_other() {
    let both = format!("{SHOPLINE}access_token = {{ env = \"ACME_ERP_SECRET\" }}\n");
    find(&parse_err(&both), &["tenant \"sl\", key `access_token`", "not both"]);
    let neither = "[[tenant]]\nname = \"sl\"\nprovider = \"shopline\"\nhandle = \"acme\"\n";
    find(
        &parse_err(neither),
        &["needs `app_key` + `app_secret`, or `access_token`"],
    );
    let private = format!("{neither}access_token = {{ env = \"ACME_ERP_SECRET\" }}\n");
    let ProviderConfig::Shopline(shopline) = only_tenant(&private).provider else {
        panic!("shopline")
    };
    assert!(matches!(shopline.credentials, ShoplineCredentials::Private { .. }));
    let no_handle =
        "[[tenant]]\nname = \"sl\"\nprovider = \"shopline\"\naccess_token = { env = \"ACME_ERP_SECRET\" }\n";
    let errors = parse_err(no_handle);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    find(&errors, &["`handle` is required"]);
}

#[test]
fn cyberbiz_defaults() {
    let tenant = only_tenant(CYBERBIZ);
    assert_eq!(tenant.max_body, 2_000_000);
    assert_eq!(tenant.upstream.to_string(), "https://app-store-api.cyberbiz.io");
    let limit = tenant.rate_limit.expect("provider default");
    assert_eq!((limit.per_second.get(), limit.burst.get()), (5, 1));
    assert_eq!(
        limit.headroom,
        std::time::Duration::from_millis(20),
        "slots spaced 220 ms, not 200"
    );
    let explicit = only_tenant(&format!("{CYBERBIZ}rate_limit = {{ per_second = 5, burst = 1 }}\n"))
        .rate_limit
        .expect("set");
    assert_eq!(
        explicit.headroom,
        std::time::Duration::from_millis(20),
        "CYBERBIZ counts strictly whoever chose the rate"
    );
    let shopline = only_tenant(&format!("{SHOPLINE}rate_limit = {{ per_second = 2 }}\n"));
    assert_eq!(shopline.rate_limit.expect("set").headroom, std::time::Duration::ZERO);
    assert_eq!(
        only_tenant(&format!("{CYBERBIZ}max_body = \"1MiB\"\n")).max_body,
        1 << 20
    );
}

#[test]
fn adobe_preset_rewrites_rest_paths_and_sends_the_store_header() {
    let tenant = only_tenant(ADOBE);
    assert_eq!(tenant.upstream.base_path, "/Tenant123", "trailing slash stripped");
    assert!(tenant.rate_limit.is_none(), "no documented ACCS limit");
    let [rule] = tenant.rewrite.as_slice() else {
        panic!("one preset rule: {:?}", tenant.rewrite)
    };
    assert!(rule.store_header);
    assert_eq!(rule.replace, "$2");
    assert_eq!(
        rule.engine,
        RuleEngine::AdobeRest,
        "the preset runs without the regex engine"
    );
    assert_eq!(
        rule.pattern
            .replace("/rest/default/V1/products?x=1", rule.replace.as_str()),
        "/V1/products?x=1"
    );
    assert_eq!(
        rule.pattern.replace("/rest/V1/orders", rule.replace.as_str()),
        "/V1/orders"
    );
    let caps = rule.pattern.captures("/rest/french/V1/products").expect("matches");
    assert_eq!(caps.name("store").map(|m| m.as_str()), Some("french"));
    assert!(!rule.pattern.is_match("/graphql"));
    let ProviderConfig::AdobeIms(adobe) = &tenant.provider else {
        panic!("adobe")
    };
    assert_eq!(
        adobe.token_url.to_string(),
        "https://ims-na1.adobelogin.com/ims/token/v3"
    );
    assert!(only_tenant(&format!("{ADOBE}rewrite = []\n")).rewrite.is_empty());
    let custom = only_tenant(&format!(
        "{ADOBE}rewrite = [{{ match = \"^/s/(?P<store>\\\\w+)(/.*)$\", replace = \"$2\" }}]\n"
    ));
    assert!(custom.rewrite[0].store_header);
    assert_eq!(custom.rewrite[0].engine, RuleEngine::Regex);
    let spelled_out = only_tenant(&format!(
        "{ADOBE}rewrite = [{{ match = '{}', replace = \"$2\" }}]\n",
        crate::routing::rewrite::ADOBE_REST_PATTERN
    ));
    assert_eq!(spelled_out.rewrite[0].engine, RuleEngine::AdobeRest);
}

#[test]
fn adobe_secrets_and_scopes() {
    let loaded = parse_ok(&ADOBE.replace("\"commerce.accs\"", "\"AdobeID\""));
    assert_eq!(loaded.warnings.len(), 1, "{:#?}", loaded.warnings);
    assert!(loaded.warnings[0].message.contains("commerce.accs"));
    let two = ADOBE.replace(
        "client_secret = { env = \"ACME_ADOBE_SECRET\" }",
        "client_secrets = [{ env = \"ACME_ADOBE_SECRET\" }, { env = \"ACME_ERP_SECRET\" }]",
    );
    let ProviderConfig::AdobeIms(adobe) = only_tenant(&two).provider else {
        panic!("adobe")
    };
    assert_eq!(adobe.client_secrets.len(), 2);
    let both = format!("{ADOBE}client_secrets = [{{ env = \"ACME_ERP_SECRET\" }}]\n");
    find(&parse_err(&both), &["key `client_secrets`", "not both"]);
    let three = two.replace(
        "{ env = \"ACME_ERP_SECRET\" }]",
        "{ env = \"ACME_ERP_SECRET\" }, \"x\"]",
    );
    find(&parse_err(&three), &["client_secrets", "one to 2"]);
}

#[test]
fn a_key_of_another_provider_is_rejected_at_the_key() {
    let text = format!("{ADOBE}handle = \"acme\"\n");
    let errors = parse_err(&text);
    let error = find(
        &errors,
        &["tenant \"ad\", key `handle`", "not valid for provider `adobe_ims`"],
    );
    assert_eq!(error.location, location_of(&text, "handle"));
}

#[test]
fn vantage_derives_its_token_url() {
    let base = "[[tenant]]\nname = \"va\"\nprovider = \"vantage\"\nclient_id = \"c\"\nclient_secret = { env = \"ACME_VANTAGE_SECRET\" }\n";
    let tenant = only_tenant(base);
    assert_eq!(tenant.upstream.to_string(), "https://vantage-us.abbyy.com");
    let ProviderConfig::Vantage(vantage) = &tenant.provider else {
        panic!("vantage")
    };
    assert_eq!(
        vantage.token_url.to_string(),
        "https://vantage-us.abbyy.com/auth2/connect/token"
    );
    assert_eq!(vantage.scopes, ["openid", "permissions", "global.wildcard"]);
    assert_eq!(vantage.grant, PasswordOrClient::ClientCredentials);
    let with_id = format!("{base}tenant_id = \"t-1\"\nbase_url = \"https://vantage-eu.abbyy.com/\"\n");
    let ProviderConfig::Vantage(vantage) = only_tenant(&with_id).provider else {
        panic!("vantage")
    };
    assert_eq!(
        vantage.token_url.to_string(),
        "https://vantage-eu.abbyy.com/auth2/t-1/connect/token"
    );
    find(
        &parse_err(&format!("{base}grant = \"password\"\n")),
        &["`username` is required"],
    );
    find(
        &parse_err(&format!("{base}username = \"u\"\n")),
        &["key `username`", "only used with grant = \"password\""],
    );
}

#[test]
fn oauth2_combinations() {
    let post = format!("{OAUTH2}client_secret = {{ env = \"ACME_ERP_SECRET\" }}\n");
    let ProviderConfig::OAuth2(o2) = only_tenant(&post).provider else {
        panic!("oauth2")
    };
    assert_eq!(
        (o2.grant, o2.auth_method, o2.scope_separator.as_str()),
        (OAuth2Grant::ClientCredentials, OAuth2AuthMethod::ClientSecretPost, " ")
    );
    assert_eq!(
        (o2.default_ttl.as_secs(), &o2.response.token),
        (3600, &vec!["access_token".to_owned()])
    );
    find(
        &parse_err(OAUTH2),
        &["`client_secret` (or `client_secrets` for rotation) is required"],
    );
    let jwt_with_secret =
        format!("{post}auth_method = \"private_key_jwt\"\nprivate_key = {{ env = \"ACME_ERP_SECRET\" }}\n");
    let errors = parse_err(&jwt_with_secret);
    find(&errors, &["key `client_secret`", "only used with"]);
    find(&errors, &["key `private_key`", "not a PEM private key"]);
    let refresh = format!("{post}grant = \"refresh_token\"\n");
    find(&parse_err(&refresh), &["`refresh_token` is required"]);
    let reserved = format!("{post}extra_params = {{ grant_type = \"x\" }}\n");
    find(
        &parse_err(&reserved),
        &["extra_params.grant_type", "cannot be overridden"],
    );
    let mapped = format!("{post}response = {{ token = \"data.accessToken\", expires_in_unit = \"ms\" }}\n");
    let ProviderConfig::OAuth2(o2) = only_tenant(&mapped).provider else {
        panic!("oauth2")
    };
    assert_eq!(o2.response.token, ["data", "accessToken"]);
    let tls = format!("{OAUTH2}auth_method = \"tls_client_auth\"\nclient_cert = \"/nonexistent/c.pem\"\n");
    let errors = parse_err(&tls);
    find(&errors, &["`client_key` is required"]);
    find(&errors, &["key `client_cert`", "cannot open `/nonexistent/c.pem`"]);
}

#[test]
fn plain_http_token_url_or_upstream_off_the_machine_is_a_warning() {
    let remote =
        format!("{OAUTH2}client_secret = {{ env = \"ACME_ERP_SECRET\" }}\n").replace("https://login", "http://login");
    let loaded = parse_ok(&remote);
    assert_eq!(loaded.warnings.len(), 1, "{:#?}", loaded.warnings);
    assert!(loaded.warnings[0].message.contains("key `token_url`"));
    let local = remote.replace("http://login.example.com", "http://127.0.0.1:9000");
    assert!(parse_ok(&local).warnings.is_empty());
    // A plain-http upstream off the machine works (in-cluster services) but is warned about too:
    // the bearer token crosses the network in clear.
    let upstream = format!("{CYBERBIZ}upstream = \"http://cyberbiz-fake.svc:8080\"\n");
    let warnings = parse_ok(&upstream).warnings;
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].message.contains("key `upstream`") && warnings[0].message.contains("in clear"));
    let local = format!("{CYBERBIZ}upstream = \"http://localhost:8080\"\n");
    assert!(parse_ok(&local).warnings.is_empty());
}

#[test]
fn upstream_must_be_a_plain_base_url() {
    for (upstream, problem) in [
        ("ftp://x", "absolute http"),
        ("https://x/api?x=1", "?query"),
        ("https://x/api#frag", "#fragment"),
        ("https://user:pw@x", "credentials"),
        ("/relative", "absolute http"),
    ] {
        let text = format!("{CYBERBIZ}upstream = \"{upstream}\"\n");
        let errors = parse_err(&text);
        assert_eq!(
            find(&errors, &["key `upstream`", problem]).location,
            location_of(&text, &format!("\"{upstream}\""))
        );
    }
    find(
        &parse_err(&ADOBE.replace("upstream = \"https://na1.api.commerce.adobe.com/Tenant123/\"\n", "")),
        &["`upstream` is required"],
    );
}

#[test]
fn headers_and_ca_file() {
    let ok = only_tenant(&format!("{CYBERBIZ}headers = {{ \"X-Team\" = \"orders\" }}\n"));
    assert_eq!(ok.headers[0].0.as_str(), "x-team");
    assert!(ok.headers[0].1.is_sensitive());
    for name in ["authorization", "Host", "connection", "transfer-encoding"] {
        let text = format!("{CYBERBIZ}headers = {{ \"{name}\" = \"v\" }}\n");
        find(&parse_err(&text), &["managed by the proxy"]);
    }
    find(
        &parse_err(&format!("{CYBERBIZ}headers = {{ \"bad name\" = \"v\" }}\n")),
        &["not a valid HTTP header name"],
    );
    find(
        &parse_err(&format!("{CYBERBIZ}ca_file = \"/nonexistent/ca.pem\"\n")),
        &["key `ca_file`", "cannot open"],
    );
}

#[test]
fn http2_defaults_on_and_is_refused_on_plain_http() {
    let https = "[[tenant]]\nname = \"st\"\nprovider = \"static\"\nupstream = \"https://x\"\nvalue = { env = \"ACME_STATIC_VALUE\" }\n";
    assert!(only_tenant(https).http2, "h2 is offered unless switched off");
    assert!(!only_tenant(&format!("{https}http2 = false\n")).http2);
    assert!(
        only_tenant(&https.replace("https://", "http://")).http2,
        "absent is fine on http"
    );
    let text = format!("{}http2 = false\n", https.replace("https://", "http://"));
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = find(
        &errors,
        &["key `http2`", "only used with an https upstream", "always HTTP/1.1"],
    );
    assert_eq!(error.location, location_of(&text, "false"));
}

#[test]
fn invalid_regex_is_located() {
    let text = format!("{CYBERBIZ}rewrite = [{{ match = \"^/a(\", replace = \"$1\" }}]\n");
    let errors = parse_err(&text);
    let error = find(&errors, &["key `rewrite[0].match`", "invalid regular expression"]);
    assert_eq!(error.location, location_of(&text, "\"^/a(\""));
}

#[test]
fn static_header_value_and_expiry() {
    let base = "[[tenant]]\nname = \"st\"\nprovider = \"static\"\nupstream = \"https://x\"\nvalue = { env = \"ACME_STATIC_VALUE\" }\n";
    let ProviderConfig::Static(st) = only_tenant(base).provider else {
        panic!("static")
    };
    assert_eq!((st.header.as_str(), st.expires_at), ("authorization", None));
    for expiry in ["2026-01-01T00:00:00Z", "\"2026-01-01T08:00:00+08:00\""] {
        let ProviderConfig::Static(st) = only_tenant(&format!("{base}expires_at = {expiry}\n")).provider else {
            panic!("static")
        };
        let secs = st
            .expires_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        assert_eq!(secs, Some(1_767_225_600), "{expiry}");
    }
    find(
        &parse_err(&format!("{base}expires_at = 2026-01-01T00:00:00\n")),
        &["key `expires_at`", "RFC 3339"],
    );
    find(
        &parse_err(&format!("{base}header = \"host\"\n")),
        &["key `header`", "managed by the proxy"],
    );
}

#[test]
fn an_invalid_vantage_base_url_is_reported_once() {
    let text = "[[tenant]]\nname = \"va\"\nprovider = \"vantage\"\nbase_url = \"vantage.example\"\nclient_id = \"c\"\nclient_secret = { env = \"ACME_VANTAGE_SECRET\" }\n";
    let errors = parse_err(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        find(&errors, &["key `base_url`", "absolute http"]).location,
        location_of(text, "\"vantage.example\"")
    );
}

/// A TLS client certificate rotated in place (same paths, new content) is a credential change:
/// the config carries a digest of what the files held, so a reload rebuilds the tenant's token
/// manager and its client identity instead of keeping the old one until a restart.
#[test]
fn tls_client_files_rotated_in_place_change_the_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let text = format!(
        "{OAUTH2}auth_method = \"tls_client_auth\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let load = |cert_pem: &str| {
        std::fs::write(&cert, cert_pem).expect("write cert");
        std::fs::write(&key, "key v1").expect("write key");
        only_tenant(&text).provider
    };
    let first = load("cert v1");
    assert_eq!(first, load("cert v1"), "the same content is the same credential");
    assert_ne!(first, load("cert v2"), "new content under the same path is a change");
}

const COMMERCE: &str = "[[tenant]]\nname = \"mg\"\nprovider = \"adobe_commerce\"\nupstream = \"https://shop.example.com\"\nconsumer_key = \"ck\"\nconsumer_secret = \"cs\"\naccess_token = \"at\"\naccess_token_secret = \"ats\"\n";

#[test]
fn adobe_commerce_takes_four_secrets_and_signs_with_hmac_sha256_by_default() {
    let tenant = only_tenant(COMMERCE);
    let ProviderConfig::AdobeCommerce(commerce) = &tenant.provider else {
        panic!("adobe_commerce")
    };
    assert_eq!(
        (commerce.signature_method, commerce.legacy_signing),
        (SignatureMethod::HmacSha256, false)
    );
    assert_eq!(commerce.access_token_secret.expose(), "ats");
    assert!(tenant.rate_limit.is_none(), "no preset");
    let tenant = only_tenant(&format!(
        "{COMMERCE}signature_method = \"HMAC-SHA1\"\nlegacy_signing = true\n"
    ));
    let ProviderConfig::AdobeCommerce(commerce) = &tenant.provider else {
        panic!("adobe_commerce")
    };
    assert_eq!(
        (commerce.signature_method, commerce.legacy_signing),
        (SignatureMethod::HmacSha1, true)
    );
}

#[test]
fn adobe_commerce_errors_name_the_key_and_its_place() {
    let text = format!("{COMMERCE}signature_method = \"PLAINTEXT\"\n");
    let errors = parse_err(&text);
    let error = find(&errors, &["key `signature_method`", "`PLAINTEXT` is not supported"]);
    assert!(error.location.starts_with("t.toml:9:"), "{}", error.location);
    let errors = parse_err("[[tenant]]\nname = \"mg\"\nprovider = \"adobe_commerce\"\nconsumer_key = \"ck\"\n");
    find(&errors, &["upstream"]);
    for key in ["consumer_secret", "access_token", "access_token_secret"] {
        find(
            &errors,
            &[&format!("`{key}` is required for provider `adobe_commerce`")],
        );
    }
    find(
        &parse_err(&format!("{COMMERCE}token = \"t\"\n")),
        &["key `token`", "not valid for provider `adobe_commerce`"],
    );
    find(
        &parse_err(&format!("{ADOBE}consumer_key = \"ck\"\n")),
        &["key `consumer_key`", "not valid for provider `adobe_ims`"],
    );
}

#[test]
fn cyberbiz_app_secret_is_optional_a_secret_and_not_part_of_the_token_key() {
    let ProviderConfig::Cyberbiz(without) = only_tenant(CYBERBIZ).provider else {
        panic!("cyberbiz")
    };
    assert!(without.app_secret.is_none());
    let tenant = only_tenant(&format!("{CYBERBIZ}app_secret = {{ env = \"ACME_ERP_SECRET\" }}\n"));
    let secrets: Vec<String> = tenant.provider.secrets().iter().map(|s| s.expose().clone()).collect();
    let ProviderConfig::Cyberbiz(with) = &tenant.provider else {
        panic!("cyberbiz")
    };
    let app_secret = with.app_secret.as_ref().expect("read").expose();
    assert!(secrets.contains(app_secret), "listed among the secrets");
    let key = |p: &ProviderConfig| crate::store::StoreKey::new(&tenant.name, p).name().to_owned();
    assert_eq!(key(&tenant.provider), key(&ProviderConfig::Cyberbiz(without)));
    let errors = parse_err(&format!("{ADOBE}app_secret = \"x\"\n"));
    find(&errors, &["`app_secret`", "not valid for provider `adobe_ims`"]);
}
