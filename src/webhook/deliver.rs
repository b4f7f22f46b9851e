//! One request on the webhook listener, phase by phase: route, head and body limits, signature,
//! claim, forward, record. The order is the cost order: everything an unauthenticated sender can
//! make happen before the signature check (a route lookup, reading at most `max_body`, one HMAC)
//! is cheap, and nothing is written to the store or sent inward before the signature holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::answer::{Event, Outcome, Refusal, accepted};
use super::forward::forward;
use super::{RETENTION, Route, Routes, verify};
use crate::config::{ServerConfig, WebhookSender};
use crate::store::Claim;
use crate::telemetry::traces::{self, RequestTrace};
use crate::upstream::{ReplayBudget, ReplayPermit, headers};

/// A claim outlives the forward it covers by this much, so it never lapses while the forward may
/// still be running, and frees the delivery soon after a replica that held it died.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// The longest a repeat of a delivery in flight waits for the first to settle before it gets 409.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting repeat asks again.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Serves one request; never fails (refusals become problem+json answers).
/// What the listener gives every delivery: the proxy's limits, and the process-wide budget that a
/// body held whole for its signature counts against.
pub(crate) struct Listener<'a> {
    pub(crate) server: &'a ServerConfig,
    pub(crate) bodies: &'a Arc<ReplayBudget>,
}

pub(crate) async fn handle(
    routes: &Routes,
    listener: Listener<'_>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let trace = RequestTrace::start(request.headers(), request.method(), request.uri().path());
    let mut event = Event {
        started: Instant::now(),
        peer,
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        trace_id: trace.as_ref().map(|t| t.trace_id().to_string()).or_else(|| {
            let parent = request.headers().get(traces::TRACEPARENT)?;
            traces::caller_trace_id(parent).map(str::to_owned)
        }),
        webhook: None,
        request_bytes: 0,
        forward_status: None,
        forward_elapsed: None,
    };
    let (route, result) = serve(routes, &listener, request, &mut event, trace.as_deref()).await;
    let (response, outcome, refusal) = match result {
        Ok(outcome) => (accepted(outcome), Some(outcome), None),
        Err(refusal) => (
            refusal.into_response(event.webhook.as_deref()),
            refusal.outcome(),
            Some(refusal),
        ),
    };
    if let (Some(route), Some(outcome)) = (route, outcome) {
        route.outcomes.count(outcome);
    }
    if let Some(trace) = &trace {
        trace.answered(
            event.webhook.as_deref(),
            response.status().as_u16(),
            refusal.map(Refusal::code),
        );
        trace.end(None);
    }
    event.write(response.status(), outcome, refusal);
    response
}

async fn serve<'r>(
    routes: &'r Routes,
    listener: &Listener<'_>,
    request: Request<Incoming>,
    event: &mut Event,
    trace: Option<&RequestTrace>,
) -> (Option<&'r Route>, Result<Outcome, Refusal>) {
    let (parts, body) = request.into_parts();
    // 1. Route: exactly `/<name>`; the query, if any, plays no part.
    let name = parts.uri.path().strip_prefix('/').unwrap_or_default();
    let Some(route) = routes.get(name) else {
        return (None, Err(Refusal::UnknownWebhook));
    };
    event.webhook = Some(route.config.name.clone());
    let result = deliver(routes, route, listener, parts, body, event, trace).await;
    (Some(route), result)
}

async fn deliver(
    routes: &Routes,
    route: &Route,
    listener: &Listener<'_>,
    parts: Parts,
    body: Incoming,
    event: &mut Event,
    trace: Option<&RequestTrace>,
) -> Result<Outcome, Refusal> {
    if parts.method != Method::POST {
        return Err(Refusal::MethodNotAllowed);
    }
    // 2. Limits, before any byte of the body is held.
    let (body, _held) = read_within_limits(route, listener, &parts, body).await?;
    event.request_bytes = body.len() as u64;
    // 3. Signature: one HMAC over the body; a refusal costs nothing more.
    let signature = parts.headers.get(&route.config.signature_header);
    if !verify::is_valid(&route.key, route.config.encoding, signature, &body) {
        return Err(Refusal::SignatureInvalid);
    }
    // 4. Claim, forward, record.
    let Some(id) = delivery_id(route, &parts.headers, &body) else {
        return send(route, &parts.headers, body, event, trace)
            .await
            .map(|()| Outcome::Forwarded);
    };
    let owner = format!("{:016x}", rand::random::<u64>());
    if let Some(settled) = claim(routes, route, &id, &owner).await? {
        return Ok(settled);
    }
    let mut guard = ClaimGuard {
        routes,
        id: &id,
        owner: &owner,
        settled: false,
    };
    let sent = send(route, &parts.headers, body, event, trace).await;
    guard.settled = true;
    match sent {
        Ok(()) => {
            if routes.deliveries.done(&id, RETENTION).await.is_err() {
                tracing::warn!(webhook = %route.config.name, "delivery forwarded but not recorded (store unreachable); a repeat may be forwarded again");
            }
            Ok(Outcome::Forwarded)
        }
        Err(refusal) => {
            let _ = routes.deliveries.release(&id, &owner).await;
            Err(refusal)
        }
    }
}

/// The body, read whole under the proxy's head limit, `max_body`, and the memory budget, which
/// holds the declared length (without one, `max_body`) for as long as the permit lives.
async fn read_within_limits(
    route: &Route,
    listener: &Listener<'_>,
    parts: &Parts,
    body: Incoming,
) -> Result<(Bytes, ReplayPermit), Refusal> {
    let server = listener.server;
    if headers::head_size(parts) > server.max_request_head {
        return Err(Refusal::HeaderTooLarge);
    }
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > route.config.max_body) {
        return Err(Refusal::TooLarge);
    }
    let held = usize::try_from(declared.unwrap_or(route.config.max_body)).unwrap_or(usize::MAX);
    let permit = listener.bodies.try_reserve(held).ok_or(Refusal::Busy)?;
    let body = read_body(body, route.config.max_body, server.body_timeout).await?;
    Ok((body, permit))
}

async fn send(
    route: &Route,
    headers: &HeaderMap,
    body: Bytes,
    event: &mut Event,
    trace: Option<&RequestTrace>,
) -> Result<(), Refusal> {
    let forwarded = forward(route, headers, body, trace).await;
    event.forward_status = forwarded.status;
    event.forward_elapsed = Some(forwarded.elapsed);
    forwarded.result
}

/// Claims delivery `id`; `Some` when it is settled without a forward (already done). A repeat of
/// a delivery in flight waits up to [`MAX_WAIT`] (within the route's timeout) for the first to
/// settle, then gets 409 so the sender retries later; it is never forwarded twice.
async fn claim(routes: &Routes, route: &Route, id: &str, owner: &str) -> Result<Option<Outcome>, Refusal> {
    let lease = route.config.timeout + LEASE_MARGIN;
    let give_up = Instant::now() + MAX_WAIT.min(route.config.timeout);
    loop {
        let claimed = routes.deliveries.claim(id, owner, lease).await;
        match claimed.map_err(|_| Refusal::StoreUnavailable)? {
            Claim::Mine => return Ok(None),
            Claim::Done => return Ok(Some(Outcome::Duplicate)),
            Claim::Busy if Instant::now() + WAIT_POLL > give_up => return Err(Refusal::InProgress),
            Claim::Busy => tokio::time::sleep(WAIT_POLL).await,
        }
    }
}

/// Frees a claim whose request was dropped before it settled (the sender went away mid-forward),
/// so the sender's retry is not answered 409 for a whole lease.
struct ClaimGuard<'a> {
    routes: &'a Routes,
    id: &'a str,
    owner: &'a str,
    settled: bool,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.routes.deliveries.release_local(self.id, self.owner);
        }
    }
}

/// What makes two requests the same delivery: SHOPLINE's webhook id; for CYBERBIZ, which sends no
/// id, the event and the body. Hashed with the route's name, so ids from a sender are never keys
/// as written. `None` for the generic form, which is not de-duplicated.
fn delivery_id(route: &Route, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let header = |name: &str| headers.get(name).map_or(&b""[..], |v| v.as_bytes());
    let mut hash = Sha256::new();
    hash.update(route.config.name.as_bytes());
    match route.config.sender {
        WebhookSender::Generic => return None,
        WebhookSender::Shopline if headers.contains_key("x-shopline-webhook-id") => {
            hash.update(b"\0shopline-id\0");
            hash.update(header("x-shopline-webhook-id"));
        }
        WebhookSender::Shopline => {
            hash.update(b"\0shopline-topic\0");
            hash.update(header("x-shopline-topic"));
            hash.update(Sha256::digest(body));
        }
        WebhookSender::Cyberbiz => {
            hash.update(b"\0cyberbiz\0");
            hash.update(header("x-cyberbiz-event"));
            hash.update(b"\0");
            hash.update(Sha256::digest(body));
        }
    }
    Some(hex::encode(hash.finalize()))
}

/// Reads the whole body, refusing it once it passes `max_body` (at once when its declared length
/// does) or stops arriving for `body_timeout`.
async fn read_body(mut body: Incoming, max_body: u64, body_timeout: Duration) -> Result<Bytes, Refusal> {
    let declared = body
        .size_hint()
        .exact()
        .or(Some(body.size_hint().lower()).filter(|n| *n > 0));
    if declared.is_some_and(|n| n > max_body) {
        return Err(Refusal::TooLarge);
    }
    let mut buffer = BytesMut::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
    loop {
        let frame = tokio::time::timeout(body_timeout, body.frame()).await;
        match frame.map_err(|_| Refusal::BodyStalled)? {
            None => return Ok(buffer.freeze()),
            Some(Err(_)) => return Err(Refusal::BodyBroken),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if (buffer.len() + data.len()) as u64 > max_body {
                        return Err(Refusal::TooLarge);
                    }
                    buffer.extend_from_slice(&data);
                }
            }
        }
    }
}
