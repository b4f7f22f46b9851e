//! Phase 3's body: kept in memory when it may have to be sent again, else streamed under the
//! tenant's cap.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};

use crate::error::ProxyError;
use crate::tenant::Tenant;

/// A request body: buffered when it may be sent again, else streamed under the tenant's cap.
pub(super) enum PreparedBody {
    /// `replay`: kept for a 401 replay, so the request keeps its headers and URI for one too;
    /// otherwise only for a stream the upstream refuses (see [`resendable`]).
    Buffered {
        bytes: Bytes,
        replay: bool,
    },
    Streamed(Limited<Incoming>),
}

pub(super) async fn prepare_body(
    tenant: &Tenant,
    declared: Option<u64>,
    body: Incoming,
) -> Result<PreparedBody, ProxyError> {
    let max_body = usize::try_from(tenant.config.max_body).unwrap_or(usize::MAX);
    let empty = body.is_end_stream();
    let replay = tenant.tokens.keeps_body_for_replay(declared, empty);
    if !replay && (empty || !resendable(tenant, declared)) {
        return Ok(PreparedBody::Streamed(Limited::new(body, max_body)));
    }
    // Most requests (GETs) have no body: nothing to read or buffer.
    if empty {
        return Ok(PreparedBody::Buffered {
            bytes: Bytes::new(),
            replay,
        });
    }
    match Limited::new(body, max_body).collect().await {
        Ok(collected) => Ok(PreparedBody::Buffered {
            bytes: collected.to_bytes(),
            replay,
        }),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ProxyError::PayloadTooLarge {
            limit: tenant.config.max_body,
        }),
        Err(_) => Err(ProxyError::BadRequest("the request body could not be read")),
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
