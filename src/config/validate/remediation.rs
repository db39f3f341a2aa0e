//! The issuance side of the config: `[store]`, `[acme]` (with `[acme.dns01]`),
//! `[[certificate]]`, `[[endpoint]]` and `[window.NAME]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::Validator;
use super::problems::suggest;
use crate::config::raw::RawConfig;
use crate::config::{RemediationSettings, StoreSettings};
use crate::issuer::{
    AcmeSettings, CertificateSpec, ChallengeKind, Dns01, KeyType, Rfc2136Settings,
};
use crate::probe::Target;
use crate::reconcile::window::{Window, WindowError};
use crate::reconcile::{DeploySettings, EndpointSpec};
use crate::schedule::TargetSpec;
use crate::secret::Secret;
use crate::store::KeySource;

impl Validator<'_, '_> {
    pub(super) fn store_settings(&mut self, raw: &RawConfig, state_dir: &Path) -> StoreSettings {
        let path = raw.store.path.as_ref().map_or_else(
            || state_dir.join("tlsward.db"),
            |p| self.base.join(p.get_ref()),
        );
        let key = match (&raw.store.key_env, &raw.store.key_file) {
            (Some(env), None) => KeySource::Env(env.get_ref().clone()),
            (None, file) => KeySource::File(file.as_ref().map_or_else(
                || state_dir.join("store.key"),
                |f| self.base.join(f.get_ref()),
            )),
            (Some(env), Some(_)) => {
                self.p
                    .at(env, "store.key_env", "use key_env or key_file, not both");
                KeySource::Env(env.get_ref().clone())
            }
        };
        StoreSettings { path, key }
    }

    pub(super) fn remediation(
        &mut self,
        raw: &RawConfig,
        targets: &[Arc<TargetSpec>],
        hooks: &BTreeMap<String, crate::hooks::HookSpec>,
    ) -> Option<RemediationSettings> {
        let Some(acme) = &raw.acme else {
            if let Some(c) = raw.certificates.first() {
                self.p.at(
                    &c.name,
                    "certificate[0]",
                    "managed certificates need an [acme] section",
                );
            }
            if let Some(e) = raw.endpoints.first() {
                self.p.at(
                    &e.certificate,
                    "endpoint[0]",
                    "endpoints are bound to managed certificates, which need an [acme] section",
                );
            }
            return None;
        };
        let span = acme.span();
        let acme = acme.get_ref();
        let directory = acme.directory.get_ref().clone();
        if !directory.starts_with("https://") {
            self.p
                .at(&acme.directory, "acme.directory", "must be an https:// URL");
        }
        let eab = match (&acme.eab_kid, &acme.eab_hmac_env) {
            (None, None) => None,
            (Some(kid), Some(env)) => match std::env::var(env.get_ref()) {
                Ok(v) => {
                    use base64::Engine;
                    match base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(v.trim().trim_end_matches('='))
                    {
                        Ok(key) => Some((kid.get_ref().clone(), Secret::new(key))),
                        Err(_) => {
                            self.p.at(
                                env,
                                "acme.eab_hmac_env",
                                format!("{} is not base64url", env.get_ref()),
                            );
                            None
                        }
                    }
                }
                Err(_) => {
                    self.p.at(
                        env,
                        "acme.eab_hmac_env",
                        format!("environment variable {} is not set", env.get_ref()),
                    );
                    None
                }
            },
            (Some(v), None) | (None, Some(v)) => {
                self.p.at(v, "acme", "eab_kid and eab_hmac_env go together");
                None
            }
        };
        let http01_listen = match &acme.http01_listen {
            Some(l) => l
                .get_ref()
                .parse()
                .map_err(|_| {
                    self.p
                        .at(l, "acme.http01_listen", "expected IP:PORT, e.g. 0.0.0.0:80")
                })
                .ok()?,
            None => "0.0.0.0:80".parse().expect("valid"),
        };
        let renew_fraction = match &acme.renew_fraction {
            Some(f) if *f.get_ref() > 0.0 && *f.get_ref() < 1.0 => *f.get_ref(),
            Some(f) => {
                self.p.at(
                    f,
                    "acme.renew_fraction",
                    "must be between 0 and 1 (e.g. 0.33: renew with a third of the lifetime left)",
                );
                crate::reconcile::DEFAULT_RENEW_FRACTION
            }
            None => crate::reconcile::DEFAULT_RENEW_FRACTION,
        };
        let mut certificates: Vec<CertificateSpec> = Vec::new();
        for (i, c) in raw.certificates.iter().enumerate() {
            let key = format!("certificate[{i}]");
            let name = c.name.get_ref().clone();
            if certificates.iter().any(|x| x.name == name) {
                self.p.at(
                    &c.name,
                    &format!("{key}.name"),
                    format!("{name:?} is already defined"),
                );
                continue;
            }
            if c.domains.get_ref().is_empty() {
                self.p.at(
                    &c.domains,
                    &format!("{key}.domains"),
                    "needs at least one name",
                );
            }
            for d in c.domains.get_ref() {
                if rustls_pki_types::DnsName::try_from(d.as_str()).is_err() {
                    self.p.at(
                        &c.domains,
                        &format!("{key}.domains"),
                        format!("{d:?} is not a DNS name"),
                    );
                }
            }
            let key_type = match c.key_type.as_ref().map(|k| (k, k.get_ref().as_str())) {
                None | Some((_, "ecdsa-p256")) => KeyType::EcdsaP256,
                Some((_, "ecdsa-p384")) => KeyType::EcdsaP384,
                Some((k, other)) => {
                    self.p.at(
                        k,
                        &format!("{key}.key_type"),
                        format!("unknown key type {other:?} (expected ecdsa-p256 or ecdsa-p384)"),
                    );
                    KeyType::EcdsaP256
                }
            };
            let challenge = match c.challenge.as_ref().map(|k| (k, k.get_ref().as_str())) {
                None | Some((_, "http-01")) => ChallengeKind::Http01,
                Some((_, "dns-01")) => ChallengeKind::Dns01,
                Some((k, other)) => {
                    self.p.at(
                        k,
                        &format!("{key}.challenge"),
                        format!("unknown challenge {other:?} (expected http-01 or dns-01)"),
                    );
                    ChallengeKind::Http01
                }
            };
            if challenge == ChallengeKind::Dns01 && acme.dns01.is_none() {
                self.p.at(
                    &c.name,
                    &format!("{key}.challenge"),
                    "dns-01 needs an [acme.dns01] section",
                );
            }
            if challenge == ChallengeKind::Http01
                && c.domains.get_ref().iter().any(|d| d.starts_with("*."))
            {
                self.p.at(
                    &c.domains,
                    &format!("{key}.domains"),
                    "wildcard names need challenge = \"dns-01\"",
                );
            }
            certificates.push(CertificateSpec {
                name,
                domains: c.domains.get_ref().clone(),
                key_type,
                challenge,
                profile: c.profile.as_ref().map(|p| p.get_ref().clone()),
                agent_key: None,
            });
        }
        let windows = self.windows(raw);
        let mut endpoints: Vec<EndpointSpec> = Vec::new();
        for (i, e) in raw.endpoints.iter().enumerate() {
            let key = format!("endpoint[{i}]");
            // Every mistake of an endpoint is reported, not only its first.
            let mut ok = true;
            if !certificates
                .iter()
                .any(|c| c.name == *e.certificate.get_ref())
            {
                let hint = suggest(
                    e.certificate.get_ref(),
                    certificates.iter().map(|c| &c.name),
                );
                self.p.at(
                    &e.certificate,
                    &format!("{key}.certificate"),
                    format!("unknown certificate {:?}{hint}", e.certificate.get_ref()),
                );
                ok = false;
            }
            let target = match e.target.get_ref().parse::<Target>() {
                Ok(t) => t.to_string(),
                Err(err) => {
                    self.p.at(&e.target, &format!("{key}.target"), err);
                    ok = false;
                    String::new()
                }
            };
            if !target.is_empty() && !targets.iter().any(|t| *t.name == *target) {
                self.p.at(
                    &e.target,
                    &format!("{key}.target"),
                    format!("no [[target]] has address {target}; add one so it is probed"),
                );
                ok = false;
            }
            let name = e
                .name
                .as_ref()
                .map_or_else(|| target.clone(), |n| n.get_ref().clone());
            let window = match &e.window {
                None => None,
                Some(w) => match windows.get(w.get_ref()) {
                    Some(found) => Some(found.clone()),
                    None => {
                        if !raw.windows.contains_key(w.get_ref()) {
                            let hint = suggest(w.get_ref(), raw.windows.keys());
                            self.p.at(
                                w,
                                &format!("{key}.window"),
                                format!("unknown window {:?}{hint}", w.get_ref()),
                            );
                        }
                        ok = false;
                        None
                    }
                },
            };
            let agent = self.endpoint_agent(raw, e, &key, &mut ok);
            let hook = match &e.hook {
                // The agent's own config names its hooks; the agent checks it.
                Some(h) if e.agent.is_some() => Some(h.get_ref().clone()),
                None if e.agent.is_some() => {
                    if let Some(a) = &e.agent {
                        self.p.at(
                            a,
                            &format!("{key}.hook"),
                            "an agent endpoint needs hook = \"NAME\" (a hook in the agent's config)",
                        );
                    }
                    ok = false;
                    None
                }
                None => None,
                Some(h) if hooks.contains_key(h.get_ref()) => Some(h.get_ref().clone()),
                Some(h) => {
                    if !raw.hooks.contains_key(h.get_ref()) {
                        let hint = suggest(h.get_ref(), raw.hooks.keys());
                        self.p.at(
                            h,
                            &format!("{key}.hook"),
                            format!("unknown hook {:?}{hint}", h.get_ref()),
                        );
                    }
                    ok = false;
                    None
                }
            };
            if e.hook.is_none()
                && let Some((k, v)) = e.settings.iter().next()
            {
                self.p.at(
                    v,
                    &format!("{key}.settings.{k}"),
                    "settings without a hook: add hook = \"NAME\"",
                );
            }
            // `NAME_file` and `NAME_env` resolved, as for [hook.NAME.settings].
            let settings = self.hook_settings(&e.settings, &format!("{key}.settings"));
            if !ok {
                continue;
            }
            endpoints.push(EndpointSpec {
                name,
                certificate: e.certificate.get_ref().clone(),
                target,
                window,
                hook,
                settings,
                agent,
            });
        }
        let _ = span;
        self.agent_keys(raw, &mut certificates);
        let rollouts = self.rollouts(raw, &endpoints);
        let ca_file = acme.ca_file.as_ref().map(|f| self.base.join(f.get_ref()));
        if let (Some(raw), Some(path)) = (&acme.ca_file, &ca_file)
            && let Err(e) = crate::files::read_pem_certs(path)
        {
            self.p.at(raw, "acme.ca_file", e);
        }
        Some(RemediationSettings {
            acme: AcmeSettings {
                directory,
                contact: acme.contact.clone(),
                ca_file,
                eab,
                retry: crate::issuer::DEFAULT_RETRY,
                dns01: acme.dns01.as_ref().and_then(|d| self.dns01(d)),
            },
            http01_listen,
            renew_fraction,
            certificates,
            endpoints,
            deploy: self.deploy_settings(raw),
            rollouts,
        })
    }
}

impl Validator<'_, '_> {
    /// `[deploy]`: defaults for what is not written.
    fn deploy_settings(&mut self, raw: &RawConfig) -> DeploySettings {
        let mut out = DeploySettings::default();
        let Some(d) = &raw.deploy else {
            return out;
        };
        let d = d.get_ref();
        if let Some(t) = self.duration(d.verify_timeout.as_ref(), "deploy.verify_timeout") {
            out.verify_timeout = t;
        }
        if let Some(t) = self.duration(d.verify_interval.as_ref(), "deploy.verify_interval") {
            if t.is_zero() {
                if let Some(v) = &d.verify_interval {
                    self.p.at(v, "deploy.verify_interval", "must be above zero");
                }
            } else {
                out.verify_interval = t;
            }
        }
        if let Some(days) = &d.emergency_days {
            if days.get_ref().is_finite() && *days.get_ref() >= 0.0 {
                out.emergency_days = *days.get_ref();
            } else {
                self.p.at(
                    days,
                    "deploy.emergency_days",
                    "must be a number of days, 0 or more",
                );
            }
        }
        out
    }

    /// `[window.NAME]` sections, each checked key by key; a broken one is reported and left out.
    fn windows(&mut self, raw: &RawConfig) -> BTreeMap<String, Window> {
        let mut out = BTreeMap::new();
        for (name, w) in &raw.windows {
            let key = format!("window.{name}");
            let w = w.get_ref();
            let Some(duration) = self.duration(Some(&w.duration), &format!("{key}.duration"))
            else {
                continue;
            };
            let tz = w.tz.as_ref().map_or("UTC", |t| t.get_ref().as_str());
            match Window::check(name, w.days.get_ref(), w.start.get_ref(), duration, tz) {
                Ok(window) => {
                    out.insert(name.clone(), window);
                }
                Err(problems) => {
                    for e in problems {
                        let sub = format!("{key}.{}", e.key());
                        match e {
                            WindowError::Days(_) => self.p.at(&w.days, &sub, &e),
                            WindowError::Start(_) => self.p.at(&w.start, &sub, &e),
                            WindowError::Duration(_) => self.p.at(&w.duration, &sub, &e),
                            WindowError::TimeZone(_) => match &w.tz {
                                Some(tz) => self.p.at(tz, &sub, &e),
                                None => self.p.at(&w.start, &sub, &e),
                            },
                        }
                    }
                }
            }
        }
        out
    }

    fn dns01(&mut self, d: &Spanned<crate::config::raw::RawDns01>) -> Option<Dns01> {
        use base64::Engine;
        let span = d.span();
        let d = d.get_ref();
        if let Some(cmd) = &d.command {
            if d.server.is_some() || d.zone.is_some() || d.tsig_key_name.is_some() {
                self.p.at(
                    cmd,
                    "acme.dns01",
                    "use command or server/zone/tsig_key_name, not both",
                );
                return None;
            }
            if cmd.get_ref().is_empty() {
                self.p.at(cmd, "acme.dns01.command", "needs a program");
                return None;
            }
            return Some(Dns01::Command(cmd.get_ref().clone()));
        }
        let (Some(server_s), Some(zone), Some(key_name)) = (&d.server, &d.zone, &d.tsig_key_name)
        else {
            self.p.add(
                Some(span),
                "acme.dns01",
                "set command, or server, zone and tsig_key_name",
            );
            return None;
        };
        let server = server_s
            .get_ref()
            .parse()
            .map_err(|_| {
                self.p.at(
                    server_s,
                    "acme.dns01.server",
                    "expected IP:PORT, e.g. 192.0.2.53:53",
                )
            })
            .ok()?;
        let text = match (&d.tsig_secret_file, &d.tsig_secret_env) {
            (Some(f), None) => {
                crate::files::read_to_string(&self.base.join(f.get_ref()), crate::files::MAX_SECRET)
                    .map_err(|e| self.p.at(f, "acme.dns01.tsig_secret_file", e))
                    .ok()?
            }
            (None, Some(v)) => std::env::var(v.get_ref())
                .map_err(|_| {
                    self.p.at(
                        v,
                        "acme.dns01.tsig_secret_env",
                        format!("environment variable {} is not set", v.get_ref()),
                    )
                })
                .ok()?,
            _ => {
                self.p.at(
                    key_name,
                    "acme.dns01",
                    "set one of tsig_secret_file or tsig_secret_env",
                );
                return None;
            }
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| {
                self.p
                    .at(key_name, "acme.dns01", "the TSIG secret is not base64")
            })
            .ok()?;
        Some(Dns01::Rfc2136(Rfc2136Settings {
            server,
            zone: zone.get_ref().clone(),
            key_name: key_name.get_ref().clone(),
            secret: Secret::new(secret),
        }))
    }
}
