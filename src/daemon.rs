//! `tlsward serve`: wires the config, the scheduler and the HTTP server, and owns reloads
//! (SIGHUP and `POST /-/reload`) and shutdown (SIGINT, SIGTERM): one
//! [`Shutdown`](crate::shutdown::Shutdown) stops the listeners, the probe loops and the
//! reconciler, and deployments still running are waited for before `serve` returns.
//!
//! With `[acme]`, it also serves the control channel ([`crate::control`]) the CLI uses to
//! ask it for orders and deployments.
//!
//! A reload parses and validates the new config completely before touching anything; a bad
//! config is rejected with every problem logged, and the old one keeps running. The config's
//! file_sd files are looked at every `file_sd_refresh` ([`watch_file_sd`]): a change to them
//! reloads the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError};
use std::time::UNIX_EPOCH;

use anyhow::Context;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config, FileSd, RemediationSettings};
use crate::control;
use crate::exporter::{self, ExporterState, ProbeProfiles, ReloadRequest};
use crate::issuer::Http01Responder;
use crate::listen::Limits;
use crate::reconcile::{Desired, Reconciler};
use crate::schedule::{Results, ScheduleMetrics, Scheduler};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Runtime options of `serve` (not config keys).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The config file.
    pub config: PathBuf,
    /// Overrides `[server] listen`.
    pub listen: Option<SocketAddr>,
}

/// The daemon's own metrics.
#[derive(Debug, Clone)]
struct DaemonMetrics {
    reload_ok: Gauge,
    reload_time: Gauge<f64, AtomicU64>,
}

impl DaemonMetrics {
    fn register(reg: &mut Registry) -> Self {
        use crate::version::{BUILD_DATE, REVISION, VERSION};
        let build = Info::new(vec![
            ("version", VERSION),
            ("revision", REVISION),
            ("build_date", BUILD_DATE),
        ]);
        reg.register(
            "build",
            "tlsward's version, git commit and build date",
            build,
        );
        let reload_ok = Gauge::default();
        reg.register(
            "config_last_reload_successful",
            "1 when the last config load or reload succeeded",
            reload_ok.clone(),
        );
        let reload_time = Gauge::<f64, AtomicU64>::default();
        reg.register(
            "config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully",
            reload_time.clone(),
        );
        Self {
            reload_ok,
            reload_time,
        }
    }

    fn loaded(&self, ok: bool, clock: &dyn Clock) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            let now = clock
                .now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.reload_time.set(now);
        }
    }
}

/// What the reconciler works from, out of a loaded config.
pub fn desired(config: &Config, r: &RemediationSettings) -> Desired {
    Desired {
        acme: r.acme.clone(),
        renew_fraction: r.renew_fraction,
        certificates: r.certificates.clone(),
        endpoints: r.endpoints.clone(),
        hooks: config.hooks.clone(),
        targets: config.targets.clone(),
        deploy: r.deploy.clone(),
        rollouts: r.rollouts.clone(),
    }
}

/// Compiles every configured hook in the background, so a broken component is reported at
/// startup and the first deployment does not wait for the compiler.
fn preload(hooks: &Arc<crate::hooks::Hooks>, config: &Config) {
    for spec in config.hooks.values() {
        let (hooks, spec) = (hooks.clone(), spec.clone());
        tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            match hooks.preload(&spec.component) {
                Ok(kind) => {
                    info!(hook = %spec.name, from = ?kind, seconds = t.elapsed().as_secs_f64(), "hook ready");
                }
                Err(e) => error!(hook = %spec.name, error = %e, "hook cannot be loaded"),
            }
        });
    }
}

/// The hook engine, with compiled hooks cached under the state directory.
pub fn hook_engine(config: &Config) -> anyhow::Result<Arc<crate::hooks::Hooks>> {
    Ok(Arc::new(crate::hooks::Hooks::new(Some(
        config.state_dir.join("hook-cache"),
    ))?))
}

fn profiles(config: &Config) -> ProbeProfiles {
    ProbeProfiles {
        by_name: config.profiles.clone(),
        default: config.default_profile.clone(),
        allowed: config.probe_targets.clone(),
        configured: config
            .targets
            .iter()
            .map(|t| ((t.name.clone(), t.profile.clone()), t.clone()))
            .collect(),
    }
}

/// Raises the soft limit on open files to the hard one, as nginx and Prometheus do: the usual
/// default soft limit (1024 under systemd) is low for hundreds of probes and connections.
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => info!(from = soft, to = hard, "raised the open files limit"),
                Err(e) => warn!(soft, hard, error = %e, "cannot raise the open files limit"),
            }
        }
        (soft, hard) => info!(soft = ?soft, hard = ?hard, "open files limit"),
    }
}

/// The open files `serve` may use, shared out so that connections cannot starve probes:
/// each HTTP listener gets at most an eighth of the soft limit (its connections, plus as
/// many sockets for `/probe` requests), scheduled probes at most a quarter, and the rest is
/// left for the store, hooks and logs.
#[derive(Debug, Clone, Copy)]
struct Descriptors {
    /// The soft `RLIMIT_NOFILE`; `None` when unlimited.
    soft: Option<u64>,
}

impl Descriptors {
    fn now() -> Self {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        Self {
            soft: limit.current,
        }
    }

    fn share(self, divisor: u64) -> usize {
        self.soft.map_or(usize::MAX, |soft| {
            usize::try_from((soft / divisor).max(1)).unwrap_or(usize::MAX)
        })
    }

    /// `limits` with the connection cap lowered to an eighth of the soft limit.
    fn fit_limits(self, limits: Limits) -> Limits {
        let most = self.share(8);
        if limits.max_connections() <= most {
            return limits;
        }
        warn!(configured = limits.max_connections(), max_connections = most, open_files = ?self.soft, "server.max_connections lowered to an eighth of the open files limit, leaving room for probes");
        limits.with_max_connections(most)
    }

    /// `concurrency` lowered to a quarter of the soft limit.
    fn fit_concurrency(self, concurrency: usize) -> usize {
        let most = self.share(4);
        if concurrency <= most {
            return concurrency;
        }
        warn!(configured = concurrency, concurrency = most, open_files = ?self.soft, "defaults.concurrency lowered to a quarter of the open files limit");
        most
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    raise_open_files_limit();
    let config = config::load(&opts.config)?;
    let listen = opts.listen.unwrap_or(config.listen);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    run(
        listener,
        opts.config.clone(),
        config,
        clock,
        shutdown_signal(),
    )
    .await
}

/// Runs the daemon on `listener` with an already loaded `config` until `shutdown`
/// completes; then every part stops on one [`Shutdown`], and deployments still running are
/// drained ([`Reconciler::drain`]) before it returns.
pub async fn run(
    listener: TcpListener,
    path: PathBuf,
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listen = listener
        .local_addr()
        .context("the listener has no address")?;
    let descriptors = Descriptors::now();
    let limits = descriptors.fit_limits(config.http_limits);
    info!(
        max_connections = limits.max_connections(),
        header_timeout = ?limits.header_timeout(),
        idle_timeout = ?limits.idle_timeout(),
        probe_targets = %config.probe_targets,
        "HTTP limits"
    );
    let mut registry = Registry::default();
    let (daemon_metrics, schedule_metrics) = {
        let sub = registry.sub_registry_with_prefix("tlsward");
        (DaemonMetrics::register(sub), ScheduleMetrics::register(sub))
    };
    daemon_metrics.loaded(true, clock.as_ref());
    let results = Arc::new(Results::default());
    // The one signal every part below stops on.
    let stop = Shutdown::new();
    let mut control_task = None;
    let reconciler = match &config.remediation {
        Some(r) => {
            let store = Arc::new(
                Store::open(&config.store.path, &config.store.key).with_context(|| {
                    format!("cannot open the store {}", config.store.path.display())
                })?,
            );
            // The CLI asks this daemon, rather than acting beside it, through this socket.
            let control = control::bind(&control::socket_path(&config.store.path))
                .context("cannot open the control socket")?;
            let responder = Http01Responder::new();
            let http01 = TcpListener::bind(r.http01_listen)
                .await
                .with_context(|| format!("cannot listen for HTTP-01 on {}", r.http01_listen))?;
            tokio::spawn(responder.clone().serve_with(http01, limits, stop.clone()));
            let hooks = hook_engine(&config)?;
            preload(&hooks, &config);
            let reconciler = Reconciler::new(
                store.clone(),
                desired(&config, r),
                responder,
                results.clone(),
                clock.clone(),
                hooks,
                registry.sub_registry_with_prefix("tlsward"),
            );
            tokio::spawn(reconciler.clone().run(stop.clone()));
            info!(socket = %control.path().display(), "control socket ready");
            control_task = Some(tokio::spawn(control::serve(
                control,
                reconciler.clone(),
                stop.clone().into_future(),
            )));
            if let Some(a) = &config.agents {
                let backend: Arc<dyn crate::agent::AgentBackend> = reconciler.clone();
                start_agent_api(
                    a,
                    limits,
                    store.clone(),
                    backend,
                    clock.clone(),
                    registry.sub_registry_with_prefix("tlsward"),
                    stop.clone(),
                )
                .await?;
            }
            info!(certificates = r.certificates.len(), endpoints = r.endpoints.len(), http01 = %r.http01_listen, "remediation running");
            Some(reconciler)
        }
        None => None,
    };
    // Scheduled backups and their restore drill, on a connection of their own.
    let backups = match config.backup.clone().filter(|b| b.schedule.is_some()) {
        Some(b) => {
            let store = Store::open(&config.store.path, &config.store.key).with_context(|| {
                format!("cannot open the store {}", config.store.path.display())
            })?;
            let reg = registry.sub_registry_with_prefix("tlsward");
            let metrics =
                crate::backup::BackupMetrics::register(reg, b.drill_identity_file.is_some());
            let run = crate::backup::run(Arc::new(store), b, clock.clone(), metrics, stop.clone());
            Some(tokio::spawn(run))
        }
        None => None,
    };
    let scheduler = Scheduler::new(
        results.clone(),
        schedule_metrics,
        clock.clone(),
        stop.clone(),
    );
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let (file_sd, file_sd_rx) = watch::channel(config.file_sd.clone());
    let (sd_changed_tx, mut sd_changed) = mpsc::channel::<()>(1);
    if !config.file_sd.is_empty() {
        info!(patterns = ?config.file_sd.patterns, refresh = ?config.file_sd.refresh, "watching file_sd files");
    }
    tokio::spawn(watch_file_sd(file_sd_rx, sd_changed_tx, stop.clone()));
    let tls = config.web.tls.clone();
    let state = Arc::new(ExporterState::new(
        registry,
        results,
        profiles(&config),
        config.web.clone(),
        reload_tx,
        clock.clone(),
    ));
    let started_limits = config.http_limits;
    state.set_metrics(config.metrics);
    let targets = scheduled(config.targets, config.shard);
    info!(
        version = %env!("CARGO_PKG_VERSION"),
        %listen,
        config = %path.display(),
        targets = targets.len(),
        "tlsward serving"
    );
    scheduler.apply(
        targets,
        descriptors.fit_concurrency(config.concurrency),
        config.first_round,
    );

    let server = tokio::spawn(exporter::serve(
        listener,
        state.clone(),
        tls,
        limits,
        stop.clone(),
    ));
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    tokio::pin!(shutdown);
    loop {
        let answer = tokio::select! {
            () = &mut shutdown => break,
            _ = hup.recv() => None,
            Some(()) = sd_changed.recv() => None,
            req = reload_rx.recv() => match req {
                Some(tx) => Some(tx),
                None => break,
            },
        };
        let outcome = reload(
            &path,
            &scheduler,
            &state,
            reconciler.as_deref(),
            (descriptors, started_limits),
            &file_sd,
        );
        daemon_metrics.loaded(outcome.is_ok(), clock.as_ref());
        if let Some(tx) = answer {
            let _ = tx.send(outcome);
        }
    }
    info!("shutting down");
    stop.trigger();
    if let Some(task) = control_task {
        // It removes its socket as it ends: a CLI started after this runs alone.
        let _ = task.await;
    }
    server.await.context("the HTTP server task failed")?;
    // Last, as it may take longest: a deployment cut off here would leave its endpoint
    // half-written and be found interrupted at the next start.
    if let Some(r) = &reconciler {
        r.drain().await;
    }
    if let Some(task) = backups {
        // A backup in progress is finished (its file is renamed into place only whole).
        let _ = task.await;
    }
    Ok(())
}

/// Loads the config again and applies it, or keeps the running one. The HTTP listeners'
/// limits stay as they started (`started`).
fn reload(
    path: &Path,
    scheduler: &Scheduler,
    state: &ExporterState,
    reconciler: Option<&Reconciler>,
    (descriptors, started): (Descriptors, Limits),
    file_sd: &watch::Sender<FileSd>,
) -> Result<(), String> {
    match config::load(path) {
        Ok(config) => {
            match (reconciler, &config.remediation) {
                (Some(r), Some(new)) => r.update(desired(&config, new)),
                (None, None) => {}
                _ => return Err("adding or removing [acme] needs a restart".into()),
            }
            *state
                .profiles
                .write()
                .unwrap_or_else(PoisonError::into_inner) = profiles(&config);
            *state.web.write().unwrap_or_else(PoisonError::into_inner) =
                Arc::new(config.web.clone());
            if config.http_limits != started {
                warn!(
                    "server.max_connections, header_timeout and idle_timeout changes take effect at the next start"
                );
            }
            if !config.file_sd.is_empty() {
                info!(patterns = ?config.file_sd.patterns, refresh = ?config.file_sd.refresh, "watching file_sd files");
            }
            file_sd.send_replace(config.file_sd.clone());
            state.set_metrics(config.metrics);
            let scheduled = scheduled(config.targets, config.shard);
            let targets = scheduled.len();
            scheduler.apply(
                scheduled,
                descriptors.fit_concurrency(config.concurrency),
                config.first_round,
            );
            info!(config = %path.display(), targets, "config reloaded");
            Ok(())
        }
        Err(e) => {
            error!(config = %path.display(), problems = %e.problems.join("; "), "config reload rejected; the previous config stays in effect");
            Err(e.to_string())
        }
    }
}

/// The targets this instance probes on a schedule: its shard of them, or all.
fn scheduled(
    targets: Vec<Arc<crate::schedule::TargetSpec>>,
    shard: Option<crate::schedule::Shard>,
) -> Vec<Arc<crate::schedule::TargetSpec>> {
    let Some(shard) = shard else {
        return targets;
    };
    let all = targets.len();
    let mine = shard.select(targets);
    info!(%shard, targets = mine.len(), of = all, "probing this shard of the targets");
    mine
}

/// Looks at the file_sd files every `refresh` and sends on `changed` when they differ from
/// what the running config read, or from the last look: the loop in [`run`] then reloads as
/// for SIGHUP. A reload that is rejected leaves the last look in place, so a bad file is
/// reported once, and again only when it changes. `settings` carries the files of each
/// config applied; with none it only waits for one that has some.
async fn watch_file_sd(
    mut settings: watch::Receiver<FileSd>,
    changed: mpsc::Sender<()>,
    stop: Shutdown,
) {
    let mut sd = settings.borrow_and_update().clone();
    let mut last = sd.stamp.clone();
    loop {
        tokio::select! {
            () = stop.wait() => return,
            r = settings.changed() => {
                if r.is_err() {
                    return;
                }
                sd = settings.borrow_and_update().clone();
                last = sd.stamp.clone();
                continue;
            }
            () = tokio::time::sleep(sd.refresh), if !sd.is_empty() => {}
        }
        let look = sd.clone();
        // A glob and a stat per file: off the async workers.
        let Ok(now) = tokio::task::spawn_blocking(move || look.stamp_now()).await else {
            continue;
        };
        if now != last {
            last = now;
            info!(patterns = ?sd.patterns, "file_sd files changed; reloading");
            if changed.send(()).await.is_err() {
                return;
            }
        }
    }
}

/// `[agents]`: loads (or makes) the agent CA, binds the agent API's listener and serves it
/// over `backend` until `stop`. Listener changes need a restart.
async fn start_agent_api(
    a: &config::AgentsSettings,
    limits: Limits,
    store: Arc<Store>,
    backend: Arc<dyn crate::agent::AgentBackend>,
    clock: Arc<dyn Clock>,
    registry: &mut Registry,
    stop: Shutdown,
) -> anyhow::Result<()> {
    use crate::agent::{ca::AgentCa, metrics::AgentCollector, server};
    let now = crate::clock::unix_seconds(clock.as_ref());
    let ca = Arc::new(AgentCa::load_or_create(&store, now).context("cannot load the agent CA")?);
    let tls = ca
        .server_config(&a.names, now)
        .context("cannot make the agent API's server certificate")?;
    let listener = TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen for agents on {}", a.listen))?;
    AgentCollector::register(registry, store.clone());
    let api = server::AgentApi::new(store, ca.clone(), backend, clock, a.identity_lifetime);
    let limits = limits.with_max_connections(a.max_connections);
    info!(listen = %a.listen, ca_sha256 = %ca.fingerprint(), "agent API ready");
    tokio::spawn(server::serve(
        listener,
        limits,
        tls,
        Arc::new(api),
        stop.into_future(),
    ));
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
