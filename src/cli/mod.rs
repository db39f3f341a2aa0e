//! The command line: clap definitions, the commands, and output rendering.
//!
//! Knows every module below it; nothing knows it. Errors here are `anyhow`, printed once by
//! `main` with their chain.

mod acme;
mod agent;
mod backup;
mod cert;
mod deploy;
mod export;
mod generate;
mod hook;
mod output;
mod probe;
mod rollout;
mod store;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use acme::{AccountCommand, AccountFormat, AcmeArgs, AcmeCommand};
pub use agent::{AgentArgs, AgentCommand, TokenCommand};
pub use backup::{BackupArgs, BackupCommand};
pub use output::{OutputFormat, render_error};
pub use rollout::{RolloutArgs, RolloutCommand};

/// Exit code for usage, configuration and internal errors (monitoring-plugin "unknown").
pub const EXIT_UNKNOWN: u8 = 3;

/// tlsward: probe TLS endpoints and report the certificates they really serve.
#[derive(Debug, Parser)]
#[command(
    name = "tlsward",
    version = crate::version::LONG_VERSION,
    about,
    long_about = None,
    max_term_width = 100
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug; serve logs info by default);
    /// TLSWARD_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// When to colour tables and logs: auto (only on a terminal, and not with NO_COLOR set),
    /// always or never.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, global = true)]
    pub color: ColorWhen,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// Colour when writing to a terminal (and NO_COLOR is unset).
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe endpoints now: real handshakes, every check, monitoring-plugin exit codes.
    ///
    /// Exit codes: 0 all ok, 1 a warning, 2 a critical, 3 unknown (usage or internal error).
    Probe(ProbeArgs),
    /// Check a PEM chain file offline with the same checks and JSON as `probe`.
    Verify(VerifyArgs),
    /// Probe on a schedule and serve Prometheus metrics (/metrics, /probe, /-/reload).
    Serve(ServeArgs),
    /// Validate a config file and list every problem with file, line and key.
    ///
    /// Exit codes: 0 valid, 1 invalid.
    CheckConfig(CheckConfigArgs),
    /// Managed certificates: list, show (versions and journal), issue or renew now.
    Cert(CertArgs),
    /// Deployments of issued certificates to endpoints: the queue, its change windows,
    /// operator approval, running one now.
    Deploy(DeployArgs),
    /// Staged rollouts (`[certificate.rollout]`): show one, resume it after a halt, or
    /// abort it.
    Rollout(RolloutArgs),
    /// Deploy hooks: run one in its sandbox against a certificate on disk.
    Hook(HookArgs),
    /// The store: create a new one for a key you provide.
    Store(StoreArgs),
    /// Backups of the store: create, verify (a full restore into scratch), restore.
    Backup(BackupArgs),
    /// The ACME account: show its URL (for CAA accounturi), export it, import an existing
    /// account key, roll its key over.
    Acme(AcmeArgs),
    /// Agents: tokens, the list and revocation on the center; enrollment and the agent on
    /// an endpoint host, which pulls its certificates and deploys them with local hooks.
    Agent(AgentArgs),
    /// Print a shell completion script, e.g. `tlsward completions bash >
    /// /etc/bash_completion.d/tlsward`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page tlsward(1) as roff, e.g. `tlsward man | man -l -`.
    Man {
        /// Write every page instead (tlsward.1 and one per subcommand, such as
        /// tlsward-cert-issue.1) into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `tlsward store`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The config file (its [store] and [server] state_dir).
    #[command(flatten)]
    pub file: StoreConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// `tlsward store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create a new, empty store for a key that already exists ([store] key_env, or a key
    /// file provisioned beforehand). `tlsward serve` creates a store and its key file
    /// together on first start, so this is only needed when the key comes first.
    Init,
}

/// `tlsward hook`.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// The config file (its [hook.NAME] sections).
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "tlsward.toml",
        global = true
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: HookCommand,
}

/// `tlsward hook` subcommands.
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Run a hook in its sandbox, with its grant, against a certificate on disk, and print
    /// every host call it made. For hook authors: this really writes files and runs the
    /// granted commands.
    ///
    /// Exit codes: 0 the hook succeeded, 1 it failed, 3 usage or config error.
    Run {
        /// The hook's name ([hook.NAME]).
        name: String,
        /// A directory with cert.pem (the leaf, optionally followed by the chain), chain.pem
        /// (optional) and key.pem (PKCS#8).
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
        /// A setting laid over the hook's own (repeatable).
        #[arg(long = "settings", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// The endpoint name the hook sees (also the default JKS alias).
        #[arg(long, default_value = "hook-run")]
        endpoint: String,
        /// After the run, undo it: restore the files it wrote and re-run its commands.
        #[arg(long)]
        rollback: bool,
    },
    /// Check that a file is a hook: a WebAssembly component of the tlsward:hook@0.1.0
    /// world whose `deploy` answers a trial call (no settings, nothing granted). Needs no
    /// config; scripts/build-hooks runs it on every hook it builds.
    ///
    /// Exit codes: 0 it is a hook, 1 it is not, 3 usage error.
    Check {
        /// The component (.wasm).
        component: PathBuf,
        /// Keep the compiled component in this private directory (created 0700), so a
        /// later check or run of the same file skips the compile.
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `--config FILE` for the commands that work on the store (`cert`, `deploy`).
#[derive(Debug, Args)]
pub struct StoreConfig {
    /// The config file (its [acme], [[certificate]], [[endpoint]], [window.NAME] and [store]).
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "tlsward.toml",
        global = true
    )]
    pub config: PathBuf,
}

/// `tlsward deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The config file.
    #[command(flatten)]
    pub file: StoreConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: DeployCommand,
}

/// `tlsward deploy` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Queued deployments with their change window and when it next opens.
    List {
        /// Also show finished and superseded deployments.
        #[arg(long)]
        all: bool,
    },
    /// One deployment: its state and what its last step recorded (the hook's calls, the
    /// verification probes, the error and the rollback): a summary and the record's JSON,
    /// or with `-o json` one JSON object and nothing else (for `jq`).
    Show {
        /// The deployment's id (from `deploy list --all`).
        id: i64,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = ShowFormat::Text)]
        output: ShowFormat,
    },
    /// Let a waiting deployment run without waiting for its change window.
    Approve {
        /// The deployment's id (from `deploy list`).
        id: i64,
    },
    /// Run a deployment now, window or not (by the running daemon when there is one): its
    /// hook, the verification probes, and the rollback if it fails. Given an endpoint with nothing queued, queues the
    /// latest version for it first (to retry after a failure).
    ///
    /// Exit codes: 0 verified, 1 failed or rolled back, 3 usage or config error.
    RunNow {
        /// A deployment id (from `deploy list`) or an endpoint name.
        deployment: String,
    },
}

/// `tlsward cert`.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// The config file.
    #[command(flatten)]
    pub file: StoreConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: CertCommand,
}

/// `tlsward cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Every managed certificate: versions, expiry, next renewal.
    List,
    /// One certificate's versions and journal.
    Show {
        /// The certificate's name.
        name: String,
    },
    /// Order the certificate's first version now. Refused when it has one already: `renew`
    /// orders a new version (or pass --force).
    Issue {
        /// The certificate's name.
        name: String,
        /// Order even though a version exists.
        #[arg(long)]
        force: bool,
    },
    /// Order a new version now, whatever its renewal time.
    Renew {
        /// The certificate's name.
        name: String,
    },
    /// Write a stored version (the newest by default) to a directory, converted as hooks
    /// convert it. Files holding the private key are created 0600 (never readable by others,
    /// not even while written); existing files are kept unless --force.
    ///
    /// pem: cert.pem (the leaf), chain.pem (the intermediates), fullchain.pem and key.pem
    /// (PKCS#8), the layout `tlsward hook run --bundle` reads. pkcs12: cert.p12 (AES-256;
    /// pkcs12-legacy: 3DES for old readers). jks: cert.jks. Their password comes from
    /// --password-file or --password-env, never the command line (other users can read it).
    Export(ExportArgs),
}

/// `tlsward cert export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The certificate's name.
    pub name: String,
    /// What to write.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The directory to write into (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Read the PKCS#12 or JKS password from this file (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// Take the PKCS#12 or JKS password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Export this version (an id from `tlsward cert show`) instead of the newest.
    #[arg(long, value_name = "ID")]
    pub version_id: Option<i64>,
    /// Replace files that exist (atomically: a reader sees the old file or the new one).
    #[arg(long)]
    pub force: bool,
}

/// What `cert export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// cert.pem, chain.pem, fullchain.pem and key.pem.
    Pem,
    /// cert.p12: PBES2 (AES-256-CBC, PBKDF2-HMAC-SHA-256) with an HMAC-SHA-256 MAC.
    Pkcs12,
    /// cert.p12 with 3DES and an HMAC-SHA-1 MAC, for readers that predate PBES2.
    Pkcs12Legacy,
    /// cert.jks: a Java KeyStore with one private key entry.
    Jks,
}

/// How `deploy show` prints a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// A summary for people, then the recorded detail as indented JSON.
    Text,
    /// One JSON object: the deployment's fields and its recorded detail.
    Json,
}

/// `tlsward serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file.
    #[arg(short, long, value_name = "FILE", default_value = "tlsward.toml")]
    pub config: PathBuf,
    /// Listen on this address instead of the config's `[server] listen`.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<std::net::SocketAddr>,
}

/// `tlsward check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The config file.
    #[arg(value_name = "FILE")]
    pub config: PathBuf,
}

/// Options shared by `probe` and `verify`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// When a leaf turns warning: days left (`21d`), a share of its lifetime left (`33%`),
    /// or both (`21d,33%`: whichever comes first in its life). Default: 21d,33.3%, so a
    /// 6-day certificate warns at 2 days left and a 398-day one at 21.
    #[arg(long, value_name = "THRESHOLD", conflicts_with = "warn_days")]
    pub warn: Option<crate::cert::Threshold>,
    /// When a leaf turns critical, written like --warn. Default: 7d,16.7%.
    #[arg(long, value_name = "THRESHOLD", conflicts_with = "crit_days")]
    pub crit: Option<crate::cert::Threshold>,
    /// Days before expiry that warn, whatever the lifetime (fractional allowed); the same as
    /// --warn DAYSd.
    #[arg(long, value_name = "DAYS")]
    pub warn_days: Option<f64>,
    /// Days before expiry that are critical, whatever the lifetime; the same as --crit DAYSd.
    #[arg(long, value_name = "DAYS")]
    pub crit_days: Option<f64>,
    /// Trust the certificates in this PEM bundle (repeatable), in addition to the system's
    /// roots unless --no-system-roots is given.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// Do not trust the system's roots; only --ca-file.
    #[arg(long)]
    pub no_system_roots: bool,
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

/// `tlsward probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Endpoints: host, host:port, [v6]:port or https://host[:port] (port defaults to 443).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Read targets from a file, one a line, `#` starts a comment; `-` reads stdin.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub targets_file: Option<PathBuf>,
    /// How many probes run at once.
    #[arg(short = 'c', long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Time budget per probe (DNS, connect and handshake), e.g. 500ms, 10s.
    #[arg(short = 't', long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Upgrade with STARTTLS first: smtp, imap, pop3, ftp, ldap, postgres or xmpp.
    #[arg(long, value_name = "PROTO", value_parser = parse_starttls)]
    pub starttls: Option<crate::probe::Protocol>,
    /// Send this SNI name and verify the certificate against it instead of the host.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// Connect to ADDR when probing NAME on PORT, like curl (repeatable; ADDR may be a
    /// comma-separated list, probed one by one with --all-addresses).
    #[arg(long, value_name = "NAME:PORT:ADDR")]
    pub resolve: Vec<String>,
    /// Probe every address of each name (all A and AAAA records, or every --resolve address)
    /// and report each one: one stale backend behind a load-balanced name shows up.
    #[arg(long)]
    pub all_addresses: bool,
    /// Client certificate chain (PEM) for endpoints that require mutual TLS.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) for --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// ALPN protocol to offer, e.g. h2 (repeatable).
    #[arg(long, value_name = "PROTO")]
    pub alpn: Vec<String>,
    /// Never show the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub check: CheckArgs,
}

/// `tlsward verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// PEM file with the leaf first, then the intermediates as a server would send them.
    #[arg(long, value_name = "FILE")]
    pub chain: PathBuf,
    /// The DNS name or IP address the certificate must be valid for.
    #[arg(long)]
    pub name: String,
    /// Verify as of this time (RFC 3339, e.g. 2027-01-01T00:00:00Z) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub at: Option<time::OffsetDateTime>,
    /// A DER OCSP response to treat as stapled.
    #[arg(long, value_name = "FILE")]
    pub ocsp: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub check: CheckArgs,
}

pub use crate::config::parse_duration;

fn parse_starttls(s: &str) -> Result<crate::probe::Protocol, String> {
    s.parse()
}

fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{e} (use e.g. 2027-01-01T00:00:00Z)"))
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let color = output::color_choice(cli.color);
    match cli.command {
        Command::Probe(args) => probe::run(args, color),
        Command::Verify(args) => verify::run(args, color),
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::daemon::serve(crate::daemon::ServeOptions {
                config: args.config,
                listen: args.listen,
            }))?;
            Ok(0)
        }
        Command::Cert(args) => cert::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Rollout(args) => rollout::run(args),
        Command::Hook(args) => hook::run(args),
        Command::Store(args) => store::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Acme(args) => acme::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Completions { shell } => generate::completions(shell),
        Command::Man { dir } => generate::man(dir.as_deref()),
        Command::CheckConfig(args) => match crate::config::load(&args.config) {
            Ok(c) => {
                println!(
                    "{}: valid: {} target(s), {} profile(s), listening on {}",
                    args.config.display(),
                    c.targets.len(),
                    c.profiles.len(),
                    c.listen
                );
                Ok(0)
            }
            Err(e) => {
                // Problems quote the file (keys, values): shown visibly, never as raw escapes.
                for line in e.to_string().lines() {
                    eprintln!("{}", crate::escape::visible(line));
                }
                Ok(1)
            }
        },
    }
}

impl CheckArgs {
    fn policy(&self) -> anyhow::Result<crate::cert::Policy> {
        use crate::cert::Threshold;
        let days = |d: Option<f64>, flag: &str| -> anyhow::Result<Option<Threshold>> {
            d.map(|d| {
                anyhow::ensure!(
                    d.is_finite() && (0.0..=3650.0).contains(&d),
                    "{flag} must be a number of days between 0 and 3650"
                );
                Ok(Threshold::days(d))
            })
            .transpose()
        };
        let mut policy = crate::cert::Policy::new();
        if let Some(t) = self.warn.or(days(self.warn_days, "--warn-days")?) {
            policy = policy.with_warn(t);
        }
        if let Some(t) = self.crit.or(days(self.crit_days, "--crit-days")?) {
            policy = policy.with_crit(t);
        }
        policy
            .check()
            .map_err(|e| anyhow::anyhow!("--crit/--warn: {e}"))?;
        Ok(policy)
    }

    fn trust(&self) -> anyhow::Result<crate::cert::TrustStore> {
        if self.no_system_roots && self.ca_files.is_empty() {
            anyhow::bail!("--no-system-roots needs at least one --ca-file");
        }
        Ok(crate::probe::load_trust(
            !self.no_system_roots,
            &self.ca_files,
        )?)
    }
}
