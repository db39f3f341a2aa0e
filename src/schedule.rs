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

pub use results::{
    Cert, Checks, HISTORY_FAILED, HISTORY_OK, HistoryEntry, Interner, Observation, Results,
    TargetState, unix_time,
};
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

/// A target's identity: (name, profile).
pub type TargetKey = (Arc<str>, Arc<str>);

/// One target to probe on a schedule: plain data the config builds.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// The `target` label: `host:port` as configured.
    pub name: Arc<str>,
    /// The profile name (the `profile` label), one allocation shared by the profile's targets.
    pub profile: Arc<str>,
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
    /// The identity of a target across reloads: its name and profile, shared with the spec
    /// (a key costs two pointers, not two more strings per target).
    pub fn key(&self) -> TargetKey {
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
        // Fine enough below a second for the p99 a fleet is held to, and up to five minutes
        // for a schedule that has fallen far behind.
        let lag = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ]);
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
    pub fn apply<S: Into<Arc<TargetSpec>>>(
        &self,
        specs: impl IntoIterator<Item = S>,
        concurrency: usize,
        first: FirstRound,
    ) {
        let specs: Vec<Arc<TargetSpec>> = specs.into_iter().map(Into::into).collect();
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
            match standing.remove(&(&*spec.name, &*spec.profile)) {
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
    // A panic in this probe is this round's `internal_error` report (`Prober::round`).
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::cert::TrustStore;
    use crate::clock::SystemClock;
    use crate::probe::Module;

    /// Loopback listeners that accept and never answer (a probe of one lasts its timeout),
    /// each recording when, on tokio's clock, it accepted.
    struct Hanging {
        addrs: Vec<SocketAddr>,
        accepts: Arc<Mutex<Vec<Vec<Instant>>>>,
    }

    impl Hanging {
        async fn start(n: usize) -> Self {
            let accepts = Arc::new(Mutex::new(vec![Vec::new(); n]));
            let mut addrs = Vec::new();
            for i in 0..n {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addrs.push(listener.local_addr().unwrap());
                let accepts = accepts.clone();
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    while let Ok((conn, _)) = listener.accept().await {
                        accepts.lock().unwrap()[i].push(Instant::now());
                        held.push(conn);
                    }
                });
            }
            Self { addrs, accepts }
        }

        fn accepts(&self) -> Vec<Vec<Instant>> {
            self.accepts.lock().unwrap().clone()
        }

        /// A target on each listener.
        fn specs(&self, interval: Duration, timeout: Duration) -> Vec<TargetSpec> {
            let mut module = Module::new(Arc::new(TrustStore::empty()));
            module.timeout = timeout;
            let prober = Arc::new(Prober::new(module));
            self.addrs
                .iter()
                .map(|addr| {
                    let name = format!("t{}.test:443", addr.port());
                    let mut target: Target = name.parse().unwrap();
                    target.connect_to = vec![*addr];
                    TargetSpec {
                        name: name.into(),
                        profile: "test".into(),
                        target,
                        interval,
                        prober: prober.clone(),
                        labels: vec![],
                        all_addresses: false,
                    }
                })
                .collect()
        }
    }

    fn scheduler(shutdown: Shutdown) -> (Scheduler, Arc<Results>) {
        let results = Arc::new(Results::default());
        let mut reg = Registry::default();
        let metrics = ScheduleMetrics::register(&mut reg);
        let s = Scheduler::new(results.clone(), metrics, Arc::new(SystemClock), shutdown);
        (s, results)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_target_is_probed_again_only_after_its_round_finished() {
        let servers = Hanging::start(1).await;
        let (s, results) = scheduler(Shutdown::new());
        // Due every second, each probe lasting 4 s: with the limit far off, only the
        // target's own round holds its next probe back.
        s.apply(servers.specs(SECOND, 4 * SECOND), 8, FirstRound::Now);
        tokio::time::sleep(40 * SECOND).await;
        s.stop();
        let accepts = servers.accepts().remove(0);
        assert!(accepts.len() >= 5, "{} probes", accepts.len());
        for pair in accepts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= 4 * SECOND, "probes {gap:?} apart overlap");
        }
        assert!(results.all_probed());
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_limit_holds_across_targets() {
        let servers = Hanging::start(6).await;
        let (s, _) = scheduler(Shutdown::new());
        s.apply(servers.specs(SECOND, 4 * SECOND), 2, FirstRound::Now);
        tokio::time::sleep(40 * SECOND).await;
        s.stop();
        let mut all: Vec<Instant> = servers.accepts().concat();
        all.sort();
        // Two probes at a time, each 4 s long: about 20 in 40 s, and never a third
        // starting while two are in flight.
        assert!(all.len() >= 16, "{} probes", all.len());
        for w in all.windows(3) {
            assert!(w[2] - w[0] >= 2 * SECOND, "three probes at once: {w:?}");
        }
        assert!(
            servers.accepts().iter().all(|a| a.len() >= 2),
            "every target gets its turn"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_round_is_spread_over_the_interval_or_due_at_once() {
        let spread = Hanging::start(40).await;
        let now = Hanging::start(40).await;
        let (a, _) = scheduler(Shutdown::new());
        let (b, _) = scheduler(Shutdown::new());
        let start = Instant::now();
        let interval = 100 * SECOND;
        a.apply(spread.specs(interval, SECOND), 100, FirstRound::Spread);
        b.apply(now.specs(interval, SECOND), 100, FirstRound::Now);
        tokio::time::sleep(interval).await;
        a.stop();
        b.stop();
        let firsts = |h: &Hanging| -> Vec<Duration> {
            h.accepts()
                .iter()
                .map(|a| *a.first().expect("probed in its first interval") - start)
                .collect()
        };
        let spread = firsts(&spread);
        assert!(spread.iter().all(|d| *d < interval), "{spread:?}");
        // Uniform over 100 s: all 40 within the first 20 s has odds of 0.2^40.
        assert!(spread.iter().any(|d| *d > 20 * SECOND), "{spread:?}");
        let now = firsts(&now);
        assert!(now.iter().all(|d| *d < SECOND), "{now:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn each_target_keeps_its_interval_with_up_to_5_percent_jitter() {
        let servers = Hanging::start(2).await;
        let (s, _) = scheduler(Shutdown::new());
        let mut specs = servers.specs(10 * SECOND, SECOND);
        specs[1].interval = 3 * SECOND;
        s.apply(specs, 8, FirstRound::Now);
        tokio::time::sleep(100 * SECOND).await;
        s.stop();
        for (accepts, interval) in servers.accepts().iter().zip([10 * SECOND, 3 * SECOND]) {
            assert!(accepts.len() >= 9, "{} probes", accepts.len());
            for pair in accepts.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(
                    gap >= interval && gap <= interval + interval / 20,
                    "{gap:?} apart on an interval of {interval:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn apply_keeps_due_times_and_schedules_new_targets() {
        let servers = Hanging::start(3).await;
        let (s, results) = scheduler(Shutdown::new());
        let specs = servers.specs(100 * SECOND, SECOND);
        let start = Instant::now();
        s.apply(vec![specs[0].clone(), specs[1].clone()], 8, FirstRound::Now);
        tokio::time::sleep(10 * SECOND).await;
        // Target 0 kept, 1 removed, 2 new.
        s.apply(vec![specs[0].clone(), specs[2].clone()], 8, FirstRound::Now);
        tokio::time::sleep(50 * SECOND).await;
        s.stop();
        let accepts = servers.accepts();
        assert_eq!(
            accepts[0].len(),
            1,
            "a kept target is not probed again on apply"
        );
        assert_eq!(accepts[1].len(), 1, "a removed target is not probed again");
        assert_eq!(accepts[2].len(), 1);
        assert!(accepts[2][0] - start >= 10 * SECOND);
        assert!(results.all_probed(), "the kept target keeps its results");
        assert_eq!(results.snapshot().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_the_probes_in_flight() {
        let servers = Hanging::start(1).await;
        let shutdown = Shutdown::new();
        let (s, results) = scheduler(shutdown.clone());
        s.apply(servers.specs(SECOND, 60 * SECOND), 8, FirstRound::Now);
        tokio::time::sleep(SECOND).await;
        assert_eq!(servers.accepts()[0].len(), 1, "the probe is in flight");
        shutdown.trigger();
        tokio::time::sleep(120 * SECOND).await;
        // Not cancelled, it would have timed out after 60 s with a report, and the target
        // would be probed again.
        assert!(!results.all_probed());
        assert_eq!(servers.accepts()[0].len(), 1);
    }
}
