//! Rendering reports: the JSON contract (documented in README.md), JSON lines, and a coloured table.

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use clap::ValueEnum;
use serde::Serialize;
use time::OffsetDateTime;

use super::ColorWhen;
use crate::cert::{CertFacts, Check, OcspStaple, Status, rfc3339};
use crate::probe::ProbeReport;

/// How to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people, coloured on a terminal.
    Table,
    /// JSON: for `probe` an array with an object per target, in input order; for `verify`
    /// the one object.
    Json,
    /// One JSON object per line, printed as each probe finishes.
    Jsonl,
}

pub(super) fn color_choice(when: ColorWhen) -> anstream::ColorChoice {
    match when {
        ColorWhen::Auto => anstream::ColorChoice::Auto,
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
    }
}

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

fn status_style(s: Status) -> Style {
    let color = match s {
        Status::Ok => AnsiColor::Green,
        Status::Warning => AnsiColor::Yellow,
        Status::Critical => AnsiColor::Red,
        Status::Unknown => AnsiColor::Magenta,
    };
    Style::new().fg_color(Some(color.into())).bold()
}

/// Writes reports as an aligned table.
pub(super) fn write_table(
    out: &mut dyn Write,
    reports: &[ProbeReport],
    now: OffsetDateTime,
) -> io::Result<()> {
    let header = [
        "STATUS",
        "TARGET",
        "ADDRESS",
        "DAYS",
        "NOT AFTER",
        "ISSUER",
        "REASON",
    ];
    let rows: Vec<[String; 7]> = reports
        .iter()
        .map(|r| {
            let facts = r.outcome.as_ref().ok();
            let (days, not_after, issuer) = match facts {
                Some(f) => (
                    format!("{:.1}", f.leaf.days_left(now)),
                    f.leaf
                        .not_after
                        .format(time::macros::format_description!(
                            "[year]-[month]-[day] [hour]:[minute]"
                        ))
                        .unwrap_or_default(),
                    f.leaf.issuer.clone(),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let reason = match (r.reason(), r.error()) {
                (Some(reason), Some(err)) => format!("{reason}: {err}"),
                (Some(reason), None) => reason.to_owned(),
                _ => String::new(),
            };
            [
                r.status().as_str().to_owned(),
                r.target.clone(),
                r.address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                days,
                not_after,
                issuer,
                reason,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let bold = Style::new().bold();
    for (i, h) in header.iter().enumerate() {
        let sep = if i + 1 == header.len() { "\n" } else { "  " };
        let pad = if i + 1 == header.len() { 0 } else { widths[i] };
        write!(out, "{bold}{h:<pad$}{bold:#}{sep}")?;
    }
    for (row, r) in rows.iter().zip(reports) {
        let style = status_style(r.status());
        for (i, cell) in row.iter().enumerate() {
            let last = i + 1 == row.len();
            let pad = if last { 0 } else { widths[i] };
            let sep = if last { "\n" } else { "  " };
            if i == 0 {
                write!(out, "{style}{cell:<pad$}{style:#}{sep}")?;
            } else {
                write!(out, "{cell:<pad$}{sep}")?;
            }
        }
    }
    Ok(())
}
