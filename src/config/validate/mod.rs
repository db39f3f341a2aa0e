//! From the raw mirror to each module's settings, collecting every problem with its line.

mod hooks;
mod remediation;
mod server;
mod shape;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawConfig, RawProfile};
use super::{
    Config, ConfigError, DEFAULT_CONCURRENCY, DEFAULT_INTERVAL, DEFAULT_LISTEN,
    RemediationSettings, SHIPPED_PROFILES, StoreSettings, base_dir,
};
use crate::cert::{Policy, Threshold, TrustStore};
use crate::exporter::WebConfig;
use crate::issuer::{
    AcmeSettings, CertificateSpec, ChallengeKind, Dns01, KeyType, Rfc2136Settings,
};
use crate::probe::{ClientIdentity, Module, Prober, Protocol, Target, load_trust};
use crate::reconcile::window::{Window, WindowError};
use crate::reconcile::{DeploySettings, EndpointSpec};
use crate::schedule::TargetSpec;
use crate::secret::Secret;
use crate::store::KeySource;

/// Label names tlsward sets itself, which config labels may not take.
const RESERVED_LABELS: &[&str] = &[
    "target", "profile", "address", "reason", "check", "version", "job", "instance",
];

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

/// Problems found so far, each rendered as `file:line: key: message`.
struct Problems<'a> {
    file: String,
    src: &'a str,
    /// (line, text); problems without a line sort last.
    list: Vec<(usize, String)>,
}

impl<'a> Problems<'a> {
    fn new(file: String, src: &'a str) -> Self {
        Self {
            file,
            src,
            list: Vec::new(),
        }
    }

    fn add(&mut self, span: Option<Range<usize>>, key: &str, msg: impl std::fmt::Display) {
        let msg = msg.to_string();
        let msg = msg.trim_end();
        let key = if key.is_empty() {
            String::new()
        } else {
            format!("{key}: ")
        };
        match span {
            Some(span) => {
                let line = self.src[..span.start.min(self.src.len())]
                    .matches('\n')
                    .count()
                    + 1;
                self.list
                    .push((line, format!("{}:{line}: {key}{msg}", self.file)));
            }
            None => self
                .list
                .push((usize::MAX, format!("{}: {key}{msg}", self.file))),
        }
    }

    fn at<T>(&mut self, v: &Spanned<T>, key: &str, msg: impl std::fmt::Display) {
        self.add(Some(v.span()), key, msg);
    }

    /// A problem located in another file (`file:line: message`).
    fn elsewhere(&mut self, text: String) {
        self.list.push((usize::MAX - 1, text));
    }

    fn into_error(mut self) -> ConfigError {
        self.list.sort_by_key(|(line, _)| *line);
        ConfigError {
            problems: self.list.into_iter().map(|(_, t)| t).collect(),
        }
    }
}

/// Probers are shared between targets with equal settings: profile, timeout, thresholds.
type ProberKey = (String, Duration, (u64, u64), (u64, u64));

/// Where a table's expiry thresholds are written, for a problem with their combination.
fn thresholds_span(
    crit: &Option<Spanned<String>>,
    crit_days: &Option<Spanned<f64>>,
    warn: &Option<Spanned<String>>,
    warn_days: &Option<Spanned<f64>>,
) -> Option<Range<usize>> {
    crit.as_ref()
        .map(Spanned::span)
        .or_else(|| crit_days.as_ref().map(Spanned::span))
        .or_else(|| warn.as_ref().map(Spanned::span))
        .or_else(|| warn_days.as_ref().map(Spanned::span))
}

/// `{table}.crit` when written so, else `{table}.crit_days` (the older key).
fn crit_key(table: &str, crit: &Option<Spanned<String>>) -> String {
    if crit.is_some() {
        format!("{table}.crit")
    } else {
        format!("{table}.crit_days")
    }
}

/// A profile after validation: what a prober for it needs, before per-target overrides.
struct Profile {
    module: Module,
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

    fn target_address(&mut self, v: &Spanned<String>, key: &str) -> Option<Target> {
        match v.get_ref().parse::<Target>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.p.at(v, key, e);
                None
            }
        }
    }

    /// The shared trust store of the system's roots, loaded once.
    fn system_trust(&mut self) -> Option<Arc<TrustStore>> {
        if self.system_trust.is_none() {
            match load_trust(true, &[]) {
                Ok(t) => self.system_trust = Some(Arc::new(t)),
                Err(e) => {
                    self.p.add(None, "", format!("system trust store: {e}"));
                    return None;
                }
            }
        }
        self.system_trust.clone()
    }

    fn profiles(&mut self, raw: &RawConfig) -> BTreeMap<String, Profile> {
        let mut out = BTreeMap::new();
        for (name, text) in SHIPPED_PROFILES {
            match toml::from_str::<RawProfile>(text) {
                Ok(rp) => {
                    if let Some(p) = self.profile(&rp, &format!("probes/{name}.toml"), None) {
                        out.insert((*name).to_owned(), p);
                    }
                }
                Err(e) => self
                    .p
                    .add(None, &format!("probes/{name}.toml"), e.message()),
            }
        }
        if let Some(dir) = &raw.profiles_dir {
            let path = self.base.join(dir.get_ref());
            match std::fs::read_dir(&path) {
                Ok(entries) => {
                    let mut files: Vec<PathBuf> = entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .collect();
                    files.sort();
                    for file in files {
                        let name = file
                            .file_stem()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned();
                        match crate::files::read_to_string(&file, crate::files::MAX_CONFIG)
                            .map_err(|e| e.why())
                            .and_then(|t| {
                                // The message and line only: toml's full error quotes the
                                // file's line, and the file may be anything.
                                toml::from_str::<RawProfile>(&t).map_err(|e| {
                                    let line = e.span().map_or(0, |s| {
                                        t[..s.start.min(t.len())].matches('\n').count() + 1
                                    });
                                    format!("line {line}: {}", e.message().trim_end())
                                })
                            }) {
                            Ok(rp) => {
                                if let Some(p) =
                                    self.profile(&rp, &file.display().to_string(), None)
                                {
                                    out.insert(name, p);
                                }
                            }
                            Err(e) => self.p.add(None, &file.display().to_string(), e),
                        }
                    }
                }
                Err(e) => self
                    .p
                    .at(dir, "profiles_dir", format!("{}: {e}", path.display())),
            }
        }
        for (name, rp) in &raw.profiles {
            if let Some(p) = self.profile(rp.get_ref(), &format!("profile.{name}"), Some(rp.span()))
            {
                out.insert(name.clone(), p);
            }
        }
        out
    }

    fn profile(
        &mut self,
        rp: &RawProfile,
        key: &str,
        span: Option<Range<usize>>,
    ) -> Option<Profile> {
        let protocol = match &rp.protocol {
            Some(proto) => match proto.get_ref().parse::<Protocol>() {
                Ok(p) => p,
                Err(e) => {
                    self.p.at(proto, &format!("{key}.protocol"), e);
                    return None;
                }
            },
            None => Protocol::Tls,
        };
        let ca_files: Vec<PathBuf> = rp
            .ca_files
            .iter()
            .map(|f| self.base.join(f.get_ref()))
            .collect();
        let system = rp.system_roots.unwrap_or(true);
        let trust = if ca_files.is_empty() && system {
            self.system_trust()?
        } else {
            match load_trust(system, &ca_files) {
                Ok(t) => Arc::new(t),
                Err(e) => {
                    let at = rp.ca_files.first().map(Spanned::span).or(span);
                    self.p.add(at, &format!("{key}.ca_files"), e);
                    return None;
                }
            }
        };
        let client_identity = match (&rp.client_cert, &rp.client_key) {
            (None, None) => None,
            (Some(cert), Some(keyf)) => match ClientIdentity::from_pem_files(
                &self.base.join(cert.get_ref()),
                &self.base.join(keyf.get_ref()),
            ) {
                Ok(id) => Some(Arc::new(id)),
                Err(e) => {
                    self.p.at(cert, &format!("{key}.client_cert"), e);
                    return None;
                }
            },
            (Some(v), None) | (None, Some(v)) => {
                self.p.at(v, key, "client_cert and client_key go together");
                return None;
            }
        };
        let timeout = self
            .duration(rp.timeout.as_ref(), &format!("{key}.timeout"))
            .unwrap_or(crate::probe::DEFAULT_TIMEOUT);
        let warn = self.threshold(
            rp.warn.as_ref(),
            rp.warn_days.as_ref(),
            &format!("{key}.warn"),
        );
        let crit = self.threshold(
            rp.crit.as_ref(),
            rp.crit_days.as_ref(),
            &format!("{key}.crit"),
        );
        let policy = self.policy(
            warn,
            crit,
            thresholds_span(&rp.crit, &rp.crit_days, &rp.warn, &rp.warn_days).or(span),
            key,
        )?;
        Some(Profile {
            module: Module {
                protocol,
                timeout,
                policy,
                trust,
                client_identity,
                alpn: rp.alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
            },
        })
    }

    fn policy(
        &mut self,
        warn: Option<Threshold>,
        crit: Option<Threshold>,
        span: Option<Range<usize>>,
        key: &str,
    ) -> Option<Policy> {
        let mut policy = Policy::new();
        if let Some(w) = warn {
            policy = policy.with_warn(w);
        }
        if let Some(c) = crit {
            policy = policy.with_crit(c);
        }
        if let Err(e) = policy.check() {
            self.p.add(span, key, e);
            return None;
        }
        Some(policy)
    }

    /// `warn = "21d,33%"` or `warn_days = 21` (`which` is `defaults.warn`, `target[2].crit`...).
    fn threshold(
        &mut self,
        text: Option<&Spanned<String>>,
        days: Option<&Spanned<f64>>,
        which: &str,
    ) -> Option<Threshold> {
        match (text, days) {
            (Some(t), Some(_)) => {
                self.p
                    .at(t, which, format!("use {which} or {which}_days, not both"));
                None
            }
            (Some(t), None) => t
                .get_ref()
                .parse::<Threshold>()
                .map_err(|e| self.p.at(t, which, e))
                .ok(),
            (None, Some(d)) => {
                let v = *d.get_ref();
                if v.is_finite() && (0.0..=3650.0).contains(&v) {
                    Some(Threshold::days(v))
                } else {
                    self.p.at(
                        d,
                        &format!("{which}_days"),
                        "must be a number of days between 0 and 3650",
                    );
                    None
                }
            }
            (None, None) => None,
        }
    }

    /// The prober for a profile with per-target overrides, shared between equal settings.
    #[allow(clippy::too_many_arguments)]
    fn prober(
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
    fn targets_file(
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

    fn web(&mut self, raw: &RawConfig) -> Option<WebConfig> {
        let w = &raw.server.web;
        let mut ok = true;
        let tls = match (&w.tls_cert_file, &w.tls_key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((
                self.base.join(c.get_ref()),
                self.base.join(k.get_ref()),
                c.span(),
            )),
            (Some(v), None) | (None, Some(v)) => {
                self.p.at(
                    v,
                    "server.web",
                    "tls_cert_file and tls_key_file go together",
                );
                ok = false;
                None
            }
        };
        let mut users = BTreeMap::new();
        for (user, hash) in &w.basic_auth_users {
            let h = hash.get_ref();
            if !(h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$"))
                || h.len() != 60
            {
                self.p.at(
                    hash,
                    &format!("server.web.basic_auth_users.{user}"),
                    "must be a bcrypt hash ($2b$...), never a plain password",
                );
                ok = false;
            } else {
                users.insert(user.clone(), h.clone());
            }
        }
        let mut tokens = Vec::new();
        for t in &w.bearer_token_sha256 {
            match decode_sha256(t.get_ref()) {
                Some(d) => tokens.push(d),
                None => {
                    self.p.at(
                        t,
                        "server.web.bearer_token_sha256",
                        "must be 64 hex digits (the SHA-256 of the token)",
                    );
                    ok = false;
                }
            }
        }
        let mut web = WebConfig::open();
        web.basic_auth_users = users;
        web.bearer_token_sha256 = tokens;
        if let Some((cert, key, span)) = tls {
            match crate::exporter::load_server_tls(&cert, &key) {
                Ok(cfg) => web.tls = Some(cfg),
                Err(e) => {
                    self.p.add(Some(span), "server.web.tls_cert_file", e);
                    ok = false;
                }
            }
        }
        ok.then_some(web)
    }
}

struct Defaults {
    interval: Duration,
    timeout: Option<Duration>,
    warn: Option<Threshold>,
    crit: Option<Threshold>,
    profile: String,
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// ` (did you mean "https"?)` when a known name is one or two edits away.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
