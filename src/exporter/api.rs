//! `/api/targets`: every scheduled target's latest round and recent history, as JSON.
//!
//! A round that was not ok is shown as the full reports (the JSON contract of `tlsward
//! probe`, with every check's explanation). A round that was ok is shown from what the
//! results keep of it, in the same shape: everything but the explanations of checks that
//! passed, whose `detail` is null (`/probe?target=...&debug=true` gives them on demand).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use crate::cert::rfc3339;
use crate::probe::json::{JsonCert, JsonChecks, JsonOcsp, JsonTls, Names, round};
use crate::probe::{JsonReport, report_json};
use crate::schedule::{Cert, Observation, Results, TargetState, unix_time};

/// Targets serialized per read lock of the results: a batch is a few hundred kilobytes, and
/// the lock is held for a few milliseconds.
const BATCH: usize = 128;

/// One target's object.
#[derive(Serialize)]
pub(super) struct TargetJson<'a> {
    target: &'a str,
    profile: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    interval_seconds: f64,
    last_probe: Option<String>,
    reports: Vec<JsonReport<'a>>,
    history: Vec<HistoryJson>,
}

#[derive(Serialize)]
struct HistoryJson {
    at: String,
    status: &'static str,
    reason: Option<&'static str>,
    address: Option<String>,
    sha256: Option<String>,
    duration_seconds: f64,
}

/// A certificate the results keep, in the contract's shape.
fn cert_json(c: &Cert, now: OffsetDateTime) -> JsonCert<'_> {
    let not_after = unix_time(c.not_after);
    JsonCert {
        subject: &c.subject,
        issuer: &c.issuer,
        serial: &c.serial,
        not_before: rfc3339(unix_time(c.not_before)),
        not_after: rfc3339(not_after),
        days_left: round((not_after - now).as_seconds_f64() / 86_400.0, 3),
        dns_names: Names::Boxed(&c.dns_names),
        ip_addresses: c.ip_addresses.iter().map(ToString::to_string).collect(),
        sha256: Cow::Owned(c.sha256_hex()),
        public_key: c.public_key.to_string(),
        signature_algorithm: &c.signature_algorithm,
        is_ca: c.is_ca,
    }
}

/// An ok report, from its [`Observation`].
fn kept_json<'a>(s: &'a TargetState, o: &'a Observation, now: OffsetDateTime) -> JsonReport<'a> {
    JsonReport {
        target: &s.spec.name,
        address: o.address.map(|a| a.to_string()),
        server_name: Cow::Owned(s.spec.target.verify_name()),
        status: o.status.as_str(),
        reason: o.reason,
        error: o.error.as_deref().map(Cow::Borrowed),
        duration_seconds: round(o.duration.as_secs_f64(), 6),
        tls: o.tls.as_deref().map(JsonTls::from),
        checks: JsonChecks::Verdicts(o.checks.iter().collect()),
        leaf: o.leaf.as_deref().map(|c| cert_json(c, now)),
        chain: o.chain.iter().map(|c| cert_json(c, now)).collect(),
        ocsp: o.ocsp.as_deref().map(JsonOcsp::from),
    }
}

/// Writes every target as a JSON array of pretty-printed objects, [`BATCH`] targets per read
/// lock, waiting for the client (see [`super::stream`]) only with the lock released.
pub(super) fn write_targets(
    results: &Results,
    now: OffsetDateTime,
    out: &mut dyn fmt::Write,
) -> fmt::Result {
    let mut cursor = None;
    let mut first = true;
    out.write_str("[")?;
    loop {
        let mut bytes = Vec::new();
        let mut failed = false;
        let more = results.batch(&mut cursor, BATCH, |s| {
            bytes.extend_from_slice(if first { b"\n" } else { b",\n" });
            first = false;
            // Into a Vec: fails only if serializing does.
            failed |= serde_json::to_writer_pretty(&mut bytes, &target_json(s, now)).is_err();
        });
        // serde_json writes UTF-8.
        let text = std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?;
        if failed {
            return Err(fmt::Error);
        }
        super::stream::waiting_allowed(|| out.write_str(text))?;
        if !more {
            break;
        }
    }
    out.write_str(if first { "]\n" } else { "\n]\n" })
}

/// The object of one target, with days counted from `now`.
pub(super) fn target_json(s: &TargetState, now: OffsetDateTime) -> TargetJson<'_> {
    let reports = match &s.full {
        Some(full) => full.iter().map(|r| report_json(r, now)).collect(),
        None => s.last.iter().map(|o| kept_json(s, o, now)).collect(),
    };
    TargetJson {
        target: &s.spec.name,
        profile: &s.spec.profile,
        labels: s
            .spec
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        interval_seconds: s.spec.interval.as_secs_f64(),
        last_probe: s.last_at.map(|t| rfc3339(t.into())),
        reports,
        history: s
            .history()
            .map(|(h, address)| HistoryJson {
                at: rfc3339(h.at().into()),
                status: h.status().as_str(),
                reason: h.reason(),
                address: address.map(|a| a.to_string()),
                sha256: h.sha256(),
                duration_seconds: h.duration().as_secs_f64(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::cert::TrustStore;
    use crate::probe::{Module, ProbeFailure, ProbeReport, Prober, Target, TlsInfo};
    use crate::schedule::TargetSpec;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    /// When the JSON is written: 1.5 s after the probe.
    fn later() -> OffsetDateTime {
        OffsetDateTime::from(UNIX_EPOCH + NOW + Duration::from_millis(1500))
    }

    /// The JSON of `/api/targets` for one target after `reports` were recorded.
    fn api(reports: Vec<ProbeReport>) -> serde_json::Value {
        let spec = Arc::new(TargetSpec {
            name: "a.test:443".into(),
            profile: "https".into(),
            target: "a.test:443".parse().unwrap(),
            interval: Duration::from_secs(60),
            prober: Arc::new(Prober::new(Module::new(Arc::new(TrustStore::empty())))),
            labels: vec![("team".into(), "web".into())],
            all_addresses: false,
        });
        let results = Results::default();
        results.replace(std::slice::from_ref(&spec));
        results.update(&spec.key(), reports, UNIX_EPOCH + NOW);
        let mut out = String::new();
        let now = later();
        write_targets(&results, now, &mut out).unwrap();
        serde_json::from_str(&out).unwrap()
    }

    fn report(verified_as: &str) -> ProbeReport {
        let facts =
            crate::cert::fixtures::self_signed("a.test", verified_as, SystemTime::UNIX_EPOCH + NOW);
        let t: Target = "a.test:443".parse().unwrap();
        let mut r = ProbeReport::unreached(&t, Duration::from_micros(2345), ProbeFailure::Closed);
        r.address = Some(([127, 0, 0, 1], 443).into());
        r.tls = Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher_suite: "TLS13_AES_128_GCM_SHA256".into(),
            alpn: Some("h2".into()),
        });
        r.outcome = Ok(facts);
        r
    }

    #[test]
    fn an_ok_round_reads_as_its_full_report_without_the_passing_checks_details() {
        let ok = report("a.test");
        assert_eq!(ok.status(), crate::cert::Status::Ok);
        let now = later();
        let mut want = serde_json::to_value(report_json(&ok, now)).unwrap();
        let checks = want["checks"].as_object_mut().unwrap();
        assert!(checks.len() >= 5, "{checks:?}");
        assert!(checks.values().any(|c| !c["detail"].is_null()));
        for c in checks.values_mut() {
            c["detail"] = serde_json::Value::Null;
        }
        let got = api(vec![ok]);
        let target = &got.as_array().unwrap()[0];
        assert_eq!(target["reports"][0], want);
        assert_eq!(target["target"], "a.test:443");
        assert_eq!(target["labels"]["team"], "web");
        assert_eq!(target["history"][0]["status"], "ok");
        assert_eq!(
            target["history"][0]["sha256"], want["leaf"]["sha256"],
            "{target}"
        );
    }

    #[test]
    fn a_round_that_was_not_ok_shows_its_full_report() {
        let bad = report("b.test");
        let now = later();
        let want = serde_json::to_value(report_json(&bad, now)).unwrap();
        assert_eq!(want["reason"], "hostname_mismatch");
        assert!(want["error"].is_string());
        let got = api(vec![bad]);
        assert_eq!(got[0]["reports"][0], want);
    }

    #[test]
    fn a_round_that_saw_no_certificate_reads_as_its_full_report() {
        let t: Target = "a.test:443".parse().unwrap();
        let mut refused =
            ProbeReport::unreached(&t, Duration::from_micros(812), ProbeFailure::ConnectRefused);
        refused.address = Some(([127, 0, 0, 1], 443).into());
        let now = later();
        let want = serde_json::to_value(report_json(&refused, now)).unwrap();
        assert_eq!(want["reason"], "connect_refused");
        assert!(want["error"].is_string());
        let got = api(vec![refused]);
        assert_eq!(got[0]["reports"][0], want);
    }

    #[test]
    fn no_targets_is_an_empty_array() {
        let mut out = String::new();
        write_targets(&Results::default(), OffsetDateTime::UNIX_EPOCH, &mut out).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::json!([])
        );
    }
}
