//! Bounded HTTP/1 serving for every listener of `serve`: the exporter's and the HTTP-01
//! responder's. Without credentials, a client can only hold a connection slot for a short,
//! configured time, and never more slots than the cap.
//!
//! Owns: the connection cap (when it is full, the connection that has waited longest without
//! completing a request makes room; when every slot is answering a request, a new connection
//! is closed at once), the deadline for a request's head (a new connection's TLS handshake
//! included), the idle deadline of a kept-alive connection, the stall deadline of a response
//! the client does not read, and the size of a request head. Knows no routes, no config file
//! and no metrics.
//!
//! Each connection moves through phases (head, busy, idle, evicted); the deadline of the
//! current phase is a pure function of the phase and the limits, and one task per connection
//! sleeps until it or until the phase changes. hyper's own `header_read_timeout` is not used: it runs from the end of one
//! response to the end of the next head, so it would also be the keep-alive idle limit, and
//! a kept-alive Prometheus connection (idle for a scrape interval) should outlive the few
//! seconds a client gets to send a head.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

/// Default cap on open connections of one listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default time a client has to send a request's head (and finish a TLS handshake).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a kept-alive connection may wait for its next request: above the usual
/// Prometheus scrape intervals (up to a minute), so scrapes reuse their connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest request head accepted (hyper's minimum is 8 KiB; a scrape needs under 1 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most header lines accepted in one request.
const MAX_HEADERS: usize = 64;
/// Connections told to make room may linger this many beyond the cap until their task ends.
const EVICTION_SLACK: usize = 32;
/// How long to wait for an evicted connection to close before looking again.
const DRAIN_WAIT: Duration = Duration::from_millis(100);
/// At most one warning about a full cap (or failing accepts) per this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}

impl Limits {
    /// The defaults: [`DEFAULT_MAX_CONNECTIONS`], [`DEFAULT_HEADER_TIMEOUT`],
    /// [`DEFAULT_IDLE_TIMEOUT`].
    pub const fn new() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// Overrides [`DEFAULT_MAX_CONNECTIONS`] (at least 1).
    pub const fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = if n == 0 { 1 } else { n };
        self
    }

    /// Overrides [`DEFAULT_HEADER_TIMEOUT`]: how long a client may take to send a request's
    /// head, from the connection's opening (TLS handshake included) or from the first byte
    /// of a later request; also how long a response may wait for the client to read it.
    pub const fn with_header_timeout(mut self, d: Duration) -> Self {
        self.header_timeout = d;
        self
    }

    /// Overrides [`DEFAULT_IDLE_TIMEOUT`]: how long a kept-alive connection may wait for
    /// its next request.
    pub const fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// The cap on open connections.
    pub const fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// See [`Self::with_header_timeout`].
    pub const fn header_timeout(&self) -> Duration {
        self.header_timeout
    }

    /// See [`Self::with_idle_timeout`].
    pub const fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

/// Where a connection is, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's head since this instant: a new connection (its TLS
    /// handshake included), or a kept-alive one whose next request has begun to arrive.
    Head(Instant),
    /// Answering a request: the route runs, or its body is being handed to the socket.
    /// Routes bound their own time; a stalled write is bounded by [`Tracked`].
    Busy,
    /// Kept alive, waiting for the next request since this instant.
    Idle(Instant),
    /// Chosen to make room for a new connection: closed at once.
    Evicted,
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// The request head did not arrive within the header timeout.
    HeaderTimeout,
    /// A kept-alive connection sent no request within the idle timeout.
    IdleTimeout,
    /// It made room for a new connection.
    Evicted,
}

impl Closed {
    /// A stable name for logs.
    const fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Evicted => "evicted",
        }
    }
}

/// When a phase ends its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Not by itself (answering a request, or an instant too far to represent).
    Never,
    /// At this instant, for this reason.
    At(Instant, Closed),
    /// At once.
    Now(Closed),
}

impl Phase {
    fn deadline(self, limits: &Limits) -> Deadline {
        let at = |since: Instant, after: Duration, why| {
            since
                .checked_add(after)
                .map_or(Deadline::Never, |at| Deadline::At(at, why))
        };
        match self {
            Self::Head(since) => at(since, limits.header_timeout, Closed::HeaderTimeout),
            Self::Idle(since) => at(since, limits.idle_timeout, Closed::IdleTimeout),
            Self::Busy => Deadline::Never,
            Self::Evicted => Deadline::Now(Closed::Evicted),
        }
    }
}

// === impl Slot ===

/// One connection's shared state: its phase, and a wake-up for its task when it changes.
#[derive(Debug)]
struct Slot {
    phase: Mutex<Phase>,
    /// Whether a request was answered on it (such connections are evicted last).
    served: AtomicBool,
    changed: Notify,
}

impl Slot {
    fn new(now: Instant) -> Self {
        Self {
            phase: Mutex::new(Phase::Head(now)),
            served: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to `next` unless the connection was evicted; wakes the connection's task.
    fn set(&self, next: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if *phase != Phase::Evicted {
            *phase = next(*phase);
        }
        drop(phase);
        // notify_one keeps a permit when the task is not waiting yet, so no change is lost.
        self.changed.notify_one();
    }

    /// Bytes arrived: a kept-alive connection's next request has begun.
    fn bytes_arrived(&self) {
        if matches!(self.phase(), Phase::Idle(_)) {
            self.set(|p| match p {
                Phase::Idle(_) => Phase::Head(Instant::now()),
                other => other,
            });
        }
    }

    /// The order in which connections make room: never-served before served, then the one
    /// waiting longest. `None` for connections answering a request or already evicted.
    fn eviction_rank(&self) -> Option<(bool, Instant)> {
        let served = self.served.load(Ordering::Relaxed);
        match self.phase() {
            Phase::Head(since) | Phase::Idle(since) => Some((served, since)),
            Phase::Busy | Phase::Evicted => None,
        }
    }
}

/// Marks a connection busy while a request is answered; idle again when dropped (after the
/// response body was handed to hyper, or when the request was abandoned).
struct BusyGuard(Arc<Slot>);

impl BusyGuard {
    fn start(slot: Arc<Slot>) -> Self {
        slot.set(|_| Phase::Busy);
        slot.served.store(true, Ordering::Relaxed);
        Self(slot)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(|_| Phase::Idle(Instant::now()));
    }
}

// === impl Table ===

/// The open connections of one listener.
#[derive(Debug)]
struct Table {
    cap: usize,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Notified when a connection gives its slot back.
    released: Notify,
}

/// The answer to a new connection.
enum Admission {
    /// It has a slot.
    Admitted(Admitted),
    /// Every slot is answering a request: close it at once.
    Full,
    /// Connections evicted to make room are still closing: wait for one to finish.
    Draining,
}

/// A connection's place in the table, given back when dropped.
struct Admitted {
    table: Arc<Table>,
    id: u64,
    slot: Arc<Slot>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.table.released.notify_one();
    }
}

impl Table {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            next_id: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
            released: Notify::new(),
        }
    }

    /// A slot for a new connection, making room by evicting when the cap is reached.
    fn admit(self: &Arc<Self>, now: Instant) -> Admission {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let live = slots
            .values()
            .filter(|s| s.phase() != Phase::Evicted)
            .count();
        if live >= self.cap {
            let victim = slots
                .values()
                .filter_map(|s| s.eviction_rank().map(|rank| (rank, s)))
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, s)| s.clone());
            match victim {
                None => return Admission::Full,
                Some(_) if slots.len() >= self.cap + EVICTION_SLACK => {
                    return Admission::Draining;
                }
                Some(victim) => victim.set(|_| Phase::Evicted),
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::new(now));
        slots.insert(id, slot.clone());
        Admission::Admitted(Admitted {
            table: self.clone(),
            id,
            slot,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Says something at most once per [`WARN_EVERY`], with how often it happened meanwhile.
#[derive(Debug, Default)]
struct Throttle {
    last: Mutex<Option<Instant>>,
    count: AtomicU64,
}

impl Throttle {
    /// The number of events since the last time, when it is time to say so again.
    fn due(&self) -> Option<u64> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            return None;
        }
        *last = Some(now);
        self.count.store(0, Ordering::Relaxed);
        Some(n)
    }
}

// === serve ===

/// Serves HTTP/1 on `listener` (HTTPS with `tls`) under `limits`, answering each request with
/// `handler`, until `shutdown` completes. Connections in progress are left to finish on
/// their own, each still under its deadlines.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let table = Arc::new(Table::new(limits.max_connections));
    let full = Throttle::default();
    let failing = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) among others: wait instead of spinning.
                    if let Some(n) = failing.due() {
                        warn!(error = %e, times = n, "accepting connections fails");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = loop {
            match table.admit(Instant::now()) {
                Admission::Admitted(a) => break Some(a),
                Admission::Full => break None,
                // Not accepting more until one closes keeps the descriptors bounded; the
                // kernel's backlog holds new connections meanwhile.
                Admission::Draining => {
                    let _ = tokio::time::timeout(DRAIN_WAIT, table.released.notified()).await;
                }
            }
        };
        let Some(admitted) = admitted else {
            if let Some(n) = full.due() {
                warn!(%peer, max_connections = limits.max_connections, refused = n, "every connection slot is answering a request; closing new connections at once");
            }
            drop(tcp);
            continue;
        };
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let slot = admitted.slot.clone();
            let conn = connection(tcp, peer, acceptor, slot.clone(), limits, handler);
            if let Some(why) = supervise(&slot, &limits, conn).await {
                debug!(%peer, reason = why.as_str(), "connection closed by the server");
            }
            drop(admitted);
        });
    }
}

/// Runs `conn` until it ends (`None`) or its phase's deadline passes (why it was closed).
async fn supervise(slot: &Slot, limits: &Limits, conn: impl Future<Output = ()>) -> Option<Closed> {
    tokio::pin!(conn);
    loop {
        let until = match slot.phase().deadline(limits) {
            Deadline::Now(why) => return Some(why),
            Deadline::At(at, why) if at <= Instant::now() => return Some(why),
            Deadline::At(at, _) => Some(at),
            Deadline::Never => None,
        };
        let sleep = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut conn => return None,
            () = slot.changed.notified() => {}
            () = sleep => {}
        }
    }
}

/// One connection: the TLS handshake when configured, then hyper with the phase tracking.
async fn connection<H, F>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    slot: Arc<Slot>,
    limits: Limits,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = {
        let slot = slot.clone();
        service_fn(move |req: Request<Incoming>| {
            let busy = BusyGuard::start(slot.clone());
            let answer = handler(req);
            async move {
                let rsp = answer.await;
                Ok::<_, Infallible>(rsp.map(|body| TrackedBody { body, _busy: busy }))
            }
        })
    };
    let mut http = http1::Builder::new();
    http.max_buf_size(MAX_HEAD_BYTES).max_headers(MAX_HEADERS);
    let stall = limits.header_timeout;
    let result = match acceptor {
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(tls) => {
                http.serve_connection(TokioIo::new(Tracked::new(tls, slot, stall)), service)
                    .await
            }
            Err(e) => {
                debug!(%peer, error = %e, "TLS handshake with a client failed");
                return;
            }
        },
        None => {
            http.serve_connection(TokioIo::new(Tracked::new(tcp, slot, stall)), service)
                .await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

// === impl TrackedBody ===

/// A response body that keeps its connection [`Phase::Busy`] until hyper drops it.
struct TrackedBody {
    body: Full<Bytes>,
    _busy: BusyGuard,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

// === impl Tracked ===

/// The connection's stream as hyper sees it: reports arriving bytes to the slot, and fails a
/// write that makes no progress for the stall limit (a client that stopped reading).
struct Tracked<S> {
    inner: S,
    slot: Arc<Slot>,
    stall_limit: Duration,
    stall: Option<Pin<Box<Sleep>>>,
}

impl<S> Tracked<S> {
    fn new(inner: S, slot: Arc<Slot>, stall_limit: Duration) -> Self {
        Self {
            inner,
            slot,
            stall_limit,
            stall: None,
        }
    }

    /// Passes a ready write through (and forgets any stall); turns a pending one into an
    /// error once it has been pending for the stall limit.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.stall_limit;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading the response",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.bytes_arrived();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn each_phase_has_its_deadline() {
        let limits = Limits::new()
            .with_header_timeout(Duration::from_secs(3))
            .with_idle_timeout(Duration::from_secs(60));
        let t = Instant::now();
        let table = [
            (
                Phase::Head(t),
                Deadline::At(t + Duration::from_secs(3), Closed::HeaderTimeout),
            ),
            (
                Phase::Idle(t),
                Deadline::At(t + Duration::from_secs(60), Closed::IdleTimeout),
            ),
            (Phase::Busy, Deadline::Never),
            (Phase::Evicted, Deadline::Now(Closed::Evicted)),
        ];
        for (phase, expected) in table {
            assert_eq!(phase.deadline(&limits), expected, "{phase:?}");
        }
        // A deadline past what an Instant can hold never fires instead of overflowing.
        let huge = Limits::new().with_header_timeout(Duration::MAX);
        assert_eq!(Phase::Head(t).deadline(&huge), Deadline::Never);
        assert_eq!(Limits::new().with_max_connections(0).max_connections(), 1);
    }

    #[test]
    fn a_full_table_evicts_the_longest_waiting_and_never_a_busy_connection() {
        let table = Arc::new(Table::new(3));
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        let admit = |now| match table.admit(now) {
            Admission::Admitted(a) => a,
            Admission::Full => panic!("full"),
            Admission::Draining => panic!("draining"),
        };
        let served = admit(at(0));
        let busy = admit(at(1));
        let fresh = admit(at(2));
        // `served` answered a request and is idle again; `busy` is answering one now.
        drop(BusyGuard::start(served.slot.clone()));
        let _answering = BusyGuard::start(busy.slot.clone());
        assert!(matches!(served.slot.phase(), Phase::Idle(_)));

        // Full: the connection that never completed a request makes room first, although
        // the served one has waited longer.
        let newest = admit(at(3));
        assert_eq!(fresh.slot.phase(), Phase::Evicted);
        assert!(matches!(served.slot.phase(), Phase::Idle(_)));
        assert_eq!(
            table.len(),
            4,
            "the evicted one lingers until its task ends"
        );
        drop(fresh);
        assert_eq!(table.len(), 3);

        // Then the never-served newest, then the served one; the busy one never.
        let _a = admit(at(4));
        assert_eq!(newest.slot.phase(), Phase::Evicted);
        drop(newest);
        let b = admit(at(5));
        assert_eq!(_a.slot.phase(), Phase::Evicted);
        drop(_a);
        let _busy_b = BusyGuard::start(b.slot.clone());
        let c = admit(at(6));
        assert_eq!(served.slot.phase(), Phase::Evicted);
        drop(served);
        let _busy_c = BusyGuard::start(c.slot.clone());
        assert_eq!(busy.slot.phase(), Phase::Busy);
        // Every slot is answering a request: a new connection gets none.
        assert!(matches!(table.admit(at(7)), Admission::Full));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn evictions_still_closing_are_bounded() {
        let table = Arc::new(Table::new(1));
        let mut lingering = Vec::new();
        // Each admission evicts the previous connection, whose task has not ended yet.
        for _ in 0..=EVICTION_SLACK {
            match table.admit(Instant::now()) {
                Admission::Admitted(a) => lingering.push(a),
                _ => panic!("room while fewer than the slack are closing"),
            }
        }
        assert!(matches!(table.admit(Instant::now()), Admission::Draining));
        lingering.remove(0);
        assert!(matches!(
            table.admit(Instant::now()),
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn evicted_connections_stay_evicted_and_bytes_start_a_head() {
        let table = Arc::new(Table::new(1));
        let Admission::Admitted(first) = table.admit(Instant::now()) else {
            panic!("an empty table has room");
        };
        drop(BusyGuard::start(first.slot.clone()));
        assert!(matches!(first.slot.phase(), Phase::Idle(_)));
        first.slot.bytes_arrived();
        assert!(matches!(first.slot.phase(), Phase::Head(_)));
        let _second = table.admit(Instant::now());
        assert_eq!(first.slot.phase(), Phase::Evicted);
        // A request that starts on an evicted connection does not save it.
        drop(BusyGuard::start(first.slot.clone()));
        first.slot.bytes_arrived();
        assert_eq!(first.slot.phase(), Phase::Evicted);
    }

    #[tokio::test]
    async fn a_response_the_client_never_reads_fails_after_the_stall_limit() {
        let slot = Arc::new(Slot::new(Instant::now()));
        let (ours, theirs) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(ours, slot.clone(), Duration::from_millis(200));
        // Nobody reads: the write stalls once 64 bytes are buffered, and then fails.
        let stalled =
            tokio::time::timeout(Duration::from_secs(60), tracked.write_all(&[b'x'; 4096]))
                .await
                .expect("the stall limit ends the write, not the test's deadline");
        assert_eq!(stalled.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(theirs);

        // A reader that keeps up lets a write of any size through.
        let (ours, mut theirs2) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(ours, slot.clone(), Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            theirs2.read_to_end(&mut all).await.unwrap();
            all.len()
        });
        tracked.write_all(&[b'y'; 4096]).await.unwrap();
        tracked.shutdown().await.unwrap();
        drop(tracked);
        assert_eq!(reader.await.unwrap(), 4096);

        // Bytes read through the wrapper wake an idle connection into a new head.
        slot.set(|_| Phase::Idle(Instant::now()));
        let (ours, mut peer) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(ours, slot.clone(), Duration::from_secs(1));
        peer.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 3];
        tracked.read_exact(&mut buf).await.unwrap();
        assert!(matches!(slot.phase(), Phase::Head(_)));
    }
}
