//! Scheduled probing: each target on its own interval with jitter, all under one global
//! concurrency limit, never two probes of one target at once. One dispatcher task keeps every
//! target's next due time in a queue sorted by time and starts each due probe as a task of a
//! set bounded by the limit; a target goes back in the queue only when its round finished.
//! Per target that costs a queue entry and a pointer (a few dozen bytes), not a task and a
//! timer. Results and a short history per target live in [`Results`] for the exporter.
//!
//! Owns: the dispatcher and the in-memory results, and which targets are this instance's
//! when a fleet is split between several (`shard.rs`). Must not know HTTP, metrics encoding or
//! the config file.

mod results;
mod shard;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::clock::Clock;
use crate::probe::{Prober, Round, Target};
use crate::shutdown::Shutdown;

pub use results::{HISTORY_FAILED, HISTORY_OK, HistoryEntry, Results, TargetState};
pub use shard::Shard;

/// When a target's first probe is due (`[server] first_round`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FirstRound {
    /// At a random point within the target's interval (the default): a large fleet's first
    /// round is as even as every later one, instead of queueing for the concurrency limit.
    #[default]
    Spread,
    /// At once: every new target is probed as soon as the concurrency limit lets it.
    Now,
}

impl FirstRound {
    /// Every mode, in the order the config documents them.
    pub const ALL: [Self; 2] = [Self::Spread, Self::Now];

    /// The config word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Spread => "spread",
            Self::Now => "now",
        }
    }

    /// When a new target of `interval` is first due.
    fn due(self, now: Instant, interval: Duration) -> Instant {
        match self {
            Self::Spread => now + random_up_to(interval),
            Self::Now => now,
        }
    }
}

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

/// Runs the probes of the current configuration.
pub struct Scheduler {
    results: Arc<Results>,
    metrics: ScheduleMetrics,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
    dispatcher: Mutex<Option<Running>>,
}

/// The dispatcher task, and how to hand it a new schedule.
struct Running {
    plans: mpsc::UnboundedSender<Plan>,
    task: AbortHandle,
}

/// A schedule for the dispatcher.
struct Plan {
    specs: Vec<Arc<TargetSpec>>,
    concurrency: usize,
    first: FirstRound,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler with no targets yet, whose probes end when `shutdown` fires (a probe in
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
            dispatcher: Mutex::new(None),
        }
    }

    /// Replaces the running schedule with `targets` under a limit of `concurrency` probes in
    /// flight. Kept targets keep their results, their history and their next due time (a
    /// probe of one in flight goes on); new ones are first due as `first` says; the probes in
    /// flight of removed targets are cancelled (a probe only reads). After shutdown, nothing
    /// more is probed.
    pub fn apply(&self, targets: Vec<TargetSpec>, concurrency: usize, first: FirstRound) {
        let specs: Vec<Arc<TargetSpec>> = targets.into_iter().map(Arc::new).collect();
        self.results.replace(&specs);
        let n = specs.len();
        let mut plan = Plan {
            specs,
            concurrency,
            first,
        };
        let mut running = self
            .dispatcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = running.as_ref() {
            match r.plans.send(plan) {
                Ok(()) => {
                    info!(targets = n, concurrency, "schedule applied");
                    return;
                }
                // The dispatcher ended (shutdown): a new one starts, and ends at once if
                // shutdown has fired.
                Err(mpsc::error::SendError(p)) => plan = p,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(plan);
        let dispatcher = Dispatcher {
            results: self.results.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            queue: BinaryHeap::new(),
            specs: Vec::new(),
            flights: HashMap::new(),
            probes: JoinSet::new(),
            limit: 0,
        };
        let task = tokio::spawn(dispatcher.run(rx, self.shutdown.clone())).abort_handle();
        *running = Some(Running { plans: tx, task });
        info!(targets = n, concurrency, "schedule applied");
    }

    /// Stops every probe at once (as on drop; shutdown does too).
    pub fn stop(&self) {
        if let Some(r) = self
            .dispatcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            r.task.abort();
        }
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

/// A probe in flight.
struct Flight {
    /// Its target's place in the current schedule; `None` once the target was removed.
    slot: Option<usize>,
    /// When it was due.
    due: Instant,
    abort: AbortHandle,
}

/// Where a kept target stood in the schedule being replaced.
enum Standing {
    Due(Instant),
    Flying(Id),
}

/// The one task that starts every scheduled probe. It owns the schedule: the specs by slot,
/// a min-queue of (due time, slot) for each target not in flight, and the probes in flight.
struct Dispatcher {
    results: Arc<Results>,
    metrics: ScheduleMetrics,
    clock: Arc<dyn Clock>,
    queue: BinaryHeap<Reverse<(Instant, usize)>>,
    specs: Vec<Arc<TargetSpec>>,
    flights: HashMap<Id, Flight>,
    probes: JoinSet<()>,
    limit: usize,
}

impl Dispatcher {
    async fn run(mut self, mut plans: mpsc::UnboundedReceiver<Plan>, shutdown: Shutdown) {
        let shutdown = shutdown.wait();
        tokio::pin!(shutdown);
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            self.start_due(now);
            let next = if self.flights.len() < self.limit {
                self.queue.peek().map(|Reverse((at, _))| *at)
            } else {
                None
            };
            if let Some(at) = next {
                sleep.as_mut().reset(at);
            }
            // Dropping `self` (shutdown, a stopped scheduler) drops the set, which aborts the
            // probes in flight.
            tokio::select! {
                () = &mut shutdown => return,
                plan = plans.recv() => match plan {
                    Some(plan) => self.replace(plan, Instant::now()),
                    None => return,
                },
                Some(done) = self.probes.join_next_with_id(), if !self.probes.is_empty() => {
                    self.finished(done);
                }
                () = &mut sleep, if next.is_some() => {}
            }
        }
    }

    /// Starts every probe that is due at `now`, as far as the limit allows.
    fn start_due(&mut self, now: Instant) {
        while self.flights.len() < self.limit {
            match self.queue.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => return,
            }
            let Some(Reverse((due, slot))) = self.queue.pop() else {
                return;
            };
            self.metrics
                .lag
                .observe(now.saturating_duration_since(due).as_secs_f64());
            let probe = probe_once(
                self.specs[slot].clone(),
                self.results.clone(),
                self.metrics.clone(),
                self.clock.clone(),
            );
            let abort = self.probes.spawn(probe);
            let flight = Flight {
                slot: Some(slot),
                due,
                abort,
            };
            self.flights.insert(flight.abort.id(), flight);
        }
    }

    /// A probe ended: its target is due again one interval after this probe was due, with
    /// up to 5% jitter so targets that share an interval drift apart; a late probe does not
    /// bunch the next.
    fn finished(&mut self, done: Result<(Id, ()), JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            // A probe's panic is its report already (`Prober::round`); this is a cancelled
            // probe of a removed target, or a panic outside the probe: the target, if still
            // scheduled, is due again all the same.
            Err(e) => e.id(),
        };
        let Some(flight) = self.flights.remove(&id) else {
            return;
        };
        let Some(slot) = flight.slot else {
            return;
        };
        let interval = self.specs[slot].interval;
        let jitter = || random_up_to(interval / 20);
        let now = Instant::now();
        let mut due = flight.due + interval + jitter();
        if due < now {
            due = now + jitter();
        }
        self.queue.push(Reverse((due, slot)));
    }

    /// Takes `plan` as the schedule: a kept target keeps its due time (brought forward to
    /// one new interval from now at most) or its probe in flight; a new one is due as the
    /// plan's `first` says; a removed one's probe in flight is cancelled.
    fn replace(&mut self, plan: Plan, now: Instant) {
        let old = std::mem::replace(&mut self.specs, plan.specs);
        let mut standing: HashMap<(&str, &str), Standing> =
            HashMap::with_capacity(self.queue.len() + self.flights.len());
        for Reverse((at, slot)) in self.queue.drain() {
            let s = &old[slot];
            standing.insert((&s.name, &s.profile), Standing::Due(at));
        }
        for (id, flight) in &mut self.flights {
            if let Some(slot) = flight.slot.take() {
                let s = &old[slot];
                standing.insert((&s.name, &s.profile), Standing::Flying(*id));
            }
        }
        let mut queue = Vec::with_capacity(self.specs.len());
        for (slot, spec) in self.specs.iter().enumerate() {
            match standing.remove(&(spec.name.as_str(), spec.profile.as_str())) {
                Some(Standing::Due(at)) => queue.push(Reverse((at.min(now + spec.interval), slot))),
                Some(Standing::Flying(id)) => {
                    if let Some(f) = self.flights.get_mut(&id) {
                        f.slot = Some(slot);
                    }
                }
                None => queue.push(Reverse((plan.first.due(now, spec.interval), slot))),
            }
        }
        self.queue = BinaryHeap::from(queue);
        for flight in self.flights.values().filter(|f| f.slot.is_none()) {
            flight.abort.abort();
        }
        self.limit = plan.concurrency;
    }
}

/// Probes `spec` for one round and records it.
async fn probe_once(
    spec: Arc<TargetSpec>,
    results: Arc<Results>,
    metrics: ScheduleMetrics,
    clock: Arc<dyn Clock>,
) {
    // In a task of its own: a panic in this probe is this round's `internal_error` report.
    let reports = spec
        .prober
        .clone()
        .round(&spec.target, clock.clone(), Round::of(spec.all_addresses))
        .await;
    for r in &reports {
        metrics
            .probes
            .get_or_create(&ResultLabel {
                result: r.status().as_str(),
            })
            .inc();
        debug!(target = %spec.name, status = %r.status(), reason = r.reason().unwrap_or("none"), "probed");
    }
    results.update(&spec.key(), reports, clock.now());
}
