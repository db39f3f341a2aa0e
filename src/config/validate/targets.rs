//! `[[target]]` entries and `targets_files`: what to probe, with which prober. Both kinds of
//! entry, and the groups of `file_sd` files (`file_sd.rs`), end in [`TargetList::add`], so
//! they are listed once per profile and share probers the same way.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use super::problems::suggest;
use super::profiles::{Profile, crit_key, thresholds_span};
use crate::cert::{Policy, Threshold};
use crate::config::raw::{RawConfig, RawTarget};
use crate::probe::{Prober, Target};
use crate::schedule::TargetSpec;

/// Label names tlsward sets itself, which config labels may not take.
pub(super) const RESERVED_LABELS: &[&str] = &[
    "target", "profile", "address", "reason", "check", "version", "job", "instance",
];

/// How a target is probed: `[defaults]`, or a `[[target]]` with its own keys laid over them.
/// `None` keeps the profile's own value.
#[derive(Debug, Clone)]
pub(super) struct TargetSettings {
    /// The profile's name.
    pub(super) profile: String,
    /// How often it is probed.
    pub(super) interval: Duration,
    /// The probe's timeout.
    pub(super) timeout: Option<Duration>,
    /// The expiry warning threshold.
    pub(super) warn: Option<Threshold>,
    /// The expiry critical threshold.
    pub(super) crit: Option<Threshold>,
}

// === impl ProberCache ===

/// What makes two probers differ: the profile, the timeout and both thresholds.
type ProberKey = (String, Duration, (u64, u64), (u64, u64));

/// The probers built so far for the valid profiles, one per distinct [`ProberKey`]: targets
/// (and `/probe` of unconfigured targets) with equal settings share one prober, and so its
/// trust store and client identity.
pub(super) struct ProberCache<'a> {
    profiles: &'a BTreeMap<String, Profile>,
    built: HashMap<ProberKey, Arc<Prober>>,
}

impl<'a> ProberCache<'a> {
    /// An empty cache over the profiles that validated.
    pub(super) fn new(profiles: &'a BTreeMap<String, Profile>) -> Self {
        Self {
            profiles,
            built: HashMap::new(),
        }
    }

    /// The prober for profile `name` with `timeout`, `warn` and `crit` laid over it (`None`
    /// keeps the profile's); `None` when the profile did not validate (its problems are
    /// reported where it is written).
    pub(super) fn get(
        &mut self,
        name: &str,
        timeout: Option<Duration>,
        warn: Option<Threshold>,
        crit: Option<Threshold>,
    ) -> Option<Arc<Prober>> {
        let base = &self.profiles.get(name)?.module;
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
        let prober = self.built.entry(key).or_insert_with(|| {
            let mut module = base.clone();
            module.timeout = timeout;
            module.policy = policy;
            Arc::new(Prober::new(module))
        });
        Some(prober.clone())
    }
}

// === impl TargetList ===

/// Where a target was listed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// `[[target]]` number this.
    Entry(usize),
    /// A line of a `targets_files` file.
    File,
    /// Group number `group` of the file_sd file `file`.
    SdFile {
        /// The file, as shown in problems.
        file: Arc<str>,
        /// The group's index in the file.
        group: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Entry(i) => write!(f, "target[{i}]"),
            Self::File => f.write_str("in a targets file"),
            Self::SdFile { file, group } => write!(f, "in {file} group[{group}]"),
        }
    }
}

/// The targets gathered so far, each address at most once per profile, and the probers
/// they share.
pub(super) struct TargetList<'a> {
    /// The probers, kept for `/probe` of targets that are not configured.
    pub(super) probers: ProberCache<'a>,
    /// The targets, in the order they were written.
    pub(super) specs: Vec<Arc<TargetSpec>>,
    /// (address, profile) → where it was listed last.
    seen: HashMap<(String, String), Origin>,
    /// Each profile's name, one copy shared by its targets.
    profile_names: HashMap<String, Arc<str>>,
}

impl<'a> TargetList<'a> {
    /// An empty list over the profiles that validated.
    pub(super) fn new(profiles: &'a BTreeMap<String, Profile>) -> Self {
        Self {
            probers: ProberCache::new(profiles),
            specs: Vec::new(),
            seen: HashMap::new(),
            profile_names: HashMap::new(),
        }
    }

    /// The profiles that validated, by name.
    pub(super) fn profiles(&self) -> &'a BTreeMap<String, Profile> {
        self.probers.profiles
    }

    /// Adds `target`, probed as `s` says, unless it is already listed with the same profile
    /// (then `Err` says where). A target whose profile did not validate is left out: its
    /// problems are reported where the profile is written.
    pub(super) fn add(
        &mut self,
        origin: Origin,
        target: Target,
        s: &TargetSettings,
        labels: Vec<(String, String)>,
        all_addresses: bool,
    ) -> Result<(), Origin> {
        if let Some(first) = self
            .seen
            .insert((target.to_string(), s.profile.clone()), origin)
        {
            return Err(first);
        }
        let Some(prober) = self.probers.get(&s.profile, s.timeout, s.warn, s.crit) else {
            return Ok(());
        };
        let profile = self
            .profile_names
            .entry(s.profile.clone())
            .or_insert_with(|| s.profile.as_str().into())
            .clone();
        self.specs.push(Arc::new(TargetSpec {
            name: target.to_string().into(),
            profile,
            target,
            interval: s.interval,
            prober,
            labels,
            all_addresses,
        }));
        Ok(())
    }
}

impl Validator<'_, '_> {
    /// Every `[[target]]`, then every line of `targets_files`, into `list`. `broken` names
    /// the profiles written in this config that did not validate.
    pub(super) fn targets(
        &mut self,
        raw: &RawConfig,
        defaults: &TargetSettings,
        broken: &[&String],
        list: &mut TargetList<'_>,
    ) {
        for (i, t) in raw.targets.iter().enumerate() {
            self.target_entry(i, t, defaults, broken, list);
        }
        for pattern in &raw.targets_files {
            self.targets_file(pattern, defaults, list);
        }
    }

    /// `[[target]]` number `i`; one with a problem is reported and left out.
    fn target_entry(
        &mut self,
        i: usize,
        t: &RawTarget,
        defaults: &TargetSettings,
        broken: &[&String],
        list: &mut TargetList<'_>,
    ) {
        let key = format!("target[{i}]");
        let Some(target) = self.target_address(&t.address, &format!("{key}.address")) else {
            return;
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
        let profiles = list.probers.profiles;
        let profile = match &t.profile {
            Some(name) if broken.contains(&name.get_ref()) => return,
            Some(name) if !profiles.contains_key(name.get_ref()) => {
                let hint = suggest(name.get_ref(), profiles.keys());
                self.p.at(
                    name,
                    &format!("{key}.profile"),
                    format!("unknown profile {:?}{hint}", name.get_ref()),
                );
                return;
            }
            Some(name) => name.get_ref().clone(),
            None => defaults.profile.clone(),
        };
        let interval = self
            .duration(t.interval.as_ref(), &format!("{key}.interval"))
            .unwrap_or(defaults.interval);
        let timeout = self
            .duration(t.timeout.as_ref(), &format!("{key}.timeout"))
            .or(defaults.timeout);
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
        // The profile's own thresholds apply unless the target or `[defaults]` set them
        // (the prober lays these over the profile's).
        let warn = own_warn.or(defaults.warn);
        let crit = own_crit.or(defaults.crit);
        if own_warn.is_some() || own_crit.is_some() {
            let span = thresholds_span(&t.crit, &t.crit_days, &t.warn, &t.warn_days);
            if self
                .policy(warn, crit, span, &crit_key(&key, &t.crit))
                .is_none()
            {
                return;
            }
        }
        let labels = self.labels(t, &key);
        let settings = TargetSettings {
            profile,
            interval,
            timeout,
            warn,
            crit,
        };
        let all_addresses = t.all_addresses.as_ref().is_some_and(|b| *b.get_ref());
        let name = target.to_string();
        if let Err(first) = list.add(Origin::Entry(i), target, &settings, labels, all_addresses) {
            self.p.at(
                &t.address,
                &format!("{key}.address"),
                format!(
                    "{name} with profile {:?} is already {first}",
                    settings.profile
                ),
            );
        }
    }

    /// A `[[target]]`'s `labels`: each must be a Prometheus label name that tlsward does
    /// not set itself; a bad one is reported and left out.
    fn labels(&mut self, t: &RawTarget, key: &str) -> Vec<(String, String)> {
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
        labels
    }

    /// The files `pattern` matches, one target per line (`#` starts a comment), each probed
    /// with `[defaults]`.
    fn targets_file(
        &mut self,
        pattern: &Spanned<String>,
        d: &TargetSettings,
        list: &mut TargetList<'_>,
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
                let name = target.to_string();
                if list
                    .add(Origin::File, target, d, Vec::new(), false)
                    .is_err()
                {
                    self.p.elsewhere(format!(
                        "{at}: {name} with profile {:?} is listed twice",
                        d.profile
                    ));
                }
            }
        }
    }

    /// A `[[target]]`'s `address`.
    fn target_address(&mut self, v: &Spanned<String>, key: &str) -> Option<Target> {
        match v.get_ref().parse::<Target>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.p.at(v, key, e);
                None
            }
        }
    }
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(super) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::load;

    /// A `[[target]]` and a targets file line go through the same duplicate check: the same
    /// address with the same profile is refused in the file, named by its file and line,
    /// while the same address with another profile is a target of its own.
    #[test]
    fn a_targets_file_line_repeating_a_target_entry_is_listed_twice() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("more.txt"),
            "other.example.org\nwww.example.org:443\n",
        )
        .unwrap();
        let cfg = tmp.path().join("t.toml");
        std::fs::write(
            &cfg,
            "targets_files = [\"more.txt\"]\n\n\
             [[target]]\naddress = \"www.example.org\"\n\n\
             [[target]]\naddress = \"www.example.org\"\nprofile = \"smtp-starttls\"\n",
        )
        .unwrap();
        let err = load(&cfg).unwrap_err();
        let file = tmp.path().join("more.txt");
        assert_eq!(
            err.problems,
            [format!(
                "{}:2: www.example.org:443 with profile \"https\" is listed twice",
                file.display()
            )]
        );
        std::fs::write(tmp.path().join("more.txt"), "other.example.org\n").unwrap();
        let config = load(&cfg).unwrap();
        let listed: Vec<(&str, &str)> = config
            .targets
            .iter()
            .map(|t| (&*t.name, &*t.profile))
            .collect();
        assert_eq!(
            listed,
            [
                ("www.example.org:443", "https"),
                ("www.example.org:443", "smtp-starttls"),
                ("other.example.org:443", "https"),
            ]
        );
    }

    /// Targets with equal settings share one prober, whether written as `[[target]]` or in a
    /// targets file, and `/probe` of an unconfigured target uses that same prober; a target
    /// with a timeout of its own gets another.
    #[test]
    fn equal_settings_share_one_prober() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("more.txt"), "b.example.org\n").unwrap();
        let cfg = tmp.path().join("t.toml");
        std::fs::write(
            &cfg,
            "targets_files = [\"more.txt\"]\n\n\
             [[target]]\naddress = \"a.example.org\"\n\n\
             [[target]]\naddress = \"c.example.org\"\ntimeout = \"3s\"\n",
        )
        .unwrap();
        let config = load(&cfg).unwrap();
        let prober = |name: &str| {
            let t = config.targets.iter().find(|t| &*t.name == name).unwrap();
            t.prober.clone()
        };
        let (a, b, c) = (
            prober("a.example.org:443"),
            prober("b.example.org:443"),
            prober("c.example.org:443"),
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &config.profiles["https"]));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
