//! `tlsward agent enroll` and `tlsward agent run`: on an endpoint host.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::agent::client::backoff::Backoff;
use crate::agent::client::enroll;
use crate::agent::client::run::Agent;
use crate::clock::{Clock, SystemClock, unix_seconds};
use crate::hooks::Hooks;
use crate::shutdown::Shutdown;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `tlsward agent enroll`: exit 0 enrolled, 1 refused (a token the center refuses, a
/// fingerprint that does not match), 3 anything else.
pub(super) fn enroll(
    server: &str,
    token: &str,
    ca_sha256: &str,
    state_dir: &Path,
) -> anyhow::Result<u8> {
    let now = unix_seconds(&SystemClock);
    let result = runtime()?.block_on(enroll::enroll(server, token, ca_sha256, state_dir, now));
    match result {
        Ok(file) => {
            println!(
                "enrolled as {} with {}; state in {}",
                crate::escape::visible(&file.agent),
                file.server,
                state_dir.display()
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: enrollment failed: {e}");
            Ok(if e.refused() { 1 } else { 3 })
        }
    }
}

/// `tlsward agent run [--once]`.
pub(super) fn run(config: &Path, once: bool) -> anyhow::Result<u8> {
    let settings = match crate::config::load_agent(config) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e}");
            return Ok(3);
        }
    };
    let hooks = Arc::new(Hooks::new(Some(settings.state_dir.join("hook-cache")))?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let rt = runtime()?;
    rt.block_on(async move {
        let agent = match Agent::open(settings, hooks, clock) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(3);
            }
        };
        tracing::info!(agent = %crate::escape::visible(agent.name()), once, "agent starting");
        if once {
            return Ok(agent.once().await);
        }
        let shutdown = Shutdown::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: a running hook finishes first");
            signal.trigger();
        });
        Ok(agent
            .run(shutdown, Backoff::new(fastrand::Rng::new()))
            .await)
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
