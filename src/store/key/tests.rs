//! The store key's encoding: pinned values (a change of these is a change of the v1 encoding and
//! needs a new version tag), sensitivity to every field, unambiguity, and no secret in the key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;

use super::*;
use crate::config::{
    AdobeImsConfig, CyberbizConfig, ExpiresInUnit, OAuth2AuthMethod, OAuth2Config, OAuth2Grant, PasswordOrClient,
    ResponseMapping, ShoplineConfig, ShoplineCredentials, StaticConfig, VantageConfig,
};

fn uri(text: &str) -> http::Uri {
    text.parse().expect("valid test URI")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn key(provider: &ProviderConfig) -> String {
    let tenant = TenantName::try_new("acme").expect("valid tenant");
    format!("{:?}", StoreKey::new(&tenant, provider))
}

fn static_sample() -> StaticConfig {
    StaticConfig {
        header: HeaderName::from_static("authorization"),
        value: Secret::from("Bearer s3cr3t-static"),
        expires_at: None,
    }
}

fn adobe_sample() -> AdobeImsConfig {
    AdobeImsConfig {
        client_id: "client-123".to_owned(),
        client_secrets: vec![Secret::from("s3cr3t-one"), Secret::from("s3cr3t-two")],
        scopes: strings(&["openid", "AdobeID", "commerce.accs"]),
        token_url: uri("https://ims-na1.adobelogin.com/ims/token/v3"),
        org_id: Some("ORG123@AdobeOrg".to_owned()),
    }
}

fn shopline_sample() -> ShoplineConfig {
    ShoplineConfig {
        handle: "open001".to_owned(),
        credentials: ShoplineCredentials::OAuth {
            app_key: "app-key".to_owned(),
            app_secret: Secret::from("s3cr3t-app"),
            code: Some(Secret::from("s3cr3t-code")),
        },
        token_url: uri("https://open001.myshopline.com"),
    }
}

fn vantage_sample() -> VantageConfig {
    VantageConfig {
        base_url: uri("https://vantage-us.abbyy.com"),
        tenant_id: Some("tenant-1".to_owned()),
        token_url: uri("https://vantage-us.abbyy.com/auth2/tenant-1/connect/token"),
        client_id: "vantage-client".to_owned(),
        client_secrets: vec![Secret::from("s3cr3t-vantage")],
        grant: PasswordOrClient::Password {
            username: "robot".to_owned(),
            password: Secret::from("s3cr3t-password"),
        },
        scopes: strings(&["openid", "permissions", "global.wildcard"]),
        offline_access: true,
    }
}

fn oauth2_sample() -> OAuth2Config {
    OAuth2Config {
        token_url: uri("https://idp.example/oauth/token"),
        client_id: "oauth-client".to_owned(),
        client_secrets: vec![Secret::from("s3cr3t-oauth")],
        grant: OAuth2Grant::RefreshToken {
            refresh_token: Secret::from("s3cr3t-refresh"),
        },
        scopes: strings(&["read", "write"]),
        scope_separator: " ".to_owned(),
        auth_method: OAuth2AuthMethod::ClientSecretBasic,
        extra_params: vec![("resource".to_owned(), "https://api.example".to_owned())],
        audience: Some("https://api.example".to_owned()),
        default_ttl: Duration::from_secs(3600),
        response: ResponseMapping {
            token: strings(&["access_token"]),
            expires_in: strings(&["expires_in"]),
            expires_in_unit: ExpiresInUnit::Seconds,
            expires_at: None,
        },
    }
}

#[test]
fn pinned_keys_do_not_move_between_versions() {
    // Computed once, by a separate script from the encoding as the module documents it (not by
    // this code), so these check the documentation too. If one fails, the encoding changed: bump
    // VERSION (replicas on the old binary will not share tokens with the new one) and re-pin.
    let pinned = [
        (ProviderConfig::Static(static_sample()), "acme:7fead939a61cd9be07b65518"),
        (
            ProviderConfig::AdobeIms(adobe_sample()),
            "acme:030b52adba76b4a4f66519ce",
        ),
        (ProviderConfig::OAuth2(oauth2_sample()), "acme:b69b0345025bc8efe6ba71dd"),
    ];
    for (provider, want) in pinned {
        assert_eq!(key(&provider), want, "{}", provider.kind());
    }
}

type Variants = Vec<(&'static str, ProviderConfig)>;

/// Every sample, then each sample with one field changed; every one must have its own key.
fn variants() -> Variants {
    let cyberbiz = |token| {
        ProviderConfig::Cyberbiz(CyberbizConfig {
            token: Secret::from(token),
            app_secret: None,
        })
    };
    let mut all = vec![
        ("cyberbiz", cyberbiz("s3cr3t-cyberbiz")),
        ("cyberbiz.token", cyberbiz("s3cr3t-cyberbiz2")),
    ];
    all.extend(static_variants());
    all.extend(adobe_variants());
    all.extend(shopline_variants());
    all.extend(vantage_variants());
    all.extend(oauth2_variants());
    all.extend(oauth2_mapping_variants());
    all
}

/// One field changed in a sample.
type Change<'a, C> = &'a dyn Fn(&mut C);

/// `sample()` changed by `change`, as a provider block.
fn edited<C>(sample: fn() -> C, wrap: fn(C) -> ProviderConfig, change: Change<'_, C>) -> ProviderConfig {
    let mut config = sample();
    change(&mut config);
    wrap(config)
}

fn static_variants() -> Variants {
    let v = |change: Change<'_, StaticConfig>| edited(static_sample, ProviderConfig::Static, change);
    let at = |nanos| Some(UNIX_EPOCH + Duration::new(1_767_225_600, nanos));
    vec![
        ("static", v(&|_| {})),
        ("static.value", v(&|c| c.value = Secret::from("Bearer s3cr3t-other"))),
        ("static.header", v(&|c| c.header = HeaderName::from_static("x-api-key"))),
        ("static.expires_at", v(&|c| c.expires_at = at(0))),
        ("static.expires_at+1ns", v(&|c| c.expires_at = at(1))),
    ]
}

fn adobe_variants() -> Variants {
    let v = |change: Change<'_, AdobeImsConfig>| edited(adobe_sample, ProviderConfig::AdobeIms, change);
    vec![
        ("adobe", v(&|_| {})),
        ("adobe.client_id", v(&|c| c.client_id = "client-124".to_owned())),
        (
            "adobe.client_secrets[1]",
            v(&|c| c.client_secrets[1] = Secret::from("s3cr3t-three")),
        ),
        ("adobe.client_secrets order", v(&|c| c.client_secrets.reverse())),
        ("adobe.scopes", v(&|c| c.scopes = strings(&["openid"]))),
        (
            "adobe.token_url",
            v(&|c| c.token_url = uri("https://ims-eu1.adobelogin.com/ims/token/v3")),
        ),
        ("adobe.org_id none", v(&|c| c.org_id = None)),
        ("adobe.org_id empty", v(&|c| c.org_id = Some(String::new()))),
    ]
}

fn shopline_variants() -> Variants {
    let v = |change: Change<'_, ShoplineConfig>| edited(shopline_sample, ProviderConfig::Shopline, change);
    let oauth = |app_key: &str, app_secret: &str, code: Option<&str>| ShoplineCredentials::OAuth {
        app_key: app_key.to_owned(),
        app_secret: Secret::from(app_secret),
        code: code.map(Secret::from),
    };
    let private = |token| ShoplineCredentials::Private {
        access_token: Secret::from(token),
    };
    vec![
        ("shopline", v(&|_| {})),
        ("shopline.handle", v(&|c| c.handle = "open002".to_owned())),
        (
            "shopline.token_url",
            v(&|c| c.token_url = uri("https://open001.myshopline.com/base")),
        ),
        (
            "shopline.app_key",
            v(&|c| c.credentials = oauth("app-key2", "s3cr3t-app", Some("s3cr3t-code"))),
        ),
        (
            "shopline.app_secret",
            v(&|c| c.credentials = oauth("app-key", "s3cr3t-app2", Some("s3cr3t-code"))),
        ),
        (
            "shopline.code",
            v(&|c| c.credentials = oauth("app-key", "s3cr3t-app", Some("s3cr3t-code2"))),
        ),
        (
            "shopline.code none",
            v(&|c| c.credentials = oauth("app-key", "s3cr3t-app", None)),
        ),
        ("shopline.private", v(&|c| c.credentials = private("s3cr3t-private"))),
        (
            "shopline.private.access_token",
            v(&|c| c.credentials = private("s3cr3t-private2")),
        ),
    ]
}

fn vantage_variants() -> Variants {
    let v = |change: Change<'_, VantageConfig>| edited(vantage_sample, ProviderConfig::Vantage, change);
    let password = |username: &str, password: &str| PasswordOrClient::Password {
        username: username.to_owned(),
        password: Secret::from(password),
    };
    vec![
        ("vantage", v(&|_| {})),
        (
            "vantage.base_url",
            v(&|c| c.base_url = uri("https://vantage-eu.abbyy.com")),
        ),
        ("vantage.tenant_id", v(&|c| c.tenant_id = None)),
        (
            "vantage.token_url",
            v(&|c| c.token_url = uri("https://vantage-us.abbyy.com/t2/token")),
        ),
        ("vantage.client_id", v(&|c| c.client_id = "other".to_owned())),
        (
            "vantage.client_secrets",
            v(&|c| c.client_secrets[0] = Secret::from("s3cr3t-vantage2")),
        ),
        (
            "vantage.grant.username",
            v(&|c| c.grant = password("robot2", "s3cr3t-password")),
        ),
        (
            "vantage.grant.password",
            v(&|c| c.grant = password("robot", "s3cr3t-password2")),
        ),
        ("vantage.grant", v(&|c| c.grant = PasswordOrClient::ClientCredentials)),
        ("vantage.scopes", v(&|c| c.scopes = strings(&["openid"]))),
        ("vantage.offline_access", v(&|c| c.offline_access = false)),
    ]
}

fn oauth2_variants() -> Variants {
    let v = |change: Change<'_, OAuth2Config>| edited(oauth2_sample, ProviderConfig::OAuth2, change);
    let refresh = |token| OAuth2Grant::RefreshToken {
        refresh_token: Secret::from(token),
    };
    let password = || OAuth2Grant::Password {
        username: "u".to_owned(),
        password: Secret::from("s3cr3t-pw"),
    };
    vec![
        ("oauth2", v(&|_| {})),
        (
            "oauth2.token_url",
            v(&|c| c.token_url = uri("https://idp.example/token")),
        ),
        ("oauth2.client_id", v(&|c| c.client_id = "other".to_owned())),
        ("oauth2.client_secrets", v(&|c| c.client_secrets.clear())),
        (
            "oauth2.grant.refresh_token",
            v(&|c| c.grant = refresh("s3cr3t-refresh2")),
        ),
        ("oauth2.grant.password", v(&|c| c.grant = password())),
        ("oauth2.grant", v(&|c| c.grant = OAuth2Grant::ClientCredentials)),
        ("oauth2.scopes", v(&|c| c.scopes = strings(&["read write"]))),
        ("oauth2.scope_separator", v(&|c| c.scope_separator = ",".to_owned())),
        (
            "oauth2.extra_params",
            v(&|c| c.extra_params[0].1 = "https://api2.example".to_owned()),
        ),
        ("oauth2.audience", v(&|c| c.audience = None)),
        ("oauth2.default_ttl", v(&|c| c.default_ttl += Duration::from_secs(1))),
    ]
}

fn oauth2_mapping_variants() -> Variants {
    let v = |change: Change<'_, OAuth2Config>| edited(oauth2_sample, ProviderConfig::OAuth2, change);
    let key = |pem| OAuth2AuthMethod::PrivateKeyJwt {
        private_key: Secret::from(pem),
    };
    let tls = |cert: &str| OAuth2AuthMethod::TlsClientAuth {
        client_cert: PathBuf::from(cert),
        client_key: PathBuf::from("/etc/tb/key.pem"),
        content: crate::config::KeyDigest::of(b""),
    };
    vec![
        (
            "oauth2.auth_method",
            v(&|c| c.auth_method = OAuth2AuthMethod::ClientSecretPost),
        ),
        (
            "oauth2.auth_method.private_key",
            v(&|c| c.auth_method = key("s3cr3t-pem")),
        ),
        (
            "oauth2.auth_method.private_key'",
            v(&|c| c.auth_method = key("s3cr3t-pem2")),
        ),
        (
            "oauth2.auth_method.tls",
            v(&|c| c.auth_method = tls("/etc/tb/cert.pem")),
        ),
        (
            "oauth2.auth_method.tls.cert",
            v(&|c| c.auth_method = tls("/etc/tb/cert2.pem")),
        ),
        (
            "oauth2.response.token",
            v(&|c| c.response.token = strings(&["data", "token"])),
        ),
        (
            "oauth2.response.expires_in",
            v(&|c| c.response.expires_in = strings(&["ttl"])),
        ),
        (
            "oauth2.response.unit",
            v(&|c| c.response.expires_in_unit = ExpiresInUnit::Millis),
        ),
        (
            "oauth2.response.expires_at",
            v(&|c| c.response.expires_at = Some(strings(&["exp"]))),
        ),
    ]
}

#[test]
fn changing_any_field_changes_the_key() {
    let mut seen: HashMap<String, &str> = HashMap::new();
    let variants = variants();
    for (label, provider) in &variants {
        let key = key(provider);
        if let Some(earlier) = seen.insert(key.clone(), label) {
            panic!("{label} and {earlier} share the key {key}");
        }
    }
    assert!(variants.len() > 50, "the table covers every provider's fields");
}

#[test]
fn the_encoding_is_unambiguous() {
    use ProviderConfig::AdobeIms as A;
    let pairs = [
        (
            A(AdobeImsConfig {
                scopes: strings(&["a b"]),
                ..adobe_sample()
            }),
            A(AdobeImsConfig {
                scopes: strings(&["a", "b"]),
                ..adobe_sample()
            }),
        ),
        (
            A(AdobeImsConfig {
                scopes: strings(&["ab", ""]),
                ..adobe_sample()
            }),
            A(AdobeImsConfig {
                scopes: strings(&["a", "b"]),
                ..adobe_sample()
            }),
        ),
        (
            A(AdobeImsConfig {
                client_id: "ab".to_owned(),
                client_secrets: vec![Secret::from("c")],
                ..adobe_sample()
            }),
            A(AdobeImsConfig {
                client_id: "a".to_owned(),
                client_secrets: vec![Secret::from("bc")],
                ..adobe_sample()
            }),
        ),
        (
            ProviderConfig::OAuth2(OAuth2Config {
                extra_params: vec![("a".to_owned(), "b=c".to_owned())],
                ..oauth2_sample()
            }),
            ProviderConfig::OAuth2(OAuth2Config {
                extra_params: vec![("a=b".to_owned(), "c".to_owned())],
                ..oauth2_sample()
            }),
        ),
    ];
    for (left, right) in &pairs {
        assert_ne!(key(left), key(right), "{left:?} / {right:?}");
    }
}

#[test]
fn the_key_is_tenant_then_24_hex_digits_and_shows_no_secret() {
    for (label, provider) in variants() {
        let key = key(&provider);
        let (tenant, hash) = key.split_once(':').expect("tenant:hash");
        assert_eq!(tenant, "acme", "{label}");
        assert!(
            hash.len() == 24 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{label}: {key}"
        );
        for secret in provider.secrets() {
            assert!(!key.contains(secret.expose().as_str()), "{label}: {key}");
        }
    }
    let other = TenantName::try_new("beta").expect("valid tenant");
    let provider = ProviderConfig::Static(static_sample());
    assert!(format!("{:?}", StoreKey::new(&other, &provider)).starts_with("beta:"));
}

#[test]
fn instants_before_the_epoch_are_encoded_too() {
    let before = UNIX_EPOCH - Duration::from_secs(1);
    let keys: Vec<String> = [
        Some(before),
        Some(UNIX_EPOCH),
        Some(UNIX_EPOCH + Duration::from_secs(1)),
        None,
    ]
    .into_iter()
    .map(|expires_at: Option<SystemTime>| {
        key(&ProviderConfig::Static(StaticConfig {
            expires_at,
            ..static_sample()
        }))
    })
    .collect();
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a, b);
        }
    }
}
