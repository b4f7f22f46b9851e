//! The transport of a new h2 connection, telling when the upstream's SETTINGS have been applied,
//! so that the requests waiting for the connection go out under its SETTINGS_MAX_CONCURRENT_STREAMS
//! rather than the 100 streams hyper assumes before it knows.
//!
//! Without it, the requests that waited for a fresh connection all open streams before the
//! upstream's SETTINGS arrive; an upstream that allows fewer refuses the rest (RST_STREAM
//! `REFUSED_STREAM`), and each refusal retires the connection it just opened.
//!
//! The signal: the upstream's first bytes are its SETTINGS (RFC 9113 §3.4), and h2 applies
//! them when it queues their acknowledgement, which it writes afterwards. So the first write
//! after the first read comes after the SETTINGS were applied. Nothing else is written meanwhile
//! because the waiting requests are held back until then.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::super::tls::Stream;

const WAITING: u8 = 0;
const HEARD: u8 = 1;
const SETTLED: u8 = 2;

/// Whether the upstream's SETTINGS are in, shared by the transport and the request that opened
/// the connection.
#[derive(Debug, Default)]
pub(super) struct Settled {
    state: AtomicU8,
    notify: Notify,
}

impl Settled {
    /// Marks the SETTINGS as applied (or the connection as ended: nothing more to wait for).
    pub(super) fn settle(&self) {
        if self.state.swap(SETTLED, Ordering::AcqRel) != SETTLED {
            // Stores a permit if the waiter has not started waiting yet.
            self.notify.notify_one();
        }
    }

    /// Waits until [`Self::settle`], at most `limit`; whether it came.
    pub(super) async fn wait(&self, limit: Duration) -> bool {
        if self.state.load(Ordering::Acquire) == SETTLED {
            return true;
        }
        tokio::time::timeout(limit, self.notify.notified()).await.is_ok()
    }

    fn heard(&self) {
        if self.state.load(Ordering::Relaxed) == WAITING {
            let _ = (self.state).compare_exchange(WAITING, HEARD, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn writing(&self) {
        if self.state.load(Ordering::Relaxed) == HEARD {
            self.settle();
        }
    }
}

/// A [`Stream`] that reports to [`Settled`]; past the first exchange it costs an atomic load per
/// read and per write.
pub(super) struct Settling {
    stream: Stream,
    settled: Arc<Settled>,
}

impl Settling {
    pub(super) fn new(stream: Stream) -> (Self, Arc<Settled>) {
        let settled = Arc::new(Settled::default());
        let settling = Self {
            stream,
            settled: Arc::clone(&settled),
        };
        (settling, settled)
    }
}

impl AsyncRead for Settling {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.settled.heard();
        }
        polled
    }
}

impl AsyncWrite for Settling {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.settled.writing();
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.settled.writing();
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn settles_at_the_first_write_after_the_first_read() {
        let settled = Settled::default();
        settled.writing();
        assert!(
            !settled.wait(Duration::from_millis(10)).await,
            "a write before any read"
        );
        settled.heard();
        assert!(!settled.wait(Duration::from_millis(10)).await, "heard, not yet written");
        settled.writing();
        assert!(settled.wait(Duration::from_millis(10)).await);
        assert!(settled.wait(Duration::ZERO).await, "stays settled");
    }
}
