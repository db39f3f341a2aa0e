//! One run of a hook: the guest's view of the certificate, a fresh sandbox under the grant,
//! the guest on its own thread under its deadline, what it did, and undoing it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::host::{self, Cert, MemoryCap, Record, State};
use super::{
    ABANDON_GRACE, CHECK_TIMEOUT, EPOCH_TICK, Grant, HookFailure, HookRun, HookSpec, Hooks,
    LoadKind, Material, Rollback, bindings, convert, world,
};

/// A loaded component about to run, and under what.
struct Prepared<'a> {
    name: &'a str,
    grant: &'a Grant,
    endpoint: &'a str,
    pre: bindings::HookPre<State>,
    kind: LoadKind,
    started: Instant,
}

impl Hooks {
    /// Runs `spec`'s `deploy` for `material` in a fresh sandbox, blocking this thread (call
    /// it from a blocking thread: host calls use `rt` for commands and HTTPS). `extra`
    /// settings are laid over the hook's own.
    pub fn run(
        &self,
        spec: &HookSpec,
        material: Arc<Material>,
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
        let bundle = match bundle(spec, &material) {
            Ok(x) => x,
            Err(e) => return HookRun::failed(&spec.name, HookFailure::Load(e)),
        };
        let endpoint = material.endpoint.clone();
        let cert = Cert {
            alias: settings
                .get("alias")
                .cloned()
                .unwrap_or_else(|| material.endpoint.clone()),
            now_unix_ms: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            material,
        };
        self.execute(
            Prepared {
                name: &spec.name,
                grant: &spec.grant,
                endpoint: &endpoint,
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
            material: Arc::new(Material::placeholder(name)),
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
        let ticker = self.ticker.clone();
        let settings: Vec<(String, String)> = settings.into_iter().collect();
        let spawned = std::thread::Builder::new()
            .name(format!("hook-{name}"))
            .spawn(move || {
                // The epoch advances while this thread lives, so the deadline below comes.
                let _ticking = ticker.start();
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

/// What stopped a run that failed with `e`, by the error's type and the run's own records,
/// never by its text: the epoch deadline's trap is a timeout; the memory cap is out of memory
/// when [`MemoryCap`] refused a growth (at instantiation too: wasmtime then fails with an
/// untyped error, so the limiter's record is what says why), and so is wasmtime's own
/// [`wasmtime::OutOfMemory`] (an allocation for the guest that failed on the host).
pub(super) fn classify(
    e: &wasmtime::Error,
    memory_refused: bool,
    timeout: Duration,
) -> HookFailure {
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

/// The guest's view of the certificate: its PEM rendered from the DER, its facts as parsed.
fn bundle(spec: &HookSpec, m: &Material) -> Result<bindings::CertBundle, String> {
    let facts = m.facts()?;
    let mut domains = facts.dns_names.clone();
    domains.extend(facts.ip_addresses.iter().map(ToString::to_string));
    let material = m.view(&m.endpoint);
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
    Ok(bindings::CertBundle {
        cert_pem: text(convert::Format::PemCert)?,
        chain_pem: text(convert::Format::PemChain)?,
        key_pem,
        domains,
        not_after: u64::try_from(facts.not_after.unix_timestamp()).unwrap_or(0),
        sha256: facts.sha256.clone(),
        certificate: m.certificate.clone(),
        endpoint: m.endpoint.clone(),
    })
}
