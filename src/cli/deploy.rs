//! `tlsward deploy list|show|approve|run-now`: operators' view of the deployment queue and
//! its windows. `approve` and `run-now` go through the running daemon when there is one (so
//! its metrics count the deployment and its loop runs an approval at once), and act here
//! when there is none.

use std::io::Write;

use anyhow::{Context, bail};

use super::cert::{ask, daemon, load, user};
use super::output;
use super::{DeployArgs, DeployCommand, ShowFormat};
use crate::cert::rfc3339;
use crate::clock::{Clock, SystemClock};
use crate::control::{self, Reply};
use crate::reconcile::{Outcome, Rollback};
use crate::store::{Deployment, DeploymentState};

pub(super) fn run(args: DeployArgs) -> anyhow::Result<u8> {
    let (config, remediation, store) = load(&args.file.config, false)?;
    let now = time::OffsetDateTime::from(SystemClock.now());
    let mut out = std::io::stdout().lock();
    match args.command {
        DeployCommand::List { all } => {
            let rows = if all {
                store.all_deployments()?
            } else {
                store.open_deployments()?
            };
            // Waiting deployments of a halted rollout show as `halted`.
            let halted: Vec<i64> = store
                .latest_rollouts()?
                .into_iter()
                .filter(|r| r.state == crate::store::RolloutState::Halted)
                .map(|r| r.version)
                .collect();
            let mut table = Vec::with_capacity(rows.len());
            for d in &rows {
                let spec = remediation.endpoints.iter().find(|e| e.name == d.endpoint);
                let window = spec.and_then(|e| e.window.as_ref());
                let sha: String = store
                    .version_by_id(d.version)?
                    .map_or_else(|| "?".into(), |v| v.sha256.chars().take(8).collect());
                table.push(vec![
                    d.id.to_string(),
                    d.endpoint.clone(),
                    sha,
                    if d.state == DeploymentState::Waiting && halted.contains(&d.version) {
                        "halted".to_owned()
                    } else {
                        d.state.as_str().to_owned()
                    },
                    d.reason.clone(),
                    window.map_or("-", |w| w.name()).to_owned(),
                    opens(d, window, now),
                ]);
            }
            output::write_columns(
                &mut out,
                &[
                    "ID",
                    "ENDPOINT",
                    "SHA256",
                    "STATE",
                    "REASON",
                    "WINDOW",
                    "WINDOW OPENS",
                ],
                &table,
            )?;
        }
        DeployCommand::Show { id, output } => {
            let Some(d) = store.all_deployments()?.into_iter().find(|d| d.id == id) else {
                bail!("no deployment {id} (see `tlsward deploy list --all`)");
            };
            let sha = store
                .version_by_id(d.version)?
                .map_or_else(|| "?".into(), |v| v.sha256);
            // A finished deployment's detail is its outcome; an open one's says why it runs
            // (or who approved it), kept as it was recorded.
            let detail = store.deployment_detail(id)?;
            let detail = if d.state.is_finished() {
                Outcome::from_json(&detail).to_json()
            } else {
                detail
            };
            match output {
                ShowFormat::Json => {
                    let shown = serde_json::json!({
                        "id": d.id,
                        "endpoint": d.endpoint,
                        "state": d.state,
                        "reason": d.reason,
                        "version": d.version,
                        "sha256": sha,
                        "queued_at": super::cert::time(d.created_at),
                        "not_before": d.not_before.map(super::cert::time),
                        "detail": detail,
                    });
                    serde_json::to_writer_pretty(&mut out, &shown)?;
                    writeln!(out)?;
                }
                ShowFormat::Text => {
                    writeln!(
                        out,
                        "deployment {} to {}: {} ({})",
                        d.id, d.endpoint, d.state, d.reason
                    )?;
                    writeln!(out, "version {} sha256 {sha}", d.version)?;
                    writeln!(out, "queued {}", super::cert::time(d.created_at))?;
                    // JSON escapes C0 controls, not C1 or bidi ones: shown visibly too.
                    for line in serde_json::to_string_pretty(&detail)?.lines() {
                        writeln!(out, "{}", crate::escape::visible(line))?;
                    }
                }
            }
        }
        DeployCommand::Approve { id } => {
            if let Some(client) = daemon(&config, "approving")? {
                let request = control::Request::DeployApprove { id, by: user() };
                let Reply::Approved { endpoint, .. } = ask(client, &request)? else {
                    bail!("the daemon answered something else than the approval");
                };
                writeln!(
                    out,
                    "approved deployment {id} to {endpoint}: the daemon runs it now, \
                     without waiting for its window"
                )?;
                return Ok(0);
            }
            let d = crate::reconcile::approve(&store, id, &user(), None, now.unix_timestamp())?;
            writeln!(
                out,
                "approved deployment {id} to {}: it runs at the reconciler's next pass, \
                 without waiting for its window",
                d.endpoint
            )?;
        }
        DeployCommand::RunNow { deployment } => {
            if let Some(client) = daemon(&config, "deploying")? {
                let request = control::Request::DeployRunNow {
                    deployment,
                    by: user(),
                };
                let Reply::Deployed {
                    deployment,
                    endpoint,
                    hook,
                    state,
                    detail,
                } = ask(client, &request)?
                else {
                    bail!("the daemon answered something else than the deployment's end");
                };
                writeln!(
                    out,
                    "running deployment {deployment} to {endpoint} with hook {hook}"
                )?;
                print_finished(&mut out, deployment, state, &detail)?;
                return Ok(u8::from(state != DeploymentState::Verified));
            }
            return run_now(&config, &remediation, store, &deployment, &mut out);
        }
    }
    Ok(0)
}

/// `deploy run-now` without a daemon: claims the deployment and runs it in this process, as
/// the daemon would.
fn run_now(
    config: &crate::config::Config,
    remediation: &crate::config::RemediationSettings,
    store: crate::store::Store,
    which: &str,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let unix = crate::clock::unix_seconds(&SystemClock);
    let d = crate::reconcile::pick_run_now(&store, &remediation.endpoints, which, unix)?;
    let desired = crate::daemon::desired(config, remediation);
    let job = crate::reconcile::job_of(&d, &desired)?;
    let store = std::sync::Arc::new(store);
    let hooks = crate::daemon::hook_engine(config)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let deployer = crate::reconcile::Deployer::new(
        store,
        hooks,
        std::sync::Arc::new(SystemClock),
        std::sync::Arc::new(crate::schedule::Results::default()),
        &mut registry,
    );
    let why = crate::reconcile::run_now_trigger(&user(), None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    writeln!(
        out,
        "running deployment {} to {} with hook {}",
        d.id, d.endpoint, job.hook.name
    )?;
    let finished = runtime
        .block_on(deployer.execute(&d, &job, why))?
        .with_context(|| format!("deployment {} was claimed by another process", d.id))?;
    print_finished(out, d.id, finished.state, &finished.outcome)?;
    Ok(u8::from(finished.state != DeploymentState::Verified))
}

/// How a deployment ended: the hook's calls, the verification, the rollback, the error.
fn print_finished(
    out: &mut impl Write,
    id: i64,
    state: DeploymentState,
    outcome: &Outcome,
) -> anyhow::Result<()> {
    // What hooks and peers said is shown visibly, never as raw terminal escapes.
    let visible = |text: &str| crate::escape::visible(text).into_owned();
    for c in outcome.hook.iter().flat_map(|h| &h.calls) {
        writeln!(
            out,
            "  {}({}) -> {}",
            visible(&c.function),
            visible(&c.args),
            visible(&c.outcome)
        )?;
    }
    if let Some(v) = &outcome.verification {
        writeln!(out, "  verification: {}", visible(&compact(v)))?;
    }
    if let Some(r) = &outcome.rollback {
        let after = match &outcome.after_rollback {
            Some(a) => visible(&compact(a)),
            None => "null".to_owned(),
        };
        match r {
            Rollback::Skipped { skipped } => {
                writeln!(out, "  rollback: none: {}", visible(skipped))?;
                writeln!(out, "  probed afterwards: {after}")?;
            }
            r => {
                writeln!(out, "  rollback: {}", visible(&compact(r)))?;
                writeln!(out, "  after rollback: {after}")?;
            }
        }
    }
    if let Some(e) = &outcome.error {
        writeln!(out, "  error: {}", visible(e))?;
    }
    writeln!(out, "deployment {id}: {}", visible(state.as_str()))?;
    Ok(())
}

/// `v` as one line of JSON, its keys sorted as the journal has them.
fn compact(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v).map_or_else(|e| e.to_string(), |v| v.to_string())
}

/// When a deployment may run: "open now", the next opening, or what holds it.
fn opens(
    d: &Deployment,
    window: Option<&crate::reconcile::window::Window>,
    now: time::OffsetDateTime,
) -> String {
    match d.state {
        DeploymentState::Waiting => {}
        DeploymentState::Approved | DeploymentState::Running => return "now (approved)".into(),
        DeploymentState::Installed => return "installed (verifying)".into(),
        _ => return "-".into(),
    }
    match window {
        None => "now (no window)".into(),
        Some(w) if w.is_open(now) => "now (open)".into(),
        Some(w) => rfc3339(w.next_open(now).start),
    }
}
