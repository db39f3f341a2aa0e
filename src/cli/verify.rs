//! `tlsward verify`: the probe's checks on a PEM chain file, offline.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use time::OffsetDateTime;

use super::VerifyArgs;
use super::output::{self, OutputFormat};
use crate::cert;
use crate::clock::{Clock, SystemClock};
use crate::files::read_pem_certs;
use crate::probe::{Host, ProbeReport, Target};

pub(super) fn run(args: VerifyArgs, color: anstream::ColorChoice) -> anyhow::Result<u8> {
    let policy = args.check.policy()?;
    let trust = args.check.trust()?;
    // The message alone, as before: the chain of causes would repeat an I/O error.
    let chain = read_pem_certs(&args.chain).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ocsp = match &args.ocsp {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    let host = match args.name.parse() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(args.name.trim_end_matches('.').to_ascii_lowercase()),
    };
    let name = Target::new(host, 443)
        .server_name()
        .with_context(|| format!("--name {:?}", args.name))?;
    let now: SystemTime = match args.at {
        Some(at) => at.into(),
        None => SystemClock.now(),
    };
    let outcome = cert::analyze(&chain, &name, ocsp.as_deref(), &trust, &policy, now)
        .map_err(|e| crate::probe::ProbeFailure::MalformedCertificate(e.to_string()));
    let report = ProbeReport {
        target: args.chain.display().to_string(),
        address: None,
        server_name: args.name.clone(),
        duration: Duration::ZERO,
        tls: None,
        outcome,
    };
    let format = args.check.output.unwrap_or(if io::stdout().is_terminal() {
        OutputFormat::Table
    } else {
        OutputFormat::Json
    });
    let now = OffsetDateTime::from(now);
    let mut out = anstream::AutoStream::new(io::stdout().lock(), color);
    match format {
        OutputFormat::Table => output::write_table(
            &mut out,
            std::slice::from_ref(&report),
            now,
            output::table_width(),
        )?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &crate::probe::report_json(&report, now))?;
            writeln!(out)?;
        }
        OutputFormat::Jsonl => {
            serde_json::to_writer(&mut out, &crate::probe::report_json(&report, now))?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(report.status().exit_code())
}
