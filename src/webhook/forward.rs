//! The forward of a verified delivery: a POST to the webhook's `forward` URL with the body byte for
//! byte, the sender's headers but for the signatures and the hop-by-hop ones, and
//! `tokenbroker-webhook: <name>`, all within the webhook's `timeout`. The trace continues into
//! it: with traces exported the forward is a client span whose `traceparent` the target receives;
//! without, the sender's own `traceparent` passes as it came.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Either, Full, Limited};
use tokio::time::Instant;

use super::Route;
use super::answer::Refusal;
use crate::config::WebhookSender;
use crate::telemetry::traces::RequestTrace;
use crate::upstream::headers;

/// Names the webhook a delivery came through, for the target.
const WEBHOOK_HEADER: HeaderName = HeaderName::from_static("tokenbroker-webhook");
/// CYBERBIZ also signs the shop's domain; it is a signature too, and stays here.
const CYBERBIZ_DOMAIN_SIGNATURE: HeaderName = HeaderName::from_static("x-cyberbiz-domain-hmac-sha256");
/// How much of the target's answer is read (to free its connection for the next forward);
/// what it says is not passed on.
const ANSWER_DRAIN_LIMIT: usize = 64 * 1024;

/// What came of a forward: the target's status and how long it took to answer.
pub(super) struct Forwarded {
    pub(super) status: Option<u16>,
    pub(super) elapsed: std::time::Duration,
    pub(super) result: Result<(), Refusal>,
}

/// POSTs `body` to the route's target with `sender`'s headers (filtered); `Ok` on a 2xx answer.
pub(super) async fn forward(route: &Route, sender: &HeaderMap, body: Bytes, trace: Option<&RequestTrace>) -> Forwarded {
    let started = Instant::now();
    let deadline = started + route.config.timeout;
    let mut headers = forwarded_headers(route, sender);
    let span = trace.map(|t| t.upstream(&Method::POST, false, &mut headers));
    let path = route.config.forward.path_and_query().cloned();
    let uri = route
        .upstream
        .uri(&route.target, path.unwrap_or_else(|| "/".parse().expect("a path")));
    let mut request = Request::new(Either::Left(Full::new(body)));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let answer = tokio::time::timeout_at(deadline, route.upstream.send(request)).await;
    let elapsed = started.elapsed();
    let (status, result) = match answer {
        Ok(Ok(response)) => {
            let status = response.status();
            // Read (boundedly) so the connection can serve the next forward; then let it go.
            let drain = Limited::new(response.into_body(), ANSWER_DRAIN_LIMIT).collect();
            let _ = tokio::time::timeout_at(deadline, drain).await;
            let result = if status.is_success() {
                Ok(())
            } else {
                Err(Refusal::TargetRefused)
            };
            (Some(status.as_u16()), result)
        }
        Ok(Err(error)) => {
            tracing::warn!(webhook = %route.config.name, %error, "webhook forward failed");
            (None, Err(Refusal::TargetUnreachable))
        }
        Err(_) => {
            tracing::warn!(webhook = %route.config.name, "webhook forward timed out");
            (None, Err(Refusal::TargetUnreachable))
        }
    };
    if let Some(span) = span {
        span.end(status.ok_or(Refusal::TargetUnreachable.code()));
    }
    Forwarded {
        status,
        elapsed,
        result,
    }
}

/// The sender's headers, minus what must not travel on: hop-by-hop headers, `Host` and the length
/// (the client sets both), every signature of the delivery, and any `tokenbroker-webhook` a
/// sender made up; plus the route's own `tokenbroker-webhook`.
fn forwarded_headers(route: &Route, sender: &HeaderMap) -> HeaderMap {
    let mut headers = sender.clone();
    headers::strip_hop_by_hop(&mut headers);
    for name in [header::HOST, header::CONTENT_LENGTH, header::EXPECT, WEBHOOK_HEADER] {
        headers.remove(name);
    }
    headers.remove(&route.config.signature_header);
    if route.config.sender == WebhookSender::Cyberbiz {
        headers.remove(CYBERBIZ_DOMAIN_SIGNATURE);
    }
    let name = HeaderValue::from_str(&route.config.name).expect("webhook names are path-segment characters");
    headers.insert(WEBHOOK_HEADER, name);
    headers
}
