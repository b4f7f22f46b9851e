//! A webhook target for the demo and the benchmarks: it stands for the service a verified
//! delivery is forwarded to, answers 200 with what it received (the webhook's name, the body's
//! length) and counts the deliveries, so "forwarded once" can be read off it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::common::{Body, json};
use super::server::{Handler, ServerHandle};

/// Larger bodies are refused: more than any webhook route accepts by default.
const BODY_LIMIT: usize = 1 << 20;

/// The running echo target; dropping it stops it.
#[derive(Debug)]
pub struct WebhookEcho {
    server: ServerHandle,
    state: Arc<EchoState>,
}

#[derive(Debug, Default)]
struct EchoState {
    received: AtomicUsize,
}

impl WebhookEcho {
    pub async fn start() -> io::Result<Self> {
        let state = Arc::new(EchoState::default());
        let server = ServerHandle::start(Arc::clone(&state)).await?;
        Ok(Self { server, state })
    }

    /// Where a webhook forwards to: any path is answered alike.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/shopline", self.server.addr())
    }

    /// Deliveries received whole.
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::SeqCst)
    }
}

impl Handler for EchoState {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let Ok(body) = Limited::new(body, BODY_LIMIT).collect().await.map(|c| c.to_bytes()) else {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"error": "body too large"}),
            );
        };
        let received = self.received.fetch_add(1, Ordering::SeqCst) + 1;
        let webhook = parts.headers.get("tokenbroker-webhook").and_then(|v| v.to_str().ok());
        let echo = serde_json::json!({"received": received, "webhook": webhook, "body_length": body.len()});
        json(StatusCode::OK, &echo)
    }
}
