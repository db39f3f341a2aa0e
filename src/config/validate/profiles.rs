//! Probe profiles: the shipped `probes/*.toml`, a `profiles_dir` and `[profile.NAME]`, each
//! turned into a [`Module`]; and the expiry thresholds profiles, targets and `[defaults]`
//! write the same way.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::Validator;
use crate::cert::{Policy, Threshold, TrustStore};
use crate::config::SHIPPED_PROFILES;
use crate::config::raw::{RawConfig, RawProfile};
use crate::probe::{ClientIdentity, Module, Protocol, load_trust};

/// A profile after validation: what a prober for it needs, before per-target overrides.
pub(super) struct Profile {
    pub(super) module: Module,
}

/// Where a table's expiry thresholds are written, for a problem with their combination.
pub(super) fn thresholds_span(
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
pub(super) fn crit_key(table: &str, crit: &Option<Spanned<String>>) -> String {
    if crit.is_some() {
        format!("{table}.crit")
    } else {
        format!("{table}.crit_days")
    }
}

impl Validator<'_, '_> {
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

    pub(super) fn profiles(&mut self, raw: &RawConfig) -> BTreeMap<String, Profile> {
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

    pub(super) fn policy(
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
    pub(super) fn threshold(
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
}
