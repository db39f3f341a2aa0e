//! `tlsward hook run`: one hook in its sandbox against a certificate on disk, for hook
//! authors, printing every host call it made.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::bail;
use rustls_pki_types::PrivateKeyDer;

use super::{HookArgs, HookCommand};
use crate::clock::{Clock, SystemClock};
use crate::hooks::{HookRun, Hooks, Material};
use crate::secret::Secret;

pub(super) fn run(args: HookArgs) -> anyhow::Result<u8> {
    let (name, bundle, settings, endpoint, rollback) = match args.command {
        HookCommand::Check { component, cache } => return check(&component, cache),
        HookCommand::Run {
            name,
            bundle,
            settings,
            endpoint,
            rollback,
        } => (name, bundle, settings, endpoint, rollback),
    };
    let config = crate::config::load(&args.config)?;
    let Some(spec) = config.hooks.get(&name) else {
        let known: Vec<&str> = config.hooks.keys().map(String::as_str).collect();
        bail!(
            "{} has no [hook.{name}] (hooks: {})",
            args.config.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
    };
    let material = read_bundle(&bundle, &endpoint)?;
    let extra: BTreeMap<String, String> = settings.into_iter().collect();
    let hooks = Hooks::new(Some(config.state_dir.join("hook-cache")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let run = runtime.block_on(async {
        let spec = spec.clone();
        let h = handle.clone();
        tokio::task::spawn_blocking(move || {
            hooks.run(&spec, material.into(), &extra, h, SystemClock.now())
        })
        .await
    })?;
    let mut out = std::io::stdout().lock();
    print_run(&mut out, &run, &spec.component)?;
    if rollback {
        let limit = spec.grant.timeout;
        let undo = runtime.block_on(async {
            let run = run.clone();
            tokio::task::spawn_blocking(move || Hooks::roll_back(&run, &handle, limit)).await
        })?;
        for p in &undo.restored {
            writeln!(out, "  rollback: restored {}", p.display())?;
        }
        for p in &undo.removed {
            writeln!(out, "  rollback: removed {}", p.display())?;
        }
        for (argv, code) in &undo.commands {
            writeln!(out, "  rollback: ran {argv:?} -> exit {code}")?;
        }
        for e in &undo.errors {
            writeln!(out, "  rollback: FAILED {e}")?;
        }
        if let Some(why) = nothing_to_undo(&run) {
            writeln!(out, "  rollback: {why}")?;
        }
    }
    Ok(u8::from(run.outcome.is_err()))
}

/// `tlsward hook check FILE`: the header, the world, a trial call; 0 when it is a hook.
fn check(component: &Path, cache: Option<std::path::PathBuf>) -> anyhow::Result<u8> {
    // No on-disk cache unless asked: the check leaves no compiled code behind by itself.
    let hooks = Hooks::new(cache)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let path = component.to_owned();
    let checked = runtime.block_on(async move {
        tokio::task::spawn_blocking(move || hooks.check(&path, handle)).await
    })?;
    let mut out = std::io::stdout().lock();
    match checked {
        Ok(trial) => {
            let answer = match &trial.outcome {
                Ok(s) => format!("ok: {s}"),
                Err(crate::hooks::HookFailure::Hook(m)) => format!("err: {m}"),
                Err(e) => e.to_string(),
            };
            writeln!(
                out,
                "{}: a tlsward:hook@0.1.0 component; deploy with no settings answered {}",
                component.display(),
                crate::escape::visible(&answer)
            )?;
            Ok(0)
        }
        Err(e) => {
            drop(out);
            eprintln!("tlsward: {}", crate::escape::visible(&e));
            Ok(1)
        }
    }
}

/// Why a rollback of `run` does nothing on this host, when it does nothing: a rollback puts
/// back files and re-runs commands, and a hook that only talked to a device left neither.
fn nothing_to_undo(run: &HookRun) -> Option<&'static str> {
    if !run.written.is_empty() || !run.commands.is_empty() {
        return None;
    }
    Some(if run.calls.iter().any(|c| c.function == "http") {
        "nothing to undo on this host: the hook only made HTTP calls; a device is rolled back \
         by deploying the previous version to it (a failed deployment does that itself)"
    } else {
        "nothing to undo: the hook wrote no files and ran no commands"
    })
}

/// The run as a hook author reads it: timings, each host call, output, the result.
pub(super) fn print_run(
    out: &mut impl Write,
    run: &HookRun,
    component: &Path,
) -> anyhow::Result<()> {
    let t = &run.timings;
    writeln!(
        out,
        "hook {} ({}): loaded in {:.1?} ({}), instantiated in {:.1?}, ran in {:.1?}",
        run.hook,
        component.display(),
        t.load,
        match t.load_kind {
            crate::hooks::LoadKind::Memory => "in memory",
            crate::hooks::LoadKind::Disk => "compiled cache",
            crate::hooks::LoadKind::Compiled => "compiled now",
        },
        t.instantiate,
        t.call
    )?;
    // What the guest logs and returns, and what a device answered, is shown with control
    // characters visible: none of it may drive the terminal.
    let v = crate::escape::visible;
    for c in &run.calls {
        if c.function == "log" {
            writeln!(out, "  log[{}] {}", v(&c.args), v(&c.outcome))?;
        } else {
            writeln!(out, "  {}({}) -> {}", c.function, v(&c.args), v(&c.outcome))?;
        }
    }
    for line in run.output.lines() {
        writeln!(out, "  | {}", v(line))?;
    }
    match &run.outcome {
        Ok(s) => writeln!(out, "result: ok: {}", v(s))?,
        Err(e) => writeln!(
            out,
            "result: failed ({}): {}",
            run.reason(),
            v(&e.to_string())
        )?,
    }
    Ok(())
}

/// cert.pem (leaf, maybe followed by the chain), chain.pem (optional), key.pem (PKCS#8).
fn read_bundle(dir: &Path, endpoint: &str) -> anyhow::Result<Material> {
    let certs = |name: &str| -> anyhow::Result<Vec<Vec<u8>>> {
        let path = dir.join(name);
        Ok(crate::files::read_pem_certs(&path)?
            .into_iter()
            .map(|c| c.to_vec())
            .collect())
    };
    let mut chain = certs("cert.pem")?;
    if dir.join("chain.pem").exists() {
        chain.extend(certs("chain.pem")?);
    }
    let key_path = dir.join("key.pem");
    let key = crate::files::read_pem_key(&key_path)?;
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        bail!(
            "{}: the key must be PKCS#8 (\"BEGIN PRIVATE KEY\"); convert it with \
             `openssl pkcs8 -topk8 -nocrypt -in OLD -out key.pem`",
            key_path.display()
        );
    };
    let key = Secret::new(pkcs8.secret_pkcs8_der().to_vec());
    let mut material = Material::new(endpoint.to_owned(), String::new(), chain, key);
    let leaf = material
        .facts()
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("cert.pem").display()))?;
    material.certificate = leaf
        .dns_names
        .first()
        .cloned()
        .unwrap_or_else(|| "bundle".into());
    Ok(material)
}
