//! The caller's request body on its way upstream: read through [`CallerBody`], which cuts off a
//! body that sends nothing for `server.body_timeout` and turns any error hyper reports on it into
//! [`RequestBodyError`], the caller's fault. Here, beside the upstream clients, because the
//! upstream's error classification has to recognise it in a failed exchange's causes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// How the caller's request body failed while the proxy read it, to buffer it or to stream it
/// upstream (which then sees its request aborted, never completed). The `detail` is ours: the
/// framing error hyper reports is not echoed. `ProxyError::RequestBody` answers it (src/error.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestBodyError {
    /// No bytes arrived for `server.body_timeout`: 408.
    #[error("the request body sent nothing for {0:?} (server.body_timeout)")]
    Stalled(Duration),
    /// Broken framing (a bad chunk size, say) or a body that ended before its length: 400.
    #[error("the request body is malformed or ended early")]
    Broken,
}

/// How a streamed body fared, noted by [`CallerBody`] for the inbound side: how it failed, since
/// hyper's HTTP/2 client resets the upstream stream of a body that fails but reports only the
/// reset (or nothing, until `request_timeout`), which would blame the upstream; and how many bytes
/// of it were read, for the access log. Allocated only for bodies that stream to an upstream that
/// may speak HTTP/2, or while the access log is written.
#[derive(Debug)]
pub(crate) struct BodyFate {
    /// 0 while nothing failed, then [`BROKEN`] or [`STALLED`].
    failure: AtomicU8,
    timeout: Duration,
    received: AtomicU64,
}

const BROKEN: u8 = 1;
const STALLED: u8 = 2;

impl BodyFate {
    fn note(&self, error: RequestBodyError) {
        let code = match error {
            RequestBodyError::Broken => BROKEN,
            RequestBodyError::Stalled(_) => STALLED,
        };
        self.failure.store(code, Release);
    }

    /// How many bytes of the body were read so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// How the body failed, if it did.
    pub(crate) fn failure(&self) -> Option<RequestBodyError> {
        match self.failure.load(Acquire) {
            BROKEN => Some(RequestBodyError::Broken),
            STALLED => Some(RequestBodyError::Stalled(self.timeout)),
            _ => None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The caller's body as the proxy reads it. It fails with [`RequestBodyError::Stalled`] when
    /// nothing arrives for `timeout` while the proxy waits for it (time the upstream spends not
    /// reading is not the caller's), and with [`RequestBodyError::Broken`] for any error hyper
    /// reports on it (broken chunk framing, a body cut short), whose text is not passed on. A
    /// body streaming upstream that fails makes hyper abort that request: the upstream never sees
    /// it complete.
    #[derive(Debug)]
    pub(crate) struct CallerBody<B = Incoming> {
        #[pin]
        body: B,
        // `server.body_timeout` in milliseconds (at most an hour, so it fits): the body travels
        // through several states of the request future, so every byte of it counts several times.
        timeout_ms: u32,
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
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            timer: None,
            armed: false,
            fate: None,
        }
    }

    /// Notes the body's failure and size in a [`BodyFate`] it returns: for an upstream whose
    /// client may not report the failure (HTTP/2), and for the access log.
    pub(crate) fn noting_failure(&mut self) -> Arc<BodyFate> {
        let fate = Arc::new(BodyFate {
            failure: AtomicU8::new(0),
            timeout: self.timeout(),
            received: AtomicU64::new(0),
        });
        self.fate = Some(Arc::clone(&fate));
        fate
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
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
        let timeout = self.timeout();
        let this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(fail(this.fate, RequestBodyError::Broken)))),
            Poll::Ready(frame) => {
                *this.armed = false;
                if let (Some(fate), Some(Ok(frame))) = (this.fate.as_ref(), frame.as_ref()) {
                    let read = frame.data_ref().map_or(0, Bytes::len);
                    fate.received.fetch_add(read as u64, Relaxed);
                }
                Poll::Ready(frame.map(|frame| frame.map_err(|_| RequestBodyError::Broken)))
            }
            Poll::Pending => {
                if !*this.armed {
                    *this.armed = true;
                    let deadline = Instant::now() + timeout;
                    match this.timer {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => *this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let timer = this.timer.as_mut().expect("armed above");
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(fail(this.fate, RequestBodyError::Stalled(timeout)))))
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

    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    use super::*;

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
}
