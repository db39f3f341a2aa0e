//! The agent's loop: long-poll the desired state, fetch and check bundles as soon as they
//! are named (so a window that opens while the center is down still deploys), deploy what
//! is due by the agent's own clock, report every step (queued while the center is away),
//! renew the identity at two thirds of its life, and back off on every failure. At start,
//! an endpoint whose files are not what the agent wrote is redeployed from its local copy;
//! any other is left alone.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::backoff::Backoff;
use super::config::AgentSettings;
use super::deploy::{self, Deployer, Outcome};
use super::enroll::{self, EnrollError};
use super::http::{CALL_TIMEOUT, CallError, Client};
use super::state::{AgentFile, StateDir, StateError};
use crate::agent::protocol::{
    AgentEndpoint, BundlePayload, CsrSubmission, DesiredState, Instruction, LONG_POLL, Report,
    ReportEvent, SignedBundle,
};
use crate::clock::{Clock, unix_seconds};
use crate::hooks::{HookRun, Hooks};
use crate::shutdown::Shutdown;

/// A full resync (an empty etag) and a heartbeat at least this often.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Reports kept while the center cannot be reached; older ones are dropped first.
pub const MAX_PENDING: usize = 256;
/// The reports not yet delivered, in the state dir.
pub const REPORTS_FILE: &str = "reports.json";

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// The identity or the keys in it.
    #[error(transparent)]
    Identity(#[from] EnrollError),
    /// The server URL.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// The running agent.
pub struct Agent {
    settings: Arc<AgentSettings>,
    state: StateDir,
    file: AgentFile,
    age: age::x25519::Identity,
    client: Client,
    deployer: Deployer,
    clock: Arc<dyn Clock>,
    /// The runs that installed what each endpoint serves, by endpoint: (deployment, run).
    runs: HashMap<String, (i64, HookRun)>,
    /// Deployments already carried through, with how they ended.
    done: HashMap<i64, ReportEvent>,
    /// CSR nonces already answered.
    csrs: HashSet<String>,
    /// Reports not yet delivered (also in [`REPORTS_FILE`], so a restart or a crash of the
    /// agent while the center is away loses none).
    pending: VecDeque<Report>,
    /// The last desired state (also in `desired.json`, for a restart without the center).
    desired: Option<DesiredState>,
    /// Whether a deployment failed or was rolled back.
    failures: usize,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("agent", &self.file.agent)
            .field("server", &self.client.url())
            .finish_non_exhaustive()
    }
}

fn offset(clock: &dyn Clock) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix_seconds(clock)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Agent {
    /// The agent of `settings`' state dir, with `hooks` and `clock`.
    pub fn open(
        settings: AgentSettings,
        hooks: Arc<Hooks>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AgentError> {
        let (state, file) = StateDir::open(&settings.state_dir)?;
        let age = enroll::age_identity(&state)?;
        let url = settings
            .server
            .clone()
            .unwrap_or_else(|| file.server.clone());
        let client = Client::new(&url, enroll::identity_tls(&state)?)?;
        let desired = match state.read("desired.json")? {
            Some(_) => Some(state.read_json("desired.json")?),
            None => None,
        };
        let pending = match state.read(REPORTS_FILE)? {
            None => VecDeque::new(),
            Some(_) => match state.read_json::<VecDeque<Report>>(REPORTS_FILE) {
                Ok(mut p) => {
                    while p.len() > MAX_PENDING {
                        p.pop_front();
                    }
                    p
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the undelivered reports cannot be read; they are dropped");
                    VecDeque::new()
                }
            },
        };
        let settings = Arc::new(settings);
        Ok(Self {
            deployer: Deployer {
                settings: settings.clone(),
                hooks,
                clock: clock.clone(),
            },
            settings,
            state,
            file,
            age,
            client,
            clock,
            runs: HashMap::new(),
            done: HashMap::new(),
            csrs: HashSet::new(),
            pending,
            desired,
            failures: 0,
        })
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.file.agent
    }

    /// Deployments that failed or were rolled back so far.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// Reports waiting for the center.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// At start: every endpoint whose files are not what the agent wrote is redeployed from
    /// its local bundle (and `redeployed` reported); every other is left alone, no hook runs.
    /// Needs no center. Returns how many were redeployed.
    pub async fn restore(&mut self) -> usize {
        let installed = match self.state.installed() {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot read installed.json");
                return 0;
            }
        };
        let endpoints: BTreeMap<String, AgentEndpoint> = self
            .desired
            .iter()
            .flat_map(|d| d.endpoints.iter())
            .map(|e| (e.name.clone(), e.clone()))
            .collect();
        let mut redeployed = 0;
        for (name, inst) in &installed {
            let drifted = deploy::drifted(inst);
            if drifted.is_empty() {
                continue;
            }
            let Some(endpoint) = endpoints.get(name) else {
                tracing::warn!(endpoint = %name, "its files changed but the agent has no record of the endpoint; left alone");
                continue;
            };
            tracing::warn!(endpoint = %name, files = drifted.len(), version = inst.version, "the service's files differ from what the agent installed; redeploying the local copy");
            let payload = match deploy::local_bundle(
                &self.state,
                &self.file,
                &inst.certificate,
                inst.version,
            ) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    tracing::error!(endpoint = %name, "the installed version's bundle is not in the state dir");
                    continue;
                }
                Err(e) => {
                    tracing::error!(endpoint = %name, error = %e, "the installed version's local bundle is refused");
                    continue;
                }
            };
            let outcome = self.install(endpoint, &payload, None, inst.previous).await;
            let event = if outcome.event == ReportEvent::Installed {
                redeployed += 1;
                ReportEvent::Redeployed
            } else {
                outcome.event
            };
            self.queue(Report {
                endpoint: Some(name.clone()),
                deployment: None,
                event,
                sha256: outcome.sha256,
                next_window: None,
                detail: json!({ "drifted": drifted, "deploy": outcome.detail }),
            });
        }
        redeployed
    }

    fn queue(&mut self, report: Report) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(report);
        self.save_pending();
    }

    /// Writes the undelivered reports to [`REPORTS_FILE`] (atomically).
    fn save_pending(&self) {
        if let Err(e) = self.state.write_json(REPORTS_FILE, &self.pending) {
            tracing::warn!(error = %e, "cannot keep the undelivered reports in the state dir");
        }
    }

    /// Delivers the queued reports, oldest first; stops at the first failure (kept for the
    /// next try). A report the center refuses (4xx) is dropped.
    pub async fn flush(&mut self) -> Result<(), CallError> {
        let mut sent = false;
        let mut result = Ok(());
        while let Some(report) = self.pending.front() {
            match self.client.post("/v1/report", report, CALL_TIMEOUT).await {
                Ok(_) => {}
                Err(e)
                    if e.status()
                        .is_some_and(|s| (400..500).contains(&s) && s != 401) =>
                {
                    tracing::warn!(error = %e, "the center refused a report; dropped");
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            self.pending.pop_front();
            sent = true;
        }
        if sent {
            self.save_pending();
        }
        result
    }

    /// One `GET /v1/state` (long poll when `etag` is the current one), within `timeout`.
    pub async fn poll(&mut self, etag: &str, timeout: Duration) -> Result<DesiredState, CallError> {
        let path = format!(
            "/v1/state?etag={}",
            form_urlencoded::byte_serialize(etag.as_bytes()).collect::<String>()
        );
        let desired: DesiredState = self.client.get(&path, timeout).await?;
        if self.desired.as_ref() != Some(&desired) {
            if let Err(e) = self.state.write_json("desired.json", &desired) {
                tracing::warn!(error = %e, "cannot keep the desired state");
            }
            self.desired = Some(desired.clone());
        }
        Ok(desired)
    }

    /// Acts on the last desired state: CSRs, bundles, and the deployments due at the agent's
    /// `now`. Returns when the earliest window of a deployment still waiting opens.
    pub async fn act(&mut self) -> Option<i64> {
        let desired = self.desired.clone()?;
        let mut wake: Option<i64> = None;
        for endpoint in &desired.endpoints {
            if let Some(at) = self.act_on(endpoint).await {
                wake = Some(wake.map_or(at, |w: i64| w.min(at)));
            }
        }
        wake
    }

    async fn act_on(&mut self, endpoint: &AgentEndpoint) -> Option<i64> {
        if let Some(want) = &endpoint.csr_wanted
            && !self.csrs.contains(&want.nonce)
        {
            self.submit_csr(endpoint, want).await;
        }
        // Fetch the named version at once: the window may open while the center is away.
        if let Some(v) = &endpoint.version
            && let Err(e) = self.bundle(&endpoint.certificate, v.id, &v.sha256).await
        {
            tracing::warn!(endpoint = %endpoint.name, version = v.id, error = %e, "cannot get the bundle");
        }
        let order = endpoint.deployment.as_ref()?;
        if self.done.contains_key(&order.id) {
            return None;
        }
        let now = offset(self.clock.as_ref());
        let window = match endpoint.window.as_ref().map(|w| w.window()).transpose() {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(endpoint = %endpoint.name, error = %e, "the center sent a window that does not parse; deploying only when told to deploy now");
                None
            }
        };
        let next_window = window
            .as_ref()
            .map(|w| w.next_open(now).start.unix_timestamp());
        match order.instruction {
            Instruction::RollBack => {
                let detail = self.roll_back(endpoint, order.why.as_deref()).await;
                self.failures += 1;
                self.done.insert(order.id, ReportEvent::RolledBack);
                self.queue(Report {
                    endpoint: Some(endpoint.name.clone()),
                    deployment: Some(order.id),
                    event: ReportEvent::RolledBack,
                    sha256: None,
                    next_window,
                    detail,
                });
                None
            }
            Instruction::Deploy | Instruction::DeployNow => {
                let installed = self.state.installed().unwrap_or_default();
                if let Some(inst) = installed.get(&endpoint.name)
                    && inst.version == order.version.id
                    && deploy::drifted(inst).is_empty()
                {
                    // Already there (a restart after installing): say so again.
                    self.done.insert(order.id, ReportEvent::Installed);
                    self.queue(Report {
                        endpoint: Some(endpoint.name.clone()),
                        deployment: Some(order.id),
                        event: ReportEvent::Installed,
                        sha256: Some(inst.sha256.clone()),
                        next_window,
                        detail: json!({ "already_installed": true }),
                    });
                    return None;
                }
                let open = order.instruction == Instruction::DeployNow
                    || window.as_ref().is_none_or(|w| w.is_open(now));
                if !open {
                    return next_window;
                }
                self.queue(Report {
                    endpoint: Some(endpoint.name.clone()),
                    deployment: Some(order.id),
                    event: ReportEvent::Started,
                    sha256: None,
                    next_window,
                    detail: json!({ "instruction": order.instruction }),
                });
                let _ = self.flush().await;
                let payload = match self
                    .bundle(
                        &endpoint.certificate,
                        order.version.id,
                        &order.version.sha256,
                    )
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        // Not done: tried again on the next pass, with the backoff.
                        tracing::warn!(endpoint = %endpoint.name, error = %e, "no usable bundle for the deployment");
                        return None;
                    }
                };
                let previous = installed.get(&endpoint.name).map(|i| i.version);
                let outcome = self
                    .install(endpoint, &payload, Some(order.id), previous)
                    .await;
                if outcome.event != ReportEvent::Installed {
                    self.failures += 1;
                }
                tracing::info!(endpoint = %endpoint.name, deployment = order.id, event = outcome.event.as_str(), "deployment ran");
                self.done.insert(order.id, outcome.event);
                self.queue(Report {
                    endpoint: Some(endpoint.name.clone()),
                    deployment: Some(order.id),
                    event: outcome.event,
                    sha256: outcome.sha256,
                    next_window,
                    detail: outcome.detail,
                });
                None
            }
        }
    }

    /// Deploys `payload` to `endpoint` and, when installed, records it.
    async fn install(
        &mut self,
        endpoint: &AgentEndpoint,
        payload: &BundlePayload,
        deployment: Option<i64>,
        previous: Option<i64>,
    ) -> Outcome {
        let material = match deploy::material(&endpoint.name, payload, &self.age, &self.state) {
            Ok(m) => m,
            Err(e) => {
                return Outcome {
                    event: ReportEvent::Failed,
                    sha256: None,
                    detail: json!({ "error": e }),
                    run: None,
                };
            }
        };
        let mut outcome = self
            .deployer
            .deploy(endpoint, material, &payload.sha256)
            .await;
        if outcome.event == ReportEvent::Installed
            && let Some(run) = outcome.run.take()
        {
            let record = deploy::installed_record(payload, &run, previous);
            let mut installed = self.state.installed().unwrap_or_default();
            installed.insert(endpoint.name.clone(), record);
            if let Err(e) = self.state.set_installed(&installed) {
                tracing::error!(error = %e, "cannot record the installed version");
            }
            self.runs
                .insert(endpoint.name.clone(), (deployment.unwrap_or(0), run));
        }
        outcome
    }

    /// The center asked for a roll back: undo the run kept in memory, or (after a restart)
    /// redeploy the previous local bundle.
    async fn roll_back(
        &mut self,
        endpoint: &AgentEndpoint,
        why: Option<&str>,
    ) -> serde_json::Value {
        tracing::warn!(endpoint = %endpoint.name, why = why.unwrap_or("-"), "the center asks for a roll back");
        let mut installed = self.state.installed().unwrap_or_default();
        let inst = installed.get(&endpoint.name).cloned();
        if let Some((_, run)) = self.runs.remove(&endpoint.name) {
            let r = self.deployer.roll_back(&run).await;
            if let Some(inst) = &inst {
                match inst.previous {
                    Some(prev) => {
                        installed.insert(
                            endpoint.name.clone(),
                            super::state::InstalledEndpoint {
                                version: prev,
                                files: Vec::new(),
                                previous: None,
                                sha256: String::new(),
                                ..inst.clone()
                            },
                        );
                    }
                    None => {
                        installed.remove(&endpoint.name);
                    }
                }
                let _ = self.state.set_installed(&installed);
            }
            return json!({ "why": why, "rollback": r });
        }
        let Some(prev) = inst.as_ref().and_then(|i| i.previous) else {
            return json!({ "why": why, "rollback": "nothing the agent installed to undo" });
        };
        let certificate = inst
            .as_ref()
            .map(|i| i.certificate.clone())
            .unwrap_or_default();
        match deploy::local_bundle(&self.state, &self.file, &certificate, prev) {
            Ok(Some(payload)) => {
                let o = self.install(endpoint, &payload, None, None).await;
                json!({ "why": why, "redeployed_previous": prev, "event": o.event, "detail": o.detail })
            }
            Ok(None) => json!({ "why": why, "rollback": "the previous bundle is not kept" }),
            Err(e) => json!({ "why": why, "rollback": e.to_string() }),
        }
    }

    /// The bundle of `certificate` version `id`: the local copy, else fetched and checked.
    async fn bundle(
        &mut self,
        certificate: &str,
        id: i64,
        sha256: &str,
    ) -> Result<BundlePayload, String> {
        if let Ok(Some(p)) = deploy::local_bundle(&self.state, &self.file, certificate, id)
            && p.sha256.eq_ignore_ascii_case(sha256)
        {
            return Ok(p);
        }
        let signed: SignedBundle = self
            .client
            .get(&format!("/v1/bundle/{id}"), CALL_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let protect = self.state.installed().ok().and_then(|i| {
            i.values()
                .find(|e| e.certificate == certificate)
                .map(|e| e.version)
        });
        deploy::accept_bundle(
            &self.state,
            &self.file.signing_key,
            &crate::agent::sign::Expected {
                agent: &self.file.agent,
                certificate,
                version: id,
                sha256,
            },
            &signed,
            self.settings.keep,
            protect,
        )
        .map_err(|e| {
            tracing::error!(certificate, version = id, error = %e, "a bundle from the center is refused");
            e.to_string()
        })
    }

    async fn submit_csr(
        &mut self,
        endpoint: &AgentEndpoint,
        want: &crate::agent::protocol::CsrWanted,
    ) {
        let made = super::keys::make(
            &self.state,
            &self.age,
            &endpoint.certificate,
            &want.key_type,
            &want.domains,
            unix_seconds(self.clock.as_ref()),
        );
        let csr_pem = match made {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(certificate = %endpoint.certificate, error = %e, "cannot make a key for the CSR");
                return;
            }
        };
        let submission = CsrSubmission {
            certificate: endpoint.certificate.clone(),
            nonce: want.nonce.clone(),
            csr_pem,
        };
        match self.client.post("/v1/csr", &submission, CALL_TIMEOUT).await {
            Ok(_) => {
                tracing::info!(certificate = %endpoint.certificate, "CSR sent; the key stays here");
                self.csrs.insert(want.nonce.clone());
            }
            Err(e) => {
                tracing::warn!(certificate = %endpoint.certificate, error = %e, "cannot send the CSR")
            }
        }
    }

    /// Renews the identity when two thirds of its life have passed.
    async fn renew_if_due(&mut self) {
        let now = unix_seconds(self.clock.as_ref());
        if !enroll::renewal_due(&self.file, now) {
            return;
        }
        match enroll::renew(&self.state, &self.file, &self.client, now).await {
            Ok(next) => {
                self.file = next;
                match enroll::identity_tls(&self.state) {
                    Ok(tls) => {
                        if let Ok(c) = Client::new(self.client.url(), tls) {
                            self.client = c;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "the renewed identity cannot be used"),
                }
                tracing::info!(not_after = self.file.identity_not_after, "identity renewed");
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the identity yet"),
        }
    }

    /// `--once`: restore, one sync, deploy what is due now, deliver the reports. The exit
    /// code: 0 when nothing failed, 1 when a deployment failed or was rolled back or the
    /// center could not be reached.
    pub async fn once(mut self) -> u8 {
        self.restore().await;
        let mut code = 0;
        match self.poll("", CALL_TIMEOUT).await {
            Ok(_) => {
                self.renew_if_due().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot get the desired state; acting on the last one kept");
                code = 1;
            }
        }
        self.act().await;
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, reports = self.pending.len(), "reports not delivered");
        }
        if self.failures > 0 { 1 } else { code }
    }

    /// Runs until `shutdown`: a running hook finishes first. Returns 0.
    pub async fn run(mut self, shutdown: Shutdown, mut backoff: Backoff) -> u8 {
        self.restore().await;
        let mut etag = String::new();
        let mut resync = tokio::time::Instant::now() + RESYNC;
        let mut wake = self.act().await;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            if tokio::time::Instant::now() >= resync {
                etag.clear();
                resync = tokio::time::Instant::now() + RESYNC;
                self.queue(Report {
                    endpoint: None,
                    deployment: None,
                    event: ReportEvent::Heartbeat,
                    sha256: None,
                    next_window: None,
                    detail: json!({ "version": crate::version::VERSION }),
                });
            }
            let until_wake = wake.map(|w| {
                Duration::from_secs(
                    u64::try_from(w - unix_seconds(self.clock.as_ref()))
                        .unwrap_or(0)
                        .max(1),
                )
            });
            let result = {
                let flushed = self.flush().await;
                match flushed {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let current = etag.clone();
                        tokio::select! {
                            r = self.poll(&current, LONG_POLL + CALL_TIMEOUT) => r.map(Some),
                            () = sleep_opt(until_wake) => Ok(None),
                            () = shutdown.wait() => break,
                        }
                    }
                }
            };
            match result {
                Ok(Some(desired)) => {
                    backoff.succeeded();
                    etag = desired.etag;
                    self.renew_if_due().await;
                }
                Ok(None) => {}
                Err(e) => {
                    let delay = backoff.failed();
                    if e.status() == Some(401) {
                        tracing::error!(error = %e, "the center refuses this agent's identity (revoked? enroll again)");
                    } else {
                        tracing::warn!(error = %e, retry_in = ?delay, failures = backoff.failures(), "the center is unreachable");
                    }
                    // Windows keep opening by the agent's clock while the center is away.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = sleep_opt(until_wake) => {}
                        () = shutdown.wait() => break,
                    }
                }
            }
            wake = self.act().await;
        }
        tracing::info!(reports = self.pending.len(), "the agent stops");
        0
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
