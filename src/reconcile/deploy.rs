//! One deployment, end to end: claim it, run the endpoint's hook in its sandbox, then
//! re-probe the endpoint (same target, SNI and profile as monitoring) until it serves the
//! new leaf or the deadline passes. A failure rolls back what the hook wrote, probes again
//! and is left for an operator: nothing here retries by itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use serde_json::Value;
use tracing::{error, info, warn};

use super::metrics::{
    DeployMetrics, EndpointLabel, EndpointResult, HookLabel, HookRunLabels, rollback_result,
};
use super::outcome::{Finished, HookReport, Outcome, Redeploy, Rollback, Served, Verification};
use super::{DeploySettings, EndpointSpec};
use crate::cert::Status;
use crate::clock::{Clock, unix_seconds};
use crate::escape::Visible;
use crate::hooks::{HookRun, HookSpec, Hooks, Material};
use crate::probe::{ProbeReport, Round};
use crate::schedule::{Results, TargetSpec};
use crate::store::{Deployment, DeploymentState, Store, StoreError, Version};

/// Verification rounds in a row that must see the new certificate.
pub const CONFIRMATIONS: u32 = 2;

/// Everything one deployment needs besides the queue row.
#[derive(Debug, Clone)]
pub struct DeployJob {
    /// The endpoint.
    pub endpoint: EndpointSpec,
    /// Its hook.
    pub hook: HookSpec,
    /// How monitoring probes it.
    pub target: Arc<TargetSpec>,
    /// Verification settings.
    pub settings: DeploySettings,
}

/// Runs deployments.
#[derive(Debug)]
pub struct Deployer {
    store: Arc<Store>,
    hooks: Arc<Hooks>,
    clock: Arc<dyn Clock>,
    results: Arc<Results>,
    metrics: DeployMetrics,
}

impl Deployer {
    /// A deployer whose metrics go to `reg` (prefix `tlsward`).
    pub fn new(
        store: Arc<Store>,
        hooks: Arc<Hooks>,
        clock: Arc<dyn Clock>,
        results: Arc<Results>,
        reg: &mut Registry,
    ) -> Self {
        Self {
            store,
            hooks,
            clock,
            results,
            metrics: DeployMetrics::register(reg),
        }
    }

    /// Creates the metric series of the endpoints that have hooks.
    pub fn touch(&self, endpoints: &[EndpointSpec]) {
        for e in endpoints {
            if let Some(h) = &e.hook {
                self.metrics.touch(h, &e.name);
            }
        }
    }

    fn now(&self) -> i64 {
        unix_seconds(self.clock.as_ref())
    }

    /// Claims `d` (it must be waiting or approved) and runs it to the end. `why` says why
    /// it runs now (window open, approved, emergency, run-now) and is journaled. `None`
    /// when another process claimed it first.
    pub async fn execute(
        &self,
        d: &Deployment,
        job: &DeployJob,
        why: Value,
    ) -> Result<Option<Finished>, StoreError> {
        if !self.store.claim_deployment(d.id, &why, self.now())? {
            return Ok(None);
        }
        let finished = match self.material(d, &job.endpoint) {
            Ok((version, material)) => self.run(d, job, &version, material).await,
            Err(e) => Finished {
                state: DeploymentState::Failed,
                outcome: Outcome::error(e),
            },
        };
        let detail = finished.outcome.to_json();
        match finished.state {
            DeploymentState::Verified => {
                info!(deployment = d.id, endpoint = %job.endpoint.name, "deployment verified")
            }
            state => {
                error!(deployment = d.id, endpoint = %job.endpoint.name, state = state.as_str(), detail = %Visible(&detail), "deployment failed")
            }
        }
        self.count(&job.endpoint.name, finished.state);
        self.store
            .set_deployment_state(d.id, finished.state, &detail, self.now())?;
        Ok(Some(finished))
    }

    fn material(
        &self,
        d: &Deployment,
        endpoint: &EndpointSpec,
    ) -> Result<(Version, Material), String> {
        let version = self
            .store
            .version_by_id(d.version)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("version {} is not in the store", d.version))?;
        let chain_der: Vec<Vec<u8>> = version
            .chain_der()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|c| c.to_vec())
            .collect();
        let key = self
            .store
            .version_key(version.id)
            .map_err(|e| format!("cannot unseal the key: {e}"))?;
        let material = Material::new(
            endpoint.name.clone(),
            version.certificate.clone(),
            chain_der,
            key,
        );
        Ok((version, material))
    }

    async fn run(
        &self,
        d: &Deployment,
        job: &DeployJob,
        version: &Version,
        material: Material,
    ) -> Finished {
        let run = self.run_hook(job, material).await;
        let mut outcome = Outcome {
            deployment: Some(d.id),
            endpoint: Some(job.endpoint.name.clone()),
            version: Some(version.id),
            sha256: Some(version.sha256.clone()),
            hook: Some(HookReport::of(&run)),
            ..Outcome::default()
        };
        let failure = match &run.outcome {
            Ok(_) => {
                let (ok, verification) = self.verify(job, &version.sha256).await;
                outcome.verification = Some(verification);
                if ok {
                    return Finished {
                        state: DeploymentState::Verified,
                        outcome,
                    };
                }
                self.metrics
                    .verification_failures
                    .get_or_create(&EndpointLabel {
                        endpoint: job.endpoint.name.clone().into(),
                    })
                    .inc();
                format!(
                    "the endpoint did not serve the new certificate within {}",
                    humantime::format_duration(job.settings.verify_timeout)
                )
            }
            Err(e) => e.to_string(),
        };
        outcome.error = Some(failure);
        let local = !run.written.is_empty() || !run.commands.is_empty();
        let remote = run.calls.iter().any(|c| c.function == "http");
        let (rollback_ok, rollback) = if local {
            let rollback = {
                let handle = tokio::runtime::Handle::current();
                let limit = job.hook.grant.timeout;
                let run = run.clone();
                tokio::task::spawn_blocking(move || Hooks::roll_back(&run, &handle, limit))
                    .await
                    .unwrap_or_default()
            };
            (rollback.ok(), Rollback::undone(rollback))
        } else if remote {
            // Nothing on this host to undo: the hook talked to a device (an appliance's
            // API). Put back the version last verified there, through the same hook.
            match self.previous_verified(d) {
                Some(previous) => self.redeploy(job, previous).await,
                None => return self.nothing_to_put_back(job, outcome).await,
            }
        } else {
            return Finished {
                state: DeploymentState::Failed,
                outcome,
            };
        };
        let _ = self
            .metrics
            .rollbacks
            .get_or_create(&EndpointResult {
                endpoint: job.endpoint.name.clone().into(),
                result: rollback_result(rollback_ok),
            })
            .inc();
        if !rollback_ok {
            let shown = serde_json::to_value(&rollback).unwrap_or(Value::Null);
            error!(endpoint = %job.endpoint.name, rollback = %Visible(&shown), "rollback failed: the endpoint may be broken");
        }
        outcome.rollback = Some(rollback);
        let after = self.probe(&job.target).await;
        outcome.after_rollback = Some(Served::of(&after));
        self.results
            .update(&job.target.key(), after, self.clock.now());
        Finished {
            state: DeploymentState::RolledBack,
            outcome,
        }
    }

    /// A hook that only talked to a device failed, and no earlier version was verified on
    /// the endpoint: there is nothing to put back, so no rollback is attempted or counted.
    /// The endpoint is probed once more and the deployment ends `failed`; the log says
    /// whether the endpoint still serves a valid certificate (most often the device refused
    /// the upload and kept its old one) or may be broken.
    async fn nothing_to_put_back(&self, job: &DeployJob, mut outcome: Outcome) -> Finished {
        outcome.rollback = Some(Rollback::Skipped {
            skipped: "no earlier version was verified on this endpoint: nothing to put back".into(),
        });
        let after = self.probe(&job.target).await;
        let serving = !after.is_empty()
            && after
                .iter()
                .all(|r| matches!(r.status(), Status::Ok | Status::Warning));
        outcome.after_rollback = Some(Served::of(&after));
        self.results
            .update(&job.target.key(), after, self.clock.now());
        if serving {
            warn!(endpoint = %job.endpoint.name, "nothing to roll back (no earlier version was verified on this endpoint); it still serves a valid certificate");
        } else {
            error!(endpoint = %job.endpoint.name, "nothing to roll back (no earlier version was verified on this endpoint), and it does not serve a valid certificate: the endpoint may be broken");
        }
        Finished {
            state: DeploymentState::Failed,
            outcome,
        }
    }

    /// The newest other version verified on `d`'s endpoint.
    fn previous_verified(&self, d: &Deployment) -> Option<Deployment> {
        self.store
            .all_deployments()
            .ok()?
            .into_iter()
            .rev()
            .find(|p| {
                p.endpoint == d.endpoint
                    && p.state == DeploymentState::Verified
                    && p.version != d.version
            })
    }

    /// Deploys `previous`'s version again and checks the endpoint serves it.
    async fn redeploy(&self, job: &DeployJob, previous: Deployment) -> (bool, Rollback) {
        let (version, material) = match self.material(&previous, &job.endpoint) {
            Ok(x) => x,
            Err(e) => {
                let out = Redeploy {
                    errors: Some(vec![e]),
                    ..Redeploy::default()
                };
                return (false, Rollback::Redeployed(Box::new(out)));
            }
        };
        let run = self.run_hook(job, material).await;
        let mut out = Redeploy {
            redeployed_version: Some(version.id),
            sha256: Some(version.sha256.clone()),
            hook: Some(HookReport::of(&run)),
            ..Redeploy::default()
        };
        if let Err(e) = &run.outcome {
            out.errors = Some(vec![format!(
                "the hook failed putting the previous version back: {e}"
            )]);
            return (false, Rollback::Redeployed(Box::new(out)));
        }
        let (ok, verification) = self.verify(job, &version.sha256).await;
        out.verification = Some(verification);
        if !ok {
            out.errors = Some(vec![
                "the endpoint does not serve the previous version either".into(),
            ]);
        }
        (ok, Rollback::Redeployed(Box::new(out)))
    }

    async fn run_hook(&self, job: &DeployJob, material: Material) -> HookRun {
        let hooks = self.hooks.clone();
        let spec = job.hook.clone();
        let extra: BTreeMap<String, String> = job.endpoint.settings.clone();
        let handle = tokio::runtime::Handle::current();
        let now = self.clock.now();
        let name = spec.name.clone();
        let run = tokio::task::spawn_blocking(move || {
            hooks.run(&spec, material.into(), &extra, handle, now)
        })
        .await;
        let run = match run {
            Ok(r) => r,
            Err(e) => {
                error!(hook = %name, error = %e, "the hook's thread failed");
                return HookRun::failed(&name, crate::hooks::HookFailure::Trap(e.to_string()));
            }
        };
        let t = &run.timings;
        self.metrics
            .hook_seconds
            .get_or_create(&HookLabel {
                hook: run.hook.clone().into(),
            })
            .observe((t.load + t.instantiate + t.call).as_secs_f64());
        self.metrics
            .hook_runs
            .get_or_create(&HookRunLabels {
                hook: run.hook.clone().into(),
                result: if run.outcome.is_ok() { "ok" } else { "failed" },
                reason: run.reason(),
            })
            .inc();
        match &run.outcome {
            Ok(s) => {
                info!(hook = %run.hook, endpoint = %job.endpoint.name, summary = %Visible(s), "hook succeeded")
            }
            Err(e) => {
                warn!(hook = %run.hook, endpoint = %job.endpoint.name, error = %Visible(e), "hook failed")
            }
        }
        run
    }

    /// One verification round; a panic in the probe is an `internal_error` report, which
    /// does not show the new certificate, so it counts as a round that did not verify.
    async fn probe(&self, target: &TargetSpec) -> Vec<ProbeReport> {
        target
            .prober
            .clone()
            .round(
                &target.target,
                self.clock.clone(),
                Round::of(target.all_addresses),
            )
            .await
    }

    /// Probes until every address serves `sha256` in [`CONFIRMATIONS`] rounds in a row, or
    /// the deadline passes. One good round is not enough: while a service reloads
    /// gracefully (nginx), old workers may still answer new connections for a moment.
    async fn verify(&self, job: &DeployJob, sha256: &str) -> (bool, Verification) {
        let (verdict, detail) = self
            .verify_served(&job.target, &job.settings, sha256, &|| true)
            .await;
        (verdict == Verdict::Served, detail)
    }

    /// The verification loop itself, for any endpoint (one whose hook ran here, or one an
    /// agent reports installed): probes `target` until every address serves `sha256` in
    /// [`CONFIRMATIONS`] rounds in a row, `settings.verify_timeout` passes, or `go_on` says
    /// to stop (a change window that closed), checked before each round after the first.
    pub(super) async fn verify_served(
        &self,
        target: &TargetSpec,
        settings: &DeploySettings,
        sha256: &str,
        go_on: &(dyn Fn() -> bool + Send + Sync),
    ) -> (Verdict, Verification) {
        let started = tokio::time::Instant::now();
        let deadline = started + settings.verify_timeout;
        let (mut attempts, mut in_a_row) = (0, 0);
        loop {
            attempts += 1;
            let reports = self.probe(target).await;
            let served_new = !reports.is_empty()
                && reports
                    .iter()
                    .all(|r| r.outcome.as_ref().is_ok_and(|f| f.leaf.sha256 == sha256));
            in_a_row = if served_new { in_a_row + 1 } else { 0 };
            let detail = Verification {
                attempts,
                seconds: started.elapsed().as_secs_f64(),
                served: Served::of(&reports),
                other: serde_json::Map::new(),
            };
            if in_a_row >= CONFIRMATIONS {
                self.results
                    .update(&target.key(), reports, self.clock.now());
                return (Verdict::Served, detail);
            }
            if tokio::time::Instant::now() + settings.verify_interval > deadline {
                return (Verdict::TimedOut, detail);
            }
            tokio::time::sleep(settings.verify_interval).await;
            if !go_on() {
                return (Verdict::Stopped, detail);
            }
        }
    }

    /// Counts a finished deployment in `tlsward_deployments_total` (and, verified, its
    /// endpoint's last success): the deployments this host ran and those agents ran alike.
    pub(super) fn count(&self, endpoint: &str, state: DeploymentState) {
        self.metrics
            .deployments
            .get_or_create(&EndpointResult {
                endpoint: endpoint.to_owned().into(),
                result: state.as_str(),
            })
            .inc();
        if state == DeploymentState::Verified {
            self.metrics
                .last_success
                .get_or_create(&EndpointLabel {
                    endpoint: endpoint.to_owned().into(),
                })
                .set(self.now() as f64);
        }
    }
}

/// How a verification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Every address served the new leaf, [`CONFIRMATIONS`] rounds in a row.
    Served,
    /// `verify_timeout` passed first.
    TimedOut,
    /// The caller said to stop first (the endpoint's change window closed).
    Stopped,
}
