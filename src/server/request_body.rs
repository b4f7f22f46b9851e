//! Phase 3's body: kept in memory when it may have to be sent again and the process-wide replay
//! budget takes it, else streamed under the tenant's cap; either way read through [`CallerBody`]
//! (`server.body_timeout`, and a broken body is the caller's fault).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};

use crate::error::{ProxyError, RequestBodyError};
use crate::tenant::Tenant;
use crate::upstream::{BodyFate, CallerBody};
use crate::upstream::{ReplayBudget, ReplayPermit};

/// A request body: buffered when it may be sent again, else streamed under the tenant's cap.
pub(super) enum PreparedBody {
    /// `replay`: kept for a 401 replay, so the request keeps its headers and URI for one too;
    /// otherwise only for a stream the upstream refuses (see [`resendable`]). The bytes hold their
    /// share of the replay budget until the last copy of them drops.
    Buffered { bytes: Bytes, replay: bool },
    /// `fate`: where the body's failure is noted for an upstream that may speak HTTP/2 (see
    /// [`BodyFate`]), and its size for the access log; `None` where hyper reports the failure
    /// itself and nobody counts.
    Streamed {
        body: Limited<CallerBody>,
        fate: Option<Arc<BodyFate>>,
    },
}

/// What reading a body needs besides the tenant.
#[derive(Clone, Copy)]
pub(super) struct BodyRules<'a> {
    pub(super) budget: &'a Arc<ReplayBudget>,
    /// `server.body_timeout`.
    pub(super) timeout: Duration,
    /// Whether a streamed body's bytes are counted (for the access log).
    pub(super) count: bool,
    /// Whether the body is a form the tenant signs (`adobe_commerce`): it is then read whole,
    /// under the tenant's `max_body`, whatever its size and the replay budget, since its
    /// parameters go into the signature before a byte is sent.
    pub(super) signed_form: bool,
}

pub(super) async fn prepare_body(
    tenant: &Tenant,
    declared: Option<u64>,
    body: Incoming,
    rules: BodyRules<'_>,
) -> Result<PreparedBody, ProxyError> {
    let max_body = usize::try_from(tenant.config.max_body).unwrap_or(usize::MAX);
    let empty = body.is_end_stream();
    let body = CallerBody::new(body, rules.timeout);
    let replay = tenant.tokens.keeps_body_for_replay(declared, empty);
    if rules.signed_form && !empty {
        let reserve = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        return match read_all(Limited::new(body, max_body), reserve).await {
            Ok(bytes) => Ok(PreparedBody::Buffered { bytes, replay }),
            Err(error) => Err(body_error(tenant, &*error)),
        };
    }
    if !replay && (empty || !resendable(tenant, declared)) {
        return Ok(streamed(tenant, body, max_body, empty, rules.count));
    }
    // Most requests (GETs) have no body: nothing to read or buffer.
    if empty {
        return Ok(PreparedBody::Buffered {
            bytes: Bytes::new(),
            replay,
        });
    }
    // Only a declared length is ever kept (`keeps_body_for_replay`, `resendable`), and hyper holds
    // the body to it, so that is what it reserves.
    let length = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(usize::MAX);
    let Some(permit) = rules.budget.try_reserve(length) else {
        return Ok(streamed(tenant, body, max_body, empty, rules.count));
    };
    match read_all(Limited::new(body, max_body), length).await {
        Ok(bytes) => Ok(PreparedBody::Buffered {
            bytes: Bytes::from_owner(Kept { bytes, _permit: permit }),
            replay,
        }),
        Err(error) => Err(body_error(tenant, &*error)),
    }
}

/// The body's data in one buffer of the `length` reserved for it, each frame copied in as it
/// arrives (and hyper's buffer given back at once): the memory a kept body takes is what the
/// budget counts, without the second copy that collecting the frames and joining them makes.
/// Trailers are dropped, as they always were for a kept body.
async fn read_all(body: Limited<CallerBody>, length: usize) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    let mut body = std::pin::pin!(body);
    let mut bytes = BytesMut::with_capacity(length);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.freeze())
}

/// `body` to stream under `max_body`, noting its failure where hyper would not report it, and its
/// size when `count`.
fn streamed(tenant: &Tenant, mut body: CallerBody, max_body: usize, empty: bool, count: bool) -> PreparedBody {
    let fate = (!empty && (count || tenant.upstream.resends_refused())).then(|| body.noting_failure());
    PreparedBody::Streamed {
        body: Limited::new(body, max_body),
        fate,
    }
}

/// `error`, or the caller's fault instead when its body failed first: over HTTP/2 an upstream
/// failure after a body failure is what the body failure caused (see [`BodyFate`]). Over HTTP/1
/// hyper reports the body's own error, which this leaves as it is.
pub(super) fn blame(fate: &BodyFate, error: ProxyError) -> ProxyError {
    let upstream = matches!(
        error,
        ProxyError::UpstreamUnreachable(_) | ProxyError::UpstreamTimeout(_)
    );
    match fate.failure() {
        Some(failure) if upstream => ProxyError::RequestBody(failure),
        _ => error,
    }
}

/// The proxy's answer to a body that failed while it was buffered.
fn body_error(tenant: &Tenant, error: &(dyn std::error::Error + 'static)) -> ProxyError {
    if error.is::<http_body_util::LengthLimitError>() {
        return ProxyError::PayloadTooLarge {
            limit: tenant.config.max_body,
        };
    }
    let cause = error.downcast_ref::<RequestBodyError>();
    ProxyError::RequestBody(cause.copied().unwrap_or(RequestBodyError::Broken))
}

/// A kept body's bytes with their share of the replay budget, given back when the last copy
/// (the replay's, or the one a refused stream is resent from) drops.
struct Kept {
    bytes: Bytes,
    _permit: ReplayPermit,
}

impl AsRef<[u8]> for Kept {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Whether a body no 401 will replay is still worth keeping: a stream an HTTP/2 upstream refuses
/// unprocessed is sent again only from a copy (README, "Upstream connections"), so a body whose
/// declared length is at most `replay_body_limit` is buffered when the upstream speaks (or may
/// speak) HTTP/2. Larger and chunked bodies stream, and get a 502 if refused; empty ones stream
/// too, since an empty body can always be sent again.
fn resendable(tenant: &Tenant, declared: Option<u64>) -> bool {
    declared.is_some_and(|length| length <= tenant.config.token.replay_body_limit) && tenant.upstream.resends_refused()
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;
    use crate::metrics::GlobalMetrics;

    const TIMEOUT: Duration = Duration::from_secs(60);

    /// A streamed body whose next read fails (hyper's error on broken framing).
    fn broken_body() -> CallerBody<impl Body<Data = Bytes, Error = std::io::Error>> {
        let frames = vec![Err::<hyper::body::Frame<Bytes>, _>(std::io::Error::other(
            "invalid chunk size",
        ))];
        CallerBody::new(
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)),
            TIMEOUT,
        )
    }

    #[tokio::test]
    async fn an_upstream_failure_after_the_body_failed_is_the_callers_fault() {
        let mut body = broken_body();
        let fate = body.noting_failure();
        let reset = || ProxyError::UpstreamUnreachable(crate::upstream::Unreachable::new("stream error: CANCEL"));
        assert_eq!(
            blame(&fate, reset()).code(),
            "upstream_unreachable",
            "nothing failed yet"
        );
        let error = pin!(body).frame().await.expect("an error").unwrap_err();
        assert_eq!(error, RequestBodyError::Broken);
        assert_eq!(blame(&fate, reset()).status(), http::StatusCode::BAD_REQUEST);
        let timeout = blame(&fate, ProxyError::UpstreamTimeout(TIMEOUT));
        assert_eq!(timeout.code(), "bad_request");
        let too_large = blame(&fate, ProxyError::PayloadTooLarge { limit: 1 });
        assert_eq!(
            too_large.code(),
            "payload_too_large",
            "only upstream failures are reassigned"
        );
    }

    #[test]
    fn a_kept_body_holds_its_budget_until_its_last_copy_drops() {
        let budget = ReplayBudget::new(10, Arc::new(GlobalMetrics::default()));
        let permit = budget.try_reserve(4).expect("fits");
        let bytes = Bytes::from_owner(Kept {
            bytes: Bytes::from_static(b"body"),
            _permit: permit,
        });
        let replay = bytes.clone();
        drop(bytes);
        assert_eq!(budget.used(), 4, "the replay's copy still holds it");
        assert_eq!(replay, "body");
        drop(replay);
        assert_eq!(budget.used(), 0);
    }
}
