//! What every attempt of an upstream request shares, whichever pool sends it: the body type, the
//! per-attempt signature hook, and how long an idle pooled connection is kept.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{Either, Full, Limited};

use super::caller_body::CallerBody;

/// A request body on its way upstream: buffered (so a 401 can replay it) or streamed under a cap,
/// read through the inbound side's timeout and error mapping.
pub(crate) type UpstreamBody = Either<Full<Bytes>, Limited<CallerBody>>;

/// A credential computed afresh for every attempt of a request (an OAuth 1.0a signature, whose
/// nonce the upstream accepts only once), carried in the request's extensions so that every
/// resend below (a refused HTTP/2 stream, a request a closing HTTP/1.1 connection never took)
/// signs again before it goes out.
#[derive(Clone)]
pub(crate) struct Resign(pub Arc<dyn Fn() -> HeaderValue + Send + Sync>);

impl std::fmt::Debug for Resign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resign")
    }
}

/// Puts a fresh `Authorization` on `request` when it carries a [`Resign`]; nothing otherwise.
pub(crate) fn sign_attempt<B>(request: &mut Request<B>) {
    let fresh = request.extensions().get::<Resign>().map(|resign| (resign.0)());
    if let Some(value) = fresh {
        request.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
}

/// Idle keep-alive connections are closed after this: shorter than the 120 s+ most load balancers
/// use, so we close first and never reuse a connection the other side is about to drop.
pub(super) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
