//! `tlsward deploy list|approve`: operators' view of the deployment queue and its windows.

use std::io::Write;

use anyhow::{Context, bail};

use super::cert::load;
use super::{DeployArgs, DeployCommand};
use crate::cert::rfc3339;
use crate::clock::{Clock, SystemClock};
use crate::store::Deployment;

pub(super) fn run(args: DeployArgs) -> anyhow::Result<u8> {
    let (_config, remediation, store) = load(&args.file.config)?;
    let now = time::OffsetDateTime::from(SystemClock.now());
    let mut out = std::io::stdout().lock();
    match args.command {
        DeployCommand::List { all } => {
            let rows = if all {
                store.all_deployments()?
            } else {
                store.open_deployments()?
            };
            writeln!(
                out,
                "{:<5} {:<20} {:<10} {:<9} {:<9} {:<16} WINDOW OPENS",
                "ID", "ENDPOINT", "SHA256", "STATE", "REASON", "WINDOW"
            )?;
            for d in &rows {
                let spec = remediation.endpoints.iter().find(|e| e.name == d.endpoint);
                let window = spec.and_then(|e| e.window.as_ref());
                let sha: String = store
                    .version_by_id(d.version)?
                    .map_or_else(|| "?".into(), |v| v.sha256.chars().take(8).collect());
                let opens = opens(d, window, now);
                writeln!(
                    out,
                    "{:<5} {:<20} {:<10} {:<9} {:<9} {:<16} {}",
                    d.id,
                    d.endpoint,
                    sha,
                    d.state,
                    d.reason,
                    window.map_or("-", |w| w.name()),
                    opens
                )?;
            }
        }
        DeployCommand::Approve { id } => {
            let Some(d) = store.open_deployments()?.into_iter().find(|d| d.id == id) else {
                bail!("no queued deployment {id} (see `tlsward deploy list --all`)");
            };
            if d.state != "waiting" {
                bail!("deployment {id} is {}, not waiting", d.state);
            }
            let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let detail = serde_json::json!({ "approved_by": user, "window_skipped": true });
            let done = store
                .set_deployment_state(id, "approved", &detail, now.unix_timestamp())
                .context("cannot record the approval")?;
            if !done {
                bail!("deployment {id} changed while approving it; see `tlsward deploy list`");
            }
            writeln!(
                out,
                "approved deployment {id} to {}: it runs at the reconciler's next pass, \
                 without waiting for its window",
                d.endpoint
            )?;
        }
    }
    Ok(0)
}

/// When a deployment may run: "open now", the next opening, or what holds it.
fn opens(
    d: &Deployment,
    window: Option<&crate::reconcile::window::Window>,
    now: time::OffsetDateTime,
) -> String {
    match d.state.as_str() {
        "waiting" => {}
        "approved" | "running" => return "now (approved)".into(),
        _ => return "-".into(),
    }
    match window {
        None => "now (no window)".into(),
        Some(w) if w.is_open(now) => "now (open)".into(),
        Some(w) => rfc3339(w.next_open(now).start),
    }
}
