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
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::cert::CheckKind;
use crate::escape::LabelValue;
use crate::probe::ProbeReport;
use crate::schedule::{Cert, Interner, Observation, Results, TargetState};

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
    pub(crate) report: &'a Observation,
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

fn leaf<'r, 'a>(r: &'r Row<'a>) -> Option<(&'r Row<'a>, &'a Cert)> {
    r.report.leaf.as_deref().map(|c| (r, c))
}

fn one(labels: &Labels, v: f64) -> Vec<(Labels, f64)> {
    vec![(labels.clone(), v)]
}

/// How a family finds its samples in a row.
#[derive(Clone, Copy)]
enum Samples {
    /// A gauge: the row's samples, given whether every family is exported (`full`).
    Gauge(fn(&Row<'_>, bool) -> Vec<(Labels, f64)>),
    /// An info family: the row's label set, when it has one.
    Info(fn(&Row<'_>) -> Option<Labels>),
}

/// One per-target family.
struct Family {
    name: &'static str,
    help: &'static str,
    /// Exported in [`MetricsMode::Lean`] too.
    lean: bool,
    samples: Samples,
}

/// The per-target families, in the order they are exposed.
const FAMILIES: [Family; 11] = [
    Family {
        name: "probe_success",
        help: "1 when the probe saw a certificate and no check is critical.",
        lean: true,
        samples: Samples::Gauge(|r, _| one(&r.labels, f64::from(u8::from(r.report.success())))),
    },
    Family {
        name: "probe_duration_seconds",
        help: "Wall time of the last probe.",
        lean: false,
        samples: Samples::Gauge(|r, _| one(&r.labels, r.report.duration.as_secs_f64())),
    },
    Family {
        name: "probe_timestamp_seconds",
        help: "When the last probe finished.",
        lean: true,
        samples: Samples::Gauge(|r, _| {
            r.finished
                .map(|t| one(&r.labels, secs(t)))
                .unwrap_or_default()
        }),
    },
    Family {
        name: "probe_interval_seconds",
        help: "Configured time between probes.",
        lean: true,
        samples: Samples::Gauge(|r, _| {
            r.interval
                .map(|i| one(&r.labels, i.as_secs_f64()))
                .unwrap_or_default()
        }),
    },
    Family {
        name: "probe_failure",
        help: "Why the last probe failed or warns (stable reason label).",
        lean: true,
        samples: Samples::Info(|r| {
            r.report
                .reason
                .map(|reason| with(&r.labels, &[("reason", LabelValue::new(reason))]))
        }),
    },
    Family {
        name: "cert_not_after_timestamp_seconds",
        help: "notAfter of the served leaf.",
        lean: true,
        samples: Samples::Gauge(|r, _| {
            leaf(r)
                .map(|(r, c)| one(&r.labels, c.not_after as f64))
                .unwrap_or_default()
        }),
    },
    Family {
        name: "cert_not_before_timestamp_seconds",
        help: "notBefore of the served leaf.",
        lean: true,
        samples: Samples::Gauge(|r, _| {
            leaf(r)
                .map(|(r, c)| one(&r.labels, c.not_before as f64))
                .unwrap_or_default()
        }),
    },
    Family {
        name: "chain_earliest_not_after_timestamp_seconds",
        help: "Earliest notAfter among the presented certificates, roots excluded.",
        lean: false,
        samples: Samples::Gauge(|r, _| {
            r.report
                .earliest_not_after
                .map(|t| one(&r.labels, t as f64))
                .unwrap_or_default()
        }),
    },
    Family {
        name: "check_ok",
        help: "1 when the check passed, 0 when it failed.",
        lean: true,
        samples: Samples::Gauge(|r, full| {
            r.report
                .checks
                .iter()
                .filter(|(_, ok)| full || !ok)
                .map(|(kind, ok)| {
                    (
                        with(&r.labels, &[("check", LabelValue::new(kind.as_str()))]),
                        f64::from(u8::from(ok)),
                    )
                })
                .collect()
        }),
    },
    Family {
        name: "cert",
        help: "The served leaf (peer-supplied facts live only here).",
        lean: false,
        samples: Samples::Info(|r| {
            leaf(r).map(|(r, c)| {
                with(
                    &r.labels,
                    &[
                        ("subject", LabelValue::peer(&c.subject)),
                        ("issuer", LabelValue::peer(&c.issuer)),
                        ("serial", LabelValue::peer(&c.serial)),
                        ("sha256", LabelValue::new(c.sha256_hex())),
                        ("dns_names", LabelValue::peer(&c.dns_names.join(","))),
                    ],
                )
            })
        }),
    },
    Family {
        name: "tls_version",
        help: "The negotiated TLS version.",
        lean: false,
        samples: Samples::Info(|r| {
            r.report
                .tls
                .as_ref()
                .map(|t| with(&r.labels, &[("version", LabelValue::peer(&t.version))]))
        }),
    },
];

/// The families `mode` exports, in order.
fn families(mode: MetricsMode) -> impl Iterator<Item = &'static Family> {
    FAMILIES
        .iter()
        .filter(move |f| mode == MetricsMode::Full || f.lean)
}

/// Encodes the per-target families for `rows` (names get the registry's prefix), all of them
/// or only the [`MetricsMode::Lean`] ones.
pub(crate) fn encode_rows(
    enc: &mut DescriptorEncoder<'_>,
    rows: &[Row<'_>],
    mode: MetricsMode,
) -> Result<(), std::fmt::Error> {
    let full = mode == MetricsMode::Full;
    for family in families(mode) {
        match family.samples {
            Samples::Gauge(value) => {
                gauge_family(enc, family.name, family.help, None, rows, |r| {
                    value(r, full)
                })?;
            }
            Samples::Info(value) => info_family(enc, family.name, family.help, rows, value)?,
        }
    }
    Ok(())
}

/// The rows of one scheduled target: one per report of its last round.
fn target_rows<'a>(state: &'a TargetState, rows: &mut Vec<Row<'a>>) {
    let spec = &state.spec;
    let mut base: Labels = vec![
        (
            Cow::Borrowed("target"),
            LabelValue::new(spec.name.to_string()),
        ),
        (
            Cow::Borrowed("profile"),
            LabelValue::new(spec.profile.to_string()),
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

/// Targets whose samples are copied out of the results per lock: a batch's text is a few
/// tens of kilobytes, and the lock is held for well under a millisecond.
const BATCH: usize = 256;

/// Samples of one family copied out of the results: labels, and the value of a gauge
/// (`None` for an info family).
type Batch = Vec<(Labels, Option<f64>)>;

/// Exposes every scheduled target's latest results.
///
/// Encodes family by family, as the exposition orders them, and within a family
/// [`BATCH`] targets at a time: the samples are copied out under the results' read lock, and
/// written after it is released, where a slow client may make the writer wait (see
/// [`super::stream`]). So no scrape holds the lock probes record under for longer than one
/// batch. A target recorded between two batches may show its new report in later families
/// (a scrape was never a snapshot across targets either).
#[derive(Debug)]
pub(crate) struct TargetCollector {
    pub(crate) results: Arc<Results>,
    pub(crate) mode: ModeSwitch,
}

// === impl TargetCollector ===

impl TargetCollector {
    /// The next batch of `family`'s samples after `cursor` (the last key done), which it
    /// moves on; `None` as the cursor once every target has been seen.
    fn batch(&self, family: &Family, full: bool, cursor: &mut Option<Key>) -> (Batch, bool) {
        let mut batch = Batch::new();
        let more = self.results.batch(cursor, BATCH, |state| {
            let mut rows = Vec::new();
            target_rows(state, &mut rows);
            for row in &rows {
                match family.samples {
                    Samples::Gauge(value) => batch.extend(
                        value(row, full)
                            .into_iter()
                            .map(|(labels, v)| (labels, Some(v))),
                    ),
                    Samples::Info(value) => batch.extend(value(row).map(|labels| (labels, None))),
                }
            }
        });
        (batch, more)
    }
}

type Key = crate::schedule::TargetKey;

/// Writes a batch's samples into their family.
fn write_batch(family: &mut MetricEncoder<'_>, batch: Batch) -> Result<(), std::fmt::Error> {
    for (labels, value) in batch {
        match value {
            Some(v) => ConstGauge::new(v).encode(family.encode_family(&labels)?)?,
            None => family.encode_info(&labels)?,
        }
    }
    Ok(())
}

impl Collector for TargetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mode = self.mode.get();
        let full = mode == MetricsMode::Full;
        for family in families(mode) {
            // A family without samples is left out, descriptor and all, as before: find its
            // first batch with one. (Rows always have a target label, so the unlabelled
            // single-sample form of `gauge_family` never applies here.)
            let mut cursor = None;
            let (mut batch, mut more) = loop {
                let (batch, more) = self.batch(family, full, &mut cursor);
                if !batch.is_empty() || !more {
                    break (batch, more);
                }
            };
            if batch.is_empty() {
                continue;
            }
            let kind = match family.samples {
                Samples::Gauge(_) => MetricType::Gauge,
                Samples::Info(_) => MetricType::Info,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            loop {
                super::stream::waiting_allowed(|| write_batch(&mut metric, batch))?;
                if !more {
                    break;
                }
                (batch, more) = self.batch(family, full, &mut cursor);
            }
        }
        Ok(())
    }
}

/// The whole-body encoding the streaming [`TargetCollector`] replaced: every row built under
/// one read lock, then encoded. The tests' oracle for the bytes.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct WholeTargetCollector {
    pub(crate) results: Arc<Results>,
    pub(crate) mode: ModeSwitch,
}

#[cfg(test)]
impl Collector for WholeTargetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.results.with(|map| {
            let mut rows = Vec::new();
            for state in map.values() {
                target_rows(state, &mut rows);
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
        let report = Observation::of(&self.report, &Interner::default());
        let rows = [Row {
            labels: Vec::new(),
            report: &report,
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
