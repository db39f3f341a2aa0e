//! The reconciler's side of deployments: queue a deployment when an endpoint with a hook
//! does not serve the latest version, start it when its window opens (or at once in an
//! emergency, or when approved), and export the queue as metrics.
//!
//! When a deployment is queued is one pure rule, `decide`: a version is queued once per
//! endpoint, and once more each time the endpoint *regresses* after a verified deployment of
//! it (an appliance reset to its old certificate), at most [`REGRESSION_REQUEUES`] times and
//! each time after a longer wait ([`regression_wait`]). A failed or rolled back deployment is
//! never queued again by itself.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use serde_json::json;
use tracing::{error, info, warn};

use super::{DeployJob, Desired, Drift, EndpointSpec, Reconciler, drift, unix};
use crate::escape::LabelValue;
use crate::store::{Deployment, DeploymentState};

/// How soon to look again at an endpoint with a hook whose target has not been probed yet.
const UNPROBED_RECHECK: i64 = 1;
/// How often drift of endpoints with hooks is looked at, besides renewals.
const DRIFT_RECHECK: i64 = 30;

/// How many times a regression of one version on one endpoint is queued again, at most; after
/// that the endpoint drifts until an operator acts (`tlsward deploy run-now ENDPOINT`).
pub const REGRESSION_REQUEUES: u32 = 5;
/// How long after the verification a regression waits before its first re-queue; each later
/// one waits twice as long as the one before (1 h, 2 h, 4 h, 8 h, 16 h), so something that
/// keeps putting the old certificate back is not fought every few seconds.
pub const REGRESSION_FIRST_WAIT: Duration = Duration::from_secs(3600);

/// Why a deployment was queued, as the queue records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueReason {
    /// A version not yet deployed there, and the endpoint serves an older one tlsward issued.
    Renewed,
    /// A version not yet deployed there, and the endpoint serves a certificate tlsward never
    /// issued.
    Foreign,
    /// A version not yet deployed there, and the endpoint could not be probed.
    Unreachable,
    /// The version was verified there, and the endpoint serves another certificate since.
    Regressed,
    /// An operator asked for it (`tlsward deploy run-now ENDPOINT`).
    Manual,
    /// It had failed, and an operator resumed its halted rollout (`tlsward rollout resume`).
    Resumed,
}

impl QueueReason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 6] = [
        Self::Renewed,
        Self::Foreign,
        Self::Unreachable,
        Self::Regressed,
        Self::Manual,
        Self::Resumed,
    ];

    /// The stable name stored in the queue and shown by `deploy list`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Renewed => "renewed",
            Self::Foreign => "foreign",
            Self::Unreachable => "unreachable",
            Self::Regressed => "regressed",
            Self::Manual => "manual",
            Self::Resumed => "resumed",
        }
    }
}

/// What the queue holds about the latest version on one endpoint: its newest deployment
/// there that was not superseded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Previous {
    /// It was never queued there.
    Never,
    /// It is waiting, approved or running.
    Open,
    /// It failed or was rolled back: an operator decides.
    Failed,
    /// It was verified there at this time (unix seconds).
    Verified {
        /// When.
        at: i64,
    },
}

impl Previous {
    /// From the newest deployment of the version to the endpoint that was not superseded.
    fn of(d: Option<&Deployment>) -> Self {
        match d {
            None => Self::Never,
            Some(d) if d.state == DeploymentState::Verified => Self::Verified { at: d.updated_at },
            Some(d) if d.state.is_open() => Self::Open,
            Some(_) => Self::Failed,
        }
    }
}

/// What [`decide`] says to do for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing: it serves the latest version, or it is queued already, or its deployment
    /// failed, or a regression cannot be told from an outage (an address did not answer).
    Nothing,
    /// Queue the latest version, for this reason.
    Queue(QueueReason),
    /// A regression, queued again no sooner than `until` (unix seconds).
    Held {
        /// The earliest re-queue.
        until: i64,
        /// Re-queues of this version there so far.
        requeues: u32,
    },
    /// A regression that has been queued again [`REGRESSION_REQUEUES`] times already.
    Capped,
}

/// The wait before the regression re-queue that follows `requeues` earlier ones.
pub const fn regression_wait(requeues: u32) -> Duration {
    let factor = 1u64 << (if requeues < 16 { requeues } else { 16 });
    Duration::from_secs(REGRESSION_FIRST_WAIT.as_secs().saturating_mul(factor))
}

/// When to queue the latest version for an endpoint: `served` is the drift of what each of
/// its addresses served at the last probe, `previous` what the queue holds for the version
/// there, `requeues` how often it was queued there because of a regression.
pub(super) fn decide(served: &[Drift], previous: Previous, requeues: u32, now: i64) -> Decision {
    if !served.is_empty() && served.iter().all(|d| *d == Drift::InSync) {
        return Decision::Nothing;
    }
    match previous {
        Previous::Never => {
            let reason = match worst(served) {
                Drift::Stale | Drift::InSync => QueueReason::Renewed,
                Drift::Foreign => QueueReason::Foreign,
                Drift::Missing => QueueReason::Unreachable,
            };
            Decision::Queue(reason)
        }
        Previous::Open | Previous::Failed => Decision::Nothing,
        // A regression is seen, not guessed: every address answered, with another leaf.
        Previous::Verified { .. } if served.is_empty() || served.contains(&Drift::Missing) => {
            Decision::Nothing
        }
        Previous::Verified { .. } if requeues >= REGRESSION_REQUEUES => Decision::Capped,
        Previous::Verified { at } => {
            let wait = i64::try_from(regression_wait(requeues).as_secs()).unwrap_or(i64::MAX);
            let until = at.saturating_add(wait);
            if now >= until {
                Decision::Queue(QueueReason::Regressed)
            } else {
                Decision::Held { until, requeues }
            }
        }
    }
}

/// The worst of several addresses' drifts.
fn worst(served: &[Drift]) -> Drift {
    served
        .iter()
        .copied()
        .max_by_key(|d| match d {
            Drift::InSync => 0,
            Drift::Missing => 1,
            Drift::Stale => 2,
            Drift::Foreign => 3,
        })
        .unwrap_or(Drift::Missing)
}

/// What the last probe of an endpoint's target saw at one address.
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) sha256: Option<String>,
    pub(super) not_after: Option<i64>,
}

impl Reconciler {
    /// Deployments left `running` by a process that stopped mid-run are marked failed: the
    /// endpoint's state is unknown, so an operator decides (`tlsward deploy run-now`). Those
    /// of agent endpoints stay running: the agent runs the hook and will report.
    pub(super) fn interrupted_deployments(&self) {
        let now = unix(self.clock.as_ref());
        let desired = self.desired();
        let by_agent = |name: &str| {
            desired
                .endpoints
                .iter()
                .any(|e| e.name == name && e.agent.is_some())
        };
        for d in self.store.open_deployments().unwrap_or_default() {
            if d.state == DeploymentState::Running && !by_agent(&d.endpoint) {
                let detail = json!({
                    "error": "interrupted: tlsward stopped while this deployment ran; \
                              check the endpoint, then `tlsward deploy run-now`",
                });
                warn!(deployment = d.id, endpoint = %d.endpoint, "a deployment was interrupted");
                let _ =
                    self.store
                        .set_deployment_state(d.id, DeploymentState::Failed, &detail, now);
            }
        }
    }

    /// What each address of `target` served at its last probe; `None` before the first.
    pub(super) fn served(&self, target: &str) -> Option<Vec<Served>> {
        self.results.with(|map| {
            map.values()
                .find(|s| &*s.spec.name == target && s.last_at.is_some())
                .map(|s| {
                    s.last
                        .iter()
                        .map(|o| Served {
                            sha256: o.leaf.as_ref().map(|c| c.sha256_hex()),
                            not_after: o.leaf.as_ref().map(|c| c.not_after),
                        })
                        .collect()
                })
        })
    }

    /// Why a waiting deployment to `e` should not wait for its window, if it should not.
    pub(super) fn emergency(
        &self,
        e: &EndpointSpec,
        desired: &Desired,
        now: i64,
    ) -> Option<String> {
        let soonest = self
            .served(&e.target)?
            .iter()
            .filter_map(|s| s.not_after)
            .min();
        let window = self
            .served_windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&e.name)
            .and_then(|w| w.window);
        emergency_reason(soonest, window, now, desired.deploy.emergency_days)
    }

    /// Queues what is due and starts what may run; returns when to look again: soon when
    /// an endpoint has not been probed yet, and at most `DRIFT_RECHECK` later while any
    /// endpoint has a hook, so drift that appears between renewals is deployed too.
    pub(super) fn deployments(self: &Arc<Self>, desired: &Desired) -> Option<i64> {
        let now = unix(self.clock.as_ref());
        let at = time::OffsetDateTime::from(self.clock.now());
        let mut next: Option<i64> = None;
        for e in desired.endpoints.iter().filter(|e| e.hook.is_some()) {
            let served = self.served(&e.target);
            let recheck = now
                + if served.is_some() {
                    DRIFT_RECHECK
                } else {
                    UNPROBED_RECHECK
                };
            next = Some(next.map_or(recheck, |n| n.min(recheck)));
            let Some(served) = served else {
                continue;
            };
            match self.queue(e, &served, now, at) {
                Ok(Some(held)) => next = Some(next.map_or(held, |n| n.min(held))),
                Ok(None) => {}
                Err(err) => error!(endpoint = %e.name, error = %err, "cannot queue a deployment"),
            }
        }
        // Staged rollouts hold the waiting deployments of their later stages.
        if let Some(pause) = self.stage_rollouts(desired, now) {
            next = Some(next.map_or(pause, |n| n.min(pause)));
        }
        let open = match self.store.open_deployments() {
            Ok(o) => o,
            Err(err) => {
                error!(error = %err, "cannot read the deployment queue");
                return None;
            }
        };
        for d in open {
            let Some(e) = desired.endpoints.iter().find(|e| e.name == d.endpoint) else {
                continue;
            };
            // Its agent runs the hook: it sees the deployment in its desired state.
            if e.agent.is_some() {
                continue;
            }
            if d.state == DeploymentState::Waiting && self.rollout_holds(&d.endpoint) {
                continue;
            }
            let why = match d.state {
                DeploymentState::Approved => json!({ "trigger": "approved" }),
                DeploymentState::Waiting => match &e.window {
                    None => json!({ "trigger": "no_window" }),
                    Some(w) if w.is_open(at) => {
                        json!({ "trigger": "window_open", "window": w.name() })
                    }
                    Some(w) => match self.emergency(e, desired, now) {
                        Some(reason) => {
                            json!({ "trigger": "emergency", "window": w.name(), "reason": reason })
                        }
                        None => {
                            let opens = w.next_open(at).start.unix_timestamp();
                            // Look again at the opening, or when the emergency margin is reached.
                            let margin = (desired.deploy.emergency_days * 86_400.0) as i64;
                            let urgent = self
                                .served(&e.target)
                                .and_then(|s| s.iter().filter_map(|s| s.not_after).min())
                                .map(|t| t - margin);
                            let wake = urgent.map_or(opens, |u| u.min(opens)).max(now + 1);
                            next = Some(next.map_or(wake, |n| n.min(wake)));
                            continue;
                        }
                    },
                },
                _ => continue,
            };
            self.start(d, e, desired, why);
        }
        next
    }

    /// Queues the latest version for `e` when [`decide`] says so, from `served` (its last
    /// probe) and the queue's history of that version there; returns when a regression held
    /// back may be queued.
    fn queue(
        &self,
        e: &EndpointSpec,
        served: &[Served],
        now: i64,
        at: time::OffsetDateTime,
    ) -> Result<Option<i64>, crate::store::StoreError> {
        let Some(latest) = self.store.latest(&e.certificate)? else {
            return Ok(None);
        };
        let versions: Vec<String> = self
            .store
            .versions(&e.certificate)?
            .into_iter()
            .map(|v| v.sha256)
            .collect();
        let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
        let drifts: Vec<Drift> = served
            .iter()
            .map(|s| drift(s.sha256.as_deref(), &refs))
            .collect();
        if !drifts.is_empty() && drifts.iter().all(|d| *d == Drift::InSync) {
            return Ok(None);
        }
        let history = self.store.deployments_of(&e.name, latest.id)?;
        let previous = Previous::of(
            history
                .iter()
                .rev()
                .find(|d| d.state != DeploymentState::Superseded),
        );
        let requeues = history
            .iter()
            .filter(|d| d.reason == QueueReason::Regressed.as_str())
            .count() as u32;
        let reason = match decide(&drifts, previous, requeues, now) {
            Decision::Nothing => return Ok(None),
            Decision::Queue(reason) => reason,
            decision @ (Decision::Held { .. } | Decision::Capped) => {
                self.regression_noticed(e, &latest, served, decision, requeues, now);
                return Ok(match decision {
                    Decision::Held { until, .. } => Some(until),
                    _ => None,
                });
            }
        };
        if reason == QueueReason::Regressed {
            self.regression_noticed(e, &latest, served, Decision::Queue(reason), requeues, now);
        }
        let not_before = e
            .window
            .as_ref()
            .filter(|w| !w.is_open(at))
            .map(|w| w.next_open(at).start.unix_timestamp());
        let id =
            self.store
                .queue_deployment(&e.name, latest.id, reason.as_str(), not_before, now)?;
        info!(deployment = id, endpoint = %e.name, reason = reason.as_str(), window = e.window.as_ref().map(|w| w.name()), "deployment queued");
        if let Some(agent) = &e.agent {
            self.agents.bump_agent(agent);
        }
        Ok(None)
    }

    /// Journals a regression of `latest` on `e` (`deployment.regression`): what is served,
    /// and whether it is queued again, held until a time, or past the cap. Once per
    /// endpoint, version, re-queue count and decision, as the rule runs every pass.
    fn regression_noticed(
        &self,
        e: &EndpointSpec,
        latest: &crate::store::Version,
        served: &[Served],
        decision: Decision,
        requeues: u32,
        now: i64,
    ) {
        let (action, until) = match decision {
            Decision::Queue(_) => ("queued", None),
            Decision::Held { until, .. } => ("held", Some(until)),
            Decision::Capped => ("capped", None),
            Decision::Nothing => return,
        };
        let key = (latest.id, requeues, action);
        {
            let mut seen = self
                .regressions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if seen.get(&e.name) == Some(&key) {
                return;
            }
            seen.insert(e.name.clone(), key);
        }
        let detail = json!({
            "endpoint": e.name,
            "version": latest.id,
            "served": served.iter().map(|s| s.sha256.clone()).collect::<Vec<_>>(),
            "action": action,
            "requeues": requeues,
            "max_requeues": REGRESSION_REQUEUES,
            "requeue_at": until,
        });
        match action {
            "capped" => {
                error!(endpoint = %e.name, version = latest.id, requeues, "the endpoint went back to another certificate again; not queued any more: `tlsward deploy run-now` after finding what resets it")
            }
            _ => {
                warn!(endpoint = %e.name, version = latest.id, requeues, action, requeue_at = ?until, "the endpoint no longer serves the version verified there")
            }
        }
        if let Err(err) = self.store.journal(
            now,
            "deployment.regression",
            Some(&latest.certificate),
            &detail,
        ) {
            error!(endpoint = %e.name, error = %err, "cannot journal a regression");
        }
    }

    fn start(
        self: &Arc<Self>,
        d: Deployment,
        e: &EndpointSpec,
        desired: &Desired,
        why: serde_json::Value,
    ) {
        let Some(job) = job(e, desired) else {
            error!(endpoint = %e.name, "the endpoint's hook or target is not configured");
            return;
        };
        // Running already, or shutting down: it stays queued for the next pass or start.
        if self.running.enter(d.id).is_err() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(err) = me.deployer.execute(&d, &job, why).await {
                error!(deployment = d.id, error = %err, "the deployment could not be recorded");
            }
            me.running.leave(d.id);
            me.notify.notify_one();
        });
    }

    /// `tlsward_deployments_pending`, `tlsward_deployment_wait_seconds` and
    /// `tlsward_deployment_failed`, from the store at scrape time.
    pub(super) fn encode_deployments(
        &self,
        desired: &Desired,
        enc: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let with_hooks: Vec<&EndpointSpec> = desired
            .endpoints
            .iter()
            .filter(|e| e.hook.is_some())
            .collect();
        if with_hooks.is_empty() {
            return Ok(());
        }
        let all = self.store.all_deployments().unwrap_or_default();
        let now = unix(self.clock.as_ref());
        let mut fam = enc.encode_descriptor(
            "deployments_pending",
            "Deployments not finished, by endpoint and state (waiting, approved, running, installed).",
            None,
            MetricType::Gauge,
        )?;
        for e in &with_hooks {
            for state in DeploymentState::OPEN {
                let n = all
                    .iter()
                    .filter(|d| d.endpoint == e.name && d.state == state)
                    .count();
                ConstGauge::new(n as i64).encode(fam.encode_family(&[
                    ("endpoint", LabelValue::from(e.name.as_str())),
                    ("state", LabelValue::from(state.as_str())),
                ])?)?;
            }
        }
        let waiting: Vec<(&str, i64)> = with_hooks
            .iter()
            .filter_map(|e| {
                all.iter()
                    .find(|d| d.endpoint == e.name && d.state.is_open())
                    .map(|d| (e.name.as_str(), now - d.created_at))
            })
            .collect();
        if !waiting.is_empty() {
            let mut fam = enc.encode_descriptor(
                "deployment_wait_seconds",
                "How long the endpoint's unfinished deployment has been queued.",
                None,
                MetricType::Gauge,
            )?;
            for (endpoint, wait) in waiting {
                ConstGauge::new(wait.max(0) as f64)
                    .encode(fam.encode_family(&[("endpoint", LabelValue::from(endpoint))])?)?;
            }
        }
        let mut fam = enc.encode_descriptor(
            "deployment_failed",
            "1 when the endpoint's latest finished deployment failed or was rolled back.",
            None,
            MetricType::Gauge,
        )?;
        for e in &with_hooks {
            let failed = all
                .iter()
                .rev()
                .find(|d| d.endpoint == e.name && d.state.is_finished())
                .is_some_and(|d| d.state != DeploymentState::Verified);
            ConstGauge::new(i64::from(failed)).encode(fam.encode_family(&[
                ("endpoint", LabelValue::from(e.name.as_str())),
                ("certificate", LabelValue::from(e.certificate.as_str())),
            ])?)?;
        }
        Ok(())
    }
}

/// Why a deployment should skip its window, from what the endpoint serves: the soonest
/// notAfter among its addresses, and the CA's renewal window (ARI) for that certificate.
pub(super) fn emergency_reason(
    served_not_after: Option<i64>,
    ari_window: Option<(i64, i64)>,
    now: i64,
    emergency_days: f64,
) -> Option<String> {
    let margin = (emergency_days * 86_400.0) as i64;
    if let Some(t) = served_not_after
        && t - now < margin
    {
        return Some(format!(
            "the served certificate expires in {:.1} days, within emergency_days = {emergency_days}",
            (t - now) as f64 / 86_400.0
        ));
    }
    // RFC 9773 §4.2: a window that has already ended means "renew now" (a revocation, for
    // instance), unlike a window that has merely opened, which is the usual renewal time.
    match ari_window {
        Some((_, end)) if end <= now => Some(
            "the CA's renewal window for the served certificate has ended: renew now (ARI)".into(),
        ),
        _ => None,
    }
}

/// The job for an endpoint: its hook and how it is probed; `None` when it has no hook.
pub fn job(e: &EndpointSpec, desired: &Desired) -> Option<DeployJob> {
    let hook = desired.hooks.get(e.hook.as_ref()?)?.clone();
    let target = desired
        .targets
        .iter()
        .find(|t| *t.name == *e.target)?
        .clone();
    Some(DeployJob {
        endpoint: e.clone(),
        hook,
        target,
        settings: desired.deploy.clone(),
    })
}

#[cfg(test)]
mod tests;
