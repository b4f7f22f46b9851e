//! Sandbox providers: faithful in-process fakes of the four brokered upstreams
//! (`docs/architecture.md#sandbox`), each serving its token endpoint and a small commerce API on
//! its own `127.0.0.1:0` listener.
//!
//! They exist for `tokenbroker demo` (a proxy wired to fakes needs no real credentials), for the
//! integration tests (which assert on the fakes' call counters, e.g. "exactly one token call") and
//! for the benchmarks (streamed and slow endpoints). They validate what the real services validate,
//! as recorded in `docs/providers.md#sandbox-fakes`: IMS form fields and secrets, SHOPLINE
//! signatures and timestamps, the 5-minute grace after a refresh and the leaky bucket, Vantage's
//! one-time refresh tokens, CYBERBIZ's 5 requests per second and 2 MB body limit. Their APIs
//! answer the documented calls in the documented shapes (Adobe's customer tutorial runs against
//! the ACCS fake), and what a fake saw of a request rides in the [`ECHO_HEADER`] beside the body.
//!
//! # Layout
//! - `server.rs`: accept loop and the `ServerHandle` that stops it (on drop or `shutdown()`).
//! - `common.rs`: token registry, body reading, JSON helpers, request recording.
//! - `fake.rs`: `Fake<S>`, the handle every `XxxSandbox` is, with the accessors they share
//!   (`base_url`, `token_calls`, `revoke_all`, ...), and `FakeCore`, the state behind them.
//! - `ims.rs`, `shopline.rs`, `vantage.rs`, `cyberbiz.rs`: one fake each, the larger ones with
//!   their API in a folder of the same name (`ims/customers.rs`, `shopline/catalog.rs`,
//!   `cyberbiz/shop.rs`, ...).
//! - `magento.rs`: Adobe Commerce on cloud infrastructure or on-premises, verifying OAuth 1.0a
//!   signatures as Magento does, with the ACCS fake's REST resources under `/rest/<store>/V1/`.
//! - `webhook_echo.rs`: not a provider but the target a verified webhook is forwarded to.
//! - `h2_upstream.rs`: not a provider but an https upstream (HTTP/2 and HTTP/1.1 over TLS) that
//!   recycles its connections with GOAWAY, for the connection-pool tests.
//!
//! Expiry runs on `tokio::time::Instant`; wall-clock values that go on the wire (JWT claims,
//! SHOPLINE timestamps) come from `crate::clock`.

use std::io;

mod common;
mod cyberbiz;
mod fake;
mod h2_upstream;
mod ims;
mod magento;
mod server;
mod shopline;
mod vantage;
mod webhook_echo;

#[cfg(test)]
mod tests;

pub use common::{Body, ECHO_HEADER, RecordedRequest};
pub use cyberbiz::{
    CYBERBIZ_BODY_LIMIT, CYBERBIZ_DEFAULT_TTL, CYBERBIZ_SHOP_DOMAIN, CYBERBIZ_SHOP_ID, CyberbizOptions, CyberbizSandbox,
};
/// Every `XxxSandbox` is a `Fake<XxxState>`: its page lists the accessors all fakes share.
pub use fake::Fake;
pub use h2_upstream::{H2Alpn, H2Upstream, H2UpstreamOptions, Recycle};
pub use ims::{ACCS_SCOPES, ACCS_TENANT_ID, IMS_CLIENT_ID, IMS_CLIENT_SECRET, IMS_DEFAULT_TTL, ImsOptions, ImsSandbox};
pub use magento::{
    MAGENTO_ACCESS_TOKEN, MAGENTO_ACCESS_TOKEN_SECRET, MAGENTO_CONSUMER_KEY, MAGENTO_CONSUMER_SECRET, MagentoOptions,
    MagentoSandbox, TIMESTAMP_WINDOW,
};
pub use shopline::{
    SHOPLINE_APP_KEY, SHOPLINE_APP_SECRET, SHOPLINE_AUTH_CODE, SHOPLINE_DEFAULT_TTL, SHOPLINE_GRACE, SHOPLINE_HANDLE,
    ShoplineOptions, ShoplineSandbox, shopline_sign,
};
pub use vantage::{
    VANTAGE_CLIENT_ID, VANTAGE_CLIENT_SECRET, VANTAGE_PASSWORD, VANTAGE_SCOPES, VANTAGE_TENANT_ID, VANTAGE_USERNAME,
    VantageOptions, VantageSandbox,
};
pub use webhook_echo::WebhookEcho;

/// All five fakes with their demo credentials (the `*_CLIENT_ID`/`*_SECRET`/... constants).
#[derive(Debug)]
pub struct Sandbox {
    pub ims: ImsSandbox,
    pub shopline: ShoplineSandbox,
    pub vantage: VantageSandbox,
    pub cyberbiz: CyberbizSandbox,
    pub magento: MagentoSandbox,
}

impl Sandbox {
    /// Starts every fake with default options on the current tokio runtime.
    pub async fn start() -> io::Result<Self> {
        Ok(Self {
            ims: ImsSandbox::start(ImsOptions::default()).await?,
            shopline: ShoplineSandbox::start(ShoplineOptions::default()).await?,
            vantage: VantageSandbox::start(VantageOptions::default()).await?,
            cyberbiz: CyberbizSandbox::start(CyberbizOptions::default()).await?,
            magento: MagentoSandbox::start(MagentoOptions::default()).await?,
        })
    }

    /// Stops every fake, letting in-flight requests finish briefly. Dropping also stops them.
    pub async fn shutdown(self) {
        self.ims.shutdown().await;
        self.shopline.shutdown().await;
        self.vantage.shutdown().await;
        self.cyberbiz.shutdown().await;
        self.magento.shutdown().await;
    }
}
