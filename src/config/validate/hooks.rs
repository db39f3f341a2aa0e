//! `[hook.NAME]` sections: deploy hooks and their grants, each key checked where it is
//! written, so a grant mistake names its file, line and key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Validator;
use crate::config::raw::RawConfig;
use crate::hooks::grant::{DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, memory_bytes};
use crate::hooks::{Grant, HookSpec};

impl Validator<'_, '_> {
    /// Every `[hook.NAME]`; a hook with a problem is reported and left out.
    pub(super) fn hooks(&mut self, raw: &RawConfig) -> BTreeMap<String, HookSpec> {
        let mut out = BTreeMap::new();
        for (name, h) in &raw.hooks {
            let key = format!("hook.{name}");
            let before = self.p.list.len();
            let h = h.get_ref();
            let component = self.base.join(h.component.get_ref());
            if !component.is_file() {
                self.p.at(
                    &h.component,
                    &format!("{key}.component"),
                    format!(
                        "{} is not a file (build the stock hooks with scripts/build-hooks)",
                        component.display()
                    ),
                );
            }
            let mut grant = Grant {
                write_paths: h
                    .write_paths
                    .as_ref()
                    .map(|v| v.get_ref().iter().map(PathBuf::from).collect())
                    .unwrap_or_default(),
                commands: h
                    .commands
                    .as_ref()
                    .map(|v| v.get_ref().clone())
                    .unwrap_or_default(),
                http_hosts: h
                    .http_hosts
                    .as_ref()
                    .map(|v| v.get_ref().clone())
                    .unwrap_or_default(),
                http_ca_file: h.http_ca_file.as_ref().map(|f| self.base.join(f.get_ref())),
                key_access: h.key_access.as_ref().is_some_and(|k| *k.get_ref()),
                memory_bytes: DEFAULT_MEMORY_MB << 20,
                timeout: DEFAULT_TIMEOUT,
            };
            if let Some(mb) = &h.memory_mb {
                match memory_bytes(*mb.get_ref()) {
                    Ok(bytes) => grant.memory_bytes = bytes,
                    Err(e) => self.p.at(mb, &format!("{key}.memory_mb"), e),
                }
            }
            if let Some(t) = self.duration(h.timeout.as_ref(), &format!("{key}.timeout")) {
                grant.timeout = t;
            }
            if let (Some(f), Some(path)) = (&h.http_ca_file, &grant.http_ca_file)
                && let Err(e) = crate::probe::read_pem_certs(path)
            {
                self.p.at(f, &format!("{key}.http_ca_file"), e);
            }
            for (sub, msg) in grant.problems() {
                let full = format!("{key}.{sub}");
                match sub {
                    "write_paths" => self.at_opt(h.write_paths.as_ref(), &h.component, &full, msg),
                    "commands" => self.at_opt(h.commands.as_ref(), &h.component, &full, msg),
                    "http_hosts" => self.at_opt(h.http_hosts.as_ref(), &h.component, &full, msg),
                    "memory_mb" => self.at_opt(h.memory_mb.as_ref(), &h.component, &full, msg),
                    _ => self.at_opt(h.timeout.as_ref(), &h.component, &full, msg),
                }
            }
            if self.p.list.len() > before {
                continue;
            }
            let settings = h
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect();
            out.insert(
                name.clone(),
                HookSpec {
                    name: name.clone(),
                    component,
                    grant,
                    settings,
                },
            );
        }
        out
    }

    /// A problem at `v` when it was written, else at `fallback` (the section's first key).
    fn at_opt<T, U>(
        &mut self,
        v: Option<&toml::Spanned<T>>,
        fallback: &toml::Spanned<U>,
        key: &str,
        msg: impl std::fmt::Display,
    ) {
        match v {
            Some(v) => self.p.at(v, key, msg),
            None => self.p.at(fallback, key, msg),
        }
    }
}
