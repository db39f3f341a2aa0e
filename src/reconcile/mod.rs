//! The reconciler: the only place that ties the issuer, the store and the probe results
//! together. It sleeps until the next renewal is due (or it is notified), orders what the
//! pure [`plan`] says, and reports drift: whether each endpoint serves the latest version of
//! its certificate.
//!
//! Files: the desired state (`spec.rs`); this loop (here); orders and their back-off
//! (`orders.rs`); ARI windows (`ari.rs`); the pure plan (`plan.rs`) and change windows
//! (`window.rs`); renewals planned so every endpoint's window opens twice in time (pure
//! `deadline.rs`, its inputs in `planned.rs`); the deployment queue (`rollout.rs`), staged rollouts
//! of one certificate to many endpoints (pure `staged.rs`, acted on in `staging.rs`) and one
//! deployment (`deploy.rs`, with
//! its `[deploy]` settings in `settings.rs`); requests by hand (`manual.rs`); and every
//! metric family the reconciler exports (`metrics.rs`), apart from the code that decides.

mod agents;
mod ari;
mod deadline;
mod deploy;
mod drain;
mod manual;
mod metrics;
mod orders;
mod outcome;
mod plan;
mod planned;
mod rollout;
mod settings;
mod spec;
mod staged;
mod staging;
pub mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use agents::RollbackWhy;
pub use ari::{ARI_MAX_RECHECK, ARI_MIN_RECHECK, version_ari_id};
pub use deadline::{
    DeployDeadline, EndpointWindow, OPENINGS, ROLLOUT_TIME, deploy_deadline, planned_renewal,
    version_deadline, window_before_expiry,
};
pub use deploy::{CONFIRMATIONS, DeployJob, Deployer};
pub use drain::{DRAIN_MARGIN, drain_limit};
pub use manual::{RequestError, approve, job_of, pick_run_now, run_now_trigger};
pub use orders::{FIRST_RETRY, MAX_RETRY};
pub use outcome::{
    Call, Finished, HookReport, HookResult, Outcome, Redeploy, Rollback, Served, Undone,
    Verification,
};
pub use plan::{CertState, Drift, OrderReason, Plan, drift, plan, point_in_window, renewal_time};
use prometheus_client::registry::Registry;
pub use rollout::{QueueReason, REGRESSION_FIRST_WAIT, REGRESSION_REQUEUES, job, regression_wait};
pub use settings::DeploySettings;
pub use spec::{DEFAULT_RENEW_FRACTION, Desired, EndpointSpec};
pub use staged::{
    BatchSize, Canary, DEFAULT_FAILURE_BUDGET, RolloutPolicy, Slot, Stage, Verdict,
    decide as decide_rollout, stages,
};
pub use staging::{abort_rollout, resume_rollout, rollout_of};
use tokio::sync::{Notify, mpsc};
use tracing::error;

use crate::clock::Clock;
use crate::issuer::{Http01Responder, Issuer};
use crate::schedule::Results;
use crate::shutdown::Shutdown;
use crate::store::{EndpointRow, Store};
use ari::ServedWindow;
use metrics::{OrderMetrics, RemediationCollector};

/// The longest the reconciler sleeps without looking again.
pub const MAX_SLEEP: Duration = Duration::from_secs(300);

/// Orders certificates when due and reports drift.
pub struct Reconciler {
    store: Arc<Store>,
    desired: RwLock<Arc<Desired>>,
    responder: Http01Responder,
    clock: Arc<dyn Clock>,
    results: Arc<Results>,
    notify: Notify,
    retries: Mutex<HashMap<String, (u32, i64)>>,
    /// When to ask the CA again for each version's renewal window (version id -> unix time).
    ari_checks: Mutex<HashMap<i64, i64>>,
    /// The CA's window for the certificate each endpoint serves, by endpoint name.
    served_windows: Mutex<HashMap<String, ServedWindow>>,
    metrics: OrderMetrics,
    deployer: Deployer,
    /// Deployments running in this process, drained at shutdown.
    running: drain::Running,
    /// The last regression journaled per endpoint: (version, re-queues, action).
    regressions: Mutex<HashMap<String, (i64, u32, &'static str)>>,
    /// Orders by hand for the loop ([`Reconciler::order_now`]).
    manual_tx: mpsc::Sender<manual::ManualOrder>,
    /// Their receiving end, taken by [`Reconciler::run`].
    manual_rx: Mutex<Option<mpsc::Receiver<manual::ManualOrder>>>,
    /// What agents' requests need kept in memory (`agents.rs`).
    agents: agents::AgentState,
    /// The endpoints whose waiting deployment a staged rollout holds (`staging.rs`).
    rollout_held: Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").finish_non_exhaustive()
    }
}

use crate::clock::unix_seconds as unix;

impl Reconciler {
    /// A reconciler, with its metrics registered in `reg` (prefix `tlsward`).
    pub fn new(
        store: Arc<Store>,
        desired: Desired,
        responder: Http01Responder,
        results: Arc<Results>,
        clock: Arc<dyn Clock>,
        hooks: Arc<crate::hooks::Hooks>,
        reg: &mut Registry,
    ) -> Arc<Self> {
        let metrics = OrderMetrics::register(reg);
        let deployer = Deployer::new(store.clone(), hooks, clock.clone(), results.clone(), reg);
        deployer.touch(&desired.endpoints);
        let (manual_tx, manual_rx) = mpsc::channel(manual::MANUAL_ORDERS);
        let me = Arc::new(Self {
            store,
            desired: RwLock::new(Arc::new(desired)),
            responder,
            clock,
            results,
            notify: Notify::new(),
            retries: Mutex::new(HashMap::new()),
            ari_checks: Mutex::new(HashMap::new()),
            served_windows: Mutex::new(HashMap::new()),
            metrics,
            deployer,
            running: drain::Running::default(),
            regressions: Mutex::new(HashMap::new()),
            manual_tx,
            manual_rx: Mutex::new(Some(manual_rx)),
            agents: agents::AgentState::default(),
            rollout_held: Mutex::default(),
        });
        let _ = me.agents.me.set(Arc::downgrade(&me));
        me.record_endpoints(&me.desired());
        me.interrupted_deployments();
        reg.register_collector(Box::new(RemediationCollector {
            reconciler: me.clone(),
        }));
        me
    }

    fn record_endpoints(&self, desired: &Desired) {
        let list: Vec<EndpointRow> = desired
            .endpoints
            .iter()
            .map(|e| EndpointRow {
                name: e.name.clone(),
                certificate: e.certificate.clone(),
                target: e.target.clone(),
            })
            .collect();
        if let Err(e) = self.store.set_endpoints(&list, unix(self.clock.as_ref())) {
            error!(error = %e, "cannot record the endpoints in the store");
        }
    }

    /// Replaces what is desired (a config reload) and wakes the loop.
    pub fn update(&self, desired: Desired) {
        self.record_endpoints(&desired);
        self.deployer.touch(&desired.endpoints);
        *self.desired.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(desired);
        self.notify.notify_one();
        self.agents.bump();
    }

    /// What is desired now, shared: every agent's look takes it, so it is not copied.
    fn desired(&self) -> Arc<Desired> {
        Arc::clone(&self.desired.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn states(&self, desired: &Desired) -> Vec<CertState> {
        let retries = self.retries.lock().unwrap_or_else(PoisonError::into_inner);
        desired
            .certificates
            .iter()
            .map(|c| {
                let latest = self.store.latest(&c.name).ok().flatten();
                // No later than every endpoint's window allows (unchanged without windows).
                let renew_at = latest.as_ref().and_then(|v| {
                    let deadline = self.deploy_deadline(desired, &c.name, v);
                    let life = (v.not_before, v.not_after);
                    let since = v.not_before.max(v.issued_at);
                    planned_renewal(v.renew_at, life, since, desired.renew_fraction, &deadline)
                });
                CertState {
                    name: c.name.clone(),
                    latest: latest.as_ref().map(|v| (v.not_before, v.not_after)),
                    retry_after: retries.get(&c.name).map(|(_, at)| *at),
                    renew_at,
                }
            })
            .collect()
    }

    /// Runs until `shutdown` fires: plan, order, sleep until the next deadline or an order
    /// by hand. Deployments it started keep running; [`Reconciler::drain`] waits for them.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut issuer: Option<(String, Issuer)> = None;
        let mut manual_rx = self
            .manual_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut manual: Vec<manual::ManualOrder> = Vec::new();
        self.verify_installed();
        loop {
            let desired = self.desired();
            self.connect(&mut issuer, &desired).await;
            let iss = issuer.as_ref().map(|(_, i)| i);
            // Orders by hand first: someone is waiting for them.
            for order in manual.drain(..) {
                self.manual_order(order, iss, &desired).await;
            }
            if let Some(iss) = iss {
                self.refresh_windows(iss, &desired).await;
            }
            self.order_due(iss, &desired).await;
            let sleep = self.next_sleep(&desired);
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(sleep) => {}
                () = self.notify.notified() => {}
                Some(order) = async {
                    match manual_rx.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => manual.push(order),
            }
        }
    }

    /// How long to sleep: until the earliest of the next renewal or retry, the next look at
    /// a renewal window and the next deployment step, at least a second and at most
    /// [`MAX_SLEEP`].
    fn next_sleep(self: &Arc<Self>, desired: &Desired) -> Duration {
        let now = unix(self.clock.as_ref());
        let planned = plan(&self.states(desired), now, desired.renew_fraction);
        let next_ari = self
            .ari_checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .min()
            .copied();
        let next_deploy = self.deployments(desired);
        let next = [planned.next, next_ari, next_deploy]
            .into_iter()
            .flatten()
            .min();
        next.map(|t| Duration::from_secs(t.saturating_sub(now).max(1) as u64))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP)
    }

    /// The drift of every endpoint, from the latest probe of its target.
    pub fn drifts(&self) -> Vec<(EndpointSpec, Drift)> {
        let desired = self.desired();
        let served: HashMap<Arc<str>, Vec<Option<String>>> = self.results.with(|map| {
            let mut out: HashMap<Arc<str>, Vec<Option<String>>> = HashMap::new();
            for state in map.values() {
                let entry = out.entry(state.spec.name.clone()).or_default();
                entry.extend(
                    state
                        .last
                        .iter()
                        .map(|o| o.leaf.as_ref().map(|c| c.sha256_hex())),
                );
            }
            out
        });
        desired
            .endpoints
            .iter()
            .map(|e| {
                let versions: Vec<String> = self
                    .store
                    .versions(&e.certificate)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v.sha256)
                    .collect();
                let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
                let d = match served.get(e.target.as_str()) {
                    None => Drift::Missing,
                    Some(list) if list.is_empty() => Drift::Missing,
                    // With several addresses, the worst one counts.
                    Some(list) => list
                        .iter()
                        .map(|s| drift(s.as_deref(), &refs))
                        .max_by_key(|d| match d {
                            Drift::InSync => 0,
                            Drift::Missing => 1,
                            Drift::Stale => 2,
                            Drift::Foreign => 3,
                        })
                        .unwrap_or(Drift::Missing),
                };
                (e.clone(), d)
            })
            .collect()
    }
}
