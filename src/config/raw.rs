//! The config file as written: a serde mirror of the TOML with `deny_unknown_fields`, every
//! value wrapped in `Spanned` so validation can name the line of each problem.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `tlsward.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    /// Glob patterns of files with one target a line, relative to the config file.
    #[serde(default)]
    pub(super) targets_files: Vec<Spanned<String>>,
    /// Glob patterns of Prometheus file_sd files (JSON or YAML), relative to the config file.
    #[serde(default)]
    pub(super) file_sd: Vec<Spanned<String>>,
    /// How often `serve` looks for changes in the file_sd files.
    pub(super) file_sd_refresh: Option<Spanned<String>>,
    /// A folder of extra profile files (`NAME.toml`), relative to the config file.
    pub(super) profiles_dir: Option<Spanned<String>>,
    #[serde(default, rename = "target")]
    pub(super) targets: Vec<RawTarget>,
    #[serde(default, rename = "profile")]
    pub(super) profiles: BTreeMap<String, Spanned<RawProfile>>,
    #[serde(default)]
    pub(super) store: RawStore,
    pub(super) acme: Option<Spanned<RawAcme>>,
    #[serde(default, rename = "certificate")]
    pub(super) certificates: Vec<RawCertificate>,
    #[serde(default, rename = "endpoint")]
    pub(super) endpoints: Vec<RawEndpoint>,
    #[serde(default, rename = "window")]
    pub(super) windows: BTreeMap<String, Spanned<RawWindow>>,
    /// `[hook.NAME]`: deploy hooks and their grants.
    #[serde(default, rename = "hook")]
    pub(super) hooks: BTreeMap<String, Spanned<RawHook>>,
    /// `[deploy]`: how deployments are verified and when they skip their window.
    pub(super) deploy: Option<Spanned<RawDeploy>>,
    /// `[backup]`: recipients and the schedule.
    pub(super) backup: Option<Spanned<RawBackup>>,
    /// `[agents]`: the agent API's listener and its client certificates.
    pub(super) agents: Option<Spanned<RawAgents>>,
}

/// `[agents]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgents {
    pub(super) listen: Spanned<String>,
    pub(super) names: Option<Spanned<Vec<String>>>,
    pub(super) identity_lifetime: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<i64>>,
}

/// `[backup]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    pub(super) recipients: Spanned<Vec<String>>,
    pub(super) drill_identity_file: Option<Spanned<String>>,
    pub(super) every: Option<Spanned<String>>,
    pub(super) dir: Option<Spanned<String>>,
    pub(super) keep: Option<Spanned<i64>>,
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) command_timeout: Option<Spanned<String>>,
}

/// `[hook.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub(super) component: Spanned<String>,
    pub(super) write_paths: Option<Spanned<Vec<String>>>,
    pub(super) commands: Option<Spanned<Vec<Vec<String>>>>,
    pub(super) http_hosts: Option<Spanned<Vec<String>>>,
    pub(super) http_ca_file: Option<Spanned<String>>,
    pub(super) http_pin_sha256: Option<Spanned<Vec<String>>>,
    pub(super) key_access: Option<Spanned<bool>>,
    pub(super) memory_mb: Option<Spanned<i64>>,
    pub(super) timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) settings: BTreeMap<String, Spanned<String>>,
}

/// `[deploy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeploy {
    pub(super) verify_timeout: Option<Spanned<String>>,
    pub(super) verify_interval: Option<Spanned<String>>,
    pub(super) emergency_days: Option<Spanned<f64>>,
}

/// `[window.NAME]`: a change window, when deployments to the endpoints bound to it may run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub(super) days: Spanned<Vec<String>>,
    pub(super) start: Spanned<String>,
    pub(super) duration: Spanned<String>,
    /// IANA zone name; UTC when absent.
    pub(super) tz: Option<Spanned<String>>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) key_env: Option<Spanned<String>>,
}

/// `[acme]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    pub(super) directory: Spanned<String>,
    #[serde(default)]
    pub(super) contact: Vec<String>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) eab_kid: Option<Spanned<String>>,
    pub(super) eab_hmac_env: Option<Spanned<String>>,
    pub(super) http01_listen: Option<Spanned<String>>,
    pub(super) renew_fraction: Option<Spanned<f64>>,
    pub(super) dns01: Option<Spanned<RawDns01>>,
}

/// `[acme.dns01]`: RFC 2136 updates with TSIG.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns01 {
    /// A hook command instead of RFC 2136 (for DNS providers with HTTP APIs).
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) server: Option<Spanned<String>>,
    pub(super) zone: Option<Spanned<String>>,
    pub(super) tsig_key_name: Option<Spanned<String>>,
    /// A file holding the base64 TSIG secret (0600), or an environment variable holding it.
    pub(super) tsig_secret_file: Option<Spanned<String>>,
    pub(super) tsig_secret_env: Option<Spanned<String>>,
}

/// `[[certificate]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) name: Spanned<String>,
    pub(super) domains: Spanned<Vec<String>>,
    pub(super) key_type: Option<Spanned<String>>,
    pub(super) challenge: Option<Spanned<String>>,
    pub(super) profile: Option<Spanned<String>>,
    /// `"agent"`: the key is made by the one agent whose endpoint uses this certificate.
    pub(super) key: Option<Spanned<String>>,
    /// `[certificate.rollout]`: canaries, batches, pauses and a failure budget.
    pub(super) rollout: Option<Spanned<RawRollout>>,
}

/// `[certificate.rollout]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub(super) canary: Option<Spanned<RawCanary>>,
    pub(super) batch: Option<Spanned<RawBatch>>,
    pub(super) pause: Option<Spanned<String>>,
    pub(super) failure_budget: Option<Spanned<i64>>,
}

/// `[certificate.rollout] canary`: a count or a list of endpoint names.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of endpoints, or a list of endpoint names"
)]
pub(super) enum RawCanary {
    Count(i64),
    Names(Vec<String>),
}

/// `[certificate.rollout] batch`: a count or `"N%"`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of endpoints, or a percentage such as \"25%\""
)]
pub(super) enum RawBatch {
    Count(i64),
    Percent(String),
}

/// `[[endpoint]]`: a probe target bound to a managed certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) certificate: Spanned<String>,
    pub(super) target: Spanned<String>,
    pub(super) name: Option<Spanned<String>>,
    /// The `[window.NAME]` deployments to it wait for; none = deploy at once.
    pub(super) window: Option<Spanned<String>>,
    /// The hook that deploys to it.
    pub(super) hook: Option<Spanned<String>>,
    /// Settings laid over the hook's own.
    #[serde(default)]
    pub(super) settings: BTreeMap<String, Spanned<String>>,
    /// The agent that deploys it; `hook` then names a hook in the agent's config.
    pub(super) agent: Option<Spanned<String>>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) state_dir: Option<Spanned<String>>,
    /// Open connections per HTTP listener.
    pub(super) max_connections: Option<Spanned<i64>>,
    /// Time for a request's head (and a TLS handshake).
    pub(super) header_timeout: Option<Spanned<String>>,
    /// Time a kept-alive connection may wait for its next request.
    pub(super) idle_timeout: Option<Spanned<String>>,
    /// `"configured"`, `"any"`, or a list of name patterns and CIDRs.
    pub(super) probe_targets: Option<Spanned<RawProbeTargets>>,
    /// `"full"` or `"lean"`: what `/metrics` exports per target.
    pub(super) metrics: Option<Spanned<String>>,
    /// `"K/N"`: probe only this instance's share of the targets.
    pub(super) shard: Option<Spanned<String>>,
    /// `"spread"` or `"now"`: when a new target's first probe is due.
    pub(super) first_round: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) web: RawWeb,
}

/// `[server] probe_targets`: a word or a list.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "\"configured\", \"any\", or a list of name patterns and CIDRs"
)]
pub(super) enum RawProbeTargets {
    Word(String),
    List(Vec<String>),
}

/// `[server.web]`: protection for every HTTP endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    pub(super) tls_cert_file: Option<Spanned<String>>,
    pub(super) tls_key_file: Option<Spanned<String>>,
    /// user name -> bcrypt hash.
    #[serde(default)]
    pub(super) basic_auth_users: BTreeMap<String, Spanned<String>>,
    /// SHA-256 (hex) of accepted bearer tokens.
    #[serde(default)]
    pub(super) bearer_token_sha256: Vec<Spanned<String>>,
}

/// `[defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) warn_days: Option<Spanned<f64>>,
    pub(super) crit_days: Option<Spanned<f64>>,
    /// `21d`, `33%` or `21d,33%`; instead of `warn_days`.
    pub(super) warn: Option<Spanned<String>>,
    /// Like `warn`; instead of `crit_days`.
    pub(super) crit: Option<Spanned<String>>,
    pub(super) concurrency: Option<Spanned<i64>>,
    pub(super) profile: Option<Spanned<String>>,
}

/// `[[target]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) address: Spanned<String>,
    pub(super) profile: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) server_name: Option<Spanned<String>>,
    /// Connect to these addresses instead of resolving (like `--resolve`).
    #[serde(default)]
    pub(super) connect_to: Vec<Spanned<String>>,
    pub(super) all_addresses: Option<Spanned<bool>>,
    pub(super) warn_days: Option<Spanned<f64>>,
    pub(super) crit_days: Option<Spanned<f64>>,
    /// `21d`, `33%` or `21d,33%`; instead of `warn_days`.
    pub(super) warn: Option<Spanned<String>>,
    /// Like `warn`; instead of `crit_days`.
    pub(super) crit: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, Spanned<String>>,
}

/// `[profile.NAME]` or a file in probes/.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    /// For people reading the profile; the prober does not use it.
    #[allow(dead_code)]
    pub(super) description: Option<String>,
    pub(super) protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) alpn: Vec<String>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) warn_days: Option<Spanned<f64>>,
    pub(super) crit_days: Option<Spanned<f64>>,
    /// `21d`, `33%` or `21d,33%`; instead of `warn_days`.
    pub(super) warn: Option<Spanned<String>>,
    /// Like `warn`; instead of `crit_days`.
    pub(super) crit: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ca_files: Vec<Spanned<String>>,
    pub(super) system_roots: Option<bool>,
    pub(super) client_cert: Option<Spanned<String>>,
    pub(super) client_key: Option<Spanned<String>>,
}
