//! `tlsward agent token create`, `agent list`, `agent revoke`: on the center, against its
//! store.
//!
//! The token is printed once, to stdout only; the store keeps its SHA-256. A running `serve`
//! sees a revocation at once: the agent API checks the store on every request.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::super::cert::time;
use crate::agent::ca::{AgentCa, new_token, token_sha256};
use crate::agent::protocol::is_agent_name;
use crate::cli::output::{self, OutputFormat};
use crate::clock::{SystemClock, unix_seconds};
use crate::config::{self, Config};
use crate::store::{AgentRow, Store};

/// The longest a token may be valid.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where agents find the agent API, for the enroll line: `[agents] listen` when the config
/// has it, else a placeholder to fill in.
fn server_url(_config: &Config) -> String {
    "https://CENTER:PORT".to_owned()
}

/// The store of `config`: created (with its key) on first use when `create`.
fn open(config: &Config, create: bool) -> anyhow::Result<Store> {
    let open = if create {
        Store::open
    } else {
        Store::open_existing
    };
    open(&config.store.path, &config.store.key)
        .with_context(|| format!("cannot open the store {}", config.store.path.display()))
}

/// `tlsward agent token create NAME`.
pub(super) fn token_create(
    config: &Path,
    name: &str,
    ttl: Duration,
    output: OutputFormat,
) -> anyhow::Result<u8> {
    if !is_agent_name(name) {
        bail!(
            "{:?} is not an agent name: 1 to 63 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
            crate::escape::visible_within(name, 80)
        );
    }
    if ttl.is_zero() || ttl > MAX_TTL {
        bail!("--ttl must be between 1s and 30d");
    }
    let config = config::load(config)?;
    let store = open(&config, true)?;
    let now = unix_seconds(&SystemClock);
    let ca = AgentCa::load_or_create(&store, now).context("the agent CA")?;
    let token = new_token();
    let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    store.create_agent_token(name, &token_sha256(&token), expires_at, now)?;
    let fingerprint = ca.fingerprint();
    let mut out = std::io::stdout().lock();
    match output {
        OutputFormat::Json | OutputFormat::Jsonl => {
            let shown = serde_json::json!({
                "agent": name,
                "token": token,
                "ca_sha256": fingerprint,
                "expires_at": time(expires_at),
            });
            serde_json::to_writer(&mut out, &shown)?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            writeln!(out, "agent:      {name}")?;
            writeln!(out, "token:      {token}")?;
            writeln!(out, "ca-sha256:  {fingerprint}")?;
            writeln!(out, "expires:    {} (single use)", time(expires_at))?;
            writeln!(out, "enroll on the endpoint host with:")?;
            writeln!(
                out,
                "  tlsward agent enroll --server {} --token {token} --ca-sha256 {fingerprint} --state-dir /var/lib/tlsward-agent",
                server_url(&config)
            )?;
        }
    }
    Ok(0)
}

/// The configured endpoints `agent` deploys, by name.
fn endpoints_of(config: &Config, agent: &str) -> Vec<String> {
    let mut names: Vec<String> = config
        .remediation
        .iter()
        .flat_map(|r| &r.endpoints)
        .filter(|e| e.agent.as_deref() == Some(agent))
        .map(|e| e.name.clone())
        .collect();
    names.sort();
    names
}

/// What an agent row's state reads as in the table.
fn state(row: &AgentRow) -> &'static str {
    match (row.revoked_at, row.enrolled_at) {
        (Some(_), _) => "revoked",
        (None, Some(_)) => "enrolled",
        (None, None) => "token issued",
    }
}

/// `tlsward agent list`.
pub(super) fn list(config: &Path, output: OutputFormat) -> anyhow::Result<u8> {
    let config = config::load(config)?;
    let store = open(&config, false)?;
    let agents = store.agents()?;
    let mut out = std::io::stdout().lock();
    match output {
        OutputFormat::Json | OutputFormat::Jsonl => {
            let shown: Vec<_> = agents
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "agent": a.name,
                        "enrolled_at": a.enrolled_at.map(time),
                        "last_seen": a.last_seen.map(time),
                        "identity_not_after": a.identity_not_after.map(time),
                        "version": a.version,
                        "revoked": a.revoked_at.is_some(),
                        "revoked_at": a.revoked_at.map(time),
                        "endpoints": endpoints_of(&config, &a.name),
                    })
                })
                .collect();
            if output == OutputFormat::Jsonl {
                for a in shown {
                    serde_json::to_writer(&mut out, &a)?;
                    writeln!(out)?;
                }
            } else {
                serde_json::to_writer_pretty(&mut out, &shown)?;
                writeln!(out)?;
            }
        }
        OutputFormat::Table => {
            let dash = || "-".to_owned();
            let rows: Vec<Vec<String>> = agents
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        state(a).to_owned(),
                        a.last_seen.map_or_else(dash, time),
                        a.identity_not_after.map_or_else(dash, time),
                        a.version.clone().unwrap_or_else(dash),
                        endpoints_of(&config, &a.name).join(","),
                    ]
                })
                .collect();
            output::write_columns(
                &mut out,
                &[
                    "AGENT",
                    "STATE",
                    "LAST SEEN",
                    "IDENTITY EXPIRES",
                    "VERSION",
                    "ENDPOINTS",
                ],
                &rows,
            )?;
        }
    }
    Ok(0)
}

/// `tlsward agent revoke NAME`.
pub(super) fn revoke(config: &Path, name: &str) -> anyhow::Result<u8> {
    let config = config::load(config)?;
    let store = open(&config, false)?;
    let now = unix_seconds(&SystemClock);
    if !store.revoke_agent(name, now)? {
        bail!(
            "no agent {:?} in {}",
            crate::escape::visible_within(name, 80),
            config.store.path.display()
        );
    }
    eprintln!(
        "tlsward: agent {name} revoked: its identity is refused from now on; \
         `tlsward agent token create {name}` enrolls it again"
    );
    Ok(0)
}
