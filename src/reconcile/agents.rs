//! The reconciler's side of agents ([`AgentBackend`]): the desired state of each agent's
//! endpoints, the steps agents report, the center's verification of what they installed and
//! its rollback requests, and the CSRs of `key = "agent"` certificates.
//!
//! Agent endpoints are queued as any other (`rollout.rs`), but the center never runs their
//! hook: the agent claims a deployment with `started`, reports `installed` with the leaf it
//! wrote, and the center then probes the endpoint with the same loop as its own deployments
//! (`Deployer::verify_served`). When `verify_timeout` passes, or the window the deployment
//! ran in closes, with the new leaf not served, the center asks the agent to roll back
//! (kept in memory and journaled `deployment.rollback_requested`); a restarted center
//! verifies `installed` deployments again. What to tell the agent is the pure
//! [`instruction`].

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock, PoisonError, Weak};

use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::deploy::Verdict;
use super::outcome::Outcome;
use super::{Desired, EndpointSpec, Reconciler, plan, unix};
use crate::agent::protocol::{
    AgentEndpoint, CsrSubmission, CsrWanted, DeploymentOrder, Instruction, KeyMode, Report,
    ReportEvent, VersionRef,
};
use crate::agent::{AgentBackend, Refusal};
use crate::store::{AgentCsr, Deployment, DeploymentState, Version};

/// The largest report detail kept as sent (its JSON, in bytes); a larger one is replaced
/// by a note saying so.
const MAX_DETAIL: usize = 16 * 1024;
/// How long `deploy run-now` of an agent endpoint waits for the agent, besides the
/// verification's own timeout.
const RUN_NOW_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
/// How often it looks whether the deployment ended.
const RUN_NOW_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Why the center asks an agent to roll back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackWhy {
    /// `verify_timeout` passed with the endpoint not serving the new leaf.
    VerifyTimeout,
    /// The change window the deployment ran in closed first.
    WindowClosed,
}

impl RollbackWhy {
    /// Its stable name (the order's `why`, the journal's and the detail's).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::VerifyTimeout => "verify_timeout",
            Self::WindowClosed => "window_closed",
        }
    }
}

/// What the reconciler keeps in memory for agents.
#[derive(Debug)]
pub(super) struct AgentState {
    /// Per agent (by name), bumped whenever that agent's desired state may have changed:
    /// one agent's report or verification wakes only that agent's long poll, so a rollout
    /// to N agents costs N looks at the store, not N x N.
    changes: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Rollbacks asked for, by deployment id.
    rollbacks: Mutex<HashMap<i64, RollbackWhy>>,
    /// Installed deployments being verified now.
    verifying: Mutex<HashSet<i64>>,
    /// The nonce of the CSR wanted for each `key = "agent"` certificate.
    nonces: Mutex<HashMap<String, String>>,
    /// The reconciler itself, for the tasks that verify (set once it is built).
    pub(super) me: OnceLock<Weak<Reconciler>>,
}

impl Default for AgentState {
    fn default() -> Self {
        Self {
            changes: Mutex::default(),
            rollbacks: Mutex::default(),
            verifying: Mutex::default(),
            nonces: Mutex::default(),
            me: OnceLock::new(),
        }
    }
}

impl AgentState {
    /// Wakes every agent's long poll (a new version, a config reload).
    pub(super) fn bump(&self) {
        for tx in self
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes the long poll of `agent` only (its report, its deployment queued, verified,
    /// ended or asked to roll back).
    pub(super) fn bump_agent(&self, agent: &str) {
        if let Some(tx) = self
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(agent)
        {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// What `agent`'s long polls wait on. The channel is made at the agent's first poll
    /// (only identified agents poll, so there is one per enrolled agent at most).
    fn subscribe(&self, agent: &str) -> watch::Receiver<u64> {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(agent.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    /// A `key = "agent"` certificate is due and waits for its CSR: wakes the long polls
    /// once, until the agent's desired state has asked for it.
    pub(super) fn csr_due(&self, certificate: &str) {
        let asked = self
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(certificate);
        if !asked {
            self.bump();
        }
    }
}

/// What the center tells the agent to do with open deployment `d`: roll back when the
/// center asked for it, deploy now when it was approved, runs by hand (`manual`), is an
/// emergency or was already claimed, else deploy when the agent's window opens. `None`
/// for a deployment that is not open.
pub(super) fn instruction(
    d: &Deployment,
    emergency: bool,
    rollback: Option<RollbackWhy>,
) -> Option<(Instruction, Option<&'static str>)> {
    if !d.state.is_open() {
        return None;
    }
    if let Some(why) = rollback {
        return Some((Instruction::RollBack, Some(why.as_str())));
    }
    let now = match d.state {
        DeploymentState::Waiting => emergency || d.reason == super::QueueReason::Manual.as_str(),
        _ => true,
    };
    Some((
        if now {
            Instruction::DeployNow
        } else {
            Instruction::Deploy
        },
        None,
    ))
}

/// A report's detail as kept: the agent's JSON, or a note when it is too large.
fn bounded(detail: &Value) -> Value {
    let len = detail.to_string().len();
    if len > MAX_DETAIL {
        json!({ "truncated": format!("the agent's detail had {len} bytes, over {MAX_DETAIL}") })
    } else {
        detail.clone()
    }
}

fn version_ref(v: &Version) -> VersionRef {
    VersionRef {
        id: v.id,
        sha256: v.sha256.clone(),
        not_after: v.not_after,
    }
}

fn store_err(e: impl std::fmt::Display) -> Refusal {
    error!(error = %e, "the store failed answering an agent");
    Refusal::Conflict("the center could not read its store; try again".into())
}

impl Reconciler {
    /// The endpoint `name` if it is `agent`'s.
    fn agent_endpoint(desired: &Desired, agent: &str, name: &str) -> Option<EndpointSpec> {
        desired
            .endpoints
            .iter()
            .find(|e| e.name == name && e.agent.as_deref() == Some(agent))
            .cloned()
    }

    /// The CSR wanted for `e`'s certificate, when it has `key = "agent"`, is due (no version,
    /// or the plan orders it now) and no CSR is kept for it.
    fn csr_wanted(&self, e: &EndpointSpec, desired: &Desired, now: i64) -> Option<CsrWanted> {
        let spec = desired
            .certificates
            .iter()
            .find(|c| c.name == e.certificate)?;
        if spec.agent_key.as_deref() != e.agent.as_deref() {
            return None;
        }
        if self.store.agent_csr(&spec.name).ok()?.is_some() {
            return None;
        }
        let due = self.store.latest(&spec.name).ok()?.is_none()
            || plan(&self.states(desired), now, desired.renew_fraction)
                .orders
                .iter()
                .any(|(n, _)| *n == spec.name);
        if !due {
            return None;
        }
        let nonce = self
            .agents
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(spec.name.clone())
            .or_insert_with(|| format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)))
            .clone();
        Some(CsrWanted {
            domains: spec.domains.clone(),
            key_type: spec.key_type.as_str().to_owned(),
            nonce,
        })
    }

    fn order_of(
        &self,
        d: &Deployment,
        e: &EndpointSpec,
        desired: &Desired,
    ) -> Option<DeploymentOrder> {
        let version = self.store.version_by_id(d.version).ok()??;
        let emergency = d.state == DeploymentState::Waiting
            && e.window.is_some()
            && self
                .emergency(e, desired, unix(self.clock.as_ref()))
                .is_some();
        let rollback = self
            .agents
            .rollbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&d.id)
            .copied();
        let (instruction, why) = instruction(d, emergency, rollback)?;
        Some(DeploymentOrder {
            id: d.id,
            version: version_ref(&version),
            instruction,
            why: why.map(str::to_owned),
        })
    }

    /// Verifies the installed deployments a previous process left (their agents reported;
    /// the center had not seen the new leaf yet).
    pub(super) fn verify_installed(&self) {
        for d in self.store.open_deployments().unwrap_or_default() {
            if d.state == DeploymentState::Installed {
                self.spawn_verification(d, None);
            }
        }
    }

    /// Verifies installed deployment `d` in a task of its own (once at a time per
    /// deployment). `window_end`: when the window it was installed in closes, if it ran in
    /// one.
    fn spawn_verification(&self, d: Deployment, window_end: Option<i64>) {
        let Some(me) = self.agents.me.get().and_then(Weak::upgrade) else {
            return;
        };
        if !self
            .agents
            .verifying
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(d.id)
        {
            return;
        }
        tokio::spawn(async move {
            me.verify_agent_deployment(&d, window_end).await;
            me.agents
                .verifying
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&d.id);
            let agent = me
                .desired()
                .endpoints
                .iter()
                .find(|e| e.name == d.endpoint)
                .and_then(|e| e.agent.clone());
            if let Some(agent) = agent {
                me.agents.bump_agent(&agent);
            }
        });
    }

    async fn verify_agent_deployment(&self, d: &Deployment, window_end: Option<i64>) {
        let desired = self.desired();
        let Some(e) = desired.endpoints.iter().find(|e| e.name == d.endpoint) else {
            return;
        };
        let Some(target) = desired.targets.iter().find(|t| *t.name == *e.target) else {
            error!(endpoint = %e.name, "the endpoint's target is not configured: cannot verify");
            return;
        };
        let Ok(Some(version)) = self.store.version_by_id(d.version) else {
            return;
        };
        let clock = self.clock.clone();
        let go_on = move || window_end.is_none_or(|end| unix(clock.as_ref()) < end);
        let (verdict, verification) = self
            .deployer
            .verify_served(target, &desired.deploy, &version.sha256, &go_on)
            .await;
        let now = unix(self.clock.as_ref());
        let mut outcome = Outcome {
            deployment: Some(d.id),
            endpoint: Some(e.name.clone()),
            version: Some(version.id),
            sha256: Some(version.sha256.clone()),
            verification: Some(verification),
            ..Outcome::default()
        };
        let why = match verdict {
            Verdict::Served => {
                match self.store.set_deployment_state(
                    d.id,
                    DeploymentState::Verified,
                    &outcome.to_json(),
                    now,
                ) {
                    Ok(true) => {
                        self.deployer.count(&e.name, DeploymentState::Verified);
                        info!(deployment = d.id, endpoint = %e.name, agent = e.agent.as_deref().unwrap_or(""), "deployment verified");
                    }
                    Ok(false) => {}
                    Err(err) => {
                        error!(deployment = d.id, error = %err, "cannot record the verification")
                    }
                }
                return;
            }
            Verdict::TimedOut => RollbackWhy::VerifyTimeout,
            Verdict::Stopped => RollbackWhy::WindowClosed,
        };
        outcome.error = Some(match why {
            RollbackWhy::VerifyTimeout => format!(
                "the endpoint did not serve the new certificate within {}",
                humantime::format_duration(desired.deploy.verify_timeout)
            ),
            RollbackWhy::WindowClosed => {
                "the change window closed before the endpoint served the new certificate".into()
            }
        });
        self.request_rollback(d, e, why, &outcome, now);
    }

    /// Asks the agent to roll `d` back (its next desired state says so), journaled.
    fn request_rollback(
        &self,
        d: &Deployment,
        e: &EndpointSpec,
        why: RollbackWhy,
        outcome: &Outcome,
        now: i64,
    ) {
        self.agents
            .rollbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(d.id, why);
        let certificate = Some(e.certificate.as_str());
        let detail = json!({
            "deployment": d.id, "endpoint": e.name, "agent": e.agent, "why": why.as_str(),
            "detail": outcome.to_json(),
        });
        if let Err(err) =
            self.store
                .journal(now, "deployment.rollback_requested", certificate, &detail)
        {
            error!(deployment = d.id, error = %err, "cannot journal the rollback request");
        }
        warn!(deployment = d.id, endpoint = %e.name, why = why.as_str(), "the endpoint does not serve the new certificate: asking its agent to roll back");
        if let Some(agent) = &e.agent {
            self.agents.bump_agent(agent);
        }
    }

    /// Ends `d` in `state` with the agent's report, counted like the center's own.
    fn end_deployment(
        &self,
        d: &Deployment,
        e: &EndpointSpec,
        state: DeploymentState,
        mut detail: Value,
        now: i64,
    ) -> Result<(), Refusal> {
        let why = self
            .agents
            .rollbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&d.id);
        if let Some(why) = why {
            detail["rollback_requested"] = json!(why.as_str());
        }
        match self.store.set_deployment_state(d.id, state, &detail, now) {
            Ok(true) => {
                self.deployer.count(&e.name, state);
                warn!(deployment = d.id, endpoint = %e.name, state = state.as_str(), "the agent ended the deployment");
                Ok(())
            }
            Ok(false) => Err(Refusal::Conflict(format!(
                "deployment {} is no longer open",
                d.id
            ))),
            Err(err) => Err(store_err(err)),
        }
    }

    /// `report` for `agent`, with the clock's `now`.
    fn handle_report(&self, agent: &str, report: &Report) -> Result<(), Refusal> {
        let desired = self.desired();
        let now = unix(self.clock.as_ref());
        let endpoint = match &report.endpoint {
            Some(name) => Some(Self::agent_endpoint(&desired, agent, name).ok_or_else(|| {
                Refusal::Forbidden(format!("endpoint {name:?} is not agent {agent}'s"))
            })?),
            None => None,
        };
        let detail = json!({
            "agent": agent,
            "report": report.event.as_str(),
            "sha256": report.sha256,
            "next_window": report.next_window,
            "agent_detail": bounded(&report.detail),
        });
        let deployment = match report.deployment {
            Some(id) => {
                let d = self
                    .store
                    .deployment(id)
                    .map_err(store_err)?
                    .ok_or_else(|| {
                        Refusal::Forbidden(format!("no deployment {id} for agent {agent}"))
                    })?;
                let e = endpoint
                    .as_ref()
                    .filter(|e| e.name == d.endpoint)
                    .ok_or_else(|| {
                        Refusal::Forbidden(format!("deployment {id} is not agent {agent}'s"))
                    })?;
                Some((d, e.clone()))
            }
            None => None,
        };
        match report.event {
            ReportEvent::Heartbeat => Ok(()),
            ReportEvent::Redeployed => {
                let certificate = endpoint.as_ref().map(|e| e.certificate.as_str());
                self.store
                    .journal(now, "agent.redeployed", certificate, &detail)
                    .map_err(store_err)
            }
            event => {
                let (d, e) = deployment.ok_or_else(|| {
                    Refusal::BadRequest(format!("a {} report names no deployment", event.as_str()))
                })?;
                let result = self.step(&d, &e, event, report.sha256.as_deref(), detail, now);
                self.agents.bump_agent(agent);
                result
            }
        }
    }

    /// One step of deployment `d` of agent endpoint `e`.
    fn step(
        &self,
        d: &Deployment,
        e: &EndpointSpec,
        event: ReportEvent,
        sha256: Option<&str>,
        detail: Value,
        now: i64,
    ) -> Result<(), Refusal> {
        use DeploymentState::{Approved, Failed, Installed, RolledBack, Running, Waiting};
        match event {
            ReportEvent::Started => match d.state {
                Waiting | Approved => {
                    let mut why = detail;
                    why["trigger"] = json!("agent");
                    if self
                        .store
                        .claim_deployment(d.id, &why, now)
                        .map_err(store_err)?
                    {
                        info!(deployment = d.id, endpoint = %e.name, "the agent started the deployment");
                    }
                    Ok(())
                }
                Running => Ok(()),
                s => Err(Refusal::Conflict(format!("deployment {} is {s}", d.id))),
            },
            ReportEvent::Installed => {
                let version = self
                    .store
                    .version_by_id(d.version)
                    .map_err(store_err)?
                    .ok_or_else(|| {
                        Refusal::Conflict(format!("deployment {} has no version", d.id))
                    })?;
                if sha256 != Some(version.sha256.as_str()) {
                    return Err(Refusal::BadRequest(format!(
                        "deployment {} installs the leaf with SHA-256 {}, not {}",
                        d.id,
                        version.sha256,
                        crate::escape::Visible(sha256.unwrap_or("(none)"))
                    )));
                }
                if d.state == Installed {
                    return Ok(());
                }
                if matches!(d.state, Waiting | Approved) {
                    self.store
                        .claim_deployment(d.id, &json!({ "trigger": "agent" }), now)
                        .map_err(store_err)?;
                }
                if !self
                    .store
                    .install_deployment(d.id, &detail, now)
                    .map_err(store_err)?
                {
                    return Err(Refusal::Conflict(format!(
                        "deployment {} is no longer running",
                        d.id
                    )));
                }
                info!(deployment = d.id, endpoint = %e.name, "the agent installed the new certificate; verifying");
                // A deployment started in its window has until the window closes.
                let at = time::OffsetDateTime::from(self.clock.now());
                let window_end = e
                    .window
                    .as_ref()
                    .and_then(|w| w.current(at))
                    .map(|o| o.end.unix_timestamp());
                let d = self
                    .store
                    .deployment(d.id)
                    .map_err(store_err)?
                    .unwrap_or_else(|| d.clone());
                self.spawn_verification(d, window_end);
                Ok(())
            }
            ReportEvent::Failed => self.end_deployment(d, e, Failed, detail, now),
            ReportEvent::RolledBack => self.end_deployment(d, e, RolledBack, detail, now),
            ReportEvent::Redeployed | ReportEvent::Heartbeat => Ok(()),
        }
    }

    /// A CSR of `agent` for a `key = "agent"` certificate.
    fn handle_csr(
        &self,
        agent: &str,
        submission: &CsrSubmission,
        csr_der: &[u8],
    ) -> Result<(), Refusal> {
        let desired = self.desired();
        let spec = desired
            .certificates
            .iter()
            .find(|c| c.name == submission.certificate && c.agent_key.as_deref() == Some(agent))
            .ok_or_else(|| {
                Refusal::Forbidden(format!(
                    "certificate {:?} is not one whose key agent {agent} holds",
                    crate::escape::Visible(&submission.certificate)
                ))
            })?;
        let wanted = self
            .agents
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&spec.name)
            .cloned();
        if wanted.as_deref() != Some(submission.nonce.as_str()) {
            return Err(Refusal::Conflict(
                "the CSR answers no request the center has open (a stale nonce)".into(),
            ));
        }
        crate::issuer::check_csr(csr_der, &spec.domains, spec.key_type)
            .map_err(Refusal::BadRequest)?;
        let now = unix(self.clock.as_ref());
        self.store
            .put_agent_csr(&AgentCsr {
                certificate: spec.name.clone(),
                agent: agent.to_owned(),
                nonce: submission.nonce.clone(),
                csr_der: csr_der.to_vec(),
                received_at: now,
            })
            .map_err(store_err)?;
        self.agents
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&spec.name);
        info!(certificate = %spec.name, agent, "CSR received");
        self.notify.notify_one();
        self.agents.bump_agent(agent);
        Ok(())
    }
}

impl Reconciler {
    /// `deploy run-now WHICH` when WHICH is an agent endpoint (or its open deployment):
    /// queues or approves the deployment so that its agent gets `DeployNow`, then waits for
    /// the agent's reports and the center's verification to end it. Returns the deployment,
    /// the agent's hook name and how it ended; `None` when WHICH is not an agent's.
    pub async fn agent_run_now(
        &self,
        which: &str,
        by: &str,
        uid: Option<u32>,
    ) -> Option<Result<(Deployment, String, super::Finished), super::RequestError>> {
        use super::RequestError;
        let desired = self.desired();
        let open = self.store.open_deployments().unwrap_or_default();
        let endpoint = match which.parse::<i64>() {
            Ok(id) => open.iter().find(|d| d.id == id)?.endpoint.clone(),
            Err(_) => which.to_owned(),
        };
        let e = desired
            .endpoints
            .iter()
            .find(|e| e.name == endpoint && e.agent.is_some())?
            .clone();
        let now = unix(self.clock.as_ref());
        let d = match super::pick_run_now(&self.store, &desired.endpoints, which, now) {
            Ok(d) => d,
            Err(err) => return Some(Err(err)),
        };
        if d.state == DeploymentState::Waiting
            && let Err(err) = self.store.set_deployment_state(
                d.id,
                DeploymentState::Approved,
                &super::run_now_trigger(by, uid),
                now,
            )
        {
            return Some(Err(err.into()));
        }
        info!(deployment = d.id, endpoint = %e.name, agent = e.agent.as_deref().unwrap_or(""), "run-now: the agent deploys it now");
        if let Some(agent) = &e.agent {
            self.agents.bump_agent(agent);
        }
        // The agent's steps and the verification; an agent that never comes leaves it open.
        let limit = desired.deploy.verify_timeout + RUN_NOW_WAIT;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.store.deployment(d.id) {
                Ok(Some(now)) if !now.state.is_open() => {
                    let detail = self.store.deployment_detail(d.id).unwrap_or(Value::Null);
                    let finished = super::Finished {
                        state: now.state,
                        outcome: Outcome::from_json(&detail),
                    };
                    return Some(Ok((now, e.hook.clone().unwrap_or_default(), finished)));
                }
                Ok(_) => {}
                Err(err) => return Some(Err(err.into())),
            }
            if tokio::time::Instant::now() >= deadline {
                return Some(Err(RequestError::Unavailable(format!(
                    "agent {} has not finished deployment {} within {}; it stays approved (see `tlsward deploy list`)",
                    e.agent.as_deref().unwrap_or(""),
                    d.id,
                    humantime::format_duration(limit)
                ))));
            }
            tokio::time::sleep(RUN_NOW_POLL).await;
        }
    }
}

/// The agent API asks the reconciler (`Arc<Reconciler>` as `Arc<dyn AgentBackend>`).
impl AgentBackend for Reconciler {
    fn endpoints_of(&self, agent: &str) -> Vec<AgentEndpoint> {
        let r = self;
        let desired = r.desired();
        let now = unix(r.clock.as_ref());
        let mut out: Vec<AgentEndpoint> = desired
            .endpoints
            .iter()
            .filter(|e| e.agent.as_deref() == Some(agent))
            .map(|e| {
                let target = desired.targets.iter().find(|t| *t.name == *e.target);
                let latest = r.store.latest(&e.certificate).ok().flatten();
                let key = desired
                    .certificates
                    .iter()
                    .find(|c| c.name == e.certificate)
                    .filter(|c| c.agent_key.as_deref() == Some(agent))
                    .map_or(KeyMode::Central, |_| KeyMode::Agent);
                AgentEndpoint {
                    name: e.name.clone(),
                    certificate: e.certificate.clone(),
                    target: e.target.clone(),
                    server_name: target.and_then(|t| t.target.server_name.clone()),
                    connect_to: target.map_or_else(Vec::new, |t| t.target.connect_to.clone()),
                    profile: target.map_or_else(String::new, |t| t.profile.to_string()),
                    hook: e.hook.clone().unwrap_or_default(),
                    settings: e.settings.clone(),
                    window: e.window.as_ref().map(super::window::Window::definition),
                    key,
                    version: latest.as_ref().map(version_ref),
                    deployment: r
                        .store
                        .open_deployment(&e.name)
                        .ok()
                        .flatten()
                        // Held by a staged rollout: the agent does not see it yet.
                        .filter(|d| {
                            d.state != DeploymentState::Waiting || !r.rollout_holds(&d.endpoint)
                        })
                        .and_then(|d| r.order_of(&d, e, &desired)),
                    csr_wanted: match key {
                        KeyMode::Agent => r.csr_wanted(e, &desired, now),
                        KeyMode::Central => None,
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn report(&self, agent: &str, report: &Report) -> Result<(), Refusal> {
        self.handle_report(agent, report)
    }

    fn csr(&self, agent: &str, submission: &CsrSubmission, csr_der: &[u8]) -> Result<(), Refusal> {
        self.handle_csr(agent, submission, csr_der)
    }

    fn changes(&self, agent: &str) -> watch::Receiver<u64> {
        self.agents.subscribe(agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(state: DeploymentState, reason: &str) -> Deployment {
        Deployment {
            id: 7,
            endpoint: "web1".into(),
            version: 3,
            state,
            reason: reason.into(),
            not_before: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// (state, reason, emergency, rollback asked) → what the agent is told.
    type Row = (
        DeploymentState,
        &'static str,
        bool,
        Option<RollbackWhy>,
        Option<(Instruction, Option<&'static str>)>,
    );

    #[test]
    fn instructions_follow_the_queue_and_the_center_s_verdict() {
        use DeploymentState::*;
        use Instruction::{Deploy, DeployNow, RollBack};
        let rows: &[Row] = &[
            // Waiting for the window: the agent deploys when it opens, by its own clock.
            (Waiting, "renewed", false, None, Some((Deploy, None))),
            (Waiting, "foreign", false, None, Some((Deploy, None))),
            // An emergency, or `deploy run-now` (queued manual): at once.
            (Waiting, "renewed", true, None, Some((DeployNow, None))),
            (Waiting, "manual", false, None, Some((DeployNow, None))),
            // Approved by an operator, or already claimed by the agent.
            (Approved, "renewed", false, None, Some((DeployNow, None))),
            (Running, "renewed", false, None, Some((DeployNow, None))),
            (Installed, "renewed", false, None, Some((DeployNow, None))),
            // The center did not see it served: roll back, saying why.
            (
                Installed,
                "renewed",
                false,
                Some(RollbackWhy::VerifyTimeout),
                Some((RollBack, Some("verify_timeout"))),
            ),
            (
                Installed,
                "renewed",
                true,
                Some(RollbackWhy::WindowClosed),
                Some((RollBack, Some("window_closed"))),
            ),
            // Finished ones are not sent.
            (Verified, "renewed", false, None, None),
            (
                RolledBack,
                "renewed",
                false,
                Some(RollbackWhy::VerifyTimeout),
                None,
            ),
            (Failed, "renewed", true, None, None),
            (Superseded, "renewed", false, None, None),
        ];
        for (state, reason, emergency, rollback, want) in rows {
            assert_eq!(
                instruction(&d(*state, reason), *emergency, *rollback),
                *want,
                "{state} {reason} emergency={emergency} rollback={rollback:?}"
            );
        }
    }

    #[test]
    fn a_huge_detail_is_replaced_by_a_note() {
        let small = json!({ "hook": "ok" });
        assert_eq!(bounded(&small), small);
        let big = json!({ "x": "a".repeat(MAX_DETAIL) });
        let kept = bounded(&big);
        assert!(
            kept["truncated"].as_str().unwrap().contains("bytes"),
            "{kept}"
        );
    }
}
