//! The engine's side of [`Hooks`]: making it (with its epoch ticker), reading, compiling and
//! linking components, and the private on-disk cache of compiled code.

use std::collections::HashMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::host::State;
use super::{EPOCH_TICK, Hooks, LoadKind, MAX_COMPONENT, bindings, world};
use crate::cert::sha256_hex;

impl Hooks {
    /// An engine with epoch interruption (a ticker thread advances it every
    /// [`EPOCH_TICK`] while a guest runs, see [`Ticker`]) and, when `cache_dir` is given,
    /// an on-disk cache of compiled components there (created 0700).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let weak = engine.weak();
        let ticker = Arc::new(Ticker::default());
        let ticks = ticker.clone();
        std::thread::Builder::new()
            .name("tlsward-epoch".into())
            .spawn(move || {
                while ticks.wait_for_a_guest() {
                    let Some(engine) = weak.upgrade() else { return };
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
            ticker,
        })
    }

    /// Compiles and links a component ahead of its first run (at startup, so the first
    /// deployment does not wait for the compiler), and reports where it came from.
    pub fn preload(&self, component: &Path) -> Result<LoadKind, String> {
        self.load(component).map(|(_, kind)| kind)
    }

    /// Reads, compiles (or finds compiled) and links a component.
    pub(super) fn load(&self, path: &Path) -> Result<(bindings::HookPre<State>, LoadKind), String> {
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

/// Whether the epoch ticker must tick: the number of guests running now. An idle daemon's
/// ticker sleeps instead of waking a hundred times a second for nothing; a guest's thread
/// holds a [`Ticking`] for as long as it runs (an abandoned one too, so its deadline still
/// comes).
#[derive(Debug, Default)]
pub(super) struct Ticker {
    running: Mutex<usize>,
    wake: Condvar,
}

/// A running guest's hold on the [`Ticker`].
#[derive(Debug)]
pub(super) struct Ticking(Arc<Ticker>);

/// How often a ticker with no guest looks whether its engine is gone.
const IDLE_LOOK: Duration = Duration::from_secs(5);

impl Ticker {
    /// Ticks from now until the returned hold is dropped.
    pub(super) fn start(self: &Arc<Self>) -> Ticking {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.wake.notify_all();
        Ticking(self.clone())
    }

    /// Blocks while no guest runs; false once nothing else holds the ticker (the engine's
    /// [`Hooks`] is gone, so the thread ends).
    fn wait_for_a_guest(self: &Arc<Self>) -> bool {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        while *running == 0 {
            if Arc::strong_count(self) == 1 {
                return false;
            }
            running = self
                .wake
                .wait_timeout(running, IDLE_LOOK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        let mut running = self
            .0
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *running = running.saturating_sub(1);
    }
}
