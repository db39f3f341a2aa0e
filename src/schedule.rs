//! Scheduled probing: each target on its own interval with jitter, all under one global
//! concurrency limit, never two probes of one target at once (each target is one sequential
//! loop). Results and a short history per target live in [`Results`] for the exporter.
//!
//! Owns: the probe loops and the in-memory results, and which targets are this instance's
//! when a fleet is split between several (`shard.rs`). Must not know HTTP, metrics encoding or
//! the config file.

mod results;
mod shard;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::clock::Clock;
use crate::probe::{Prober, Round, Target};
use crate::shutdown::Shutdown;

pub use results::{
    Cert, Checks, HISTORY_FAILED, HISTORY_OK, HistoryEntry, Interner, Observation, Results,
    TargetState, unix_time,
};
pub use shard::Shard;

/// The first probes of a new schedule are spread over at most this long.
pub const FIRST_SPREAD: Duration = Duration::from_secs(5);

/// One target to probe on a schedule: plain data the config builds.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// The `target` label: `host:port` as configured.
    pub name: String,
    /// The profile name (the `profile` label).
    pub profile: String,
    /// What to probe.
    pub target: Target,
    /// Time between probes.
    pub interval: Duration,
    /// The prober with this target's profile, timeout and thresholds.
    pub prober: Arc<Prober>,
    /// Extra labels from the config.
    pub labels: Vec<(String, String)>,
    /// Probe every address of the name separately.
    pub all_addresses: bool,
}

impl TargetSpec {
    /// The identity of a target across reloads.
    pub fn key(&self) -> (String, String) {
        (self.name.clone(), self.profile.clone())
    }
}

/// The `result` label of the probe counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The scheduler's own metrics.
#[derive(Debug, Clone)]
pub struct ScheduleMetrics {
    probes: Family<ResultLabel, Counter>,
    lag: Histogram,
}

impl ScheduleMetrics {
    /// Registers the families in `reg` (with its prefix).
    pub fn register(reg: &mut Registry) -> Self {
        let probes = Family::<ResultLabel, Counter>::default();
        reg.register(
            "probes",
            "Probes finished, by result (ok, warning, critical, unknown)",
            probes.clone(),
        );
        let lag = Histogram::new([0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0]);
        reg.register_with_unit(
            "scheduler_lag",
            "How late probes start after they are due (waiting for a concurrency slot)",
            prometheus_client::registry::Unit::Seconds,
            lag.clone(),
        );
        Self { probes, lag }
    }
}

/// Runs the probe loops of the current configuration.
pub struct Scheduler {
    results: Arc<Results>,
    metrics: ScheduleMetrics,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler with no targets yet, whose loops end when `shutdown` fires (a probe in
    /// flight is cancelled: it only reads).
    pub fn new(
        results: Arc<Results>,
        metrics: ScheduleMetrics,
        clock: Arc<dyn Clock>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            results,
            metrics,
            clock,
            shutdown,
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Replaces the running schedule with `targets` under a limit of `concurrency` probes in
    /// flight. In-flight probes of the old schedule are cancelled (a probe only reads); kept
    /// targets keep their results and history. After shutdown, the loops end at once.
    pub fn apply(&self, targets: Vec<TargetSpec>, concurrency: usize) {
        let specs: Vec<Arc<TargetSpec>> = targets.into_iter().map(Arc::new).collect();
        self.results.replace(&specs);
        let limit = Arc::new(Semaphore::new(concurrency));
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.abort_all();
        *tasks = JoinSet::new();
        let n = specs.len();
        for spec in specs {
            let (results, metrics, clock, limit) = (
                self.results.clone(),
                self.metrics.clone(),
                self.clock.clone(),
                limit.clone(),
            );
            let shutdown = self.shutdown.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = shutdown.wait() => {}
                    () = probe_loop(spec, results, metrics, clock, limit) => {}
                }
            });
        }
        info!(targets = n, concurrency, "schedule applied");
    }

    /// Stops every loop at once (as on drop; shutdown ends them too).
    pub fn stop(&self) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort_all();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A random duration in `[0, max)`.
fn random_up_to(max: Duration) -> Duration {
    max.mul_f64(fastrand::f64())
}

async fn probe_loop(
    spec: Arc<TargetSpec>,
    results: Arc<Results>,
    metrics: ScheduleMetrics,
    clock: Arc<dyn Clock>,
    limit: Arc<Semaphore>,
) {
    let key = spec.key();
    let mut due = Instant::now() + random_up_to(spec.interval.min(FIRST_SPREAD));
    loop {
        tokio::time::sleep_until(due).await;
        let Ok(_permit) = limit.acquire().await else {
            return;
        };
        let started = Instant::now();
        metrics
            .lag
            .observe(started.saturating_duration_since(due).as_secs_f64());
        // In a task of its own: a panic in this probe is this round's `internal_error`
        // report, and the loop goes on on its schedule.
        let reports = spec
            .prober
            .clone()
            .round(&spec.target, clock.clone(), Round::of(spec.all_addresses))
            .await;
        drop(_permit);
        for r in &reports {
            metrics
                .probes
                .get_or_create(&ResultLabel {
                    result: r.status().as_str(),
                })
                .inc();
            debug!(target = %spec.name, status = %r.status(), reason = r.reason().unwrap_or("none"), "probed");
        }
        results.update(&key, reports, clock.now());
        // The next probe is one interval after this one was due, with up to 5% jitter so
        // targets that share an interval drift apart; a late probe does not bunch the next.
        due += spec.interval + random_up_to(spec.interval / 20);
        let now = Instant::now();
        if due < now {
            due = now + random_up_to(spec.interval / 20);
        }
    }
}
