//! The agent's own settings, from its config file (`/etc/tlsward/agent.toml`): where its
//! state is, how many bundles it keeps, and its hooks with their grants, exactly as the
//! center's `[hook.NAME]` (the same keys and the same checks, done by
//! [`crate::config::load_agent`]), and the probe profiles its local probe may use.
//!
//! ```toml
//! [agent]
//! state_dir = "/var/lib/tlsward-agent"
//! # server = "https://center.example:8443"   # overrides the enrolled URL
//! keep = 3
//! [hook.nginx]
//! component = "/usr/share/tlsward/hooks/pem-files.wasm"
//! write_paths = ["/etc/nginx/certs"]
//! commands = [["nginx", "-s", "reload"]]
//! key_access = true
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::hooks::HookSpec;
use crate::probe::Prober;

/// How many bundles of each certificate are kept when the config does not say.
pub const DEFAULT_KEEP: usize = 3;
/// The most bundles of each certificate the config may ask to keep.
pub const MAX_KEEP: usize = 100;

/// The agent's validated settings.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The config file it came from.
    pub path: PathBuf,
    /// `[agent] state_dir`: what `agent enroll --state-dir` filled.
    pub state_dir: PathBuf,
    /// `[agent] server`: replaces the enrolled URL when set.
    pub server: Option<String>,
    /// `[agent] keep`: local bundles kept per certificate.
    pub keep: usize,
    /// `[hook.NAME]`: the hooks the center's endpoints name.
    pub hooks: BTreeMap<String, HookSpec>,
    /// Every probe profile (the shipped ones and `[profile.NAME]`), for the local probe.
    pub profiles: BTreeMap<String, Arc<Prober>>,
}
