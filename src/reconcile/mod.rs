//! The reconciler: the only place that ties the issuer, the store and the probe results
//! together. It sleeps until the next renewal is due (or it is notified), orders what the
//! pure [`plan`] says, and reports drift: whether each endpoint serves the latest version of
//! its certificate.

mod deploy;
mod drain;
mod manual;
mod outcome;
mod plan;
mod rollout;
pub mod window;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use deploy::{CONFIRMATIONS, DeployJob, DeploySettings, Deployer};
pub use drain::{DRAIN_MARGIN, drain_limit};
pub use manual::{RequestError, approve, job_of, pick_run_now, run_now_trigger};
pub use outcome::{
    Call, Finished, HookReport, HookResult, Outcome, Redeploy, Rollback, Served, Undone,
    Verification,
};
pub use plan::{CertState, Drift, OrderReason, Plan, drift, plan, point_in_window, renewal_time};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
pub use rollout::{QueueReason, REGRESSION_FIRST_WAIT, REGRESSION_REQUEUES, job, regression_wait};
use tokio::sync::{Notify, mpsc};
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::escape::LabelValue;
use crate::issuer::{AcmeSettings, CertificateSpec, Http01Responder, Issuer, Resumption};
use crate::schedule::Results;
use crate::shutdown::Shutdown;
use crate::store::{EndpointRow, Store};

/// Renew when a third of the lifetime is left, unless configured otherwise.
pub const DEFAULT_RENEW_FRACTION: f64 = 1.0 / 3.0;
/// The longest the reconciler sleeps without looking again.
pub const MAX_SLEEP: Duration = Duration::from_secs(300);
/// The first retry delay after a failed order; it doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest wait between retries of a failing certificate.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

/// The soonest the CA's renewal window is asked for again (its Retry-After may say later).
pub const ARI_MIN_RECHECK: Duration = Duration::from_secs(5);
/// The longest between two looks at a renewal window (RFC 9773 §4.3 suggests polling at
/// least daily; this is more often, as short lifetimes make windows move fast).
pub const ARI_MAX_RECHECK: Duration = Duration::from_secs(6 * 3600);

/// What the CA says about the certificate an endpoint serves.
#[derive(Debug, Clone)]
struct ServedWindow {
    sha256: String,
    window: Option<(i64, i64)>,
    next_check: i64,
}

/// A probe target bound to a managed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Its name (the `endpoint` label).
    pub name: String,
    /// The managed certificate it should serve.
    pub certificate: String,
    /// The probe target (`host:port`, as in a `[[target]]`).
    pub target: String,
    /// The change window deployments to it wait for; `None` deploys at once.
    pub window: Option<window::Window>,
    /// The hook that deploys to it; `None`: tlsward only reports its drift.
    pub hook: Option<String>,
    /// Settings laid over the hook's own for this endpoint.
    pub settings: std::collections::BTreeMap<String, String>,
}

/// What the reconciler works from; replaced on reload.
#[derive(Debug, Clone)]
pub struct Desired {
    /// How to reach the CA.
    pub acme: AcmeSettings,
    /// Renewal fraction.
    pub renew_fraction: f64,
    /// Managed certificates.
    pub certificates: Vec<CertificateSpec>,
    /// Endpoints.
    pub endpoints: Vec<EndpointSpec>,
    /// Hooks by name.
    pub hooks: std::collections::BTreeMap<String, crate::hooks::HookSpec>,
    /// Every scheduled target (a deployment re-probes its endpoint's as monitoring does).
    pub targets: Vec<Arc<crate::schedule::TargetSpec>>,
    /// Verification and the emergency override.
    pub deploy: DeploySettings,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrderLabels {
    result: &'static str,
    reason: &'static str,
}

/// Counters of the automation itself.
#[derive(Debug, Clone)]
struct OrderMetrics {
    orders: Family<OrderLabels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    last_failure: Gauge<f64, AtomicU64>,
}

/// Orders certificates when due and reports drift.
pub struct Reconciler {
    store: Arc<Store>,
    desired: RwLock<Desired>,
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
        let metrics = OrderMetrics {
            orders: Family::default(),
            last_success: Gauge::default(),
            last_failure: Gauge::default(),
        };
        reg.register(
            "acme_orders",
            "ACME orders finished, by result and reason",
            metrics.orders.clone(),
        );
        reg.register(
            "acme_last_success_timestamp_seconds",
            "When an order last succeeded",
            metrics.last_success.clone(),
        );
        reg.register(
            "acme_last_failure_timestamp_seconds",
            "When an order last failed",
            metrics.last_failure.clone(),
        );
        let deployer = Deployer::new(store.clone(), hooks, clock.clone(), results.clone(), reg);
        deployer.touch(&desired.endpoints);
        let (manual_tx, manual_rx) = mpsc::channel(manual::MANUAL_ORDERS);
        let me = Arc::new(Self {
            store,
            desired: RwLock::new(desired),
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
        });
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
        *self.desired.write().unwrap_or_else(PoisonError::into_inner) = desired;
        self.notify.notify_one();
    }

    fn desired(&self) -> Desired {
        self.desired
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn states(&self, desired: &Desired) -> Vec<CertState> {
        let retries = self.retries.lock().unwrap_or_else(PoisonError::into_inner);
        desired
            .certificates
            .iter()
            .map(|c| {
                let latest = self.store.latest(&c.name).ok().flatten();
                CertState {
                    name: c.name.clone(),
                    latest: latest.as_ref().map(|v| (v.not_before, v.not_after)),
                    retry_after: retries.get(&c.name).map(|(_, at)| *at),
                    renew_at: latest.and_then(|v| v.renew_at),
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
        loop {
            let desired = self.desired();
            if !desired.certificates.is_empty()
                && issuer
                    .as_ref()
                    .is_none_or(|(dir, _)| *dir != desired.acme.directory)
            {
                match Issuer::connect(
                    desired.acme.clone(),
                    &self.store,
                    self.responder.clone(),
                    self.clock.as_ref(),
                )
                .await
                {
                    Ok(i) => {
                        // Before anything is ordered: what a crash interrupted.
                        self.resume(&i, &desired).await;
                        issuer = Some((desired.acme.directory.clone(), i));
                    }
                    Err(e) => {
                        error!(directory = %desired.acme.directory, error = %e, "cannot reach the ACME account");
                        issuer = None;
                    }
                }
            }
            // Orders by hand first: someone is waiting for them.
            for order in manual.drain(..) {
                self.manual_order(order, issuer.as_ref().map(|(_, i)| i), &desired)
                    .await;
            }
            if let Some((_, iss)) = &issuer {
                self.refresh_windows(iss, &desired).await;
            }
            let now = unix(self.clock.as_ref());
            let planned = plan(&self.states(&desired), now, desired.renew_fraction);
            for (name, reason) in &planned.orders {
                let Some(spec) = desired.certificates.iter().find(|c| c.name == *name) else {
                    continue;
                };
                let Some((_, iss)) = issuer.as_ref() else {
                    self.failed(name, "client", None);
                    continue;
                };
                // A renewal names the version it replaces, so the CA can relax rate limits
                // and know the old one is going away (RFC 9773 §5).
                let replaces = match reason {
                    OrderReason::Renewal => self
                        .store
                        .latest(name)
                        .ok()
                        .flatten()
                        .and_then(|v| v.ari_id),
                    OrderReason::Missing => None,
                };
                info!(certificate = %name, reason = ?reason, "ordering");
                let _ = self.order(iss, spec, replaces.as_deref()).await;
            }
            let now = unix(self.clock.as_ref());
            let planned = plan(&self.states(&desired), now, desired.renew_fraction);
            let next_ari = self
                .ari_checks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .min()
                .copied();
            let next_deploy = self.deployments(&desired);
            let next = [planned.next, next_ari, next_deploy]
                .into_iter()
                .flatten()
                .min();
            let sleep = next
                .map(|t| Duration::from_secs(t.saturating_sub(now).max(1) as u64))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
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

    /// Orders a version of `spec`, counting the result in `tlsward_acme_orders_total` and
    /// scheduling the retry of a failure.
    async fn order(
        &self,
        issuer: &Issuer,
        spec: &CertificateSpec,
        replaces: Option<&str>,
    ) -> Result<crate::store::Version, crate::issuer::IssueError> {
        let name = &spec.name;
        match issuer
            .issue(spec, &self.store, self.clock.as_ref(), replaces)
            .await
        {
            Ok(v) => {
                self.retries
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(name);
                self.metrics
                    .orders
                    .get_or_create(&OrderLabels {
                        result: "valid",
                        reason: "none",
                    })
                    .inc();
                self.metrics
                    .last_success
                    .set(unix(self.clock.as_ref()) as f64);
                info!(certificate = %name, serial = %v.serial, "stored new version");
                Ok(v)
            }
            Err(e) => {
                warn!(certificate = %name, error = %e, "order failed");
                self.failed(name, e.reason(), e.retry_after());
                Err(e)
            }
        }
    }

    /// Resumes the orders a crash left pending, counting each that ends in
    /// `tlsward_acme_orders_total` (`abandoned` with its reason, for those that cannot
    /// complete).
    async fn resume(&self, issuer: &Issuer, desired: &Desired) {
        let resumed = match issuer
            .resume(&self.store, self.clock.as_ref(), &desired.certificates)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "cannot resume the interrupted orders");
                return;
            }
        };
        for r in resumed {
            let (result, reason) = match &r.outcome {
                Resumption::Stored(_) => ("valid", "none"),
                Resumption::Abandoned(why) => ("abandoned", why.as_str()),
                Resumption::Failed(e) => ("failed", e.reason()),
                Resumption::Kept(_) => continue,
            };
            self.metrics
                .orders
                .get_or_create(&OrderLabels { result, reason })
                .inc();
        }
    }

    /// Asks the CA for the renewal window of each certificate's newest version when due,
    /// and records the point chosen inside it.
    async fn refresh_windows(&self, issuer: &Issuer, desired: &Desired) {
        for spec in &desired.certificates {
            let Some(version) = self.store.latest(&spec.name).ok().flatten() else {
                continue;
            };
            let Some(ari_id) = version.ari_id.clone() else {
                continue;
            };
            let now = unix(self.clock.as_ref());
            let due = self
                .ari_checks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&version.id)
                .copied();
            if due.is_some_and(|t| t > now) {
                continue;
            }
            let next = match issuer.renewal_window(&ari_id).await {
                Ok(Some((start, end, retry))) => {
                    // Never later than the lifetime fraction: a window that ends past the
                    // fallback (or past expiry, as Pebble's may) must not delay renewal.
                    let fallback = renewal_time(
                        version.not_before,
                        version.not_after,
                        desired.renew_fraction,
                    );
                    let at =
                        point_in_window((start, end), now, version.renew_at).min(fallback.max(now));
                    if let Err(e) = self
                        .store
                        .set_renewal_window(&version, (start, end), at, now)
                    {
                        error!(certificate = %spec.name, error = %e, "cannot record the renewal window");
                    }
                    now + retry
                        .as_secs()
                        .clamp(ARI_MIN_RECHECK.as_secs(), ARI_MAX_RECHECK.as_secs())
                        as i64
                }
                // No ARI at this CA: the lifetime fraction decides; look again much later.
                Ok(None) => now + ARI_MAX_RECHECK.as_secs() as i64,
                Err(e) => {
                    warn!(certificate = %spec.name, error = %e, "renewal information unavailable");
                    now + ARI_MIN_RECHECK.as_secs() as i64
                }
            };
            let mut checks = self
                .ari_checks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            checks.retain(|id, _| *id >= version.id || *id < 0);
            checks.insert(version.id, next);
        }
        self.refresh_served_windows(issuer, desired).await;
    }

    /// Asks the CA about the certificate each endpoint actually serves (RFC 9773 applies to
    /// any certificate it issued, deployed or not), so its advice about what is live, a
    /// revocation for instance, is seen even when the endpoint is behind on deployments.
    async fn refresh_served_windows(&self, issuer: &Issuer, desired: &Desired) {
        if !issuer.offers_ari() {
            return;
        }
        let served: HashMap<String, (String, String)> = self.results.with(|map| {
            map.values()
                .filter_map(|state| {
                    let facts = state.last.first()?.outcome.as_ref().ok()?;
                    Some((
                        state.spec.name.clone(),
                        (facts.leaf.sha256.clone(), facts.leaf.ari_id()?),
                    ))
                })
                .collect()
        });
        let now = unix(self.clock.as_ref());
        for e in &desired.endpoints {
            let Some((sha256, id)) = served.get(&e.target) else {
                continue;
            };
            let known = self
                .served_windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&e.name)
                .cloned();
            if known
                .as_ref()
                .is_some_and(|w| w.sha256 == *sha256 && w.next_check > now)
            {
                continue;
            }
            let window = match issuer.renewal_window(id).await {
                Ok(Some((start, end, retry))) => ServedWindow {
                    sha256: sha256.clone(),
                    window: Some((start, end)),
                    next_check: now
                        + retry
                            .as_secs()
                            .clamp(ARI_MIN_RECHECK.as_secs(), ARI_MAX_RECHECK.as_secs())
                            as i64,
                },
                // A certificate from another CA, or unknown to this one.
                Ok(None) | Err(_) => ServedWindow {
                    sha256: sha256.clone(),
                    window: None,
                    next_check: now + ARI_MAX_RECHECK.as_secs() as i64,
                },
            };
            self.served_windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(e.name.clone(), window);
        }
    }

    /// Schedules the next attempt after a failure: exponential back-off, but never sooner
    /// than the CA's `Retry-After`.
    fn failed(&self, name: &str, reason: &'static str, retry_after: Option<Duration>) {
        let now = unix(self.clock.as_ref());
        let mut retries = self.retries.lock().unwrap_or_else(PoisonError::into_inner);
        let attempts = retries.get(name).map_or(0, |(n, _)| *n) + 1;
        let backoff = (FIRST_RETRY * 2u32.saturating_pow(attempts - 1)).min(MAX_RETRY);
        let delay = retry_after.map_or(backoff, |ra| ra.max(backoff));
        retries.insert(name.to_owned(), (attempts, now + delay.as_secs() as i64));
        self.metrics
            .orders
            .get_or_create(&OrderLabels {
                result: "failed",
                reason,
            })
            .inc();
        self.metrics.last_failure.set(now as f64);
    }

    /// The drift of every endpoint, from the latest probe of its target.
    pub fn drifts(&self) -> Vec<(EndpointSpec, Drift)> {
        let desired = self.desired();
        let served: HashMap<String, Vec<Option<String>>> = self.results.with(|map| {
            let mut out: HashMap<String, Vec<Option<String>>> = HashMap::new();
            for state in map.values() {
                let entry = out.entry(state.spec.name.clone()).or_default();
                entry.extend(
                    state
                        .last
                        .iter()
                        .map(|r| r.outcome.as_ref().ok().map(|f| f.leaf.sha256.clone())),
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
                let d = match served.get(&e.target) {
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

/// Certificate and drift series, built at scrape time from the store and the probe results.
#[derive(Debug)]
struct RemediationCollector {
    reconciler: Arc<Reconciler>,
}

impl Collector for RemediationCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let r = &self.reconciler;
        let desired = r.desired();
        let latest: Vec<(String, crate::store::Version)> = desired
            .certificates
            .iter()
            .filter_map(|c| {
                r.store
                    .latest(&c.name)
                    .ok()
                    .flatten()
                    .map(|v| (c.name.clone(), v))
            })
            .collect();
        if !latest.is_empty() {
            let mut fam = enc.encode_descriptor(
                "certificate_not_after_timestamp_seconds",
                "notAfter of the newest issued version of a managed certificate.",
                None,
                MetricType::Gauge,
            )?;
            for (name, v) in &latest {
                ConstGauge::new(v.not_after as f64).encode(
                    fam.encode_family(&[("certificate", LabelValue::from(name.as_str()))])?,
                )?;
            }
            let mut fam = enc.encode_descriptor(
                "certificate_renewal_timestamp_seconds",
                "When the newest version is due for renewal.",
                None,
                MetricType::Gauge,
            )?;
            for (name, v) in &latest {
                let t = v.renew_at.unwrap_or_else(|| {
                    renewal_time(v.not_before, v.not_after, desired.renew_fraction)
                });
                ConstGauge::new(t as f64).encode(
                    fam.encode_family(&[("certificate", LabelValue::from(name.as_str()))])?,
                )?;
            }
        }
        let served: Vec<(String, String, (i64, i64))> = {
            let windows = r
                .served_windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            desired
                .endpoints
                .iter()
                .filter_map(|e| {
                    windows
                        .get(&e.name)
                        .and_then(|w| w.window)
                        .map(|w| (e.name.clone(), e.certificate.clone(), w))
                })
                .collect()
        };
        if !served.is_empty() {
            for (metric, help, pick) in [
                (
                    "endpoint_ari_window_start_timestamp_seconds",
                    "Start of the CA's renewal window for the certificate the endpoint serves.",
                    0,
                ),
                (
                    "endpoint_ari_window_end_timestamp_seconds",
                    "End of the CA's renewal window for the certificate the endpoint serves.",
                    1,
                ),
            ] {
                let mut fam = enc.encode_descriptor(metric, help, None, MetricType::Gauge)?;
                for (endpoint, certificate, (start, end)) in &served {
                    let v = if pick == 0 { *start } else { *end };
                    ConstGauge::new(v as f64).encode(fam.encode_family(&[
                        ("endpoint", LabelValue::from(endpoint.as_str())),
                        ("certificate", LabelValue::from(certificate.as_str())),
                    ])?)?;
                }
            }
        }
        r.encode_deployments(&desired, &mut enc)?;
        let drifts = r.drifts();
        if !drifts.is_empty() {
            let mut fam = enc.encode_descriptor(
                "endpoint_drift",
                "1 when the endpoint does not serve the latest issued version of its certificate.",
                None,
                MetricType::Gauge,
            )?;
            for (e, d) in &drifts {
                let labels = [
                    ("endpoint", LabelValue::from(e.name.as_str())),
                    ("certificate", LabelValue::from(e.certificate.as_str())),
                ];
                ConstGauge::new(i64::from(*d != Drift::InSync))
                    .encode(fam.encode_family(&labels)?)?;
            }
            let mut fam = enc.encode_descriptor(
                "endpoint_drift_reason",
                "Why the endpoint drifts: stale, foreign or missing.",
                None,
                MetricType::Info,
            )?;
            for (e, d) in &drifts {
                if let Some(reason) = d.reason() {
                    fam.encode_info(&[
                        ("endpoint", LabelValue::from(e.name.as_str())),
                        ("certificate", LabelValue::from(e.certificate.as_str())),
                        ("reason", LabelValue::from(reason)),
                    ])?;
                }
            }
        }
        Ok(())
    }
}
