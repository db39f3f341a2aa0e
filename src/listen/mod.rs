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
//!
//! This file holds [`Limits`] and [`serve`]; `slot.rs` the phases and their deadlines,
//! `table.rs` the connection cap, `tracked.rs` the body and stream hyper is given.

mod slot;
mod table;
mod tracked;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{debug, warn};

use self::slot::{BusyGuard, Closed, Deadline, Slot};
use self::table::{Admission, Table, Throttle};
use self::tracked::{Tracked, TrackedBody};

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

/// The certificates a TLS client presented (leaf first), in every request's extensions on a
/// TLS listener whose client presented any; absent otherwise. Unverified by `listen`: the
/// `ServerConfig`'s client verifier decides what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificates(pub Vec<rustls_pki_types::CertificateDer<'static>>);

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

// === serve ===

/// Serves HTTP/1 on `listener` (HTTPS with `tls`) under `limits`, answering each request with
/// `handler`, until `shutdown` completes. Connections in progress are left to finish on
/// their own, each still under its deadlines.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
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
async fn connection<H, F, B>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    slot: Arc<Slot>,
    limits: Limits,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = |certs: Option<PeerCertificates>| {
        let slot = slot.clone();
        service_fn(move |mut req: Request<Incoming>| {
            let busy = BusyGuard::start(slot.clone());
            req.extensions_mut().insert(PeerAddr(peer));
            if let Some(certs) = &certs {
                req.extensions_mut().insert(certs.clone());
            }
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
                let certs = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .filter(|c| !c.is_empty())
                    .map(|c| PeerCertificates(c.iter().map(|d| d.clone().into_owned()).collect()));
                let service = service(certs);
                http.serve_connection(
                    TokioIo::new(Tracked::new(tls, slot.clone(), stall)),
                    service,
                )
                .await
            }
            Err(e) => {
                debug!(%peer, error = %e, "TLS handshake with a client failed");
                return;
            }
        },
        None => {
            let service = service(None);
            http.serve_connection(
                TokioIo::new(Tracked::new(tcp, slot.clone(), stall)),
                service,
            )
            .await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests;
