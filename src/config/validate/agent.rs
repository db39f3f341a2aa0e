//! The agent's config file (`tlsward agent run -c agent.toml`): `[agent]`, and `[hook.NAME]`
//! and `[profile.NAME]` checked by the very code that checks them in the center's file, so
//! a mistake there gets the same message with its file, line and key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::problems::Problems;
use super::targets::ProberCache;
use super::{Validator, shape};
use crate::agent::client::config::{AgentSettings, DEFAULT_KEEP, MAX_KEEP};
use crate::config::raw::{RawConfig, RawHook, RawProfile};
use crate::config::{ConfigError, base_dir};

/// The agent's file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentFile {
    agent: Spanned<RawAgent>,
    #[serde(default, rename = "hook")]
    hooks: BTreeMap<String, Spanned<RawHook>>,
    #[serde(default, rename = "profile")]
    profiles: BTreeMap<String, Spanned<RawProfile>>,
}

/// `[agent]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    state_dir: Spanned<String>,
    server: Option<Spanned<String>>,
    keep: Option<Spanned<i64>>,
}

/// Reads and validates the agent's config at `path`.
pub fn load_agent(path: &Path) -> Result<AgentSettings, ConfigError> {
    let text =
        crate::files::read_to_string(path, crate::files::MAX_CONFIG).map_err(|e| ConfigError {
            problems: vec![format!("{}: cannot read: {}", path.display(), e.why())],
        })?;
    load_agent_str(path, &text)
}

/// Validates `text` as the agent's config read from `path`.
pub fn load_agent_str(path: &Path, text: &str) -> Result<AgentSettings, ConfigError> {
    let mut p = Problems::new(path.display().to_string(), text);
    let raw: RawAgentFile = match shape::deserialize(text) {
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
    let mut v = Validator {
        p: &mut p,
        base: &base,
        system_trust: None,
    };
    let agent = raw.agent.get_ref();
    let keep = match &agent.keep {
        None => DEFAULT_KEEP,
        Some(k) => match usize::try_from(*k.get_ref()) {
            Ok(n) if (1..=MAX_KEEP).contains(&n) => n,
            _ => {
                v.p.at(k, "agent.keep", format!("must be between 1 and {MAX_KEEP}"));
                DEFAULT_KEEP
            }
        },
    };
    if let Some(s) = &agent.server
        && let Err(e) = crate::agent::client::http::parse_url(s.get_ref())
    {
        v.p.at(s, "agent.server", e);
    }
    let shared = RawConfig {
        hooks: raw.hooks,
        profiles: raw.profiles,
        ..RawConfig::default()
    };
    let hooks = v.hooks(&shared);
    let profiles = v.profiles(&shared);
    let mut cache = ProberCache::new(&profiles);
    let mut probers = BTreeMap::new();
    for name in profiles.keys() {
        if let Some(prober) = cache.get(name, None, None, None) {
            probers.insert(name.clone(), prober);
        }
    }
    let settings = AgentSettings {
        path: path.to_owned(),
        state_dir: base.join(agent.state_dir.get_ref()),
        server: agent.server.as_ref().map(|s| s.get_ref().clone()),
        keep,
        hooks,
        profiles: probers,
    };
    if p.list.is_empty() {
        Ok(settings)
    } else {
        Err(p.into_error())
    }
}
