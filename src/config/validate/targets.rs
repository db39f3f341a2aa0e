//! `[[target]]` entries and `targets_files`: what to probe, with which prober.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use super::profiles::Profile;
use crate::cert::{Policy, Threshold};
use crate::probe::{Prober, Target};
use crate::schedule::TargetSpec;

/// Label names tlsward sets itself, which config labels may not take.
pub(super) const RESERVED_LABELS: &[&str] = &[
    "target", "profile", "address", "reason", "check", "version", "job", "instance",
];

/// Probers are shared between targets with equal settings: profile, timeout, thresholds.
pub(super) type ProberKey = (String, Duration, (u64, u64), (u64, u64));

impl Validator<'_, '_> {
    pub(super) fn target_address(&mut self, v: &Spanned<String>, key: &str) -> Option<Target> {
        match v.get_ref().parse::<Target>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.p.at(v, key, e);
                None
            }
        }
    }

    /// The prober for a profile with per-target overrides, shared between equal settings.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn prober(
        &mut self,
        cache: &mut HashMap<ProberKey, Arc<Prober>>,
        profiles: &BTreeMap<String, Profile>,
        name: &str,
        timeout: Option<Duration>,
        warn: Option<Threshold>,
        crit: Option<Threshold>,
    ) -> Option<Arc<Prober>> {
        let base = &profiles.get(name)?.module;
        let timeout = timeout.unwrap_or(base.timeout);
        let warn = warn.unwrap_or(base.policy.warn());
        let crit = crit.unwrap_or(base.policy.crit());
        // Thresholds were validated where they were written; an inconsistent mix of a
        // profile's and a target's values falls back to the profile's.
        let policy = Policy::new().with_warn(warn).with_crit(crit);
        let policy = if policy.check().is_ok() {
            policy
        } else {
            base.policy
        };
        let key = (
            name.to_owned(),
            timeout,
            policy.warn().key(),
            policy.crit().key(),
        );
        let prober = cache.entry(key).or_insert_with(|| {
            let mut module = base.clone();
            module.timeout = timeout;
            module.policy = policy;
            Arc::new(Prober::new(module))
        });
        Some(prober.clone())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn targets_file(
        &mut self,
        pattern: &Spanned<String>,
        d: &Defaults,
        profiles: &BTreeMap<String, Profile>,
        probers: &mut HashMap<ProberKey, Arc<Prober>>,
        seen: &mut HashMap<(String, String), usize>,
        targets: &mut Vec<TargetSpec>,
    ) {
        let full = self.base.join(pattern.get_ref());
        let paths = match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => paths.flatten().collect::<Vec<_>>(),
            Err(e) => {
                self.p
                    .at(pattern, "targets_files", format!("bad pattern: {e}"));
                return;
            }
        };
        if paths.is_empty() {
            self.p.at(
                pattern,
                "targets_files",
                format!("no file matches {}", full.display()),
            );
        }
        for path in paths {
            let text = match crate::files::read_to_string(&path, crate::files::MAX_TARGETS) {
                Ok(t) => t,
                Err(e) => {
                    self.p.at(pattern, "targets_files", e);
                    continue;
                }
            };
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if line.is_empty() {
                    continue;
                }
                let at = format!("{}:{}", path.display(), n + 1);
                let target = match line.parse::<Target>() {
                    Ok(t) => t,
                    Err(e) => {
                        self.p.elsewhere(format!("{at}: {e}"));
                        continue;
                    }
                };
                if seen
                    .insert((target.to_string(), d.profile.clone()), targets.len())
                    .is_some()
                {
                    self.p.elsewhere(format!(
                        "{at}: {target} with profile {:?} is listed twice",
                        d.profile
                    ));
                    continue;
                }
                let Some(prober) =
                    self.prober(probers, profiles, &d.profile, d.timeout, d.warn, d.crit)
                else {
                    continue;
                };
                targets.push(TargetSpec {
                    name: target.to_string(),
                    profile: d.profile.clone(),
                    target,
                    interval: d.interval,
                    prober,
                    labels: Vec::new(),
                    all_addresses: false,
                });
            }
        }
    }
}

pub(super) struct Defaults {
    pub(super) interval: Duration,
    pub(super) timeout: Option<Duration>,
    pub(super) warn: Option<Threshold>,
    pub(super) crit: Option<Threshold>,
    pub(super) profile: String,
}

pub(super) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
