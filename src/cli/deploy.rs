//! `tlsward deploy list|approve`: operators' view of the deployment queue and its windows.

use std::io::Write;

use anyhow::{Context, bail};

use super::cert::load;
use super::output;
use super::{DeployArgs, DeployCommand, ShowFormat};
use crate::cert::rfc3339;
use crate::clock::{Clock, SystemClock};
use crate::store::Deployment;

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
                    d.state.clone(),
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
            let detail = store.deployment_detail(id)?;
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
        DeployCommand::RunNow { deployment } => {
            return run_now(&config, &remediation, store, &deployment, &mut out);
        }
    }
    Ok(0)
}

/// `deploy run-now`: claims the deployment and runs it in this process, as the daemon would.
fn run_now(
    config: &crate::config::Config,
    remediation: &crate::config::RemediationSettings,
    store: crate::store::Store,
    which: &str,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let unix = crate::clock::unix_seconds(&SystemClock);
    let open = store.open_deployments()?;
    let d = match which.parse::<i64>() {
        Ok(id) => open.into_iter().find(|d| d.id == id).with_context(|| {
            format!("no queued deployment {id} (see `tlsward deploy list --all`)")
        })?,
        Err(_) => match open.into_iter().find(|d| d.endpoint == which) {
            Some(d) => d,
            None => {
                let e = remediation
                    .endpoints
                    .iter()
                    .find(|e| e.name == which)
                    .with_context(|| format!("no endpoint or deployment {which:?}"))?;
                let latest = store
                    .latest(&e.certificate)?
                    .with_context(|| format!("{} has no issued version yet", e.certificate))?;
                let id = store.queue_deployment(&e.name, latest.id, "manual", None, unix)?;
                store
                    .open_deployments()?
                    .into_iter()
                    .find(|d| d.id == id)
                    .context("the queued deployment vanished")?
            }
        },
    };
    if d.state == "running" {
        bail!("deployment {} is already running", d.id);
    }
    let desired = crate::daemon::desired(config, remediation);
    let e = remediation
        .endpoints
        .iter()
        .find(|e| e.name == d.endpoint)
        .with_context(|| format!("endpoint {} is no longer in the config", d.endpoint))?;
    let Some(job) = crate::reconcile::job(e, &desired) else {
        bail!(
            "endpoint {} has no hook (add hook = \"NAME\" to its [[endpoint]])",
            e.name
        );
    };
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
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let why = serde_json::json!({ "trigger": "run_now", "by": user });
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
    let detail = &finished.detail;
    if let Some(calls) = detail["hook"]["calls"].as_array() {
        for c in calls {
            let v = |key: &str| crate::escape::visible(c[key].as_str().unwrap_or("")).into_owned();
            writeln!(
                out,
                "  {}({}) -> {}",
                v("function"),
                v("args"),
                v("outcome")
            )?;
        }
    }
    if let Some(v) = detail.get("verification") {
        writeln!(
            out,
            "  verification: {}",
            crate::escape::visible(&v.to_string())
        )?;
    }
    if let Some(r) = detail.get("rollback") {
        match r.get("skipped").and_then(serde_json::Value::as_str) {
            Some(why) => {
                writeln!(out, "  rollback: none: {why}")?;
                let after = detail["after_rollback"].to_string();
                writeln!(
                    out,
                    "  probed afterwards: {}",
                    crate::escape::visible(&after)
                )?;
            }
            None => {
                let after = detail["after_rollback"].to_string();
                writeln!(
                    out,
                    "  rollback: {}",
                    crate::escape::visible(&r.to_string())
                )?;
                writeln!(out, "  after rollback: {}", crate::escape::visible(&after))?;
            }
        }
    }
    if let Some(e) = detail.get("error") {
        let e = crate::escape::visible(e.as_str().unwrap_or_default()).into_owned();
        writeln!(out, "  error: {e}")?;
    }
    writeln!(out, "deployment {}: {}", d.id, finished.state)?;
    Ok(u8::from(finished.state != "verified"))
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
