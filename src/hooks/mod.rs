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
pub mod grant;
pub mod host;
pub mod pin;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

pub use grant::Grant;
use host::{Cert, MemoryCap, Record, State};
pub use host::{HostCall, Rollback, Written};

use crate::cert::{CertFacts, sha256_hex};
use crate::store::Secret;

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

/// A loaded component about to run, and under what.
struct Prepared<'a> {
    name: &'a str,
    grant: &'a Grant,
    endpoint: &'a str,
    pre: bindings::HookPre<State>,
    kind: LoadKind,
    started: Instant,
}

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

/// The certificate a run deploys.
#[derive(Debug)]
pub struct Material {
    /// The endpoint deployed to.
    pub endpoint: String,
    /// The managed certificate's name.
    pub certificate: String,
    /// Leaf first, then intermediates (DER).
    pub chain_der: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER.
    pub key: Secret,
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
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// An engine with epoch interruption (a ticker thread advances it every
    /// [`EPOCH_TICK`] while the engine lives) and, when `cache_dir` is given, an on-disk
    /// cache of compiled components there (created 0700).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("tlsward-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Hook::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        // The cache directory is made when the first compiled hook is stored, so a daemon
        // that runs no hook writes nothing under its state directory for them.
        Ok(Self {
            engine,
            linker,
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
            compiling: Mutex::new(()),
        })
    }

    /// Compiles and links a component ahead of its first run (at startup, so the first
    /// deployment does not wait for the compiler), and reports where it came from.
    pub fn preload(&self, component: &Path) -> Result<LoadKind, String> {
        self.load(component).map(|(_, kind)| kind)
    }

    /// Reads, compiles (or finds compiled) and links a component.
    fn load(&self, path: &Path) -> Result<(bindings::HookPre<State>, LoadKind), String> {
        let bytes = crate::files::read(path, MAX_COMPONENT).map_err(|e| e.to_string())?;
        world::check_header(&bytes[..bytes.len().min(world::HEADER_LEN)])
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let sha = sha256_hex(&bytes);
        let in_memory = || {
            self.loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&sha)
                .cloned()
        };
        if let Some(pre) = in_memory() {
            return Ok((pre, LoadKind::Memory));
        }
        let _compiling = self
            .compiling
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(pre) = in_memory() {
            return Ok((pre, LoadKind::Memory));
        }
        let cached = self.cache_path(&sha);
        let (component, kind) = match cached.as_deref().and_then(|p| self.load_cached(p)) {
            Some(c) => (c, LoadKind::Disk),
            None => {
                let c = Component::new(&self.engine, &bytes)
                    .map_err(|e| format!("{}: not a usable component: {e:#}", path.display()))?;
                if let Some(p) = &cached {
                    self.store_cached(&c, p);
                }
                (c, LoadKind::Compiled)
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::HookPre::new)
            .map_err(|e| {
                let exports: Vec<String> = component
                    .component_type()
                    .exports(&self.engine)
                    .map(|(name, _)| name.to_owned())
                    .collect();
                if exports.iter().any(|n| n == world::DEPLOY_EXPORT) {
                    format!(
                        "{}: does not fit the tlsward:hook@0.1.0 world: {e:#}",
                        path.display()
                    )
                } else {
                    format!("{}: {}", path.display(), world::missing_deploy(&exports))
                }
            })?;
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sha, pre.clone());
        Ok((pre, kind))
    }

    fn cache_path(&self, sha: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{sha}-{:016x}.cwasm", h.finish())))
    }

    /// A compiled component from the cache, when the file is there and safe to trust.
    fn load_cached(&self, path: &Path) -> Option<Component> {
        let dir = path.parent()?;
        let (dm, fm) = (fs::metadata(dir).ok()?, fs::symlink_metadata(path).ok()?);
        // Only files this process's user wrote into its own private directory: loading
        // compiled code runs it, so anything another user could have written is refused.
        let private = dm.mode() & 0o077 == 0
            && fm.is_file()
            && fm.mode() & 0o077 == 0
            && fm.uid() == dm.uid();
        if !private {
            tracing::warn!(path = %path.display(), "ignoring a compiled hook that is not private to this user");
            return None;
        }
        deserialize(&self.engine, path)
            .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable compiled hook"))
            .ok()
    }

    fn store_cached(&self, component: &Component, path: &Path) {
        let write = || -> anyhow::Result<()> {
            if let Some(dir) = path.parent() {
                crate::files::create_private_dir(dir)?;
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            }
            let bytes = component.serialize()?;
            let tmp = path.with_extension(format!("tmp{}", fastrand::u64(..)));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled hook");
        }
    }

    /// Runs `spec`'s `deploy` for `material` in a fresh sandbox, blocking this thread (call
    /// it from a blocking thread: host calls use `rt` for commands and HTTPS). `extra`
    /// settings are laid over the hook's own.
    pub fn run(
        &self,
        spec: &HookSpec,
        material: &Material,
        extra: &BTreeMap<String, String>,
        rt: tokio::runtime::Handle,
        now: SystemTime,
    ) -> HookRun {
        let started = Instant::now();
        let (pre, kind) = match self.load(&spec.component) {
            Ok(x) => x,
            Err(e) => return HookRun::failed(&spec.name, HookFailure::Load(e)),
        };
        let mut settings = spec.settings.clone();
        settings.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (bundle, cert) = match bundle(spec, material, &settings, now) {
            Ok(x) => x,
            Err(e) => return HookRun::failed(&spec.name, HookFailure::Load(e)),
        };
        self.execute(
            Prepared {
                name: &spec.name,
                grant: &spec.grant,
                endpoint: &material.endpoint,
                pre,
                kind,
                started,
            },
            bundle,
            cert,
            settings,
            rt,
        )
    }

    /// Checks that `component` is a hook: a WebAssembly component ([`world::check_header`])
    /// that compiles and links to the `tlsward:hook@0.1.0` world, and whose `deploy`
    /// answers a trial call (no settings, a placeholder certificate, nothing granted, so no
    /// host call can touch anything) with `ok` or `err` rather than a crash. Returns the
    /// trial run; the error says what is wrong.
    pub fn check(&self, component: &Path, rt: tokio::runtime::Handle) -> Result<HookRun, String> {
        world::check_file(component).map_err(|e| format!("{}: {e}", component.display()))?;
        let started = Instant::now();
        let (pre, kind) = self.load(component)?;
        let name = "check";
        let bundle = bindings::CertBundle {
            cert_pem: String::new(),
            chain_pem: String::new(),
            key_pem: String::new(),
            domains: vec!["hook-check.invalid".into()],
            not_after: 0,
            sha256: String::new(),
            certificate: name.into(),
            endpoint: name.into(),
        };
        let cert = Cert {
            leaf_der: Vec::new(),
            chain_der: Vec::new(),
            key: None,
            alias: name.into(),
            now_unix_ms: 0,
        };
        let grant = Grant {
            timeout: CHECK_TIMEOUT,
            ..Grant::default()
        };
        let prepared = Prepared {
            name,
            grant: &grant,
            endpoint: name,
            pre,
            kind,
            started,
        };
        let run = self.execute(prepared, bundle, cert, BTreeMap::new(), rt);
        match &run.outcome {
            Ok(_) | Err(HookFailure::Hook(_)) => Ok(run),
            Err(HookFailure::Trap(t)) => Err(format!(
                "{}: calling {} with no settings crashed ({t}); a JavaScript hook does this \
                 when it has no `export function {}` (a misspelled name), and any hook \
                 should return an error for missing settings rather than crash",
                component.display(),
                world::DEPLOY_EXPORT,
                world::DEPLOY_EXPORT
            )),
            Err(e) => Err(format!(
                "{}: calling {} with no settings: {e}",
                component.display(),
                world::DEPLOY_EXPORT
            )),
        }
    }

    /// Runs a loaded component's `deploy` in a fresh sandbox under `p.grant`.
    fn execute(
        &self,
        p: Prepared<'_>,
        bundle: bindings::CertBundle,
        cert: Cert,
        settings: BTreeMap<String, String>,
        rt: tokio::runtime::Handle,
    ) -> HookRun {
        let Prepared {
            name,
            grant,
            endpoint,
            pre,
            kind,
            started,
        } = p;
        // Its outcome, calls and timings are filled in below, as the run goes.
        let mut run = HookRun::failed(name, HookFailure::Load(String::new()));
        run.timings.load_kind = kind;
        run.timings.load = started.elapsed();
        let stdout = MemoryOutputPipe::new(host::MAX_LOG);
        let stderr = MemoryOutputPipe::new(host::MAX_LOG);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let timeout = grant.timeout;
        let record = Arc::new(Mutex::new(Record::default()));
        let state = State {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap {
                cap: usize::try_from(grant.memory_bytes).unwrap_or(usize::MAX),
                used: 0,
                refused: false,
            },
            hook: name.to_owned(),
            endpoint: endpoint.to_owned(),
            grant: Arc::new(grant.clone()),
            cert,
            deadline: Instant::now() + timeout,
            rt,
            record: record.clone(),
        };
        // The guest runs on its own thread. Epoch interruption stops its code at the
        // deadline and every host call of ours gets only the time left, but a call inside
        // the WASI runtime (a sleep) is not interrupted: such a guest is abandoned, its
        // thread ends when the call returns and the trap comes.
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let settings: Vec<(String, String)> = settings.into_iter().collect();
        let spawned = std::thread::Builder::new()
            .name(format!("hook-{name}"))
            .spawn(move || {
                let mut store = Store::new(&engine, state);
                store.limiter(|s| &mut s.memory);
                store.set_epoch_deadline(
                    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
                );
                store.epoch_deadline_trap();
                let t = Instant::now();
                let instance = pre.instantiate(&mut store);
                let instantiate = t.elapsed();
                let t = Instant::now();
                let result =
                    instance.and_then(|hook| hook.call_deploy(&mut store, &bundle, &settings));
                let call = t.elapsed();
                let refused = store.data().memory.refused;
                // The guest's own texts, capped like its log lines.
                let outcome = match result {
                    Ok(Ok(summary)) => Ok(host::capped(summary)),
                    Ok(Err(msg)) if refused => Err(HookFailure::OutOfMemory(host::capped(msg))),
                    Ok(Err(msg)) => Err(HookFailure::Hook(host::capped(msg))),
                    Err(e) => Err(classify(&e, refused, timeout)),
                };
                let _ = tx.send((outcome, instantiate, call));
            });
        let t = Instant::now();
        run.outcome = match spawned {
            Err(e) => Err(HookFailure::Load(format!(
                "cannot start the hook's thread: {e}"
            ))),
            Ok(_) => match rx.recv_timeout(timeout + ABANDON_GRACE) {
                Ok((outcome, instantiate, call)) => {
                    run.timings.instantiate = instantiate;
                    run.timings.call = call;
                    outcome
                }
                Err(_) => {
                    run.timings.call = t.elapsed();
                    tracing::error!(hook = %name, "the hook is blocked in a host call past its deadline; abandoned");
                    Err(HookFailure::Timeout(format!(
                        "{} (blocked in a runtime call; abandoned)",
                        humantime::format_duration(timeout)
                    )))
                }
            },
        };
        let mut output = String::from_utf8_lossy(&stdout.contents()).into_owned();
        output.push_str(&String::from_utf8_lossy(&stderr.contents()));
        run.output = output;
        let mut rec = record.lock().unwrap_or_else(PoisonError::into_inner);
        run.calls = rec.take_calls();
        run.written = std::mem::take(&mut rec.written);
        run.commands = std::mem::take(&mut rec.commands);
        run.denied = rec.denied;
        drop(rec);
        run
    }

    /// Undoes a run: restores the files it wrote and re-runs its commands (the reload).
    pub fn roll_back(run: &HookRun, rt: &tokio::runtime::Handle, limit: Duration) -> Rollback {
        host::roll_back(rt, &run.written, &run.commands, limit)
    }
}

/// Loads a compiled component written by [`Hooks::store_cached`].
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: wasmtime requires that the file be a component this wasmtime version
    // serialized (it checks the version and engine settings itself, but not that the code is
    // what it compiled). The file is named by the SHA-256 of the component it was compiled
    // from and was written by this user into a directory only this user can write
    // (checked by the caller), so it is as trusted as the binary itself.
    let c = unsafe { Component::deserialize_file(engine, path) }?;
    Ok(c)
}

/// What stopped a run that failed with `e`, by the error's type and the run's own records,
/// never by its text: the epoch deadline's trap is a timeout; the memory cap is out of memory
/// when [`MemoryCap`] refused a growth (at instantiation too: wasmtime then fails with an
/// untyped error, so the limiter's record is what says why), and so is wasmtime's own
/// [`wasmtime::OutOfMemory`] (an allocation for the guest that failed on the host).
fn classify(e: &wasmtime::Error, memory_refused: bool, timeout: Duration) -> HookFailure {
    let out_of_memory = memory_refused || e.is::<wasmtime::OutOfMemory>();
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            HookFailure::Timeout(humantime::format_duration(timeout).to_string())
        }
        Some(Trap::StackOverflow) => HookFailure::Trap("stack overflow".into()),
        _ if out_of_memory => HookFailure::OutOfMemory(host::capped(format!("{e:#}"))),
        Some(t) => HookFailure::Trap(t.to_string()),
        None => HookFailure::Trap(host::capped(format!("{e:#}"))),
    }
}

/// The guest's view of the certificate, and the host's.
fn bundle(
    spec: &HookSpec,
    m: &Material,
    settings: &BTreeMap<String, String>,
    now: SystemTime,
) -> Result<(bindings::CertBundle, Cert), String> {
    let (leaf, chain) = m
        .chain_der
        .split_first()
        .ok_or("the certificate has no leaf")?;
    let facts = CertFacts::parse(leaf).map_err(|e| format!("the leaf: {e}"))?;
    let mut domains = facts.dns_names.clone();
    domains.extend(facts.ip_addresses.iter().map(ToString::to_string));
    let material = convert::Material {
        leaf_der: leaf,
        chain_der: chain,
        key_pkcs8_der: Some(m.key.expose()),
        alias: &m.endpoint,
    };
    let text = |format| {
        convert::convert(format, &material, None, 0)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| e.to_string())
    };
    let key_pem = if spec.grant.key_access {
        text(convert::Format::PemKey)?
    } else {
        String::new()
    };
    let bundle = bindings::CertBundle {
        cert_pem: text(convert::Format::PemCert)?,
        chain_pem: text(convert::Format::PemChain)?,
        key_pem,
        domains,
        not_after: u64::try_from(facts.not_after.unix_timestamp()).unwrap_or(0),
        sha256: facts.sha256,
        certificate: m.certificate.clone(),
        endpoint: m.endpoint.clone(),
    };
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let cert = Cert {
        leaf_der: leaf.clone(),
        chain_der: chain.to_vec(),
        key: Some(Secret::new(m.key.expose().to_vec())),
        alias: settings
            .get("alias")
            .cloned()
            .unwrap_or_else(|| m.endpoint.clone()),
        now_unix_ms: now_ms,
    };
    Ok((bundle, cert))
}

#[cfg(test)]
mod reason_tests;
