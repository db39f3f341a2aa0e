//! One connection's phase (head, busy, idle, evicted), the deadline each phase sets, and the
//! shared slot through which the connection's task hears of a change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Limits;

/// Where a connection is, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
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
pub(super) enum Closed {
    /// The request head did not arrive within the header timeout.
    HeaderTimeout,
    /// A kept-alive connection sent no request within the idle timeout.
    IdleTimeout,
    /// It made room for a new connection.
    Evicted,
}

impl Closed {
    /// A stable name for logs.
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Evicted => "evicted",
        }
    }
}

/// When a phase ends its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
    /// Not by itself (answering a request, or an instant too far to represent).
    Never,
    /// At this instant, for this reason.
    At(Instant, Closed),
    /// At once.
    Now(Closed),
}

impl Phase {
    pub(super) fn deadline(self, limits: &Limits) -> Deadline {
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
pub(super) struct Slot {
    phase: Mutex<Phase>,
    /// Whether a request was answered on it (such connections are evicted last).
    pub(super) served: AtomicBool,
    pub(super) changed: Notify,
}

impl Slot {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            phase: Mutex::new(Phase::Head(now)),
            served: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    pub(super) fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to `next` unless the connection was evicted; wakes the connection's task.
    pub(super) fn set(&self, next: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if *phase != Phase::Evicted {
            *phase = next(*phase);
        }
        drop(phase);
        // notify_one keeps a permit when the task is not waiting yet, so no change is lost.
        self.changed.notify_one();
    }

    /// Bytes arrived: a kept-alive connection's next request has begun.
    pub(super) fn bytes_arrived(&self) {
        if matches!(self.phase(), Phase::Idle(_)) {
            self.set(|p| match p {
                Phase::Idle(_) => Phase::Head(Instant::now()),
                other => other,
            });
        }
    }

    /// The order in which connections make room: never-served before served, then the one
    /// waiting longest. `None` for connections answering a request or already evicted.
    pub(super) fn eviction_rank(&self) -> Option<(bool, Instant)> {
        let served = self.served.load(Ordering::Relaxed);
        match self.phase() {
            Phase::Head(since) | Phase::Idle(since) => Some((served, since)),
            Phase::Busy | Phase::Evicted => None,
        }
    }
}

/// Marks a connection busy while a request is answered; idle again when dropped (after the
/// response body was handed to hyper, or when the request was abandoned).
pub(super) struct BusyGuard(Arc<Slot>);

impl BusyGuard {
    pub(super) fn start(slot: Arc<Slot>) -> Self {
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
