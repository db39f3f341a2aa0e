//! `tlsward probe`: many targets, bounded concurrency, results as they come.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use tokio::task::JoinSet;

use super::ProbeArgs;
use super::output::{self, OutputFormat};
use crate::cert::Status;
use crate::clock::{Clock, SystemClock};
use crate::probe::{ClientIdentity, Module, ProbeReport, Prober, Resolve, Round, Target};

/// Show a progress bar from this many targets on (when stderr is a terminal).
const PROGRESS_MIN_TARGETS: usize = 10;

pub(super) fn run(args: ProbeArgs, color: anstream::ColorChoice) -> anyhow::Result<u8> {
    let targets = collect_targets(&args)?;
    let policy = args.check.policy()?;
    let trust = args.check.trust()?;
    let client_identity = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => Some(Arc::new(ClientIdentity::from_pem_files(cert, key)?)),
        _ => None,
    };
    let module = Module {
        protocol: args.starttls.unwrap_or_default(),
        timeout: args.timeout,
        policy,
        trust: Arc::new(trust),
        client_identity,
        alpn: args.alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
    };
    let format = args.check.output.unwrap_or(if io::stdout().is_terminal() {
        OutputFormat::Table
    } else {
        OutputFormat::Json
    });
    let show_progress =
        !args.no_progress && io::stderr().is_terminal() && targets.len() >= PROGRESS_MIN_TARGETS;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let plan = Plan {
        prober: Arc::new(Prober::new(module)),
        clock: Arc::new(SystemClock),
        concurrency: args.concurrency as usize,
        format,
        all_addresses: args.all_addresses,
    };
    let bar = if show_progress {
        progress_bar(targets.len())
    } else {
        ProgressBar::hidden()
    };
    let (worst, reports) = runtime.block_on(plan.run(targets, &bar))?;
    bar.finish_and_clear();
    let now = OffsetDateTime::from(plan.clock.now());
    match format {
        OutputFormat::Jsonl => {}
        OutputFormat::Json => {
            // JSON carries no colour, so it goes to stdout without the ANSI adapter.
            let mut out = io::BufWriter::new(io::stdout().lock());
            let all: Vec<_> = reports
                .iter()
                .map(|r| crate::probe::report_json(r, now))
                .collect();
            serde_json::to_writer_pretty(&mut out, &all)?;
            writeln!(out)?;
            out.flush()?;
        }
        OutputFormat::Table => {
            let mut out = anstream::AutoStream::new(io::stdout().lock(), color);
            output::write_table(&mut out, &reports, now, output::table_width())?;
            writeln!(out, "{}", output::summary(&reports))?;
            out.flush()?;
        }
    }
    Ok(worst.exit_code())
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} targets ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    bar
}

/// How one `probe` run goes.
struct Plan {
    prober: Arc<Prober>,
    clock: Arc<SystemClock>,
    concurrency: usize,
    format: OutputFormat,
    all_addresses: bool,
}

impl Plan {
    /// Runs every probe with at most `concurrency` targets in flight. Returns the worst
    /// status and, except for JSON lines, the reports in input order. JSON lines are printed
    /// the moment each probe ends and not kept, so memory is set by the concurrency, not by
    /// the number of targets.
    async fn run(
        &self,
        targets: Vec<Target>,
        bar: &ProgressBar,
    ) -> anyhow::Result<(Status, Vec<ProbeReport>)> {
        let stream = self.format == OutputFormat::Jsonl;
        let mut slots: Vec<Vec<ProbeReport>> = if stream {
            Vec::new()
        } else {
            vec![Vec::new(); targets.len()]
        };
        let mut worst = Status::Ok;
        let mut running = JoinSet::new();
        let mut pending = targets.into_iter().enumerate();
        let mut out = io::stdout();
        let mut line = Vec::with_capacity(4096);
        loop {
            while running.len() < self.concurrency {
                let Some((i, target)) = pending.next() else {
                    break;
                };
                let (prober, clock, each): (_, Arc<dyn Clock>, _) =
                    (self.prober.clone(), self.clock.clone(), self.all_addresses);
                // A panic inside one probe is caught there and becomes that target's
                // `internal_error` report: the batch goes on and prints every result.
                running
                    .spawn(async move { (i, prober.round(&target, clock, Round::of(each)).await) });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (i, reports) = done.context("a probe task panicked")?;
            bar.inc(1);
            worst = reports.iter().fold(worst, |w, r| w.worst(r.status()));
            if stream {
                let now = OffsetDateTime::from(self.clock.now());
                for report in &reports {
                    line.clear();
                    serde_json::to_writer(&mut line, &crate::probe::report_json(report, now))?;
                    line.push(b'\n');
                    if bar.is_hidden() {
                        out.write_all(&line)?;
                    } else {
                        bar.suspend(|| out.write_all(&line))?;
                    }
                }
            } else {
                slots[i] = reports;
            }
        }
        Ok((worst, slots.into_iter().flatten().collect()))
    }
}

/// Targets from the command line and `--targets-file`, with `--sni` and `--resolve` applied.
fn collect_targets(args: &ProbeArgs) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for t in &args.targets {
        targets.push(t.parse::<Target>()?);
    }
    if let Some(path) = &args.targets_file {
        targets.extend(read_targets_file(path)?);
    }
    if targets.is_empty() {
        bail!("no targets: name some, or use --targets-file");
    }
    let resolves = args
        .resolve
        .iter()
        .map(|r| r.parse::<Resolve>())
        .collect::<Result<Vec<_>, _>>()?;
    for t in &mut targets {
        t.server_name.clone_from(&args.sni);
        for r in &resolves {
            r.apply(t);
        }
        t.server_name()
            .with_context(|| format!("--sni {:?}", args.sni.as_deref().unwrap_or_default()))?;
    }
    Ok(targets)
}

/// One target a line; `#` starts a comment; blank lines are skipped; `-` is stdin.
fn read_targets_file(path: &Path) -> anyhow::Result<Vec<Target>> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(io::BufReader::new(file))
    };
    let mut targets = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let target = line
            .parse::<Target>()
            .with_context(|| format!("{}:{}", path.display(), n + 1))?;
        targets.push(target);
    }
    Ok(targets)
}
