//! The config file: parsed into a raw mirror (`raw.rs`), then validated (`validate.rs`) into
//! each module's own settings; the file_sd files it names as `serve` watches them
//! (`file_sd.rs`). Every problem is reported at once, with file, line and key,
//! e.g. `tlsward.toml:14: target[3].profile: unknown profile "htps"`.
//!
//! Owns: the TOML shape and its validation, the shipped probe profiles (built in from
//! `probes/`). Knows the settings types of the modules it configures; they do not know it.

mod file_sd;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use file_sd::{DEFAULT_FILE_SD_REFRESH, FileSd, Stamp};
pub use validate::{load, load_agent, load_agent_str, load_str};

use crate::exporter::WebConfig;
use crate::probe::Prober;
use crate::schedule::TargetSpec;

/// The shipped profiles, built into the binary from `probes/`.
pub const SHIPPED_PROFILES: &[(&str, &str)] = &[
    ("https", include_str!("../../probes/https.toml")),
    ("tls", include_str!("../../probes/tls.toml")),
    (
        "smtp-starttls",
        include_str!("../../probes/smtp-starttls.toml"),
    ),
    ("smtps", include_str!("../../probes/smtps.toml")),
    (
        "imap-starttls",
        include_str!("../../probes/imap-starttls.toml"),
    ),
    ("imaps", include_str!("../../probes/imaps.toml")),
    (
        "pop3-starttls",
        include_str!("../../probes/pop3-starttls.toml"),
    ),
    ("pop3s", include_str!("../../probes/pop3s.toml")),
    (
        "ftp-starttls",
        include_str!("../../probes/ftp-starttls.toml"),
    ),
    (
        "ldap-starttls",
        include_str!("../../probes/ldap-starttls.toml"),
    ),
    ("ldaps", include_str!("../../probes/ldaps.toml")),
    ("postgres", include_str!("../../probes/postgres.toml")),
    (
        "xmpp-starttls",
        include_str!("../../probes/xmpp-starttls.toml"),
    ),
];

/// Default interval between probes of one target.
pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Default number of probes in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 50;
/// Default listen address of `serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9219";

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[server] listen` (the CLI's `--listen` wins).
    pub listen: SocketAddr,
    /// `[server] state_dir`.
    pub state_dir: PathBuf,
    /// `[server.web]`.
    pub web: WebConfig,
    /// `[server] max_connections`, `header_timeout`, `idle_timeout`: the limits of each HTTP
    /// listener (before `serve` fits the cap to its descriptor limit).
    pub http_limits: crate::listen::Limits,
    /// `[server] probe_targets`: which targets `/probe` may probe.
    pub probe_targets: crate::exporter::ProbeTargets,
    /// `[server] metrics`: what `/metrics` exports per target.
    pub metrics: crate::exporter::MetricsMode,
    /// `[server] shard`: which of [`Config::targets`] this instance probes on a schedule
    /// (every one without it); the others stay known to `/probe` and the reconciler.
    pub shard: Option<crate::schedule::Shard>,
    /// `[server] first_round`: when a new target's first probe is due.
    pub first_round: crate::schedule::FirstRound,
    /// Probes in flight at once, across all targets.
    pub concurrency: usize,
    /// Every target to probe on a schedule.
    pub targets: Vec<Arc<TargetSpec>>,
    /// `file_sd` and `file_sd_refresh`: the file_sd files `serve` watches for changes.
    pub file_sd: FileSd,
    /// Every profile by name, with a prober at the profile's own settings (for `/probe`).
    pub profiles: BTreeMap<String, Arc<Prober>>,
    /// The profile used when a target or `/probe` request names none.
    pub default_profile: String,
    /// `[store]`: where the database and its key live.
    pub store: StoreSettings,
    /// `[acme]` and the managed certificates and endpoints, when configured.
    pub remediation: Option<RemediationSettings>,
    /// `[hook.NAME]`: deploy hooks with their grants.
    pub hooks: BTreeMap<String, crate::hooks::HookSpec>,
    /// `[backup]`: recipients, the drill identity, the schedule.
    pub backup: Option<crate::backup::BackupSettings>,
    /// `[agents]`: the agent API, when enabled (it needs `[acme]`).
    pub agents: Option<AgentsSettings>,
}

/// The default lifetime of an agent's client certificate (`[agents] identity_lifetime`).
pub const DEFAULT_IDENTITY_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(30 * 86_400);
/// The shortest `identity_lifetime` accepted: the agent renews at two thirds of it.
pub const MIN_IDENTITY_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);
/// The default cap on the agent API's open connections (each long poll holds one).
pub const DEFAULT_AGENT_CONNECTIONS: usize = 4096;

/// `[agents]`: the center's agent API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentsSettings {
    /// Where the mTLS listener binds.
    pub listen: SocketAddr,
    /// The SANs of its server certificate (DNS names and IP addresses, as text).
    pub names: Vec<String>,
    /// The lifetime of the client certificates it issues.
    pub identity_lifetime: std::time::Duration,
    /// Open connections at once.
    pub max_connections: usize,
}

/// Whether `name` is a valid agent name: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}` (agent names
/// become metric labels and file names).
pub fn is_agent_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Where the store lives.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The SQLite file.
    pub path: PathBuf,
    /// Its encryption key.
    pub key: crate::store::KeySource,
}

/// The issuance side of the config.
#[derive(Debug, Clone)]
pub struct RemediationSettings {
    /// How to reach the CA.
    pub acme: crate::issuer::AcmeSettings,
    /// Where the HTTP-01 responder listens.
    pub http01_listen: SocketAddr,
    /// Renew when less than this fraction of the lifetime is left (ACME convention: 1/3).
    pub renew_fraction: f64,
    /// Managed certificates.
    pub certificates: Vec<crate::issuer::CertificateSpec>,
    /// Endpoints: (endpoint name, certificate name, target key `host:port`).
    pub endpoints: Vec<crate::reconcile::EndpointSpec>,
    /// `[deploy]`: verification and the emergency override.
    pub deploy: crate::reconcile::DeploySettings,
    /// `[certificate.rollout]`: staged rollout policies, by certificate name.
    pub rollouts: BTreeMap<String, crate::reconcile::RolloutPolicy>,
}

/// Every problem found in a config, each on its own line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// `file:line: key: message` lines.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// The directory relative paths in `config` are resolved against.
pub(crate) fn base_dir(config: &Path) -> PathBuf {
    config.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The longest duration accepted anywhere, in the config or on the command line: a year
/// (366 days). Anything longer is a mistake, and the bound keeps every deadline computed from a
/// duration (`now + timeout`, `due + interval`) far from overflowing.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// Parses a human duration: `500ms`, `10s`, `5m`, `2h`. Zero and anything over
/// [`MAX_DURATION`] are refused.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 500ms, 10s, 5m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    if d > MAX_DURATION {
        return Err("must be at most 366d".into());
    }
    Ok(d)
}
