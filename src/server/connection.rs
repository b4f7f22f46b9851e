//! One inbound connection from accept to close: the cap on open connections, the deadline for a
//! first request, the idle timeout, and the drain at shutdown.
//!
//! hyper enforces `header_read_timeout` on HTTP/1 heads itself, and since its timer runs from the
//! moment a keep-alive connection waits for its next head, that also closes an HTTP/1 connection
//! idle that long. It times nothing before it knows the protocol (the auto builder waits for the
//! HTTP/2 preface without a timer), nor anything on HTTP/2, whose handshake and idle periods are
//! unbounded. So each connection task also keeps a deadline of its own: no request within
//! `header_read_timeout` of accept and the connection is dropped; no request in progress for
//! `idle_timeout` and it is shut down gracefully (HTTP/2 sends GOAWAY). A request in progress,
//! response body included, is never cut by either.

use std::fmt::Display;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::metrics::GlobalMetrics;

/// Accept errors such as EMFILE are retried after a pause instead of spinning.
pub(super) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The timeouts every connection of a listener gets (`[server]`, read once at startup).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_request_head: usize,
}

/// How far above `max_request_head` hyper keeps reading a head: its HTTP/1 read buffer, and the
/// HTTP/2 header list size it advertises (which also bounds the header block h2 buffers before
/// decoding it), are the limit plus this, and every connection may fill them with a head it never
/// finishes. The pipeline refuses anything over the limit itself, with a problem+json 431; the
/// slack lets a head the proxy counts smaller than it arrived (extra spaces around values, the
/// 32 bytes HTTP/2 counts per field, RFC 9113 §6.5.2, for a few hundred fields) still get that
/// answer, and hyper's and h2's own refusal beyond it bounds what a connection holds (README,
/// "Limits").
const HYPER_HEAD_SLACK: usize = 8 * 1024;

/// hyper's builder with its HTTP/1 header timer switched on (it needs a timer to run at all) and
/// its head buffers bounded: HTTP/1 by the read buffer, HTTP/2 by the header list size it
/// advertises (which h2 enforces by refusing the stream).
pub(super) fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_request_head + HYPER_HEAD_SLACK);
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_request_head + HYPER_HEAD_SLACK).unwrap_or(u32::MAX));
    builder
}

/// The slots of one pool of connections: the proxy listeners share one, the admin listener has its
/// own, so a full proxy never locks probes and scrapes out.
#[derive(Debug)]
pub(super) struct Gate {
    slots: Arc<Semaphore>,
    /// Where the proxy pool's figures go; `None` for the admin pool, which has none.
    metrics: Option<Arc<GlobalMetrics>>,
}

impl Gate {
    pub(super) fn new(max: usize, metrics: Option<Arc<GlobalMetrics>>) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            metrics,
        })
    }

    /// A slot for a new connection, held until its task ends; `None` (and counted) when every slot
    /// is taken.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            if let Some(metrics) = &self.metrics {
                metrics.connections_refused.fetch_add(1, Relaxed);
            }
            return None;
        };
        if let Some(metrics) = &self.metrics {
            metrics.connections_open.fetch_add(1, Relaxed);
        }
        Some(Slot {
            _permit: permit,
            gate: Arc::clone(self),
        })
    }
}

/// One open connection's place in its pool; dropping it frees the place.
#[derive(Debug)]
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(metrics) = &self.gate.metrics {
            metrics.connections_open.fetch_sub(1, Relaxed);
        }
    }
}

/// What the connection's requests have done, read by its deadline.
#[derive(Debug)]
pub(super) struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    started: AtomicU64,
    /// When the latest request ended, in milliseconds since `opened`. Nothing is woken when a
    /// request ends (a `Notify` with a waiter takes a lock on every request); the deadline looks
    /// again at least once per `idle_timeout` instead (see `verdict`).
    last_end_ms: AtomicU64,
}

/// What the deadline found when it fired.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing to do yet; look again then.
    Recheck(Instant),
    /// No request arrived within `header_read_timeout` of accept.
    NoRequest,
    /// No request in progress for `idle_timeout`.
    Idle,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
        })
    }

    /// Marks a request as in progress until the returned guard (moved into its response body)
    /// drops.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, SeqCst);
        self.started.fetch_add(1, SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Whether a request is in progress, response body included.
    pub(super) fn busy(&self) -> bool {
        self.in_flight.load(SeqCst) > 0
    }

    /// Whether a request was ever started: a connection that never completed a head owes nobody
    /// an answer.
    pub(super) fn served(&self) -> bool {
        self.started.load(SeqCst) > 0
    }

    /// Since when the connection has been quiet: its accept, or the end of its latest request.
    pub(super) fn quiet_since(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_end_ms.load(SeqCst))
    }

    fn verdict(&self, limits: Limits, now: Instant) -> Verdict {
        if self.in_flight.load(SeqCst) > 0 {
            // Requests take as long as they take (`request_timeout` bounds them); look again once
            // the connection could have been idle long enough.
            return Verdict::Recheck(now + limits.idle_timeout);
        }
        let (due, expired) = if self.started.load(SeqCst) == 0 {
            (self.opened + limits.header_read_timeout, Verdict::NoRequest)
        } else {
            let idle_from = self.opened + Duration::from_millis(self.last_end_ms.load(SeqCst));
            (idle_from + limits.idle_timeout, Verdict::Idle)
        };
        if now >= due {
            return expired;
        }
        // Nothing wakes the connection task when a request starts or ends, so it looks at least
        // once per idle period: a request that came and went meanwhile is then seen in time.
        Verdict::Recheck(due.min(now + limits.idle_timeout))
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let elapsed = activity.opened.elapsed().as_millis();
        activity
            .last_end_ms
            .fetch_max(u64::try_from(elapsed).unwrap_or(u64::MAX), SeqCst);
        activity.in_flight.fetch_sub(1, SeqCst);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in progress until hyper has sent it all
    /// (or given up on it) and drops it.
    pub(super) struct Tracked<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

impl<B> Tracked<B> {
    pub(super) fn new(body: B, in_flight: InFlight) -> Self {
        Self { body, in_flight }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Drives `conn` to its end, shutting it down gracefully when `drain` turns true or it idles, and
/// dropping it when it sends no request in time or does not finish closing after idling.
///
/// Every wake-up of the task polls the connection; the deadline and the drain are looked at only
/// when they may have fired (see [`Watch`]), not re-polled on each of a request's wake-ups as a
/// `select!` over the three would.
pub(super) async fn serve<C>(conn: C, activity: Arc<Activity>, limits: Limits, drain: watch::Receiver<bool>)
where
    C: GracefulConnection,
    C::Error: Display,
{
    tokio::pin!(conn);
    // The first look, like every later one, is at most an idle period away (see `verdict`).
    let mut watch = Watch::new(
        activity.opened + limits.header_read_timeout.min(limits.idle_timeout),
        drain,
    );
    let (mut shut, mut closing_idle) = (false, false);
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return Poll::Ready(());
            }
            let shut_down = match std::task::ready!(watch.poll_event(cx)) {
                Event::Drain => true,
                Event::Deadline if closing_idle => {
                    tracing::debug!("an idle connection did not finish closing in time; dropping it");
                    return Poll::Ready(());
                }
                Event::Deadline => match activity.verdict(limits, Instant::now()) {
                    Verdict::Recheck(at) => {
                        watch.rearm(at);
                        false
                    }
                    Verdict::NoRequest => {
                        tracing::debug!("no request within header_read_timeout of accept; closing");
                        return Poll::Ready(());
                    }
                    Verdict::Idle => {
                        // HTTP/2 waits for the client to acknowledge GOAWAY; one that never does
                        // is dropped after another idle period.
                        closing_idle = true;
                        watch.rearm(Instant::now() + limits.idle_timeout);
                        true
                    }
                },
            };
            if shut_down && !std::mem::replace(&mut shut, true) {
                conn.as_mut().graceful_shutdown();
            }
            // Poll the connection again: a shutdown has work for it, and a new deadline is armed.
        }
    })
    .await;
}

/// What [`Watch`] saw.
enum Event {
    /// The servers are draining (or gone without a drain, which is handled the same).
    Drain,
    /// The deadline passed.
    Deadline,
}

/// A connection's deadline and the drain signal, each polled once to register the task's waker
/// and then looked at with one load per wake-up until it fires: the timer keeps the waker it was
/// polled with, and so does the drain's wait.
struct Watch {
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Polled (so registered) since it was last set.
    deadline_armed: bool,
    drained: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// A second receiver of the drain signal, to see cheaply whether it changed.
    probe: watch::Receiver<bool>,
    drain_armed: bool,
    draining: bool,
}

impl Watch {
    fn new(deadline: Instant, mut drain: watch::Receiver<bool>) -> Self {
        let probe = drain.clone();
        Self {
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            deadline_armed: false,
            // An error means the servers are gone without a drain: close as if draining.
            drained: Box::pin(async move {
                let _ = drain.wait_for(|draining| *draining).await;
            }),
            probe,
            drain_armed: false,
            draining: false,
        }
    }

    /// Sets the next deadline; the next [`Self::poll_event`] registers it.
    fn rearm(&mut self, at: Instant) {
        self.deadline.as_mut().reset(at);
        self.deadline_armed = false;
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let drain_may_fire = !self.drain_armed || self.probe.has_changed().unwrap_or(true);
        if !self.draining && drain_may_fire {
            self.drain_armed = true;
            if self.drained.as_mut().poll(cx).is_ready() {
                self.draining = true;
                return Poll::Ready(Event::Drain);
            }
        }
        if !self.deadline_armed || self.deadline.is_elapsed() {
            self.deadline_armed = true;
            if self.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Deadline);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        max_request_head: 64 * 1024,
        idle_timeout: Duration::from_secs(4),
    };

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_given_the_header_timeout_then_the_idle_timeout() {
        let activity = Activity::new();
        let opened = activity.opened;
        let due = opened + LIMITS.header_read_timeout;
        assert_eq!(
            activity.verdict(LIMITS, opened),
            Verdict::Recheck(opened + LIMITS.idle_timeout),
            "looks again within an idle period, before the header timeout"
        );
        let later = opened + LIMITS.idle_timeout * 2;
        assert_eq!(
            activity.verdict(LIMITS, later),
            Verdict::Recheck(due),
            "never past the header timeout"
        );
        assert_eq!(activity.verdict(LIMITS, due), Verdict::NoRequest);

        tokio::time::advance(Duration::from_secs(2)).await;
        let request = activity.begin();
        let now = Instant::now();
        assert_eq!(
            activity.verdict(LIMITS, now + Duration::from_secs(60)),
            Verdict::Recheck(now + Duration::from_secs(60) + LIMITS.idle_timeout),
            "a request in progress is never idle"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(request);
        let ended = Instant::now();
        assert_eq!(
            activity.verdict(LIMITS, ended),
            Verdict::Recheck(ended + LIMITS.idle_timeout)
        );
        assert_eq!(activity.verdict(LIMITS, ended + LIMITS.idle_timeout), Verdict::Idle);
    }

    #[test]
    fn a_full_gate_refuses_and_counts_until_a_slot_frees() {
        let metrics = Arc::new(GlobalMetrics::default());
        let gate = Gate::new(2, Some(Arc::clone(&metrics)));
        let first = gate.admit().expect("a free slot");
        let _second = gate.admit().expect("a free slot");
        assert!(gate.admit().is_none());
        assert_eq!(metrics.connections_refused.load(Relaxed), 1);
        assert_eq!(metrics.connections_open.load(Relaxed), 2);
        drop(first);
        assert_eq!(metrics.connections_open.load(Relaxed), 1);
        assert!(gate.admit().is_some(), "a freed slot is taken again");
    }
}
