//! The in-memory results of scheduled probing: per target its last round and a short
//! history, read by the exporter, the reconciler and the API.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use super::TargetSpec;
use crate::cert::Status;
use crate::probe::ProbeReport;

/// Successes kept per target in the history.
pub const HISTORY_OK: usize = 10;
/// Failures kept per target in the history: longer than successes, as they are what an
/// operator comes looking for.
pub const HISTORY_FAILED: usize = 50;

/// One entry of a target's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// When the probe finished.
    pub at: SystemTime,
    /// Its status.
    pub status: Status,
    /// Its reason label.
    pub reason: Option<&'static str>,
    /// The address probed.
    pub address: Option<std::net::SocketAddr>,
    /// The served leaf's fingerprint, when one was seen.
    pub sha256: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

/// The latest results of one target.
#[derive(Debug, Clone)]
pub struct TargetState {
    /// The target as configured.
    pub spec: Arc<TargetSpec>,
    /// The last round's reports (one per address with `all_addresses`).
    pub last: Vec<ProbeReport>,
    /// When the last round finished.
    pub last_at: Option<SystemTime>,
    /// Recent results, newest last; failures are kept longer than successes.
    pub history: VecDeque<HistoryEntry>,
}

impl TargetState {
    fn record(&mut self, reports: Vec<ProbeReport>, at: SystemTime) {
        for r in &reports {
            self.history.push_back(HistoryEntry {
                at,
                status: r.status(),
                reason: r.reason(),
                address: r.address,
                sha256: r.outcome.as_ref().ok().map(|f| f.leaf.sha256.clone()),
                duration: r.duration,
            });
        }
        let ok = |e: &HistoryEntry| e.status == Status::Ok;
        while self.history.iter().filter(|e| ok(e)).count() > HISTORY_OK {
            let pos = self.history.iter().position(ok).expect("counted");
            self.history.remove(pos);
        }
        while self.history.iter().filter(|e| !ok(e)).count() > HISTORY_FAILED {
            let pos = self.history.iter().position(|e| !ok(e)).expect("counted");
            self.history.remove(pos);
        }
        self.last = reports;
        self.last_at = Some(at);
    }
}

/// The latest state of every scheduled target, keyed by (target, profile).
#[derive(Debug, Default)]
pub struct Results {
    inner: RwLock<BTreeMap<(String, String), TargetState>>,
}

impl Results {
    /// A snapshot of every target's state, in key order.
    pub fn snapshot(&self) -> Vec<TargetState> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Runs `f` over the states without cloning them.
    pub fn with<R>(&self, f: impl FnOnce(&BTreeMap<(String, String), TargetState>) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether every target has been probed at least once.
    pub fn all_probed(&self) -> bool {
        self.with(|m| m.values().all(|s| s.last_at.is_some()))
    }

    /// Records a round of reports for `key` (the scheduler's, or a deployment's verification).
    pub fn update(&self, key: &(String, String), reports: Vec<ProbeReport>, at: SystemTime) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = map.get_mut(key) {
            state.record(reports, at);
        }
    }

    /// Keeps the states of targets still configured, adds new ones, drops the rest.
    pub(super) fn replace(&self, specs: &[Arc<TargetSpec>]) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = BTreeMap::new();
        for spec in specs {
            let key = spec.key();
            let state = match map.remove(&key) {
                Some(mut s) => {
                    s.spec = spec.clone();
                    s
                }
                None => TargetState {
                    spec: spec.clone(),
                    last: Vec::new(),
                    last_at: None,
                    history: VecDeque::new(),
                },
            };
            next.insert(key, state);
        }
        *map = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Prober;

    fn entry(status: Status) -> HistoryEntry {
        HistoryEntry {
            at: SystemTime::UNIX_EPOCH,
            status,
            reason: None,
            address: None,
            sha256: None,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn history_keeps_failures_longer_than_successes() {
        let mut h: VecDeque<HistoryEntry> = VecDeque::new();
        for i in 0..200 {
            h.push_back(entry(if i % 4 == 0 {
                Status::Critical
            } else {
                Status::Ok
            }));
        }
        let mut state = TargetState {
            spec: Arc::new(TargetSpec {
                name: "a:443".into(),
                profile: "https".into(),
                target: "a:443".parse().unwrap(),
                interval: Duration::from_secs(1),
                prober: Arc::new(Prober::new(crate::probe::Module::new(Arc::new(
                    crate::cert::TrustStore::empty(),
                )))),
                labels: vec![],
                all_addresses: false,
            }),
            last: vec![],
            last_at: None,
            history: h,
        };
        state.record(vec![], SystemTime::UNIX_EPOCH);
        let ok = state
            .history
            .iter()
            .filter(|e| e.status == Status::Ok)
            .count();
        let failed = state.history.len() - ok;
        assert_eq!((ok, failed), (HISTORY_OK, HISTORY_FAILED));
    }
}
