//! `tlsward rollout show|resume|abort CERT`: operators' view of a certificate's staged
//! rollout (`[certificate.rollout]`) and what they do when it halts. The commands write the
//! store; the running daemon picks the change up on its next pass (within
//! half a minute while any endpoint has a hook).

use std::io::Write;

use clap::{Args, Subcommand};

use super::ShowFormat;
use super::StoreConfig;
use super::cert::{load, user};
use super::output;
use crate::clock::{SystemClock, unix_seconds};
use crate::reconcile::{Slot, decide_rollout, rollout_of, stages};
use crate::store::{DeploymentState, RolloutState};

/// `tlsward rollout`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The config file.
    #[command(flatten)]
    pub file: StoreConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// `tlsward rollout` subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// The newest version's rollout: its state, the stage reached, and each stage's
    /// endpoints with their deployment's state (`halted` or `held` when the rollout holds
    /// it); with `-o json` one JSON object.
    Show {
        /// The certificate's name.
        certificate: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = ShowFormat::Text)]
        output: ShowFormat,
    },
    /// Resume a halted rollout after fixing what failed: the failed endpoints are queued
    /// again, and the stages continue from where it halted.
    Resume {
        /// The certificate's name.
        certificate: String,
    },
    /// Stop a running or halted rollout for good: its waiting deployments fail with the
    /// reason "aborted" (endpoints keep what they serve).
    Abort {
        /// The certificate's name.
        certificate: String,
    },
}

pub(super) fn run(args: RolloutArgs) -> anyhow::Result<u8> {
    let (_config, remediation, store) = load(&args.file.config, false)?;
    let now = unix_seconds(&SystemClock);
    let mut out = std::io::stdout().lock();
    match args.command {
        RolloutCommand::Show {
            certificate,
            output,
        } => {
            let (version, row) = rollout_of(&store, &certificate)?;
            let names: Vec<&str> = remediation
                .endpoints
                .iter()
                .filter(|e| e.certificate == certificate && e.hook.is_some())
                .map(|e| e.name.as_str())
                .collect();
            let mut deployments = Vec::with_capacity(names.len());
            for n in &names {
                deployments.push((*n, store.deployment_of(n, version.id)?));
            }
            let members: Vec<(&str, Slot)> = deployments
                .iter()
                .map(|(n, d)| {
                    let slot = d.as_ref().map_or(Slot::Unknown, |d| match d.state {
                        DeploymentState::Waiting => Slot::Waiting,
                        DeploymentState::Verified => Slot::Verified(d.updated_at),
                        DeploymentState::Failed | DeploymentState::RolledBack => {
                            Slot::Failed(d.updated_at)
                        }
                        DeploymentState::Superseded => Slot::Unknown,
                        _ => Slot::Active,
                    });
                    (*n, slot)
                })
                .collect();
            let policy = remediation
                .rollouts
                .get(&certificate)
                .cloned()
                .unwrap_or_default();
            // Without probe results here, the daemon may start a little more (its pauses
            // and windows decide); what is held is what the rollout itself holds.
            let verdict = decide_rollout(&policy, &members, Some(row.state), false, now);
            let shown_state = |n: &str| -> String {
                let d = deployments
                    .iter()
                    .find(|(x, _)| *x == n)
                    .and_then(|(_, d)| d.as_ref());
                match d {
                    None => "-".into(),
                    Some(d)
                        if d.state == DeploymentState::Waiting
                            && row.state == RolloutState::Halted =>
                    {
                        "halted".into()
                    }
                    Some(d) if d.state == DeploymentState::Waiting && verdict.held.contains(&n) => {
                        "held".into()
                    }
                    Some(d) => d.state.as_str().into(),
                }
            };
            let staged = stages(&policy, &names);
            match output {
                ShowFormat::Json => {
                    let shown = serde_json::json!({
                        "certificate": certificate,
                        "version": version.id,
                        "sha256": version.sha256,
                        "state": row.state,
                        "batch": row.stage,
                        "done_stages": row.done_stages,
                        "reason": row.reason,
                        "halted_at": row.halted_at.map(super::cert::time),
                        "stages": staged.iter().map(|(s, list)| serde_json::json!({
                            "batch": s.number(),
                            "endpoints": list.iter().map(|n| serde_json::json!({
                                "name": n,
                                "deployment": deployments.iter().find(|(x, _)| x == n).and_then(|(_, d)| d.as_ref().map(|d| d.id)),
                                "state": shown_state(n),
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    });
                    serde_json::to_writer_pretty(&mut out, &shown)?;
                    writeln!(out)?;
                }
                ShowFormat::Text => {
                    let sha: String = version.sha256.chars().take(8).collect();
                    writeln!(
                        out,
                        "rollout of {certificate} version {} ({sha}): {}, batch {}",
                        version.id,
                        row.state,
                        row.stage.map_or_else(|| "-".into(), |n| n.to_string())
                    )?;
                    if let Some(reason) = &row.reason {
                        writeln!(out, "reason: {}", crate::escape::visible(reason))?;
                    }
                    let mut table = Vec::new();
                    for (s, list) in &staged {
                        for n in list {
                            let id = deployments
                                .iter()
                                .find(|(x, _)| x == n)
                                .and_then(|(_, d)| d.as_ref().map(|d| d.id.to_string()))
                                .unwrap_or_else(|| "-".into());
                            let stage = match s {
                                crate::reconcile::Stage::Canary => "canary".to_owned(),
                                crate::reconcile::Stage::Batch(b) => format!("batch {b}"),
                            };
                            table.push(vec![stage, (*n).to_owned(), id, shown_state(n)]);
                        }
                    }
                    output::write_columns(
                        &mut out,
                        &["STAGE", "ENDPOINT", "DEPLOYMENT", "STATE"],
                        &table,
                    )?;
                }
            }
        }
        RolloutCommand::Resume { certificate } => {
            let requeued = crate::reconcile::resume_rollout(&store, &certificate, &user(), now)?;
            writeln!(
                out,
                "resumed the rollout of {certificate}; queued again: {}; the daemon continues at its next pass",
                if requeued.is_empty() {
                    "none".to_owned()
                } else {
                    requeued.join(", ")
                }
            )?;
        }
        RolloutCommand::Abort { certificate } => {
            let failed = crate::reconcile::abort_rollout(&store, &certificate, &user(), now)?;
            writeln!(
                out,
                "aborted the rollout of {certificate}; deployments failed as aborted: {}",
                if failed.is_empty() {
                    "none".to_owned()
                } else {
                    failed.join(", ")
                }
            )?;
        }
    }
    Ok(0)
}
