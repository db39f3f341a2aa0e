//! Deploy hooks: WebAssembly components (the `tlsward:hook@0.1.0` world in `hooks/wit/`)
//! that put a certificate where a device needs it, run in a sandbox that can do only what
//! their grant allows.
//!
//! Each run gets a fresh wasmtime `Store` with an empty WASI context (no preopened
//! directories, environment, arguments, sockets or name lookup; stdout and stderr go to
//! bounded in-memory pipes), a memory cap over all its memories, and a deadline: epoch
//! interruption stops the guest's own code, and every host call gets only the time left.
//! The host functions ([`host`]) check the grant ([`grant`]) on every call. Compiled
//! components are kept in memory and on disk, keyed by the component's SHA-256.
//!
//! Owns: the wasmtime engine, the host functions, format conversion. Knows nothing of the
//! store, the reconciler, metrics or the config file.

mod beneath;
pub mod convert;
mod engine;
pub mod grant;
pub mod host;
mod material;
pub mod pin;
mod run;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Linker;

pub use grant::Grant;
use host::State;
pub use host::{HostCall, Rollback, Written};
pub use material::Material;

/// The generated bindings of `hooks/wit/hook.wit`.
mod bindings {
    #![allow(missing_docs, unreachable_pub, unused_qualifications, clippy::all)]
    wasmtime::component::bindgen!({ world: "hook", path: "hooks/wit" });
}

/// How often the engine's epoch advances: the granularity of hook deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How long past its deadline a run is waited for before the guest is abandoned (it is
/// blocked inside the WASI runtime, which epoch interruption does not reach).
pub const ABANDON_GRACE: Duration = Duration::from_secs(2);
/// The largest component file accepted.
pub const MAX_COMPONENT: u64 = 256 << 20;
/// The deadline of [`Hooks::check`]'s trial call.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// One configured hook: `[hook.NAME]`. Its `Debug` shows the settings' names only: their
/// values may be secrets (`token_file`, `password`).
#[derive(Clone, PartialEq, Eq)]
pub struct HookSpec {
    /// Its name.
    pub name: String,
    /// The component file.
    pub component: PathBuf,
    /// What it may do.
    pub grant: Grant,
    /// Its settings (an endpoint's settings and the command line's are laid over them).
    pub settings: BTreeMap<String, String>,
}

impl std::fmt::Debug for HookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSpec")
            .field("name", &self.name)
            .field("component", &self.component)
            .field("grant", &self.grant)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookFailure {
    /// The component could not be read, compiled or instantiated.
    #[error("cannot load the hook: {0}")]
    Load(String),
    /// The hook returned an error.
    #[error("the hook failed: {0}")]
    Hook(String),
    /// The deadline passed.
    #[error("the hook ran past its deadline of {0}")]
    Timeout(String),
    /// It hit its memory cap.
    #[error("the hook hit its memory cap: {0}")]
    OutOfMemory(String),
    /// It trapped (a crash in the guest: stack overflow, unreachable, ...).
    #[error("the hook crashed: {0}")]
    Trap(String),
}

/// Where the compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadKind {
    /// Already in this process.
    Memory,
    /// From the on-disk cache.
    Disk,
    /// Compiled now.
    Compiled,
}

/// How long each phase took (in seconds, when serialized).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Timings {
    /// Where the compiled code came from.
    pub load_kind: LoadKind,
    /// Reading, compiling or deserializing, and linking.
    #[serde(serialize_with = "seconds")]
    pub load: Duration,
    /// Instantiating in a fresh store.
    #[serde(serialize_with = "seconds")]
    pub instantiate: Duration,
    /// The `deploy` call, host calls included.
    #[serde(serialize_with = "seconds")]
    pub call: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct HookRun {
    /// The hook's name.
    pub hook: String,
    /// The hook's summary, or why it failed (a guest's own text capped at
    /// [`host::MAX_MESSAGE`] bytes).
    pub outcome: Result<String, HookFailure>,
    /// Every host call, in order: the first [`host::MAX_CALLS`], then one `dropped` entry
    /// counting the rest.
    pub calls: Vec<HostCall>,
    /// What the guest wrote to stdout and stderr (bounded).
    pub output: String,
    /// Files written, with their previous versions.
    pub written: Vec<Written>,
    /// Commands run, in order.
    pub commands: Vec<Vec<String>>,
    /// Whether any call was refused for lack of a grant.
    pub denied: bool,
    /// Phase timings.
    pub timings: Timings,
}

impl HookRun {
    /// A run that failed before the guest ran.
    pub fn failed(hook: &str, failure: HookFailure) -> Self {
        Self {
            hook: hook.to_owned(),
            outcome: Err(failure),
            calls: Vec::new(),
            output: String::new(),
            written: Vec::new(),
            commands: Vec::new(),
            denied: false,
            timings: Timings {
                load_kind: LoadKind::Compiled,
                load: Duration::ZERO,
                instantiate: Duration::ZERO,
                call: Duration::ZERO,
            },
        }
    }

    /// Every value [`Self::reason`] returns: `none` (a run that succeeded), then each
    /// failure's.
    pub const REASONS: [&'static str; 7] = [
        "none",
        "hook_error",
        "access_denied",
        "timeout",
        "out_of_memory",
        "trap",
        "load_error",
    ];

    /// The `reason` label, one of [`Self::REASONS`].
    pub fn reason(&self) -> &'static str {
        match &self.outcome {
            Ok(_) => "none",
            Err(HookFailure::Load(_)) => "load_error",
            Err(HookFailure::Timeout(_)) => "timeout",
            Err(HookFailure::OutOfMemory(_)) => "out_of_memory",
            Err(_) if self.denied => "access_denied",
            Err(HookFailure::Hook(_)) => "hook_error",
            Err(HookFailure::Trap(_)) => "trap",
        }
    }
}

/// The hook engine: one per process, shared by every run.
pub struct Hooks {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: Option<PathBuf>,
    loaded: Mutex<HashMap<String, bindings::HookPre<State>>>,
    /// Held while compiling or reading the cache, so a component is compiled once even
    /// when several runs (or the startup preload) want it at the same time.
    compiling: Mutex<()>,
    /// Advances the engine's epoch while guests run.
    ticker: std::sync::Arc<engine::Ticker>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod reason_tests;
