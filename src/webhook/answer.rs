//! What a webhook request ends as: an outcome counted in
//! `tokenbroker_webhooks_total{webhook,outcome}`, the answer the sender gets (200, or a
//! problem+json refusal in the proxy's shape), and one access event. Never a signature, a secret,
//! a header value or a body.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use tokio::time::Instant;

use super::Routes;
use crate::error::{ERROR_HEADER, Fault};

/// The header that tells the sender (and tests) how an accepted delivery was handled.
const OUTCOME_HEADER: &str = "tokenbroker-webhook-outcome";

/// How one request to a webhook ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Forwarded,
    Duplicate,
    InvalidSignature,
    ForwardFailed,
    TooLarge,
    /// The same delivery was being forwarded by another request, past the wait (409).
    InProgress,
    /// The shared store did not answer, so whether it was forwarded is unknown (503).
    StoreUnavailable,
    /// Refused before verification: a method other than POST, an oversized head, a broken body,
    /// or a body the memory budget could not hold.
    Rejected,
}

impl Outcome {
    const ALL: [Self; 8] = [
        Self::Forwarded,
        Self::Duplicate,
        Self::InvalidSignature,
        Self::ForwardFailed,
        Self::TooLarge,
        Self::InProgress,
        Self::StoreUnavailable,
        Self::Rejected,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Duplicate => "duplicate",
            Self::InvalidSignature => "invalid_signature",
            Self::ForwardFailed => "forward_failed",
            Self::TooLarge => "too_large",
            Self::InProgress => "in_progress",
            Self::StoreUnavailable => "store_unavailable",
            Self::Rejected => "rejected",
        }
    }
}

/// Lock-free counts per outcome of one webhook, kept across reloads by name.
#[derive(Debug, Default)]
pub(crate) struct Outcomes([AtomicU64; 8]);

impl Outcomes {
    pub(crate) fn count(&self, outcome: Outcome) {
        let index = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .expect("every outcome is listed");
        self.0[index].fetch_add(1, Relaxed);
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        let pairs = Outcome::ALL.iter().zip(&self.0);
        let map = pairs.map(|(o, n)| (o.as_str().to_owned(), serde_json::Value::from(n.load(Relaxed))));
        serde_json::Value::Object(map.collect())
    }
}

/// Why a request was not (or not successfully) delivered: its status, code and outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    UnknownWebhook,
    MethodNotAllowed,
    HeaderTooLarge,
    TooLarge,
    BodyStalled,
    BodyBroken,
    SignatureInvalid,
    /// `server.replay_buffer_budget` cannot hold the body now (503): too many bodies in memory.
    Busy,
    InProgress,
    StoreUnavailable,
    /// The target answered, but not with 2xx.
    TargetRefused,
    /// No answer from the target within the webhook's `timeout`, or no connection.
    TargetUnreachable,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Self::UnknownWebhook => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyStalled => StatusCode::REQUEST_TIMEOUT,
            Self::BodyBroken => StatusCode::BAD_REQUEST,
            Self::SignatureInvalid => StatusCode::UNAUTHORIZED,
            Self::InProgress => StatusCode::CONFLICT,
            Self::Busy | Self::StoreUnavailable | Self::TargetUnreachable => StatusCode::SERVICE_UNAVAILABLE,
            Self::TargetRefused => StatusCode::BAD_GATEWAY,
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::UnknownWebhook => "unknown_webhook",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::HeaderTooLarge => "header_too_large",
            Self::TooLarge => "payload_too_large",
            Self::BodyStalled => "body_timeout",
            Self::BodyBroken => "bad_request",
            Self::SignatureInvalid => "webhook_signature_invalid",
            Self::Busy => "server_busy",
            Self::InProgress => "webhook_in_progress",
            Self::StoreUnavailable => "store_unavailable",
            Self::TargetRefused => "webhook_forward_refused",
            Self::TargetUnreachable => "webhook_forward_unreachable",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Self::UnknownWebhook => "no webhook is configured at this path",
            Self::MethodNotAllowed => "webhooks accept only POST",
            Self::HeaderTooLarge => "the request head is larger than the limit",
            Self::TooLarge => "the body is larger than the webhook's max_body",
            Self::BodyStalled => "the body stopped arriving",
            Self::BodyBroken => "the body broke off",
            Self::SignatureInvalid => "the signature is missing or does not match the body",
            Self::Busy => "the proxy holds as many bodies in memory as its budget allows; retry later",
            Self::InProgress => "the same delivery is being forwarded now; retry later",
            Self::StoreUnavailable => "the delivery store is unreachable; retry later",
            Self::TargetRefused => "the forward target did not accept the delivery; retry later",
            Self::TargetUnreachable => "the forward target did not answer; retry later",
        }
    }

    pub(crate) fn outcome(self) -> Option<Outcome> {
        match self {
            Self::UnknownWebhook => None,
            Self::MethodNotAllowed | Self::HeaderTooLarge | Self::BodyStalled | Self::BodyBroken | Self::Busy => {
                Some(Outcome::Rejected)
            }
            Self::TooLarge => Some(Outcome::TooLarge),
            Self::SignatureInvalid => Some(Outcome::InvalidSignature),
            Self::InProgress => Some(Outcome::InProgress),
            Self::StoreUnavailable => Some(Outcome::StoreUnavailable),
            Self::TargetRefused | Self::TargetUnreachable => Some(Outcome::ForwardFailed),
        }
    }

    fn fault(self) -> Fault {
        match self {
            Self::StoreUnavailable | Self::TargetRefused | Self::TargetUnreachable | Self::InProgress => {
                Fault::Upstream
            }
            Self::Busy => Fault::Internal,
            _ => Fault::Downstream,
        }
    }

    /// The problem+json answer, in the shape of the proxy's own (`error.rs`).
    pub(crate) fn into_response(self, webhook: Option<&str>) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut problem = serde_json::json!({
            "type": format!("urn:tokenbroker:error:{}", self.code()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.detail(),
            "fault": self.fault().as_str(),
        });
        if let Some(webhook) = webhook {
            problem["webhook"] = serde_json::Value::from(webhook);
        }
        let mut response = Response::new(Full::new(Bytes::from(problem.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        match self {
            Self::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Self::Busy | Self::InProgress | Self::StoreUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// 200 for a delivery forwarded now or before.
pub(crate) fn accepted(outcome: Outcome) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    response
        .headers_mut()
        .insert(OUTCOME_HEADER, HeaderValue::from_static(outcome.as_str()));
    response
}

/// What the access event of one webhook request says.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) started: Instant,
    pub(crate) peer: SocketAddr,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) trace_id: Option<String>,
    pub(crate) webhook: Option<String>,
    pub(crate) request_bytes: u64,
    pub(crate) forward_status: Option<u16>,
    pub(crate) forward_elapsed: Option<Duration>,
}

impl Event {
    /// One event per request, on the proxy's access target, with the fields it shares.
    pub(crate) fn write(&self, status: StatusCode, outcome: Option<Outcome>, refusal: Option<Refusal>) {
        let millis = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            target: "tokenbroker::access",
            webhook = self.webhook.as_deref(),
            peer = %self.peer,
            trace_id = self.trace_id.as_deref(),
            method = %self.method,
            path = self.path.as_str(),
            status = status.as_u16(),
            outcome = outcome.map(Outcome::as_str),
            upstream_status = self.forward_status,
            upstream_ms = self.forward_elapsed.map(millis),
            request_bytes = self.request_bytes,
            duration_ms = millis(self.started.elapsed()),
            error = refusal.map(Refusal::code),
            fault = refusal.map(|r| r.fault().as_str()),
        );
    }
}

/// `tokenbroker_webhooks_total{webhook,outcome}`, every outcome of every webhook.
pub(crate) fn encode_metrics(encoder: &mut DescriptorEncoder<'_>, routes: &Routes) -> Result<(), std::fmt::Error> {
    if routes.all().is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        "tokenbroker_webhooks",
        "Webhook deliveries by how they ended",
        None,
        MetricType::Counter,
    )?;
    for route in routes.all() {
        for (outcome, count) in Outcome::ALL.iter().zip(&route.outcomes.0) {
            let labels = [("webhook", route.config.name.as_str()), ("outcome", outcome.as_str())];
            family
                .encode_family(&labels)?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&count.load(Relaxed), None)?;
        }
    }
    Ok(())
}
