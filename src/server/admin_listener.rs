//! The admin listener's connections: why a kubelet's probe is answered whatever other clients hold.
//!
//! A probe opens a new connection, asks once and goes; a pod whose probes go unanswered is
//! restarted. With a fixed cap alone, anyone who can reach the port (in a pod, the whole cluster)
//! fills it with keep-alive connections or half-sent heads, and every new connection, probes
//! included, is turned away. So the admin listener keeps a table of its open connections and:
//!
//! - when more than half of `ADMIN_MAX_CONNECTIONS` are open, answers HTTP/1 requests with
//!   `Connection: close`, so clients stop holding connections idle;
//! - when all are open, makes room for a new connection instead of refusing it: the connection
//!   quiet longest (a stalled head counts from its accept, so half-sent heads go first; one with a
//!   request in progress only if every one has) is evicted. One that never completed a head owes
//!   nobody an answer and is dropped at once; the others are closed gracefully, and dropped if
//!   that takes longer than `EVICT_GRACE`;
//! - bounds every connection's head and idle time far below the proxy's (`ADMIN_HEAD_TIMEOUT`,
//!   `ADMIN_IDLE_TIMEOUT`), since its clients send one request at once and rarely another.
//!
//! Evicted connections keep their descriptor until they end, so descriptors are capped separately
//! at twice the table: a new connection is refused only while `ADMIN_MAX_CONNECTIONS` evicted
//! ones are still closing.
//!
//! The table is a `Vec` behind a `Mutex`, locked once when a connection opens and once when it
//! ends; an answer reads only an atomic count. That is simplest, and costs the proxy nothing: the
//! proxy listeners never touch it.

use std::convert::Infallible;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulConnection;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use super::connection::{self, ACCEPT_ERROR_PAUSE, Activity, Gate, Limits, Tracked};
use crate::admin;
use crate::tenant::Snapshot;

/// Connections the admin listener keeps open: enough for a kubelet and a few scrapers with room
/// to spare, too few to run out of descriptors.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The longest an admin connection may take to send a complete head, from its accept or (HTTP/1)
/// from its previous answer; a probe sends its head as it connects. Shorter if
/// `header_read_timeout` is.
const ADMIN_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest an admin connection stays open with no request in progress (HTTP/1 closes at
/// `ADMIN_HEAD_TIMEOUT` already). Shorter if `idle_timeout` is.
const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an evicted connection that has answered before may take to close gracefully.
const EVICT_GRACE: Duration = Duration::from_secs(1);

/// What the admin accept loop gives each connection.
pub(super) struct Pool {
    table: Arc<Table>,
    /// Descriptors: the table's connections plus evicted ones still closing.
    descriptors: Arc<Gate>,
    limits: Limits,
    drain: watch::Receiver<bool>,
}

impl Pool {
    /// The admin pool, its timeouts the shorter of the admin bounds and `server` limits.
    pub(super) fn new(server: Limits, drain: watch::Receiver<bool>) -> Self {
        let limits = Limits {
            header_read_timeout: server.header_read_timeout.min(ADMIN_HEAD_TIMEOUT),
            idle_timeout: server.idle_timeout.min(ADMIN_IDLE_TIMEOUT),
            max_request_head: server.max_request_head,
        };
        Self {
            table: Table::new(ADMIN_MAX_CONNECTIONS),
            descriptors: Gate::new(2 * ADMIN_MAX_CONNECTIONS, None),
            limits,
            drain,
        }
    }
}

/// Serves the admin endpoints on `listener` until `stop` turns true.
pub(super) async fn accept_loop(
    listener: TcpListener,
    state: Arc<ArcSwap<Snapshot>>,
    registry: Arc<Registry>,
    pool: Pool,
    mut stop: watch::Receiver<bool>,
) {
    let builder = connection::builder(pool.limits);
    let answers = Answers {
        state,
        registry,
        table: Arc::clone(&pool.table),
    };
    while let Some(stream) = accept_next(&listener, &mut stop).await {
        let Some(slot) = pool.descriptors.admit() else {
            tracing::debug!("admin connections still closing fill the descriptor cap; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let (member, evicted) = pool.table.join(Arc::clone(&activity));
        let (tracker, answers) = (Arc::clone(&activity), answers.clone());
        let service = service_fn(move |request: Request<Incoming>| {
            let in_flight = tracker.begin();
            let response = answers.answer(&request).map(|body| Tracked::new(body, in_flight));
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let (drain, limits) = (pool.drain.clone(), pool.limits);
        tokio::spawn(async move {
            serve(conn, activity, limits, drain, evicted).await;
            drop((member, slot));
        });
    }
}

/// What every admin answer reads.
#[derive(Clone)]
struct Answers {
    state: Arc<ArcSwap<Snapshot>>,
    registry: Arc<Registry>,
    table: Arc<Table>,
}

impl Answers {
    /// The admin answer to `request`, telling an HTTP/1 client to close while the table is busy.
    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let mut response = admin::handle(&self.state.load(), &self.registry, request);
        if self.table.busy() && request.version() <= Version::HTTP_11 {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The next accepted connection, or `None` once `stop` turns true. Accept errors such as EMFILE
/// are retried after a pause instead of spinning.
async fn accept_next(listener: &TcpListener, stop: &mut watch::Receiver<bool>) -> Option<TcpStream> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => return Some(stream),
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            _ = stop.changed() => return None,
        }
    }
}

/// Drives `conn` with the usual deadlines (`connection::serve`), and closes it when the table
/// evicts it: at once if it never completed a head, else gracefully within `EVICT_GRACE`.
async fn serve<C>(
    conn: C,
    activity: Arc<Activity>,
    limits: Limits,
    mut drain: watch::Receiver<bool>,
    evicted: oneshot::Receiver<()>,
) where
    C: GracefulConnection,
    C::Error: Display,
{
    // `connection::serve` closes gracefully when this turns true: at the drain, or an eviction.
    let (close, closing) = watch::channel(false);
    let serving = connection::serve(conn, Arc::clone(&activity), limits, closing);
    tokio::pin!(serving);
    let draining = tokio::select! {
        () = &mut serving => return,
        // An error means the servers are gone without a drain: close as if draining.
        _ = drain.wait_for(|draining| *draining) => true,
        Ok(()) = evicted => false,
    };
    if draining {
        close.send_replace(true);
        return serving.await;
    }
    if !activity.served() {
        tracing::debug!("admin listener full; dropping a connection that sent no request");
        return;
    }
    tracing::debug!("admin listener full; closing the connection quiet longest");
    close.send_replace(true);
    if tokio::time::timeout(EVICT_GRACE, serving).await.is_err() {
        tracing::debug!("an evicted admin connection did not close in time; dropping it");
    }
}

/// The admin listener's open connections (not counting evicted ones still closing).
#[derive(Debug)]
pub(super) struct Table {
    entries: Mutex<Vec<Entry>>,
    /// `entries.len()`, for answers to read without the lock.
    open: AtomicUsize,
    next_id: AtomicU64,
    max: usize,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    activity: Arc<Activity>,
    evict: oneshot::Sender<()>,
}

impl Table {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(Vec::with_capacity(max)),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            max,
        })
    }

    /// Adds a connection, evicting one first if the table is full. Returns its place, which it
    /// keeps until dropped, and the signal that it was evicted.
    fn join(self: &Arc<Self>, activity: Arc<Activity>) -> (Member, oneshot::Receiver<()>) {
        let (evict, evicted) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Relaxed);
        let mut entries = self.lock();
        if entries.len() >= self.max
            && let Some(index) = victim(&entries)
        {
            let _ = entries.swap_remove(index).evict.send(());
        }
        entries.push(Entry { id, activity, evict });
        self.open.store(entries.len(), Relaxed);
        let member = Member {
            table: Arc::clone(self),
            id,
        };
        (member, evicted)
    }

    /// Whether more than half the table is taken: answers then close their HTTP/1 connection.
    fn busy(&self) -> bool {
        self.open.load(Relaxed) > self.max / 2
    }

    fn leave(&self, id: u64) {
        let mut entries = self.lock();
        if let Some(index) = entries.iter().position(|e| e.id == id) {
            entries.swap_remove(index);
            self.open.store(entries.len(), Relaxed);
        }
    }

    /// The entries; a panic elsewhere while holding the lock leaves them consistent (every change
    /// is one push or one swap_remove), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The entry to evict: no request in progress before one with, then quiet longest.
fn victim(entries: &[Entry]) -> Option<usize> {
    entries
        .iter()
        .enumerate()
        .min_by_key(|(_, e)| (e.activity.busy(), e.activity.quiet_since()))
        .map(|(index, _)| index)
}

/// One connection's place in the table; dropping it leaves (if it was not evicted already).
#[derive(Debug)]
struct Member {
    table: Arc<Table>,
    id: u64,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.table.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Joins a connection, keeping its activity and eviction signal.
    fn join(table: &Arc<Table>) -> (Arc<Activity>, Member, oneshot::Receiver<()>) {
        let activity = Activity::new();
        let (member, evicted) = table.join(Arc::clone(&activity));
        (activity, member, evicted)
    }

    fn was_evicted(evicted: &mut oneshot::Receiver<()>) -> bool {
        evicted.try_recv().is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_evicts_the_connection_quiet_longest_and_never_refuses() {
        let table = Table::new(3);
        let (stalled, _m1, mut stalled_evicted) = join(&table);
        tokio::time::advance(Duration::from_millis(100)).await;
        let (answered, _m2, mut answered_evicted) = join(&table);
        let (busy, _m3, mut busy_evicted) = join(&table);
        drop(answered.begin());
        let _in_progress = busy.begin();
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!stalled.served() && answered.served());

        let (_, _m4, _) = join(&table);
        assert!(
            was_evicted(&mut stalled_evicted),
            "the stalled head, quiet since its accept"
        );
        assert!(!was_evicted(&mut answered_evicted) && !was_evicted(&mut busy_evicted));
        assert_eq!(table.open.load(Relaxed), 3, "the newcomer took its place");

        let (_, _m5, _) = join(&table);
        assert!(was_evicted(&mut answered_evicted), "then the one idle longest");
        let (_, _m6, _) = join(&table);
        assert!(
            !was_evicted(&mut busy_evicted),
            "never one with a request in progress while another has none"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_connection_is_busy_the_oldest_still_makes_room() {
        let table = Table::new(1);
        let (busy, _m1, mut busy_evicted) = join(&table);
        let _in_progress = busy.begin();
        let (_, _m2, _) = join(&table);
        assert!(was_evicted(&mut busy_evicted), "a new connection is never refused");
    }

    #[tokio::test(start_paused = true)]
    async fn a_table_more_than_half_full_is_busy_and_leaving_frees_places() {
        let table = Table::new(4);
        let (_, first, _) = join(&table);
        let (_, _second, _) = join(&table);
        assert!(!table.busy(), "half full");
        let (_, third, _) = join(&table);
        assert!(table.busy(), "more than half");
        drop((first, third));
        assert!(!table.busy());
        assert_eq!(table.open.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_connection_leaving_later_frees_nothing_twice() {
        let table = Table::new(1);
        let (_, first, mut first_evicted) = join(&table);
        let (_, _second, _) = join(&table);
        assert!(was_evicted(&mut first_evicted));
        drop(first);
        assert_eq!(table.open.load(Relaxed), 1, "the newcomer keeps its place");
    }
}
