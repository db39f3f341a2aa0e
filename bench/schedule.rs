//! The scheduler at fleet scale (`bench/schedule`, not a test): N targets that need not
//! answer, each pinned to a closed loopback port on one of 127.0.0.1–254 (refused at once),
//! scheduled by the real [`Scheduler`] into the real [`Results`] with the real prober, on one
//! interval under one concurrency limit, first round spread over the interval.
//!
//! Prints, as `key value` lines for `bench/schedule` to tabulate: RSS with the targets built
//! (the config's part), after `apply` (the scheduler's queue and the empty results), at
//! steady state (every target probed at least once), and over a measuring window after that
//! the probes per second, the scheduler lag p50/p99 (from `tlsward_scheduler_lag_seconds`,
//! interpolated within its buckets as Prometheus's `histogram_quantile` does) and the CPU.
//!
//! Usage: schedule-bench N INTERVAL_SECONDS CONCURRENCY MEASURE_SECONDS

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tlsward::cert::TrustStore;
use tlsward::clock::{Clock, SystemClock};
use tlsward::probe::{Module, Prober, Target};
use tlsward::schedule::{FirstRound, Results, ScheduleMetrics, Scheduler, TargetSpec};
use tlsward::shutdown::Shutdown;

/// A kernel memory figure of this process from `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) this process used so far, from `/proc/self/stat` (in the
/// kernel's USER_HZ ticks, 100 a second on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// The probes finished so far and the lag histogram's cumulative buckets, from the registry.
fn read_metrics(reg: &Registry) -> (f64, Vec<(f64, f64)>) {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, reg).expect("encode");
    let mut probes = 0.0;
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if name.starts_with("tlsward_probes_total") {
            probes += value;
        } else if let Some(le) = name
            .strip_prefix("tlsward_scheduler_lag_seconds_bucket{le=\"")
            .and_then(|r| r.strip_suffix("\"}"))
        {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("bucket bound")
            };
            buckets.push((le, value));
        }
    }
    (probes, buckets)
}

/// The `q` quantile of the observations between two readings of the cumulative buckets,
/// interpolated linearly within its bucket.
fn quantile(q: f64, before: &[(f64, f64)], after: &[(f64, f64)]) -> f64 {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let total = counts.last().map_or(0.0, |(_, c)| *c);
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, c) in counts {
        if c >= rank {
            if le.is_infinite() {
                return lower;
            }
            let share = if c > below {
                (rank - below) / (c - below)
            } else {
                0.0
            };
            return lower + (le - lower) * share;
        }
        (lower, below) = (le, c);
    }
    lower
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let [n, interval, concurrency, measure] = args[..] else {
        eprintln!("usage: schedule-bench N INTERVAL_SECONDS CONCURRENCY MEASURE_SECONDS");
        std::process::exit(2);
    };
    let interval = Duration::from_secs(interval);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    println!("rss_start_mib {:.1}", status_mib("VmRSS:"));

    let prober = Arc::new(Prober::new(Module::new(Arc::new(TrustStore::empty()))));
    // One copy of the profile's name for all, as the config shares it.
    let profile: Arc<str> = "default".into();
    let specs: Vec<TargetSpec> = (0..n)
        .map(|i| {
            let name = format!("host-{i}.fleet.invalid:443");
            let mut target: Target = name.parse().expect("target");
            let host = Ipv4Addr::new(127, 0, 0, 1 + (i % 254) as u8);
            target.connect_to = vec![SocketAddr::from((host, closed))];
            TargetSpec {
                name: name.into(),
                profile: profile.clone(),
                target,
                interval,
                prober: prober.clone(),
                labels: Vec::new(),
                all_addresses: false,
            }
        })
        .collect();
    println!("rss_specs_mib {:.1}", status_mib("VmRSS:"));

    let mut reg = Registry::with_prefix("tlsward");
    let metrics = ScheduleMetrics::register(&mut reg);
    let results = Arc::new(Results::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let scheduler = Scheduler::new(results.clone(), metrics, clock, Shutdown::new());
    let started = Instant::now();
    scheduler.apply(specs, concurrency as usize, FirstRound::Spread);
    // The dispatcher builds its queue as it takes the schedule, at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("rss_applied_mib {:.1}", status_mib("VmRSS:"));

    while !results.all_probed() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("first_round_s {:.1}", started.elapsed().as_secs_f64());

    let (probes0, lag0) = read_metrics(&reg);
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(measure)).await;
    let (probes1, lag1) = read_metrics(&reg);
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    let probes = probes1 - probes0;
    println!("rss_steady_mib {:.1}", status_mib("VmRSS:"));
    println!("rss_peak_mib {:.1}", status_mib("VmHWM:"));
    println!("probes_per_s {:.0}", probes / wall);
    println!("lag_p50_ms {:.2}", quantile(0.5, &lag0, &lag1) * 1000.0);
    println!("lag_p99_ms {:.2}", quantile(0.99, &lag0, &lag1) * 1000.0);
    println!("cpu_percent {:.1}", cpu / wall * 100.0);
    println!("cpu_us_per_probe {:.1}", cpu / probes * 1e6);
    println!(
        "scheduler_bytes_per_target {}",
        size_of::<(tokio::time::Instant, usize)>() + size_of::<Arc<TargetSpec>>()
    );
    scheduler.stop();
}
