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
            } else if let Err(e) = crate::hooks::world::check_file(&component) {
                // The header only: the world is checked when serve loads the component
                // (and by `tlsward hook check`), which takes a compile.
                self.p.at(&h.component, &format!("{key}.component"), e);
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
                http_pin_sha256: Vec::new(),
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
                && let Err(e) = crate::files::read_pem_certs(path)
            {
                self.p.at(f, &format!("{key}.http_ca_file"), e);
            }
            if let Some(pins) = &h.http_pin_sha256 {
                let full = format!("{key}.http_pin_sha256");
                for pin in pins.get_ref() {
                    match crate::hooks::pin::parse_pin(pin) {
                        Ok(p) => grant.http_pin_sha256.push(p),
                        Err(e) => self.p.at(pins, &full, e),
                    }
                }
                if let Some(ca) = &h.http_ca_file {
                    self.p.at(
                        ca,
                        &format!("{key}.http_ca_file"),
                        "http_ca_file and http_pin_sha256 exclude each other: a pinned \
                         server is accepted by its leaf alone",
                    );
                }
                if grant.http_pin_sha256.is_empty() && pins.get_ref().is_empty() {
                    self.p
                        .at(pins, &full, "an empty list; remove it or add a fingerprint");
                }
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
            let settings = self.hook_settings(&h.settings, &format!("{key}.settings"));
            if self.p.list.len() > before {
                continue;
            }
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

    /// A hook's or an endpoint's settings, `NAME_file = "PATH"` and `NAME_env = "VAR"`
    /// resolved into the setting `NAME`: the file's content (read when the config loads,
    /// at most [`crate::files::MAX_SECRET`] bytes, one final newline dropped) or the
    /// variable's value, the way `[acme]` and `[store]` take their secrets. A setting given
    /// twice (`token` and `token_file`, or `token_file` and `token_env`) is a problem. The
    /// values never appear in problems.
    pub(super) fn hook_settings(
        &mut self,
        raw: &BTreeMap<String, toml::Spanned<String>>,
        key: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        // The setting each entry gives, with how: "" (plain), "_file" or "_env".
        let target = |k: &str| -> (String, &'static str) {
            for suffix in ["_file", "_env"] {
                if let Some(name) = k.strip_suffix(suffix)
                    && !name.is_empty()
                {
                    return (name.to_owned(), suffix);
                }
            }
            (k.to_owned(), "")
        };
        for (k, v) in raw {
            let full = format!("{key}.{k}");
            let (name, how) = target(k);
            let others: Vec<&str> = raw
                .keys()
                .filter(|o| *o != k && target(o).0 == name)
                .map(String::as_str)
                .collect();
            if !others.is_empty() {
                // Reported once, at the first of them.
                if raw.keys().find(|o| target(o).0 == name) == Some(k) {
                    self.p.at(
                        v,
                        &full,
                        format!(
                            "{} {} also set: give {name} one way only, as {name}, \
                             {name}_file or {name}_env",
                            others.join(" and "),
                            if others.len() == 1 { "is" } else { "are" }
                        ),
                    );
                }
                continue;
            }
            let value = match how {
                "_file" => {
                    let path = self.base.join(v.get_ref());
                    match crate::files::read_to_string(&path, crate::files::MAX_SECRET) {
                        Ok(text) => without_final_newline(text),
                        Err(e) => {
                            self.p.at(v, &full, e);
                            continue;
                        }
                    }
                }
                "_env" => match std::env::var(v.get_ref()) {
                    Ok(text) => text,
                    Err(std::env::VarError::NotPresent) => {
                        self.p.at(
                            v,
                            &full,
                            format!("environment variable {} is not set", v.get_ref()),
                        );
                        continue;
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        self.p.at(
                            v,
                            &full,
                            format!("environment variable {} is not UTF-8", v.get_ref()),
                        );
                        continue;
                    }
                },
                _ => v.get_ref().clone(),
            };
            out.insert(name, value);
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

/// `text` without one final `\n` (or `\r\n`): what an editor or `echo` leaves after a token.
fn without_final_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}
