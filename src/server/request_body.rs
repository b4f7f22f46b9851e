//! Phase 3's body: kept in memory when it may have to be sent again and the process-wide replay
//! budget takes it, else streamed under the tenant's cap; either way read through [`CallerBody`],
//! which cuts off a body that sends nothing for `server.body_timeout` and reports a broken one as
//! the caller's fault.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::replay_budget::{ReplayBudget, ReplayPermit};
use crate::error::{ProxyError, RequestBodyError};
use crate::tenant::Tenant;

/// A request body: buffered when it may be sent again, else streamed under the tenant's cap.
pub(super) enum PreparedBody {
    /// `replay`: kept for a 401 replay, so the request keeps its headers and URI for one too;
    /// otherwise only for a stream the upstream refuses (see [`resendable`]). The bytes hold their
    /// share of the replay budget until the last copy of them drops.
    Buffered { bytes: Bytes, replay: bool },
    /// `fate`: where the body's failure is noted for an upstream that may speak HTTP/2 (see
    /// [`BodyFate`]); `None` where hyper reports it itself.
    Streamed {
        body: Limited<CallerBody>,
        fate: Option<Arc<BodyFate>>,
    },
}

/// How a streamed body failed, noted by [`CallerBody`] for the pipeline: hyper's HTTP/2 client
/// resets the upstream stream of a body that fails but reports only the reset (or nothing, until
/// `request_timeout`), which would blame the upstream. Allocated only for bodies that stream to
/// an upstream that may speak HTTP/2.
#[derive(Debug)]
pub(super) struct BodyFate {
    /// 0 while nothing failed, then [`BROKEN`] or [`STALLED`].
    failure: AtomicU8,
    timeout: Duration,
}

const BROKEN: u8 = 1;
const STALLED: u8 = 2;

impl BodyFate {
    fn note(&self, error: RequestBodyError) {
        let code = match error {
            RequestBodyError::Broken => BROKEN,
            RequestBodyError::Stalled(_) => STALLED,
        };
        self.failure.store(code, Relaxed);
    }

    /// `error`, or the caller's fault instead when the body failed first: an upstream failure
    /// after a body failure is what the body failure caused.
    pub(super) fn blame(&self, error: ProxyError) -> ProxyError {
        let upstream = matches!(
            error,
            ProxyError::UpstreamUnreachable(_) | ProxyError::UpstreamTimeout(_)
        );
        match self.failure.load(Relaxed) {
            BROKEN if upstream => ProxyError::RequestBody(RequestBodyError::Broken),
            STALLED if upstream => ProxyError::RequestBody(RequestBodyError::Stalled(self.timeout)),
            _ => error,
        }
    }
}

/// What reading a body needs besides the tenant.
pub(super) struct BodyRules<'a> {
    pub(super) budget: &'a Arc<ReplayBudget>,
    /// `server.body_timeout`.
    pub(super) timeout: Duration,
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
    if !replay && (empty || !resendable(tenant, declared)) {
        return Ok(streamed(tenant, body, max_body, empty));
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
        return Ok(streamed(tenant, body, max_body, empty));
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

/// `body` to stream under `max_body`, noting its failure where hyper would not report it.
fn streamed(tenant: &Tenant, mut body: CallerBody, max_body: usize, empty: bool) -> PreparedBody {
    let fate = (!empty && tenant.upstream.resends_refused()).then(|| {
        let fate = Arc::new(BodyFate {
            failure: AtomicU8::new(0),
            timeout: body.timeout,
        });
        body.fate = Some(Arc::clone(&fate));
        fate
    });
    PreparedBody::Streamed {
        body: Limited::new(body, max_body),
        fate,
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

pin_project_lite::pin_project! {
    /// The caller's body as the proxy reads it. It fails with [`RequestBodyError::Stalled`] when
    /// nothing arrives for `timeout` while the proxy waits for it (time the upstream spends not
    /// reading is not the caller's), and with [`RequestBodyError::Broken`] for any error hyper
    /// reports on it (broken chunk framing, a body cut short), whose text is not passed on. A
    /// body streaming upstream that fails makes hyper abort that request: the upstream never sees
    /// it complete.
    #[derive(Debug)]
    pub struct CallerBody<B = Incoming> {
        #[pin]
        body: B,
        timeout: Duration,
        // Set on the first wait only (a body that is already here never needs one), then moved
        // forward, which takes no lock in tokio's timer.
        timer: Option<Pin<Box<Sleep>>>,
        // Whether `timer` runs for the current wait (a frame ends the wait).
        armed: bool,
        // Where a failure is noted for the pipeline, when hyper may not report it.
        fate: Option<Arc<BodyFate>>,
    }
}

impl<B> CallerBody<B> {
    pub(crate) fn new(body: B, timeout: Duration) -> Self {
        Self {
            body,
            timeout,
            timer: None,
            armed: false,
            fate: None,
        }
    }
}

/// `error`, noted in `fate` first.
fn fail(fate: &Option<Arc<BodyFate>>, error: RequestBodyError) -> RequestBodyError {
    if let Some(fate) = fate {
        fate.note(error);
    }
    error
}

impl<B: Body<Data = Bytes>> Body for CallerBody<B> {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(fail(this.fate, RequestBodyError::Broken)))),
            Poll::Ready(frame) => {
                *this.armed = false;
                Poll::Ready(frame.map(|frame| frame.map_err(|_| RequestBodyError::Broken)))
            }
            Poll::Pending => {
                if !*this.armed {
                    *this.armed = true;
                    let deadline = Instant::now() + *this.timeout;
                    match this.timer {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => *this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let timer = this.timer.as_mut().expect("armed above");
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(fail(this.fate, RequestBodyError::Stalled(*this.timeout)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use tokio::sync::mpsc;

    use super::*;
    use crate::metrics::GlobalMetrics;

    /// A body whose frames come from a channel; `Err` frames stand for what hyper reports on
    /// broken framing.
    struct Channel(mpsc::Receiver<Result<Bytes, std::io::Error>>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|next| next.map(|item| item.map(Frame::data)))
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_body_is_cut_off_after_the_timeout_without_bytes_and_every_byte_restarts_it() {
        let (tx, rx) = mpsc::channel(1);
        let mut body = pin!(CallerBody::new(Channel(rx), TIMEOUT));
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(TIMEOUT - Duration::from_secs(1)).await;
            tx.send(Ok(Bytes::from_static(b"x"))).await.expect("the body reads");
            tokio::time::sleep(TIMEOUT * 5).await;
            drop(tx);
        });
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "x", "59 s of silence is allowed");
        let second = body.frame().await.expect("an error, not the end");
        assert_eq!(second.unwrap_err(), RequestBodyError::Stalled(TIMEOUT));
        assert_eq!(
            start.elapsed(),
            TIMEOUT * 2 - Duration::from_secs(1),
            "the timeout runs from the latest byte"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_body_is_the_callers_fault_and_its_error_text_is_not_kept() {
        let (tx, rx) = mpsc::channel(1);
        let mut body = pin!(CallerBody::new(Channel(rx), TIMEOUT));
        tx.send(Err(std::io::Error::other("invalid chunk size line: hyper internals")))
            .await
            .expect("the body reads");
        let error = body.frame().await.expect("an error").unwrap_err();
        assert_eq!(error, RequestBodyError::Broken);
        assert!(!error.to_string().contains("hyper"), "{error}");
        let empty = CallerBody::new(http_body_util::Empty::<Bytes>::new(), TIMEOUT);
        assert!(empty.is_end_stream(), "an empty body stays recognisable as one");
    }

    #[test]
    fn an_upstream_failure_after_the_body_failed_is_the_callers_fault() {
        let fate = BodyFate {
            failure: AtomicU8::new(0),
            timeout: TIMEOUT,
        };
        let reset = || ProxyError::UpstreamUnreachable("stream error: CANCEL".into());
        assert_eq!(fate.blame(reset()).code(), "upstream_unreachable", "nothing failed yet");
        fate.note(RequestBodyError::Stalled(TIMEOUT));
        assert!(matches!(
            fate.blame(reset()),
            ProxyError::RequestBody(RequestBodyError::Stalled(TIMEOUT))
        ));
        let timeout = fate.blame(ProxyError::UpstreamTimeout(TIMEOUT));
        assert_eq!(timeout.status(), http::StatusCode::REQUEST_TIMEOUT);
        let too_large = fate.blame(ProxyError::PayloadTooLarge { limit: 1 });
        assert_eq!(
            too_large.code(),
            "payload_too_large",
            "only upstream failures are reassigned"
        );
        fate.note(RequestBodyError::Broken);
        assert_eq!(fate.blame(reset()).status(), http::StatusCode::BAD_REQUEST);
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
