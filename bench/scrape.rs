//! The `/metrics` scrape at fleet scale: peak RSS and seconds of one scrape of `tlsward
//! serve`'s exporter with N synthetic targets in the results, plain and gzip.
//!
//! Usage: scrape-bench N [ROUNDS] [--distinct]
//!
//! No network is probed: the results store is filled directly (every target with the same
//! valid self-signed certificate, one target in ten failing with a reason), the exporter is
//! served on a loopback port, and a client in the same process scrapes it and counts the
//! bytes without keeping them. Peak RSS is the kernel's high-water mark (`VmHWM`), reset
//! before each scrape through `/proc/self/clear_refs`, so "peak" is the process's RSS at
//! its highest during that scrape and "extra" is that minus the RSS just before it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tlsward::cert::{Origin, ServerName, TrustStore};
use tlsward::clock::{Clock, SystemClock};
use tlsward::exporter::{ExporterState, ProbeProfiles, WebConfig};
use tlsward::listen::Limits;
use tlsward::probe::{Module, ProbeFailure, ProbeReport, Prober, Target, TlsInfo};
use tlsward::schedule::{FirstRound, Results, ScheduleMetrics, Scheduler, TargetSpec};
use tlsward::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A kernel memory figure of this process from `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets `VmHWM` to the current RSS (Linux 4.0 and later).
fn reset_peak() {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
    {
        let _ = f.write_all(b"5");
    }
}

/// One scrape: (bytes on the wire after the head, seconds until the last byte).
async fn scrape(addr: SocketAddr, headers: &str) -> (usize, f64) {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    tcp.write_all(req.as_bytes()).await.expect("request");
    let mut buf = vec![0u8; 256 * 1024];
    let (mut total, mut head) = (0usize, None);
    let mut first = Vec::new();
    loop {
        let n = tcp.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        total += n;
        if head.is_none() {
            first.extend_from_slice(&buf[..n]);
            head = first
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4);
        }
    }
    let status = String::from_utf8_lossy(&first[..first.len().min(12)]).into_owned();
    assert!(status.ends_with("200"), "scrape failed: {status}");
    (total - head.unwrap_or(0), started.elapsed().as_secs_f64())
}

fn report(target: &str, facts: &tlsward::cert::ChainFacts, i: usize) -> ProbeReport {
    let t: Target = target.parse().expect("target");
    let mut r = ProbeReport::unreached(&t, Duration::from_millis(3), ProbeFailure::ConnectRefused);
    if i % 10 != 9 {
        r.address = Some(SocketAddr::from(([127, 0, 0, 1], 443)));
        r.tls = Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher_suite: "TLS13_AES_128_GCM_SHA256".into(),
            alpn: None,
        });
        r.outcome = Ok(facts.clone());
    }
    r
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let distinct = args.iter().any(|a| a == "--distinct");
    args.retain(|a| a != "--distinct");
    let (n, rounds) = match args.as_slice() {
        [n] => (n.parse::<usize>()?, 3),
        [n, r] => (n.parse::<usize>()?, r.parse::<usize>()?),
        _ => return Err("usage: scrape-bench N [ROUNDS] [--distinct]".into()),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    // A CA the prober trusts, issuing the leaves: one for all targets, or one per target
    // (each its own name, key and serial), as a fleet has.
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tlsward bench CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let mut trust = TrustStore::empty();
    trust.add_all([ca_cert.der()], Origin::Private);
    let trust = Arc::new(trust);
    let leaf = |i: usize| -> Result<tlsward::cert::ChainFacts, Box<dyn std::error::Error>> {
        let name = format!("leaf-{i}.fleet.test");
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![name.clone()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        let cert = params.signed_by(&key, &ca)?;
        Ok(tlsward::cert::analyze(
            &[cert.der().clone()],
            &ServerName::try_from(name.as_str())?,
            None,
            &trust,
            &tlsward::cert::Policy::new(),
            now,
        )?)
    };
    let shared = leaf(0)?;
    let prober = Arc::new(Prober::new(Module::new(trust.clone())));
    let baseline = status_mib("VmRSS:");

    let mut registry = Registry::default();
    let metrics = ScheduleMetrics::register(registry.sub_registry_with_prefix("tlsward"));
    let results = Arc::new(Results::default());
    let shutdown = Shutdown::new();
    // One copy of the profile's name for all, as the config shares it.
    let profile: Arc<str> = "default".into();
    let specs: Vec<TargetSpec> = (0..n)
        .map(|i| {
            let target = format!("host-{i}.fleet.invalid:443");
            TargetSpec {
                name: target.as_str().into(),
                profile: profile.clone(),
                target: target.parse().expect("target"),
                interval: Duration::from_secs(86_400),
                prober: prober.clone(),
                labels: vec![("team".into(), format!("team-{}", i % 50))],
                all_addresses: false,
            }
        })
        .collect();
    // The scheduler only registers the targets: stopped at once, it probes none.
    let scheduler = Scheduler::new(results.clone(), metrics, clock.clone(), shutdown.clone());
    scheduler.apply(specs.clone(), 1, FirstRound::Spread);
    scheduler.stop();
    let before_results = status_mib("VmRSS:");
    for (i, spec) in specs.iter().enumerate() {
        let facts = if distinct { leaf(i)? } else { shared.clone() };
        // Eleven rounds, as at steady state: a full history.
        for _ in 0..=tlsward::schedule::HISTORY_OK {
            results.update(&spec.key(), vec![report(&spec.name, &facts, i)], now);
        }
    }
    drop(specs);
    let filled = status_mib("VmRSS:");
    println!(
        "targets {n} ({}): RSS {filled:.1} MiB; {:.0} B per target for its spec, {:.0} B for its \
         results",
        if distinct {
            "a certificate each"
        } else {
            "one certificate"
        },
        (before_results - baseline) * 1_048_576.0 / n as f64,
        (filled - before_results) * 1_048_576.0 / n as f64,
    );

    let (reload, _reloads) = tokio::sync::mpsc::channel(1);
    let state = Arc::new(ExporterState::new(
        registry,
        results,
        ProbeProfiles::default(),
        WebConfig::open(),
        reload,
        clock,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(tlsward::exporter::serve(
        listener,
        state,
        None,
        Limits::new().with_header_timeout(Duration::from_secs(60)),
        shutdown.clone(),
    ));

    const OPENMETRICS: &str =
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n";
    let kinds = [
        ("text", "plain", String::new()),
        ("text", "gzip", "Accept-Encoding: gzip\r\n".to_owned()),
        ("openmetrics", "plain", OPENMETRICS.to_owned()),
        (
            "openmetrics",
            "gzip",
            format!("{OPENMETRICS}Accept-Encoding: gzip\r\n"),
        ),
    ];
    // One scrape first, unmeasured, so the allocator's arenas are warm.
    scrape(addr, "").await;
    println!(
        "targets {n}: RSS before scrapes {:.1} MiB",
        status_mib("VmRSS:")
    );
    println!(
        "format       encoding  bytes       seconds(best/median)  peak_rss_mib  extra_mib(max)"
    );
    for (format, encoding, headers) in &kinds {
        let mut runs = Vec::new();
        for _ in 0..rounds {
            let before = status_mib("VmRSS:");
            reset_peak();
            let (bytes, secs) = scrape(addr, headers).await;
            let peak = status_mib("VmHWM:");
            runs.push((bytes, secs, peak, peak - before));
        }
        let mut secs: Vec<f64> = runs.iter().map(|r| r.1).collect();
        secs.sort_by(f64::total_cmp);
        let peak = runs.iter().map(|r| r.2).fold(0.0, f64::max);
        let extra = runs.iter().map(|r| r.3).fold(0.0, f64::max);
        println!(
            "{format:<12} {encoding:<9} {:<11} {:.3}/{:.3}           {peak:<13.1} {extra:.1}",
            runs[0].0,
            secs[0],
            secs[secs.len() / 2]
        );
    }
    shutdown.trigger();
    Ok(())
}
