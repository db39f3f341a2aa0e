//! Metric families over probe reports, built at scrape time from the current results so a
//! target removed from the config leaves no stale series.
//!
//! Labels come from the config (`target`, `profile`, config labels, and `address` for targets
//! probed at every address); facts from the peer (subject, issuer, serial, fingerprint, names,
//! TLS version) appear only on `_info` series. Every value is a [`LabelValue`], escaped when
//! encoded; the peer's are capped at [`crate::escape::MAX_PEER_LABEL_BYTES`].

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::cert::CheckKind;
use crate::escape::LabelValue;
use crate::probe::ProbeReport;
use crate::schedule::Results;

type Labels = Vec<(Cow<'static, str>, LabelValue<'static>)>;

/// What `/metrics` exports per scheduled target (`[server] metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsMode {
    /// Every family: the default, for fleets whose every series is affordable.
    #[default]
    Full,
    /// Only what the shipped alerts and the overview dashboard read, for large fleets:
    /// `probe_success`, `probe_timestamp_seconds`, `probe_interval_seconds`,
    /// `probe_failure_info` (only when there is a reason), `cert_not_after_timestamp_seconds`,
    /// `cert_not_before_timestamp_seconds`, and `check_ok` only for checks that failed (at 0,
    /// as the alerts match it). The rest stays available through `/api/targets` and `/probe`.
    Lean,
}

impl MetricsMode {
    /// Every mode, in the order the config documents them.
    pub const ALL: [Self; 2] = [Self::Full, Self::Lean];

    /// The config word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Lean => "lean",
        }
    }
}

/// The mode the collector reads at each scrape; a reload switches it.
#[derive(Debug, Default, Clone)]
pub(crate) struct ModeSwitch(Arc<AtomicBool>);

// === impl ModeSwitch ===

impl ModeSwitch {
    pub(crate) fn set(&self, mode: MetricsMode) {
        self.0.store(mode == MetricsMode::Lean, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> MetricsMode {
        if self.0.load(Ordering::Relaxed) {
            MetricsMode::Lean
        } else {
            MetricsMode::Full
        }
    }
}

/// One report with the labels it is exposed under.
pub(crate) struct Row<'a> {
    pub(crate) labels: Labels,
    pub(crate) report: &'a ProbeReport,
    pub(crate) finished: Option<SystemTime>,
    pub(crate) interval: Option<Duration>,
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn with(labels: &Labels, extra: &[(&'static str, LabelValue<'static>)]) -> Labels {
    let mut l = labels.clone();
    l.extend(extra.iter().map(|(k, v)| (Cow::Borrowed(*k), v.clone())));
    l
}

/// Writes one gauge family with a value per row (rows without a value are skipped).
fn gauge_family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: &[Row<'_>],
    value: impl Fn(&Row<'_>) -> Vec<(Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let samples: Vec<(Labels, f64)> = rows.iter().flat_map(&value).collect();
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    if let [(labels, v)] = samples.as_slice()
        && labels.is_empty()
    {
        return ConstGauge::new(*v).encode(family);
    }
    for (labels, v) in samples {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one info family (`NAME_info{...} 1`).
fn info_family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[Row<'_>],
    value: impl Fn(&Row<'_>) -> Option<Labels>,
) -> Result<(), std::fmt::Error> {
    let samples: Vec<Labels> = rows.iter().filter_map(&value).collect();
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Info)?;
    for labels in samples {
        family.encode_info(&labels)?;
    }
    Ok(())
}

fn facts<'r, 'a>(r: &'r Row<'a>) -> Option<(&'r Row<'a>, &'a crate::cert::ChainFacts)> {
    r.report.outcome.as_ref().ok().map(|f| (r, f))
}

/// Encodes the per-target families for `rows` (names get the registry's prefix), all of them
/// or only the [`MetricsMode::Lean`] ones.
pub(crate) fn encode_rows(
    enc: &mut DescriptorEncoder<'_>,
    rows: &[Row<'_>],
    mode: MetricsMode,
) -> Result<(), std::fmt::Error> {
    let full = mode == MetricsMode::Full;
    let one = |labels: &Labels, v: f64| vec![(labels.clone(), v)];
    gauge_family(
        enc,
        "probe_success",
        "1 when the probe saw a certificate and no check is critical.",
        None,
        rows,
        |r| {
            one(
                &r.labels,
                f64::from(u8::from(matches!(
                    r.report.status(),
                    crate::cert::Status::Ok | crate::cert::Status::Warning
                ))),
            )
        },
    )?;
    if full {
        gauge_family(
            enc,
            "probe_duration_seconds",
            "Wall time of the last probe.",
            None,
            rows,
            |r| one(&r.labels, r.report.duration.as_secs_f64()),
        )?;
    }
    gauge_family(
        enc,
        "probe_timestamp_seconds",
        "When the last probe finished.",
        None,
        rows,
        |r| {
            r.finished
                .map(|t| one(&r.labels, secs(t)))
                .unwrap_or_default()
        },
    )?;
    gauge_family(
        enc,
        "probe_interval_seconds",
        "Configured time between probes.",
        None,
        rows,
        |r| {
            r.interval
                .map(|i| one(&r.labels, i.as_secs_f64()))
                .unwrap_or_default()
        },
    )?;
    info_family(
        enc,
        "probe_failure",
        "Why the last probe failed or warns (stable reason label).",
        rows,
        |r| {
            r.report
                .reason()
                .map(|reason| with(&r.labels, &[("reason", LabelValue::new(reason))]))
        },
    )?;
    gauge_family(
        enc,
        "cert_not_after_timestamp_seconds",
        "notAfter of the served leaf.",
        None,
        rows,
        |r| {
            facts(r)
                .map(|(r, f)| one(&r.labels, f.leaf.not_after.unix_timestamp() as f64))
                .unwrap_or_default()
        },
    )?;
    gauge_family(
        enc,
        "cert_not_before_timestamp_seconds",
        "notBefore of the served leaf.",
        None,
        rows,
        |r| {
            facts(r)
                .map(|(r, f)| one(&r.labels, f.leaf.not_before.unix_timestamp() as f64))
                .unwrap_or_default()
        },
    )?;
    if full {
        gauge_family(
            enc,
            "chain_earliest_not_after_timestamp_seconds",
            "Earliest notAfter among the presented certificates, roots excluded.",
            None,
            rows,
            |r| {
                facts(r)
                    .map(|(r, f)| one(&r.labels, f.earliest_not_after.unix_timestamp() as f64))
                    .unwrap_or_default()
            },
        )?;
    }
    gauge_family(
        enc,
        "check_ok",
        "1 when the check passed, 0 when it failed.",
        None,
        rows,
        |r| {
            facts(r)
                .map(|(r, f)| {
                    f.checks
                        .iter()
                        .filter(|c| full || !c.ok())
                        .map(|c| {
                            (
                                with(&r.labels, &[("check", LabelValue::new(c.kind.as_str()))]),
                                f64::from(u8::from(c.ok())),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        },
    )?;
    if !full {
        return Ok(());
    }
    info_family(
        enc,
        "cert",
        "The served leaf (peer-supplied facts live only here).",
        rows,
        |r| {
            facts(r).map(|(r, f)| {
                with(
                    &r.labels,
                    &[
                        ("subject", LabelValue::peer(&f.leaf.subject)),
                        ("issuer", LabelValue::peer(&f.leaf.issuer)),
                        ("serial", LabelValue::peer(&f.leaf.serial)),
                        ("sha256", LabelValue::new(f.leaf.sha256.clone())),
                        ("dns_names", LabelValue::peer(&f.leaf.dns_names.join(","))),
                    ],
                )
            })
        },
    )?;
    info_family(
        enc,
        "tls_version",
        "The negotiated TLS version.",
        rows,
        |r| {
            r.report
                .tls
                .as_ref()
                .map(|t| with(&r.labels, &[("version", LabelValue::peer(&t.version))]))
        },
    )?;
    Ok(())
}

/// Exposes every scheduled target's latest results.
#[derive(Debug)]
pub(crate) struct TargetCollector {
    pub(crate) results: Arc<Results>,
    pub(crate) mode: ModeSwitch,
}

impl Collector for TargetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.results.with(|map| {
            let mut rows = Vec::new();
            for state in map.values() {
                let spec = &state.spec;
                let mut base: Labels = vec![
                    (Cow::Borrowed("target"), LabelValue::new(spec.name.clone())),
                    (
                        Cow::Borrowed("profile"),
                        LabelValue::new(spec.profile.clone()),
                    ),
                ];
                base.extend(
                    spec.labels
                        .iter()
                        .map(|(k, v)| (Cow::Owned(k.clone()), LabelValue::new(v.clone()))),
                );
                for report in &state.last {
                    let mut labels = base.clone();
                    if spec.all_addresses {
                        let addr = report
                            .address
                            .map(|a| a.ip().to_string())
                            .unwrap_or_default();
                        labels.push((Cow::Borrowed("address"), LabelValue::new(addr)));
                    }
                    rows.push(Row {
                        labels,
                        report,
                        finished: state.last_at,
                        interval: Some(spec.interval),
                    });
                }
            }
            encode_rows(&mut encoder, &rows, self.mode.get())
        })
    }
}

/// The families of one `/probe` answer: tlsward's own (without target labels, as Prometheus
/// adds `instance`) plus blackbox_exporter's names, so existing dashboards keep working.
#[derive(Debug)]
pub(crate) struct ProbeCollector {
    pub(crate) report: ProbeReport,
}

impl Collector for ProbeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows = [Row {
            labels: Vec::new(),
            report: &self.report,
            finished: None,
            interval: None,
        }];
        encode_rows(&mut encoder, &rows, MetricsMode::Full)
    }
}

/// blackbox_exporter-compatible families for one report, registered without a prefix.
#[derive(Debug)]
pub(crate) struct BlackboxCompat {
    pub(crate) report: ProbeReport,
    pub(crate) timeout: Duration,
}

impl Collector for BlackboxCompat {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let r = &self.report;
        let g = |enc: &mut DescriptorEncoder<'_>,
                 name: &str,
                 help: &str,
                 v: f64|
         -> Result<(), std::fmt::Error> {
            let fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            // Whole numbers print as integers, as blackbox_exporter prints them.
            if v.fract() == 0.0 && v.abs() < 1e15 {
                ConstGauge::new(v as i64).encode(fam)
            } else {
                ConstGauge::new(v).encode(fam)
            }
        };
        g(
            &mut enc,
            "probe_success",
            "Whether the probe succeeded",
            f64::from(u8::from(
                r.success() || r.status() == crate::cert::Status::Warning,
            )),
        )?;
        g(
            &mut enc,
            "probe_duration_seconds",
            "How long the probe took",
            r.duration.as_secs_f64(),
        )?;
        g(
            &mut enc,
            "probe_timeout_seconds",
            "The probe's time budget",
            self.timeout.as_secs_f64(),
        )?;
        if let Ok(f) = &r.outcome {
            g(
                &mut enc,
                "probe_ssl_earliest_cert_expiry",
                "Earliest notAfter in the presented chain",
                f.earliest_not_after.unix_timestamp() as f64,
            )?;
            g(
                &mut enc,
                "probe_ssl_last_chain_expiry_timestamp_seconds",
                "notAfter of the served leaf.",
                f.leaf.not_after.unix_timestamp() as f64,
            )?;
            let chain_ok = f.check(CheckKind::Chain).is_some_and(|c| c.ok());
            g(
                &mut enc,
                "probe_tls_cert_chain_valid",
                "1 when the chain validated",
                f64::from(u8::from(chain_ok)),
            )?;
        }
        if let Some(tls) = &r.tls {
            let mut fam = enc.encode_descriptor(
                "probe_tls_version",
                "The negotiated TLS version.",
                None,
                MetricType::Info,
            )?;
            fam.encode_info(&[("version", LabelValue::peer(&tls.version))])?;
        }
        Ok(())
    }
}
