//! Webhooks: the routes of `server.webhook_listen`, which verify a platform's signed deliveries
//! with a secret the broker holds and forward the verified ones inward, so no service needs the
//! app secret (README, "Webhooks").
//!
//! ```text
//!  POST /<name> ─▶ route ─▶ head, body ≤ max_body ─▶ signature ─▶ claim ─▶ forward ─▶ done
//!                  404/405   431 / 413                 401          200 dup  502/503   200
//!                                                                  409/503  (release)
//! ```
//!
//! The routes live in the snapshot, built from the configuration like the tenants and swapped
//! with them on reload; what a reload keeps (the counters, the forward connections, the delivery
//! markers) is carried from the previous routes. A webhook touches no tenant at run time: it holds
//! a copy of the secret that verifies it and nothing else, so the listener lends no credential.

mod answer;
mod deliver;
mod forward;
mod verify;

pub(crate) use answer::{Outcomes, encode_metrics};
pub(crate) use deliver::{Listener, handle};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;

use crate::config::{RuntimeConfig, UpstreamUrl, WebhookConfig};
use crate::store::{Deliveries, Store};
use crate::upstream::{Http1Pool, HttpsPool, TlsConfig, TlsSetupError, Upstream};

/// How long a forwarded delivery is remembered: the platforms retry a failed delivery for hours,
/// and a day covers every retry schedule they document.
const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// One webhook, ready to serve.
pub(crate) struct Route {
    pub(crate) config: WebhookConfig,
    key: ring::hmac::Key,
    upstream: Upstream,
    /// Where `forward` points, split as the upstream client wants it.
    target: UpstreamUrl,
    pub(crate) outcomes: Arc<Outcomes>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Every webhook of one snapshot.
#[derive(Debug)]
pub(crate) struct Routes {
    by_name: HashMap<String, Arc<Route>>,
    /// The same routes in configuration order, for the admin view and the metrics.
    ordered: Vec<Arc<Route>>,
    deliveries: Deliveries,
}

impl Routes {
    /// The routes of `config`, keeping from `previous` the counters of webhooks of the same name,
    /// the connections to unchanged targets and the delivery markers.
    pub(crate) fn build(
        config: &RuntimeConfig,
        previous: Option<&Self>,
        store: &Store,
        tls: &TlsConfig,
        max_head: usize,
    ) -> Result<Self, TlsSetupError> {
        let deliveries = match previous {
            Some(previous) => previous.deliveries.clone(),
            None => Deliveries::for_store(store, RETENTION),
        };
        let mut by_name = HashMap::with_capacity(config.webhooks.len());
        let mut ordered = Vec::with_capacity(config.webhooks.len());
        for webhook in &config.webhooks {
            let old = previous.and_then(|p| p.by_name.get(&webhook.name));
            let route = Arc::new(Route::build(webhook, old.map(Arc::as_ref), previous, tls, max_head)?);
            by_name.insert(webhook.name.clone(), Arc::clone(&route));
            ordered.push(route);
        }
        Ok(Self {
            by_name,
            ordered,
            deliveries,
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.by_name.get(name)
    }

    /// Every webhook, in configuration order.
    pub(crate) fn all(&self) -> &[Arc<Route>] {
        &self.ordered
    }

    /// The routes as `/tenants` lists them: where each forwards and who verifies it, no secret.
    pub(crate) fn view(&self) -> serde_json::Value {
        let routes = self.ordered.iter().map(|route| {
            let c = &route.config;
            serde_json::json!({
                "name": c.name,
                "sender": c.sender.as_str(),
                "tenant": c.tenant.as_ref().map(|t| t.as_str()),
                "signature_header": c.signature_header.as_str(),
                "forward": c.forward.to_string(),
                "max_body": c.max_body,
                "outcomes": route.outcomes.to_json(),
            })
        });
        serde_json::Value::Array(routes.collect())
    }
}

impl Route {
    fn build(
        config: &WebhookConfig,
        old: Option<&Self>,
        previous: Option<&Routes>,
        tls: &TlsConfig,
        max_head: usize,
    ) -> Result<Self, TlsSetupError> {
        let scheme = config.forward.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = config.forward.authority().cloned().expect("validation requires a host");
        let target = UpstreamUrl {
            scheme,
            authority,
            base_path: String::new(),
        };
        // Any route of the previous snapshot that forwarded to the same place lends its pool.
        let same_target = previous
            .into_iter()
            .flat_map(|p| p.ordered.iter())
            .find(|r| r.target.scheme == target.scheme && r.target.authority == target.authority);
        let upstream = match same_target {
            Some(route) => route.upstream.clone(),
            None if target.scheme == Scheme::HTTP => Upstream::Http1(Http1Pool::new(&target.authority, max_head)),
            None => Upstream::Https(HttpsPool::new(&target.authority, tls, max_head)?),
        };
        Ok(Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, config.secret.expose().as_bytes()),
            config: config.clone(),
            upstream,
            target,
            outcomes: old.map_or_else(Arc::default, |old| Arc::clone(&old.outcomes)),
        })
    }
}
