//! The reconciler's metric families, apart from the code that decides: order counters,
//! deployment and hook-run counters (pre-created at zero), and the certificate, ARI window,
//! deploy deadline and drift series built at scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Drift, Reconciler, renewal_time};
use crate::escape::LabelValue;
use crate::hooks::HookRun;
use crate::store::DeploymentState;

// === impl OrderMetrics ===

/// The labels of `tlsward_acme_orders_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OrderLabels {
    pub(super) result: &'static str,
    pub(super) reason: &'static str,
}

/// Counters of the automation itself.
#[derive(Debug, Clone)]
pub(super) struct OrderMetrics {
    pub(super) orders: Family<OrderLabels, Counter>,
    pub(super) last_success: Gauge<f64, AtomicU64>,
    pub(super) last_failure: Gauge<f64, AtomicU64>,
}

impl OrderMetrics {
    /// The order families, registered in `reg`.
    pub(super) fn register(reg: &mut Registry) -> Self {
        let metrics = Self {
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
        metrics
    }
}

// === impl DeployMetrics ===

/// The labels of `tlsward_hook_runs_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HookRunLabels {
    pub(super) hook: LabelValue<'static>,
    pub(super) result: &'static str,
    pub(super) reason: &'static str,
}

/// A hook's name as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HookLabel {
    pub(super) hook: LabelValue<'static>,
}

/// An endpoint and a result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndpointResult {
    pub(super) endpoint: LabelValue<'static>,
    pub(super) result: &'static str,
}

/// An endpoint's name as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndpointLabel {
    pub(super) endpoint: LabelValue<'static>,
}

/// Counters of deployments and hook runs.
#[derive(Debug, Clone)]
pub(super) struct DeployMetrics {
    pub(super) hook_runs: Family<HookRunLabels, Counter>,
    pub(super) hook_seconds: Family<HookLabel, Histogram>,
    pub(super) deployments: Family<EndpointResult, Counter>,
    pub(super) verification_failures: Family<EndpointLabel, Counter>,
    pub(super) rollbacks: Family<EndpointResult, Counter>,
    pub(super) last_success: Family<EndpointLabel, Gauge<f64, AtomicU64>>,
}

impl DeployMetrics {
    /// The deployment and hook-run families, registered in `reg`.
    pub(super) fn register(reg: &mut Registry) -> Self {
        let m = Self {
            hook_runs: Family::default(),
            hook_seconds: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0])
            }),
            deployments: Family::default(),
            verification_failures: Family::default(),
            rollbacks: Family::default(),
            last_success: Family::default(),
        };
        reg.register(
            "hook_runs",
            "Hook runs, by hook, result (ok, failed) and reason",
            m.hook_runs.clone(),
        );
        reg.register(
            "hook_run_duration_seconds",
            "How long hook runs took, loading included",
            m.hook_seconds.clone(),
        );
        reg.register(
            "deployments",
            "Finished deployments, by endpoint and result (verified, failed, rolled_back)",
            m.deployments.clone(),
        );
        reg.register(
            "deployment_verification_failures",
            "Deployments whose hook succeeded but whose endpoint never served the new certificate",
            m.verification_failures.clone(),
        );
        reg.register(
            "deployment_rollbacks",
            "Rollbacks after a failed deployment, by result (restored, failed)",
            m.rollbacks.clone(),
        );
        reg.register(
            "deployment_last_success_timestamp_seconds",
            "When a deployment to the endpoint was last verified",
            m.last_success.clone(),
        );
        m
    }

    /// Creates every series of `hook` and `endpoint` at zero, so the first failure is an
    /// increase alerts can see.
    pub(super) fn touch(&self, hook: &str, endpoint: &str) {
        // Every reason a run can have: `none` with `ok`, each failure's with `failed`.
        for reason in HookRun::REASONS {
            let _ = self.hook_runs.get_or_create(&HookRunLabels {
                hook: hook.to_owned().into(),
                result: hook_result(reason),
                reason,
            });
        }
        for result in ROLLBACK_RESULTS {
            let _ = self.rollbacks.get_or_create(&EndpointResult {
                endpoint: endpoint.to_owned().into(),
                result,
            });
        }
        for state in DeploymentState::FINISHED {
            let _ = self.deployments.get_or_create(&EndpointResult {
                endpoint: endpoint.to_owned().into(),
                result: state.as_str(),
            });
        }
        let _ = self.verification_failures.get_or_create(&EndpointLabel {
            endpoint: endpoint.to_owned().into(),
        });
    }
}

/// Every `result` of `tlsward_deployment_rollbacks_total`: the previous files or version
/// back in place, or not.
pub(super) const ROLLBACK_RESULTS: [&str; 2] = ["restored", "failed"];

/// The `result` label of a rollback, one of [`ROLLBACK_RESULTS`].
pub(super) fn rollback_result(restored: bool) -> &'static str {
    ROLLBACK_RESULTS[usize::from(!restored)]
}

/// The `result` label of a hook run with `reason`: `ok` for `none`, else `failed`.
pub(super) fn hook_result(reason: &str) -> &'static str {
    if reason == "none" { "ok" } else { "failed" }
}

// === impl RemediationCollector ===

/// Certificate and drift series, built at scrape time from the store and the probe results.
#[derive(Debug)]
pub(super) struct RemediationCollector {
    pub(super) reconciler: Arc<Reconciler>,
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
        if !latest.is_empty() {
            let mut fam = enc.encode_descriptor(
                "certificate_deploy_deadline_timestamp_seconds",
                "The latest time the next version must exist for every endpoint's change window \
                 to open twice before the newest version's deadline.",
                None,
                MetricType::Gauge,
            )?;
            for (name, v) in &latest {
                let t = r.deploy_deadline(&desired, name, v).at;
                ConstGauge::new(t as f64).encode(
                    fam.encode_family(&[("certificate", LabelValue::from(name.as_str()))])?,
                )?;
            }
        }
        let before_expiry = r.windows_before_expiry(&desired);
        if !before_expiry.is_empty() {
            let mut fam = enc.encode_descriptor(
                "endpoint_window_before_expiry",
                "1 when the endpoint's change window opens before its served certificate \
                 expires minus emergency_days (always, without a window); 0 when it never does.",
                None,
                MetricType::Gauge,
            )?;
            for (e, ok) in &before_expiry {
                ConstGauge::new(i64::from(*ok)).encode(fam.encode_family(&[
                    ("endpoint", LabelValue::from(e.name.as_str())),
                    ("certificate", LabelValue::from(e.certificate.as_str())),
                ])?)?;
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
        r.encode_rollouts(&desired, &mut enc)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoints_hook_series_exist_at_zero_for_every_reason_a_run_can_have() {
        let mut reg = Registry::default();
        let m = DeployMetrics::register(&mut reg);
        m.touch("pem", "web");
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &reg).unwrap();
        let mut runs: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("hook_runs_total{"))
            .collect();
        runs.sort_unstable();
        let mut want: Vec<String> = HookRun::REASONS
            .iter()
            .map(|r| {
                let result = if *r == "none" { "ok" } else { "failed" };
                format!("hook_runs_total{{hook=\"pem\",result=\"{result}\",reason=\"{r}\"}} 0")
            })
            .collect();
        want.sort_unstable();
        assert_eq!(runs, want);
    }
}
