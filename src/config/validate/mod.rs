//! From the raw mirror to each module's settings, collecting every problem with its line.

mod hooks;
mod problems;
mod profiles;
mod remediation;
mod server;
mod shape;
mod targets;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use self::problems::{Problems, suggest};
use self::profiles::{crit_key, thresholds_span};
use self::targets::{Defaults, ProberKey, RESERVED_LABELS, valid_label_name};
use super::raw::RawConfig;
use super::{Config, ConfigError, DEFAULT_CONCURRENCY, DEFAULT_INTERVAL, DEFAULT_LISTEN, base_dir};
use crate::cert::TrustStore;
use crate::probe::Prober;
use crate::schedule::TargetSpec;

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

        let listen = match &raw.server.listen {
            Some(l) => l
                .get_ref()
                .parse()
                .map_err(|_| {
                    self.p
                        .at(l, "server.listen", "expected IP:PORT, e.g. 127.0.0.1:9219")
                })
                .ok(),
            None => DEFAULT_LISTEN.parse().ok(),
        };
        let state_dir = raw.server.state_dir.as_ref().map_or_else(
            || PathBuf::from("/var/lib/tlsward"),
            |s| self.base.join(s.get_ref()),
        );
        let web = self.web(&raw);
        let http_limits = self.http_limits(&raw.server);
        let probe_targets = self.probe_targets(&raw.server);

        let mut probers: HashMap<ProberKey, Arc<Prober>> = HashMap::new();
        let mut targets = Vec::new();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        let defaults = Defaults {
            interval,
            timeout,
            warn,
            crit,
            profile: default_profile.clone(),
        };

        for (i, t) in raw.targets.iter().enumerate() {
            let key = format!("target[{i}]");
            let Some(target) = self.target_address(&t.address, &format!("{key}.address")) else {
                continue;
            };
            let mut target = target;
            if let Some(sni) = &t.server_name {
                target.server_name = Some(sni.get_ref().trim_end_matches('.').to_ascii_lowercase());
                if target.server_name().is_err() {
                    self.p.at(
                        sni,
                        &format!("{key}.server_name"),
                        format!("{:?} is not a DNS name or IP address", sni.get_ref()),
                    );
                }
            }
            for addr in &t.connect_to {
                match addr
                    .get_ref()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                {
                    Ok(ip) => target.connect_to.push(SocketAddr::new(ip, target.port)),
                    Err(_) => self.p.at(
                        addr,
                        &format!("{key}.connect_to"),
                        format!("{:?} is not an IP address", addr.get_ref()),
                    ),
                }
            }
            let profile = match &t.profile {
                Some(name) if broken.contains(&name.get_ref()) => continue,
                Some(name) if !profiles.contains_key(name.get_ref()) => {
                    let hint = suggest(name.get_ref(), profiles.keys());
                    self.p.at(
                        name,
                        &format!("{key}.profile"),
                        format!("unknown profile {:?}{hint}", name.get_ref()),
                    );
                    continue;
                }
                Some(name) => name.get_ref().clone(),
                None => default_profile.clone(),
            };
            let interval = self
                .duration(t.interval.as_ref(), &format!("{key}.interval"))
                .unwrap_or(interval);
            let timeout = self
                .duration(t.timeout.as_ref(), &format!("{key}.timeout"))
                .or(timeout);
            let own_warn = self.threshold(
                t.warn.as_ref(),
                t.warn_days.as_ref(),
                &format!("{key}.warn"),
            );
            let own_crit = self.threshold(
                t.crit.as_ref(),
                t.crit_days.as_ref(),
                &format!("{key}.crit"),
            );
            let mut warn = own_warn.or(warn);
            let mut crit = own_crit.or(crit);
            if own_warn.is_some() || own_crit.is_some() {
                let span = thresholds_span(&t.crit, &t.crit_days, &t.warn, &t.warn_days);
                if self
                    .policy(warn, crit, span, &crit_key(&key, &t.crit))
                    .is_none()
                {
                    continue;
                }
            }
            if let Some(p) = profiles.get(&profile) {
                // A profile's own thresholds apply unless the target or defaults set them.
                warn = warn.or(Some(p.module.policy.warn()));
                crit = crit.or(Some(p.module.policy.crit()));
            }
            let mut labels = Vec::new();
            for (name, value) in &t.labels {
                if !valid_label_name(name) {
                    self.p.at(
                        value,
                        &format!("{key}.labels"),
                        format!("{name:?} is not a valid Prometheus label name"),
                    );
                } else if RESERVED_LABELS.contains(&name.as_str()) || name.starts_with("__") {
                    self.p.at(
                        value,
                        &format!("{key}.labels"),
                        format!("{name:?} is reserved by tlsward"),
                    );
                } else {
                    labels.push((name.clone(), value.get_ref().clone()));
                }
            }
            let id = (target.to_string(), profile.clone());
            if let Some(first) = seen.insert(id.clone(), i) {
                self.p.at(
                    &t.address,
                    &format!("{key}.address"),
                    format!(
                        "{} with profile {:?} is already target[{first}]",
                        id.0, id.1
                    ),
                );
                continue;
            }
            let Some(prober) = self.prober(&mut probers, &profiles, &profile, timeout, warn, crit)
            else {
                continue;
            };
            targets.push(TargetSpec {
                name: target.to_string(),
                profile,
                target,
                interval,
                prober,
                labels,
                all_addresses: t.all_addresses.as_ref().is_some_and(|b| *b.get_ref()),
            });
        }

        for pattern in &raw.targets_files {
            self.targets_file(
                pattern,
                &defaults,
                &profiles,
                &mut probers,
                &mut seen,
                &mut targets,
            );
        }

        let store = self.store_settings(&raw, &state_dir);
        let hooks = self.hooks(&raw);
        let remediation = self.remediation(&raw, &targets, &hooks);

        // `/probe` of a target that is not configured uses a profile with `[defaults]` laid
        // over it, as a configured target without settings of its own would.
        let mut by_name = BTreeMap::new();
        for name in profiles.keys() {
            if let Some(prober) = self.prober(
                &mut probers,
                &profiles,
                name,
                defaults.timeout,
                defaults.warn,
                defaults.crit,
            ) {
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
            concurrency,
            targets,
            profiles: by_name,
            default_profile,
            store,
            remediation,
            hooks,
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
