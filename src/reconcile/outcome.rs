//! How a deployment ended, as types: the hook run, the verification probes and the rollback.
//! Their JSON (the deployment's `detail` in the store, its journal entry and the control
//! socket's reply) is rendered here and nowhere else, and read back from it, so `tlsward
//! deploy show` and `deploy run-now` print from the types.
//!
//! Reading is tolerant: fields a row does not have are `None`, fields this build does not
//! know are kept in `other` and written back unchanged, and a detail that does not fit the
//! types at all (a row from an older tlsward) is kept whole in `other`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::hooks::HookRun;
use crate::probe::ProbeReport;
use crate::store::DeploymentState;

/// How a deployment ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Verified, failed or rolled back.
    pub state: DeploymentState,
    /// What is journaled with it.
    pub outcome: Outcome,
}

/// What a finished deployment records: which version went where, what the hook did, what
/// the endpoint served afterwards, and what was put back when it failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The deployment's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<i64>,
    /// The endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The version deployed (its row id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Its leaf's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The hook run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookReport>,
    /// The verification probes, when the hook succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Why it did not verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// What the endpoint served after the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_rollback: Option<Vec<Served>>,
    /// Fields this build does not know, kept as they were.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One hook run, as a deployment records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookReport {
    /// The hook's name.
    pub name: String,
    /// Its summary, or its error with the error's reason label.
    pub result: HookResult,
    /// Its host calls, in order.
    pub calls: Vec<Call>,
    /// The files it wrote, with where their previous content went.
    pub written: Value,
    /// How long each phase took.
    pub timings: Value,
    /// Fields this build does not know.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HookResult {
    /// It succeeded, with the guest's summary.
    Ok {
        /// The summary.
        ok: String,
    },
    /// It failed.
    Failed {
        /// The error.
        error: String,
        /// Its label ([`HookRun::reason`]).
        reason: String,
    },
}

/// One host call of a hook run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The function.
    pub function: String,
    /// Its arguments, without secrets.
    pub args: String,
    /// `ok`, `ok: <summary>` or the error.
    pub outcome: String,
    /// Fields this build does not know.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The verification probes: the endpoint probed until it served the new leaf in enough
/// rounds in a row, or the deadline passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Probe rounds.
    pub attempts: u32,
    /// Seconds from the first round to the last.
    pub seconds: f64,
    /// What each address served in the last round.
    pub served: Vec<Served>,
    /// Fields this build does not know.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// What one address served in a probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// The address probed.
    pub address: Option<String>,
    /// ok, warning, critical or unknown.
    pub status: String,
    /// Why it is not ok.
    pub reason: Option<String>,
    /// The leaf's SHA-256, when a certificate was seen.
    pub sha256: Option<String>,
}

/// What was put back after a failed deployment. Read back by shape: the first variant
/// whose fields the stored JSON has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rollback {
    /// Nothing: the hook only talked to a device and no earlier version was verified there.
    Skipped {
        /// Why.
        skipped: String,
    },
    /// The version verified there before was deployed again through the same hook (a hook
    /// that only talked to a device).
    Redeployed(Box<Redeploy>),
    /// What the hook did on this host was undone.
    Undone(Undone),
    /// Any other shape, kept as it was.
    Other(Value),
}

/// A redeployment of the version verified before, as a rollback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redeploy {
    /// That version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeployed_version: Option<i64>,
    /// Its leaf's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The hook run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookReport>,
    /// Whether the endpoint served it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
}

/// What undoing a hook run on this host did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Undone {
    /// Files put back from their previous version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<Vec<PathBuf>>,
    /// Files the run created, removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<PathBuf>>,
    /// Commands re-run (the reload), with their exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<(Vec<String>, i32)>>,
    /// What could not be undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
}

// === impl Outcome ===

impl Outcome {
    /// A deployment that failed before its hook ran.
    pub fn error(error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::default()
        }
    }

    /// The JSON recorded for it: the one place it is rendered.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads a recorded detail back; one that does not fit is kept whole in `other`.
    pub fn from_json(detail: &Value) -> Self {
        Self::deserialize(detail).unwrap_or_else(|_| Self {
            other: match detail {
                Value::Object(map) => map.clone(),
                Value::Null => Map::new(),
                v => Map::from_iter([("detail".to_owned(), v.clone())]),
            },
            ..Self::default()
        })
    }
}

// === impl HookReport ===

impl HookReport {
    /// The record of `run`.
    pub fn of(run: &HookRun) -> Self {
        Self {
            name: run.hook.clone(),
            result: match &run.outcome {
                Ok(s) => HookResult::Ok { ok: s.clone() },
                Err(e) => HookResult::Failed {
                    error: e.to_string(),
                    reason: run.reason().to_owned(),
                },
            },
            calls: run
                .calls
                .iter()
                .map(|c| Call {
                    function: c.function.to_owned(),
                    args: c.args.clone(),
                    outcome: c.outcome.clone(),
                    other: Map::new(),
                })
                .collect(),
            written: serde_json::to_value(&run.written).unwrap_or(Value::Null),
            timings: serde_json::to_value(run.timings).unwrap_or(Value::Null),
            other: Map::new(),
        }
    }
}

// === impl Served ===

impl Served {
    /// What each address of one probe round served.
    pub fn of(reports: &[ProbeReport]) -> Vec<Self> {
        reports
            .iter()
            .map(|r| Self {
                address: r.address.map(|a| a.to_string()),
                status: r.status().as_str().to_owned(),
                reason: r.reason().map(str::to_owned),
                sha256: r.outcome.as_ref().ok().map(|f| f.leaf.sha256.clone()),
            })
            .collect()
    }
}

// === impl Rollback ===

impl Rollback {
    /// What undoing a run on this host did.
    pub fn undone(r: crate::hooks::Rollback) -> Self {
        Self::Undone(Undone {
            restored: Some(r.restored),
            removed: Some(r.removed),
            commands: Some(r.commands),
            errors: Some(r.errors),
        })
    }
}

#[cfg(test)]
mod tests;
