//! The JSON contract of a probe report (README "JSON"): one object per report, serialized
//! straight to the output by the CLI, `/probe?debug=true` and `/api/targets`.

use serde::Serialize;
use time::OffsetDateTime;

use super::ProbeReport;
use crate::cert::{CertFacts, Check, OcspStaple, rfc3339};

/// One report in the JSON contract's shape, serialized straight to the output.
#[derive(Serialize)]
pub struct JsonReport<'a> {
    target: &'a str,
    address: Option<String>,
    server_name: &'a str,
    status: &'static str,
    reason: Option<&'static str>,
    error: Option<String>,
    duration_seconds: f64,
    tls: Option<JsonTls<'a>>,
    checks: JsonChecks<'a>,
    leaf: Option<JsonCert<'a>>,
    chain: Vec<JsonCert<'a>>,
    ocsp: Option<JsonOcsp>,
}

/// The checks as a map from name to `{ok, detail}`, in report order.
struct JsonChecks<'a>(&'a [Check]);

impl Serialize for JsonChecks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct One<'a> {
            ok: bool,
            detail: Option<&'a str>,
        }
        s.collect_map(self.0.iter().map(|c| {
            (
                c.kind.as_str(),
                One {
                    ok: c.ok(),
                    detail: c.detail.as_deref(),
                },
            )
        }))
    }
}

#[derive(Serialize)]
struct JsonTls<'a> {
    version: &'a str,
    cipher_suite: &'a str,
    alpn: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonCert<'a> {
    subject: &'a str,
    issuer: &'a str,
    serial: &'a str,
    not_before: String,
    not_after: String,
    days_left: f64,
    dns_names: &'a [String],
    ip_addresses: Vec<String>,
    sha256: &'a str,
    public_key: String,
    signature_algorithm: &'a str,
    is_ca: bool,
}

#[derive(Serialize)]
struct JsonOcsp {
    status: &'static str,
    this_update: Option<String>,
    next_update: Option<String>,
    revocation_time: Option<String>,
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn cert_json(c: &CertFacts, now: OffsetDateTime) -> JsonCert<'_> {
    JsonCert {
        subject: &c.subject,
        issuer: &c.issuer,
        serial: &c.serial,
        not_before: rfc3339(c.not_before),
        not_after: rfc3339(c.not_after),
        days_left: round(c.days_left(now), 3),
        dns_names: &c.dns_names,
        ip_addresses: c.ip_addresses.iter().map(ToString::to_string).collect(),
        sha256: &c.sha256,
        public_key: c.public_key.to_string(),
        signature_algorithm: &c.signature_algorithm,
        is_ca: c.is_ca,
    }
}

fn ocsp_json(o: &OcspStaple) -> JsonOcsp {
    JsonOcsp {
        status: o.status.as_str(),
        this_update: o.this_update.map(rfc3339),
        next_update: o.next_update.map(rfc3339),
        revocation_time: o.revocation_time.map(rfc3339),
    }
}

/// The report as the JSON object documented in the README (the project's JSON contract).
/// `now` is the time days are counted from (the probe's clock).
pub fn report_json(r: &ProbeReport, now: OffsetDateTime) -> JsonReport<'_> {
    let facts = r.outcome.as_ref().ok();
    let checks = JsonChecks(facts.map_or(&[][..], |f| &f.checks));
    JsonReport {
        target: &r.target,
        address: r.address.map(|a| a.to_string()),
        server_name: &r.server_name,
        status: r.status().as_str(),
        reason: r.reason(),
        error: r.error(),
        duration_seconds: round(r.duration.as_secs_f64(), 6),
        tls: r.tls.as_ref().map(|t| JsonTls {
            version: &t.version,
            cipher_suite: &t.cipher_suite,
            alpn: t.alpn.as_deref(),
        }),
        checks,
        leaf: facts.map(|f| cert_json(&f.leaf, now)),
        chain: facts
            .map(|f| f.chain.iter().map(|c| cert_json(c, now)).collect())
            .unwrap_or_default(),
        ocsp: facts.and_then(|f| f.ocsp.as_ref()).map(ocsp_json),
    }
}
