//! The JSON contract of a probe report (README "JSON"): one object per report, serialized
//! straight to the output by the CLI, `/probe?debug=true` and `/api/targets`.

use std::borrow::Cow;

use serde::Serialize;
use time::OffsetDateTime;

use super::{ProbeReport, TlsInfo};
use crate::cert::{CertFacts, Check, CheckKind, OcspStaple, rfc3339};

/// One report in the JSON contract's shape, serialized straight to the output. Built from a
/// [`ProbeReport`] by [`report_json`], or from what the daemon's results keep of an ok round
/// (`/api/targets`), so both read the same.
#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub(crate) target: &'a str,
    pub(crate) address: Option<String>,
    pub(crate) server_name: Cow<'a, str>,
    pub(crate) status: &'static str,
    pub(crate) reason: Option<&'static str>,
    pub(crate) error: Option<Cow<'a, str>>,
    pub(crate) duration_seconds: f64,
    pub(crate) tls: Option<JsonTls<'a>>,
    pub(crate) checks: JsonChecks<'a>,
    pub(crate) leaf: Option<JsonCert<'a>>,
    pub(crate) chain: Vec<JsonCert<'a>>,
    pub(crate) ocsp: Option<JsonOcsp>,
}

/// The checks as a map from name to `{ok, detail}`, in report order.
pub(crate) enum JsonChecks<'a> {
    /// Every check with its explanation.
    Full(&'a [Check]),
    /// Which checks ran and whether each passed, without explanations (`detail` is null).
    Verdicts(Vec<(CheckKind, bool)>),
}

impl Serialize for JsonChecks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct One<'a> {
            ok: bool,
            detail: Option<&'a str>,
        }
        match self {
            Self::Full(checks) => s.collect_map(checks.iter().map(|c| {
                let one = One {
                    ok: c.ok(),
                    detail: c.detail.as_deref(),
                };
                (c.kind.as_str(), one)
            })),
            Self::Verdicts(verdicts) => s.collect_map(
                verdicts
                    .iter()
                    .map(|&(kind, ok)| (kind.as_str(), One { ok, detail: None })),
            ),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct JsonTls<'a> {
    version: &'a str,
    cipher_suite: &'a str,
    alpn: Option<&'a str>,
}

impl<'a> From<&'a TlsInfo> for JsonTls<'a> {
    fn from(t: &'a TlsInfo) -> Self {
        Self {
            version: &t.version,
            cipher_suite: &t.cipher_suite,
            alpn: t.alpn.as_deref(),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct JsonCert<'a> {
    pub(crate) subject: &'a str,
    pub(crate) issuer: &'a str,
    pub(crate) serial: &'a str,
    pub(crate) not_before: String,
    pub(crate) not_after: String,
    pub(crate) days_left: f64,
    pub(crate) dns_names: Names<'a>,
    pub(crate) ip_addresses: Vec<String>,
    pub(crate) sha256: Cow<'a, str>,
    pub(crate) public_key: String,
    pub(crate) signature_algorithm: &'a str,
    pub(crate) is_ca: bool,
}

/// A certificate's DNS names, as the report or the results hold them.
pub(crate) enum Names<'a> {
    Owned(&'a [String]),
    Boxed(&'a [Box<str>]),
}

impl Serialize for Names<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Owned(names) => s.collect_seq(names.iter()),
            Self::Boxed(names) => s.collect_seq(names.iter()),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct JsonOcsp {
    status: &'static str,
    this_update: Option<String>,
    next_update: Option<String>,
    revocation_time: Option<String>,
}

impl From<&OcspStaple> for JsonOcsp {
    fn from(o: &OcspStaple) -> Self {
        Self {
            status: o.status.as_str(),
            this_update: o.this_update.map(rfc3339),
            next_update: o.next_update.map(rfc3339),
            revocation_time: o.revocation_time.map(rfc3339),
        }
    }
}

/// `x` rounded to `places` decimal places, as the contract writes durations and days.
pub(crate) fn round(x: f64, places: i32) -> f64 {
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
        dns_names: Names::Owned(&c.dns_names),
        ip_addresses: c.ip_addresses.iter().map(ToString::to_string).collect(),
        sha256: Cow::Borrowed(&c.sha256),
        public_key: c.public_key.to_string(),
        signature_algorithm: &c.signature_algorithm,
        is_ca: c.is_ca,
    }
}

/// The report as the JSON object documented in the README (the project's JSON contract).
/// `now` is the time days are counted from (the probe's clock).
pub fn report_json(r: &ProbeReport, now: OffsetDateTime) -> JsonReport<'_> {
    let facts = r.outcome.as_ref().ok();
    let checks = JsonChecks::Full(facts.map_or(&[][..], |f| &f.checks));
    JsonReport {
        target: &r.target,
        address: r.address.map(|a| a.to_string()),
        server_name: Cow::Borrowed(&r.server_name),
        status: r.status().as_str(),
        reason: r.reason(),
        error: r.error().map(Cow::Owned),
        duration_seconds: round(r.duration.as_secs_f64(), 6),
        tls: r.tls.as_ref().map(JsonTls::from),
        checks,
        leaf: facts.map(|f| cert_json(&f.leaf, now)),
        chain: facts
            .map(|f| f.chain.iter().map(|c| cert_json(c, now)).collect())
            .unwrap_or_default(),
        ocsp: facts.and_then(|f| f.ocsp.as_ref()).map(JsonOcsp::from),
    }
}
