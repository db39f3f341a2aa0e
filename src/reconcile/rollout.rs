//! The reconciler's side of deployments: queue a deployment when an endpoint with a hook
//! does not serve the latest version, start it when its window opens (or at once in an
//! emergency, or when approved), and export the queue as metrics.

use std::sync::{Arc, PoisonError};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use serde_json::json;
use tracing::{error, info, warn};

use super::{DeployJob, Desired, Drift, EndpointSpec, Reconciler, drift, unix};
use crate::escape::LabelValue;
use crate::store::Deployment;

/// How soon to look again at an endpoint with a hook whose target has not been probed yet.
const UNPROBED_RECHECK: i64 = 1;
/// How often drift of endpoints with hooks is looked at, besides renewals.
const DRIFT_RECHECK: i64 = 30;

/// What the last probe of an endpoint's target saw at one address.
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) sha256: Option<String>,
    pub(super) not_after: Option<i64>,
}

impl Reconciler {
    /// Deployments left `running` by a process that stopped mid-run are marked failed: the
    /// endpoint's state is unknown, so an operator decides (`tlsward deploy run-now`).
    pub(super) fn interrupted_deployments(&self) {
        let now = unix(self.clock.as_ref());
        for d in self.store.open_deployments().unwrap_or_default() {
            if d.state == "running" {
                let detail = json!({
                    "error": "interrupted: tlsward stopped while this deployment ran; \
                              check the endpoint, then `tlsward deploy run-now`",
                });
                warn!(deployment = d.id, endpoint = %d.endpoint, "a deployment was interrupted");
                let _ = self
                    .store
                    .set_deployment_state(d.id, "failed", &detail, now);
            }
        }
    }

    /// What each address of `target` served at its last probe; `None` before the first.
    pub(super) fn served(&self, target: &str) -> Option<Vec<Served>> {
        self.results.with(|map| {
            map.values()
                .find(|s| s.spec.name == target && s.last_at.is_some())
                .map(|s| {
                    s.last
                        .iter()
                        .map(|r| {
                            let facts = r.outcome.as_ref().ok();
                            Served {
                                sha256: facts.map(|f| f.leaf.sha256.clone()),
                                not_after: facts.map(|f| f.leaf.not_after.unix_timestamp()),
                            }
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
            if let Err(err) = self.queue(e, &served, now, at) {
                error!(endpoint = %e.name, error = %err, "cannot queue a deployment");
            }
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
            let why = match d.state.as_str() {
                "approved" => json!({ "trigger": "approved" }),
                "waiting" => match &e.window {
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

    /// Queues the latest version for `e` unless `served` (its last probe) is that version
    /// or it was queued there before.
    fn queue(
        &self,
        e: &EndpointSpec,
        served: &[Served],
        now: i64,
        at: time::OffsetDateTime,
    ) -> Result<(), crate::store::StoreError> {
        let Some(latest) = self.store.latest(&e.certificate)? else {
            return Ok(());
        };
        if !served.is_empty()
            && served
                .iter()
                .all(|s| s.sha256.as_deref() == Some(latest.sha256.as_str()))
        {
            return Ok(());
        }
        // A version is queued once per endpoint: after a failure, an operator decides.
        if self.store.deployment_of(&e.name, latest.id)?.is_some() {
            return Ok(());
        }
        let versions: Vec<String> = self
            .store
            .versions(&e.certificate)?
            .into_iter()
            .map(|v| v.sha256)
            .collect();
        let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
        let worst = served
            .iter()
            .map(|s| drift(s.sha256.as_deref(), &refs))
            .max_by_key(|d| match d {
                Drift::InSync => 0,
                Drift::Missing => 1,
                Drift::Stale => 2,
                Drift::Foreign => 3,
            })
            .unwrap_or(Drift::Missing);
        let reason = match worst {
            Drift::Stale | Drift::InSync => "renewed",
            Drift::Foreign => "foreign",
            Drift::Missing => "unreachable",
        };
        let not_before = e
            .window
            .as_ref()
            .filter(|w| !w.is_open(at))
            .map(|w| w.next_open(at).start.unix_timestamp());
        let id = self
            .store
            .queue_deployment(&e.name, latest.id, reason, not_before, now)?;
        info!(deployment = id, endpoint = %e.name, reason, window = e.window.as_ref().map(|w| w.name()), "deployment queued");
        Ok(())
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
        if !self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(d.id)
        {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(err) = me.deployer.execute(&d, &job, why).await {
                error!(deployment = d.id, error = %err, "the deployment could not be recorded");
            }
            me.running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&d.id);
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
            "Deployments not finished, by endpoint and state (waiting, approved, running).",
            None,
            MetricType::Gauge,
        )?;
        for e in &with_hooks {
            for state in ["waiting", "approved", "running"] {
                let n = all
                    .iter()
                    .filter(|d| d.endpoint == e.name && d.state == state)
                    .count();
                ConstGauge::new(n as i64).encode(fam.encode_family(&[
                    ("endpoint", LabelValue::from(e.name.as_str())),
                    ("state", LabelValue::from(state)),
                ])?)?;
            }
        }
        let waiting: Vec<(&str, i64)> = with_hooks
            .iter()
            .filter_map(|e| {
                all.iter()
                    .find(|d| {
                        d.endpoint == e.name
                            && matches!(d.state.as_str(), "waiting" | "approved" | "running")
                    })
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
                .find(|d| {
                    d.endpoint == e.name
                        && matches!(d.state.as_str(), "verified" | "failed" | "rolled_back")
                })
                .is_some_and(|d| d.state != "verified");
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
    let target = desired.targets.iter().find(|t| t.name == e.target)?.clone();
    Some(DeployJob {
        endpoint: e.clone(),
        hook,
        target,
        settings: desired.deploy.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::emergency_reason as emergency;

    #[test]
    fn emergencies_are_near_expiry_or_an_ari_window_in_the_past() {
        let now = 1_800_000_000;
        let day = 86_400;
        // Expiring within the margin, or already expired.
        assert!(
            emergency(Some(now + day), None, now, 3.0)
                .unwrap()
                .contains("1.0 days")
        );
        assert!(emergency(Some(now - day), None, now, 3.0).is_some());
        // Outside the margin; a margin of zero never triggers before expiry.
        assert_eq!(emergency(Some(now + 4 * day), None, now, 3.0), None);
        assert_eq!(emergency(Some(now + 1), None, now, 0.0), None);
        // ARI: an open window is the usual renewal time, not an emergency; an ended one is.
        assert_eq!(
            emergency(Some(now + 30 * day), Some((now - day, now + day)), now, 3.0),
            None
        );
        assert!(
            emergency(
                Some(now + 30 * day),
                Some((now - 2 * day, now - day)),
                now,
                3.0
            )
            .unwrap()
            .contains("ARI")
        );
        // Nothing known about the endpoint: no emergency.
        assert_eq!(emergency(None, None, now, 3.0), None);
    }
}
