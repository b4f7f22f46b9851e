//! Providers: everything tokenbroker knows about one kind of upstream credential, one module each.
//!
//! A provider's folder owns, in one place:
//!
//! | what | where |
//! | --- | --- |
//! | the keys it takes, its typed block, and how it is validated | `mod.rs` (`KEYS`, the config types), `validate.rs` |
//! | its preset: default upstream, rate limit, body cap, rewrite | `mod.rs`, `preset` |
//! | its store fingerprint and its `check --print` form | `mod.rs`, `fingerprint` and `print` |
//! | its token protocol, the headers it adds, whether it renews, what a lone renewal costs peers | `token.rs` (`sign.rs` for OAuth 1.0a) |
//!
//! Three enums are the only places that list the providers (`ProviderKind` and `ProviderConfig`
//! here, `Provider` in `protocol.rs`), and they dispatch with `match`, so a provider added to one
//! and not handled everywhere is a compile error:
//!
//! ```text
//!   ProviderKind  (the `provider = "..."` name)  ──build──▶  ProviderConfig  (validated block)
//!                                                              │ from_config
//!                                                              ▼
//!                                                            Provider  (protocol.rs: fetch, headers, renewal)
//! ```
//!
//! Enum dispatch rather than trait objects: the set is closed and small, a `match` shows every
//! provider on one screen, and the token futures stay unboxed. Each runtime provider implements
//! [`crate::auth::FetchToken`], whose defaults cover the common case (a bearer token that renews).
//!
//! Providers sit below the configuration, which assembles tenants from them, and above `schema`
//! (raw TOML, the checking context) and `auth` (the token-endpoint client); see
//! `docs/architecture.md`, whose "Providers" section says how to add one.

pub(crate) mod adobe_commerce;
pub(crate) mod adobe_ims;
pub(crate) mod cyberbiz;
mod fields;
pub(crate) mod fingerprint;
pub(crate) mod oauth2;
mod preset;
mod protocol;
pub(crate) mod shopline;
pub(crate) mod static_token;
pub(crate) mod vantage;

use std::path::Path;

pub use self::adobe_commerce::{AdobeCommerceConfig, SignatureMethod};
pub use self::adobe_ims::AdobeImsConfig;
pub use self::cyberbiz::CyberbizConfig;
use self::fingerprint::Fingerprint;
pub use self::oauth2::{ExpiresInUnit, OAuth2AuthMethod, OAuth2Config, OAuth2Grant, ResponseMapping};
pub(crate) use self::preset::Preset;
pub(crate) use self::protocol::Provider;
pub use self::shopline::{ShoplineConfig, ShoplineCredentials};
pub use self::static_token::StaticConfig;
pub use self::vantage::{PasswordOrClient, VantageConfig};
use crate::schema::Secret;
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::RawTenant;

/// The `provider = "..."` of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    AdobeIms,
    Shopline,
    Vantage,
    Cyberbiz,
    AdobeCommerce,
    OAuth2,
    Static,
}

impl ProviderKind {
    pub const ALL: [Self; 7] = [
        Self::AdobeIms,
        Self::Shopline,
        Self::Vantage,
        Self::Cyberbiz,
        Self::AdobeCommerce,
        Self::OAuth2,
        Self::Static,
    ];

    /// The name the configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::AdobeIms => "adobe_ims",
            Self::Shopline => "shopline",
            Self::Vantage => "vantage",
            Self::Cyberbiz => "cyberbiz",
            Self::AdobeCommerce => "adobe_commerce",
            Self::OAuth2 => "oauth2",
            Self::Static => "static",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The keys of a tenant table that belong to this provider (besides the common ones).
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::AdobeIms => adobe_ims::KEYS,
            Self::Shopline => shopline::KEYS,
            Self::Vantage => vantage::KEYS,
            Self::Cyberbiz => cyberbiz::KEYS,
            Self::AdobeCommerce => adobe_commerce::KEYS,
            Self::OAuth2 => oauth2::KEYS,
            Self::Static => static_token::KEYS,
        }
    }

    /// What the provider sets when the tenant does not.
    pub(crate) fn preset(self, raw: &RawTenant) -> Preset {
        match self {
            Self::AdobeIms => adobe_ims::preset(raw),
            Self::Shopline => shopline::preset(raw),
            Self::Vantage => vantage::preset(raw),
            Self::Cyberbiz => cyberbiz::preset(raw),
            Self::AdobeCommerce => adobe_commerce::preset(raw),
            Self::OAuth2 => oauth2::preset(raw),
            Self::Static => static_token::preset(raw),
        }
    }

    /// The typed provider block. `upstream` is `None` when it was invalid (already reported).
    pub(crate) fn build(
        self,
        ctx: &mut Ctx<'_>,
        scope: &Scope,
        raw: &RawTenant,
        upstream: Option<&http::Uri>,
    ) -> Option<ProviderConfig> {
        match self {
            Self::AdobeIms => adobe_ims::build(ctx, scope, raw).map(ProviderConfig::AdobeIms),
            Self::Shopline => shopline::build(ctx, scope, raw, upstream).map(ProviderConfig::Shopline),
            Self::Vantage => vantage::build(ctx, scope, raw).map(ProviderConfig::Vantage),
            Self::Cyberbiz => cyberbiz::build(ctx, scope, raw).map(ProviderConfig::Cyberbiz),
            Self::AdobeCommerce => adobe_commerce::build(ctx, scope, raw).map(ProviderConfig::AdobeCommerce),
            Self::OAuth2 => oauth2::build(ctx, scope, raw).map(ProviderConfig::OAuth2),
            Self::Static => static_token::build(ctx, scope, raw).map(ProviderConfig::Static),
        }
    }

    /// The `provider` of a tenant, after rejecting keys that belong to other providers. A tenant
    /// is one flat TOML table, so such a key would otherwise be accepted and ignored.
    pub(crate) fn of_tenant(ctx: &mut Ctx<'_>, scope: &Scope, raw: &RawTenant) -> Option<Self> {
        let names = Self::ALL.map(Self::name).join(", ");
        let name = ctx.required(scope, "provider", raw.provider.as_ref(), &format!("(one of {names})"))?;
        let Some(kind) = Self::from_name(name) else {
            let message = format!("unknown provider `{name}`; expected one of {names}");
            return ctx.reject(scope, "provider", message);
        };
        for (key, _) in ctx.src.keys(&scope.path_of("")) {
            let anyones = Self::ALL.iter().any(|other| other.keys().contains(&key.as_str()));
            if anyones && !kind.keys().contains(&key.as_str()) {
                ctx.key_error(scope, &key, format!("not valid for provider `{name}`"));
            }
        }
        Some(kind)
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The validated provider block of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    AdobeIms(AdobeImsConfig),
    Shopline(ShoplineConfig),
    Vantage(VantageConfig),
    Cyberbiz(CyberbizConfig),
    AdobeCommerce(AdobeCommerceConfig),
    OAuth2(OAuth2Config),
    Static(StaticConfig),
}

impl ProviderConfig {
    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::AdobeIms(_) => ProviderKind::AdobeIms,
            Self::Shopline(_) => ProviderKind::Shopline,
            Self::Vantage(_) => ProviderKind::Vantage,
            Self::Cyberbiz(_) => ProviderKind::Cyberbiz,
            Self::AdobeCommerce(_) => ProviderKind::AdobeCommerce,
            Self::OAuth2(_) => ProviderKind::OAuth2,
            Self::Static(_) => ProviderKind::Static,
        }
    }

    /// Every secret this provider block holds (for tests that prove none leaks).
    pub fn secrets(&self) -> Vec<&Secret<String>> {
        match self {
            Self::AdobeIms(c) => adobe_ims::secrets(c),
            Self::Shopline(c) => shopline::secrets(c),
            Self::Vantage(c) => vantage::secrets(c),
            Self::Cyberbiz(c) => cyberbiz::secrets(c),
            Self::AdobeCommerce(c) => adobe_commerce::secrets(c),
            Self::OAuth2(c) => oauth2::secrets(c),
            Self::Static(c) => static_token::secrets(c),
        }
    }

    /// The `client_secrets` tried in turn (empty for providers without them).
    pub fn client_secrets(&self) -> &[Secret<String>] {
        match self {
            Self::AdobeIms(c) => &c.client_secrets,
            Self::Vantage(c) => &c.client_secrets,
            Self::OAuth2(c) => &c.client_secrets,
            Self::Shopline(_) | Self::Cyberbiz(_) | Self::AdobeCommerce(_) | Self::Static(_) => &[],
        }
    }

    /// Writes the `provider` record and the block's own records (see `store/key.rs`).
    pub(crate) fn fingerprint(&self, w: &mut Fingerprint) {
        w.text("provider", self.kind().name());
        match self {
            Self::AdobeIms(c) => adobe_ims::fingerprint(w, c),
            Self::Shopline(c) => shopline::fingerprint(w, c),
            Self::Vantage(c) => vantage::fingerprint(w, c),
            Self::Cyberbiz(c) => cyberbiz::fingerprint(w, c),
            Self::AdobeCommerce(c) => adobe_commerce::fingerprint(w, c),
            Self::OAuth2(c) => oauth2::fingerprint(w, c),
            Self::Static(c) => static_token::fingerprint(w, c),
        }
    }

    /// A key file whose bytes, not just its path, must seal this block's stored tokens.
    pub(crate) fn sealed_key_file(&self) -> Option<&Path> {
        match self {
            Self::OAuth2(c) => oauth2::sealed_key_file(c),
            _ => None,
        }
    }

    /// The provider's own keys as `check --print` shows them, secrets masked.
    pub(crate) fn print(&self, t: &mut toml::Table) {
        match self {
            Self::AdobeIms(c) => adobe_ims::print(c, t),
            Self::Shopline(c) => shopline::print(c, t),
            Self::Vantage(c) => vantage::print(c, t),
            Self::Cyberbiz(c) => cyberbiz::print(c, t),
            Self::AdobeCommerce(c) => adobe_commerce::print(c, t),
            Self::OAuth2(c) => oauth2::print(c, t),
            Self::Static(c) => static_token::print(c, t),
        }
    }
}
