//! The reconciler's side of staged rollouts (the pure rule is `staged.rs`): each pass, for
//! every certificate with a `[certificate.rollout]`, reads its endpoints' deployments of the
//! newest version, asks [`decide`] which may start, records the rollout (its state, the
//! stage reached) with its journal entries, and tells the queue which waiting deployments
//! are held; exports the rollouts as metrics; and the operators' `resume` and `abort`.
//!
//! Journal kinds: `rollout.canary`, `rollout.batch`, `rollout.verified`, `rollout.halted`,
//! `rollout.complete` (here), `rollout.resumed` and `rollout.aborted` (the store's).

use std::collections::BTreeSet;
use std::sync::PoisonError;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use serde_json::{Value, json};
use tracing::{error, info};

use super::manual::RequestError;
use super::staged::{RolloutPolicy, Slot, Stage, Verdict, decide, stages};
use super::{Desired, QueueReason, Reconciler};
use crate::escape::LabelValue;
use crate::store::{DeploymentState, RolloutRow, RolloutState, Store, Version};

/// The journal kind of a stage's start: `rollout.canary` or `rollout.batch`.
const fn start_kind(stage: Stage) -> &'static str {
    match stage {
        Stage::Canary => "rollout.canary",
        Stage::Batch(_) => "rollout.batch",
    }
}

/// The slot of one endpoint's newest deployment of a version that was not superseded;
/// `None` when it has none.
fn slot_of(state: DeploymentState, updated_at: i64) -> Slot {
    match state {
        DeploymentState::Waiting => Slot::Waiting,
        DeploymentState::Approved | DeploymentState::Running | DeploymentState::Installed => {
            Slot::Active
        }
        DeploymentState::Verified => Slot::Verified(updated_at),
        DeploymentState::Failed | DeploymentState::RolledBack => Slot::Failed(updated_at),
        // Never the newest one not superseded; treated as not known yet.
        DeploymentState::Superseded => Slot::Unknown,
    }
}

/// The row after `verdict` and the journal entries that say how it got there, from the
/// row stored before (`None`: the first decision). `names` are the endpoints by name.
fn advance(
    policy: &RolloutPolicy,
    names: &[&str],
    stored: Option<&RolloutRow>,
    (certificate, version): (&str, i64),
    verdict: &Verdict<'_>,
    now: i64,
) -> (RolloutRow, Vec<(&'static str, Value)>) {
    let mut row = stored.cloned().unwrap_or_else(|| RolloutRow {
        certificate: certificate.to_owned(),
        version,
        state: RolloutState::Running,
        stage: None,
        done_stages: 0,
        reason: None,
        halted_at: None,
        created_at: now,
        updated_at: now,
    });
    let all = stages(policy, names);
    let mut entries = Vec::new();
    // A stage whose failures halted the rollout is not "verified".
    if matches!(
        verdict.state,
        RolloutState::Running | RolloutState::Complete
    ) {
        let done = u32::try_from(verdict.done_stages).unwrap_or(u32::MAX);
        for (stage, list) in all
            .iter()
            .take(verdict.done_stages)
            .skip(row.done_stages as usize)
        {
            let failed: Vec<&str> = list
                .iter()
                .copied()
                .filter(|n| verdict.failed.contains(n))
                .collect();
            entries.push((
                "rollout.verified",
                json!({ "version": version, "batch": stage.number(), "endpoints": list, "failed": failed }),
            ));
        }
        row.done_stages = row.done_stages.max(done);
    }
    if verdict.state == RolloutState::Running
        && verdict.stage_open
        && let Some(stage) = verdict.stage
        && row.stage.is_none_or(|n| n < stage.number())
    {
        let list = all
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, l)| l.clone())
            .unwrap_or_default();
        entries.push((
            start_kind(stage),
            json!({ "version": version, "batch": stage.number(), "endpoints": list }),
        ));
        row.stage = Some(stage.number());
    }
    if verdict.state == RolloutState::Halted && row.state != RolloutState::Halted {
        let reason = format!(
            "{} endpoint(s) failed, over the failure budget of {}: {}",
            verdict.failed.len(),
            policy.failure_budget,
            verdict.failed.join(", ")
        );
        entries.push((
            "rollout.halted",
            json!({
                "version": version,
                // The last stage started: where the failures happened.
                "batch": row.stage,
                "failed": verdict.failed,
                "failure_budget": policy.failure_budget,
                "held": verdict.held,
                "reason": reason,
            }),
        ));
        row.reason = Some(reason);
        row.halted_at = Some(now);
    }
    if verdict.state == RolloutState::Complete && row.state != RolloutState::Complete {
        entries.push((
            "rollout.complete",
            json!({ "version": version, "failed": verdict.failed }),
        ));
    }
    if verdict.state != row.state || !entries.is_empty() {
        row.state = verdict.state;
        row.updated_at = now;
    }
    (row, entries)
}

impl Reconciler {
    /// Decides the rollout of every certificate with a policy, records what changed, and
    /// returns the waiting deployments' endpoints it holds and when a pause ends.
    pub(super) fn stage_rollouts(&self, desired: &Desired, now: i64) -> Option<i64> {
        let mut held = BTreeSet::new();
        let mut next: Option<i64> = None;
        for (certificate, policy) in &desired.rollouts {
            match self.stage_one(desired, certificate, policy, now) {
                Ok(Some((h, until))) => {
                    held.extend(h);
                    next = until.map_or(next, |u| Some(next.map_or(u, |n| n.min(u))));
                }
                Ok(None) => {}
                Err(err) => {
                    error!(certificate = %certificate, error = %err, "cannot decide the rollout");
                    // Hold everything of it: a rollout that cannot be read does not move.
                    held.extend(
                        desired
                            .endpoints
                            .iter()
                            .filter(|e| e.certificate == *certificate)
                            .map(|e| e.name.clone()),
                    );
                }
            }
        }
        let changed = {
            let mut current = self
                .rollout_held
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let changed = *current != held;
            *current = held;
            changed
        };
        if changed {
            // Agents long-poll their desired state: what the rollout lets go changed.
            self.agents.bump();
        }
        next
    }

    /// Whether the rollout holds the waiting deployment to `endpoint` (as of the last pass).
    pub(super) fn rollout_holds(&self, endpoint: &str) -> bool {
        self.rollout_held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(endpoint)
    }

    /// One certificate's rollout: the endpoints held and when the pause ends; `None` when
    /// it has no version or nothing was ever queued for the newest.
    #[allow(clippy::type_complexity)]
    fn stage_one(
        &self,
        desired: &Desired,
        certificate: &str,
        policy: &RolloutPolicy,
        now: i64,
    ) -> Result<Option<(Vec<String>, Option<i64>)>, crate::store::StoreError> {
        let Some(latest) = self.store.latest(certificate)? else {
            return Ok(None);
        };
        let endpoints: Vec<&super::EndpointSpec> = desired
            .endpoints
            .iter()
            .filter(|e| e.certificate == certificate && e.hook.is_some())
            .collect();
        let mut members: Vec<(&str, Slot)> = Vec::with_capacity(endpoints.len());
        let mut queued = false;
        for e in &endpoints {
            let slot = match self.store.deployment_of(&e.name, latest.id)? {
                Some(d) => {
                    queued = true;
                    slot_of(d.state, d.updated_at)
                }
                None => match self.served(&e.target) {
                    Some(s)
                        if !s.is_empty()
                            && s.iter()
                                .all(|s| s.sha256.as_deref() == Some(&latest.sha256)) =>
                    {
                        Slot::InSync
                    }
                    _ => Slot::Unknown,
                },
            };
            members.push((e.name.as_str(), slot));
        }
        let stored = self.store.rollout(certificate, latest.id)?;
        if stored.is_none() && !queued {
            return Ok(None);
        }
        let emergency = endpoints
            .iter()
            .any(|e| self.emergency(e, desired, now).is_some());
        let verdict = decide(
            policy,
            &members,
            stored.as_ref().map(|r| r.state),
            emergency,
            now,
        );
        let names: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
        let (row, entries) = advance(
            policy,
            &names,
            stored.as_ref(),
            (certificate, latest.id),
            &verdict,
            now,
        );
        if stored.as_ref() != Some(&row) {
            self.store.save_rollout(&row, &entries, now)?;
            for (kind, detail) in &entries {
                match *kind {
                    "rollout.halted" => {
                        error!(certificate = %certificate, version = latest.id, failed = ?verdict.failed, "the rollout halted: fix the failed endpoints, then `tlsward rollout resume`");
                    }
                    _ => {
                        info!(certificate = %certificate, version = latest.id, kind, detail = %detail, "rollout");
                    }
                }
            }
        }
        let held = verdict.held.iter().map(|n| (*n).to_owned()).collect();
        Ok(Some((held, verdict.pause_until)))
    }

    /// `tlsward_rollout_state_info`, `tlsward_rollout_batch` and
    /// `tlsward_rollout_endpoints`, for certificates with a rollout policy, from the store
    /// at scrape time.
    pub(super) fn encode_rollouts(
        &self,
        desired: &Desired,
        enc: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        if desired.rollouts.is_empty() {
            return Ok(());
        }
        let rows: Vec<RolloutRow> = self
            .store
            .latest_rollouts()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| desired.rollouts.contains_key(&r.certificate))
            .collect();
        if !rows.is_empty() {
            let mut fam = enc.encode_descriptor(
                "rollout_state",
                "Where the certificate's newest rollout is (running, halted, aborted, complete); always 1.",
                None,
                MetricType::Info,
            )?;
            for r in &rows {
                fam.encode_info(&[
                    ("certificate", LabelValue::from(r.certificate.as_str())),
                    ("state", LabelValue::from(r.state.as_str())),
                ])?;
            }
            let mut fam = enc.encode_descriptor(
                "rollout_batch",
                "The stage the certificate's newest rollout has started: 0 for the canaries, N for batch N.",
                None,
                MetricType::Gauge,
            )?;
            for r in &rows {
                ConstGauge::new(i64::from(r.stage.unwrap_or(0))).encode(fam.encode_family(
                    &[("certificate", LabelValue::from(r.certificate.as_str()))],
                )?)?;
            }
        }
        let mut fam = enc.encode_descriptor(
            "rollout_endpoints",
            "Endpoints of a certificate with a rollout policy, by the state of their deployment of its newest version.",
            None,
            MetricType::Gauge,
        )?;
        for certificate in desired.rollouts.keys() {
            let Ok(Some(latest)) = self.store.latest(certificate) else {
                continue;
            };
            let states: Vec<DeploymentState> = desired
                .endpoints
                .iter()
                .filter(|e| e.certificate == *certificate && e.hook.is_some())
                .filter_map(|e| self.store.deployment_of(&e.name, latest.id).ok().flatten())
                .map(|d| d.state)
                .collect();
            for state in DeploymentState::ALL
                .into_iter()
                .filter(|s| *s != DeploymentState::Superseded)
            {
                let n = states.iter().filter(|s| **s == state).count();
                ConstGauge::new(n as i64).encode(fam.encode_family(&[
                    ("certificate", LabelValue::from(certificate.as_str())),
                    ("state", LabelValue::from(state.as_str())),
                ])?)?;
            }
        }
        Ok(())
    }
}

/// The newest version of `certificate` and its rollout, for `rollout show|resume|abort`.
pub fn rollout_of(store: &Store, certificate: &str) -> Result<(Version, RolloutRow), RequestError> {
    let latest = store
        .latest(certificate)?
        .ok_or_else(|| RequestError::NotFound(format!("{certificate} has no issued version")))?;
    let row = store.rollout(certificate, latest.id)?.ok_or_else(|| {
        RequestError::NotFound(format!(
            "no rollout of {certificate}'s newest version (is [certificate.rollout] set, and was it queued?)"
        ))
    })?;
    Ok((latest, row))
}

/// `tlsward rollout resume CERT`: a halted rollout runs again, and the endpoints whose
/// deployment failed are queued again (reason `resumed`); returns them. The daemon picks
/// it up on its next pass.
pub fn resume_rollout(
    store: &Store,
    certificate: &str,
    by: &str,
    now: i64,
) -> Result<Vec<String>, RequestError> {
    let (latest, row) = rollout_of(store, certificate)?;
    store
        .resume_rollout(
            certificate,
            latest.id,
            QueueReason::Resumed.as_str(),
            by,
            now,
        )?
        .ok_or_else(|| {
            RequestError::Conflict(format!(
                "the rollout of {certificate} is {}, not halted",
                row.state
            ))
        })
}

/// `tlsward rollout abort CERT`: the rollout stops for good, and its waiting deployments
/// fail with the reason "aborted"; returns their endpoints.
pub fn abort_rollout(
    store: &Store,
    certificate: &str,
    by: &str,
    now: i64,
) -> Result<Vec<String>, RequestError> {
    let (latest, row) = rollout_of(store, certificate)?;
    store
        .abort_rollout(certificate, latest.id, by, now)?
        .ok_or_else(|| {
            RequestError::Conflict(format!(
                "the rollout of {certificate} is {}: only a running or halted one can be aborted",
                row.state
            ))
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::reconcile::{BatchSize, Canary};

    fn kinds(entries: &[(&'static str, Value)]) -> Vec<(&'static str, i64)> {
        entries
            .iter()
            .map(|(k, v)| (*k, v["batch"].as_i64().unwrap_or(-1)))
            .collect()
    }

    /// Each pass journals what changed once: a stage's start after the verification of the
    /// one before, a halt without "verified" for the failed stage, the end.
    #[test]
    fn each_step_is_journaled_once_in_order() {
        let policy = RolloutPolicy {
            canary: Canary::Count(1),
            batch: BatchSize::Count(2),
            pause: Duration::from_secs(10),
            failure_budget: 0,
        };
        let names = ["a", "b", "c", "d", "e"];
        let pass = |slots: [Slot; 5], stored: Option<&RolloutRow>, now: i64| {
            let members: Vec<(&str, Slot)> = names.iter().copied().zip(slots).collect();
            let verdict = decide(&policy, &members, stored.map(|r| r.state), false, now);
            advance(&policy, &names, stored, ("www", 7), &verdict, now)
        };
        use Slot::{Active, Failed, Verified, Waiting};
        let w = [Waiting; 5];
        let (row, e) = pass(w, None, 0);
        assert_eq!(kinds(&e), [("rollout.canary", 0)]);
        assert_eq!((row.state, row.stage), (RolloutState::Running, Some(0)));
        // Again: nothing new.
        let (row, e) = pass([Active, Waiting, Waiting, Waiting, Waiting], Some(&row), 1);
        assert!(e.is_empty(), "{e:?}");
        // The canary verified at 5: "verified" now, batch 1 only after the pause.
        let done = [Verified(5), Waiting, Waiting, Waiting, Waiting];
        let (row, e) = pass(done, Some(&row), 6);
        assert_eq!(kinds(&e), [("rollout.verified", 0)]);
        let (row, e) = pass(done, Some(&row), 15);
        assert_eq!(kinds(&e), [("rollout.batch", 1)]);
        assert_eq!(e[0].1["endpoints"], serde_json::json!(["b", "c"]));
        // c fails: halted, and batch 1 is not "verified".
        let bad = [Verified(5), Verified(20), Failed(21), Waiting, Waiting];
        let (row, e) = pass(bad, Some(&row), 22);
        assert_eq!(kinds(&e), [("rollout.halted", 1)]);
        assert_eq!(e[0].1["failed"], serde_json::json!(["c"]));
        assert_eq!((row.state, row.halted_at), (RolloutState::Halted, Some(22)));
        let (halted, e) = pass(bad, Some(&row), 23);
        assert!(e.is_empty() && halted == row);
        // Resumed (the store sets running) and c verified: batch 1 verified, batch 2 later.
        let resumed = RolloutRow {
            state: RolloutState::Running,
            ..row
        };
        let good = [Verified(5), Verified(20), Verified(30), Waiting, Waiting];
        let (row, e) = pass(good, Some(&resumed), 41);
        assert_eq!(kinds(&e), [("rollout.verified", 1), ("rollout.batch", 2)]);
        let all = [
            Verified(5),
            Verified(20),
            Verified(30),
            Verified(50),
            Verified(50),
        ];
        let (row, e) = pass(all, Some(&row), 51);
        assert_eq!(
            kinds(&e),
            [("rollout.verified", 2), ("rollout.complete", -1)]
        );
        assert_eq!(row.state, RolloutState::Complete);
    }
}
