//! The connection cap of one listener: who gets a slot, who makes room, and the throttle
//! that keeps the warnings about it rare.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::slot::{Phase, Slot};
use super::{EVICTION_SLACK, WARN_EVERY};

// === impl Table ===

/// The open connections of one listener.
#[derive(Debug)]
pub(super) struct Table {
    cap: usize,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Notified when a connection gives its slot back.
    pub(super) released: Notify,
}

/// The answer to a new connection.
pub(super) enum Admission {
    /// It has a slot.
    Admitted(Admitted),
    /// Every slot is answering a request: close it at once.
    Full,
    /// Connections evicted to make room are still closing: wait for one to finish.
    Draining,
}

/// A connection's place in the table, given back when dropped.
pub(super) struct Admitted {
    table: Arc<Table>,
    id: u64,
    pub(super) slot: Arc<Slot>,
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
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            next_id: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
            released: Notify::new(),
        }
    }

    /// A slot for a new connection, making room by evicting when the cap is reached.
    pub(super) fn admit(self: &Arc<Self>, now: Instant) -> Admission {
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
    pub(super) fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Says something at most once per [`WARN_EVERY`], with how often it happened meanwhile.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    last: Mutex<Option<Instant>>,
    count: AtomicU64,
}

impl Throttle {
    /// The number of events since the last time, when it is time to say so again.
    pub(super) fn due(&self) -> Option<u64> {
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
