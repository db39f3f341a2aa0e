//! From the raw mirror to each module's settings, collecting every problem with its line.
//!
//! This file holds the top-level flow ([`load`], [`load_str`], `[defaults]`); each part of
//! the file is checked beside it: `shape` (unknown keys and wrong types), `problems` (the
//! collector), `profiles` (and thresholds), `targets`, `file_sd`, `server`, `hooks`,
//! `remediation` and `agents`.

mod agent;
mod agents;
mod backup;
mod file_sd;
mod hooks;
mod problems;
mod profiles;
mod remediation;
mod rollout;
mod server;
mod shape;
mod targets;

pub use self::agent::{load_agent, load_agent_str};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use self::problems::Problems;
use self::profiles::{crit_key, thresholds_span};
use self::targets::{TargetList, TargetSettings};
use super::raw::RawConfig;
use super::{Config, ConfigError, DEFAULT_CONCURRENCY, DEFAULT_INTERVAL, base_dir};
use crate::cert::TrustStore;

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text =
        crate::files::read_to_string(path, crate::files::MAX_CONFIG).map_err(|e| ConfigError {
            problems: vec![format!("{}: cannot read: {}", path.display(), e.why())],
        })?;
    load_str(path, &text)
}

/// Validates `text` as if read from `path` (relative paths resolve against its folder).
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let mut p = Problems::new(path.display().to_string(), text);
    let raw: RawConfig = match shape::deserialize(text) {
        Ok((raw, errors)) => {
            for e in errors {
                p.add(e.span, &e.key, e.message);
            }
            raw
        }
        Err(errors) => {
            for e in errors {
                p.add(e.span, &e.key, e.message);
            }
            return Err(p.into_error());
        }
    };
    let base = base_dir(path);
    let config = Validator {
        p: &mut p,
        base: &base,
        system_trust: None,
    }
    .config(path, raw);
    match config {
        Some(c) if p.list.is_empty() => Ok(c),
        _ => Err(p.into_error()),
    }
}

/// One validation run: where problems go, the folder relative paths resolve against, and the
/// system's trust roots once loaded.
struct Validator<'p, 'a> {
    p: &'p mut Problems<'a>,
    base: &'p Path,
    system_trust: Option<Arc<TrustStore>>,
}

impl Validator<'_, '_> {
    fn config(&mut self, path: &Path, raw: RawConfig) -> Option<Config> {
        let d = &raw.defaults;
        let interval = self
            .duration(d.interval.as_ref(), "defaults.interval")
            .unwrap_or(DEFAULT_INTERVAL);
        let timeout = self.duration(d.timeout.as_ref(), "defaults.timeout");
        let mut warn = self.threshold(d.warn.as_ref(), d.warn_days.as_ref(), "defaults.warn");
        let mut crit = self.threshold(d.crit.as_ref(), d.crit_days.as_ref(), "defaults.crit");
        let span = thresholds_span(&d.crit, &d.crit_days, &d.warn, &d.warn_days);
        if self
            .policy(warn, crit, span, &crit_key("defaults", &d.crit))
            .is_none()
        {
            (warn, crit) = (None, None);
        }
        let concurrency = match &d.concurrency {
            Some(c) if (1..=100_000).contains(c.get_ref()) => *c.get_ref() as usize,
            Some(c) => {
                self.p
                    .at(c, "defaults.concurrency", "must be between 1 and 100000");
                DEFAULT_CONCURRENCY
            }
            None => DEFAULT_CONCURRENCY,
        };

        let profiles = self.profiles(&raw);
        let broken: Vec<&String> = raw
            .profiles
            .keys()
            .filter(|n| !profiles.contains_key(*n))
            .collect();
        let default_profile = match &d.profile {
            // A profile with problems of its own is reported there, not as unknown.
            Some(name) if broken.contains(&name.get_ref()) => name.get_ref().clone(),
            Some(name) if !profiles.contains_key(name.get_ref()) => {
                self.p.at(
                    name,
                    "defaults.profile",
                    format!("unknown profile {:?}", name.get_ref()),
                );
                "https".to_owned()
            }
            Some(name) => name.get_ref().clone(),
            None => "https".to_owned(),
        };

        let listen = self.listen(&raw.server);
        let state_dir = raw.server.state_dir.as_ref().map_or_else(
            || PathBuf::from("/var/lib/tlsward"),
            |s| self.base.join(s.get_ref()),
        );
        let web = self.web(&raw);
        let http_limits = self.http_limits(&raw.server);
        let probe_targets = self.probe_targets(&raw.server);
        let metrics = self.metrics_mode(&raw.server);
        let shard = self.shard(&raw.server);
        let first_round = self.first_round(&raw.server);

        let defaults = TargetSettings {
            profile: default_profile.clone(),
            interval,
            timeout,
            warn,
            crit,
        };
        let mut list = TargetList::new(&profiles);
        self.targets(&raw, &defaults, &broken, &mut list);
        let file_sd = self.file_sd(&raw, &defaults, &broken, &mut list);
        let TargetList {
            mut probers,
            specs: targets,
            ..
        } = list;

        let store = self.store_settings(&raw, &state_dir);
        let hooks = self.hooks(&raw);
        let remediation = self.remediation(&raw, &targets, &hooks);
        let backup = self.backup(&raw);
        let agents = self.agents(&raw);

        // `/probe` of a target that is not configured uses a profile with `[defaults]` laid
        // over it, as a configured target without settings of its own would.
        let mut by_name = BTreeMap::new();
        for name in profiles.keys() {
            if let Some(prober) = probers.get(name, defaults.timeout, defaults.warn, defaults.crit)
            {
                by_name.insert(name.clone(), prober);
            }
        }
        Some(Config {
            path: path.to_owned(),
            listen: listen?,
            state_dir,
            web: web?,
            http_limits,
            probe_targets,
            metrics,
            shard,
            first_round,
            concurrency,
            targets,
            file_sd,
            profiles: by_name,
            default_profile,
            store,
            remediation,
            hooks,
            backup,
            agents,
        })
    }

    fn duration(&mut self, v: Option<&Spanned<String>>, key: &str) -> Option<Duration> {
        let v = v?;
        match super::parse_duration(v.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.p.at(v, key, format!("{:?}: {e}", v.get_ref()));
                None
            }
        }
    }
}
