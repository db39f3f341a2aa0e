//! `tlsward agent`: on the center, tokens, the list of agents and revocation
//! (`center.rs`); on an endpoint host, enrollment and the agent itself (`endpoint.rs`).

mod center;
mod endpoint;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::output::OutputFormat;

/// `tlsward agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// `tlsward agent` subcommands. Exit codes: 0 done, 1 refused (a used or expired token,
/// a fingerprint that does not match, a revoked identity), 3 usage, config or other errors.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// One-time enrollment tokens (on the center).
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Every enrolled agent: last seen, identity expiry, version, endpoints (on the center).
    List {
        /// The center's config file.
        #[arg(short, long, value_name = "FILE", default_value = "tlsward.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Refuse an agent's identity at once (on the center); it must enroll again.
    Revoke {
        /// The agent's name.
        name: String,
        /// The center's config file.
        #[arg(short, long, value_name = "FILE", default_value = "tlsward.toml")]
        config: PathBuf,
    },
    /// Enroll this host with the center (on the endpoint host): pins the center's agent CA
    /// by its SHA-256, makes the identity key here, and stores the client certificate.
    Enroll {
        /// The center's agent API, `https://HOST:PORT`.
        #[arg(long, value_name = "URL")]
        server: String,
        /// The one-time token `tlsward agent token create` printed (base64url: it may begin
        /// with `-`, which is taken as the value, not as an option).
        #[arg(
            long,
            value_name = "TOKEN",
            allow_hyphen_values = true,
            env = "TLSWARD_AGENT_TOKEN",
            hide_env_values = true
        )]
        token: String,
        /// The SHA-256 of the center's agent CA certificate (hex, colons allowed).
        #[arg(long = "ca-sha256", value_name = "HEX")]
        ca_sha256: String,
        /// The agent's state directory (created 0700).
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Run the agent (on the endpoint host): long-poll the center, deploy with the local
    /// hooks inside the windows, report. Exits 0 on SIGTERM after a running hook finishes.
    Run {
        /// The agent's config file (its [agent] and [hook.NAME]).
        #[arg(
            short,
            long,
            value_name = "FILE",
            default_value = "/etc/tlsward/agent.toml"
        )]
        config: PathBuf,
        /// Sync once, deploy what is due now, and exit (0 when nothing failed).
        #[arg(long)]
        once: bool,
    },
}

/// `tlsward agent token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a one-time token for the agent NAME; prints it with the CA fingerprint to pin.
    Create {
        /// The agent's name (as in `[[endpoint]] agent = "NAME"`).
        name: String,
        /// How long the token may be used.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        ttl: Duration,
        /// The center's config file.
        #[arg(short, long, value_name = "FILE", default_value = "tlsward.toml")]
        config: PathBuf,
        /// Output format (json: `{"agent","token","ca_sha256","expires_at"}`).
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

/// Runs `tlsward agent ...`; the exit code.
pub(crate) fn run(args: AgentArgs) -> anyhow::Result<u8> {
    match args.command {
        AgentCommand::Token {
            command:
                TokenCommand::Create {
                    name,
                    ttl,
                    config,
                    output,
                },
        } => center::token_create(&config, &name, ttl, output),
        AgentCommand::List { config, output } => center::list(&config, output),
        AgentCommand::Revoke { name, config } => center::revoke(&config, &name),
        AgentCommand::Enroll {
            server,
            token,
            ca_sha256,
            state_dir,
        } => endpoint::enroll(&server, &token, &ca_sha256, &state_dir),
        AgentCommand::Run { config, once } => endpoint::run(&config, once),
    }
}
