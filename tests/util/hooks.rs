//! Hook test support: the built components (scripts/build-hooks) and one shared engine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tlsward::clock::Clock;
use tlsward::hooks::{Grant, HookRun, HookSpec, Hooks, Material};
use tlsward::secret::Secret;

use super::Leaf;

/// A built component: `hooks/dist/NAME.wasm`, or `hooks/dist/test/NAME.wasm` for test
/// guests (`$TLSWARD_HOOKS_DIR` overrides `hooks/dist`).
pub fn component(name: &str) -> PathBuf {
    let dist = std::env::var_os("TLSWARD_HOOKS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hooks/dist"),
        PathBuf::from,
    );
    for p in [
        dist.join(format!("{name}.wasm")),
        dist.join(format!("test/{name}.wasm")),
    ] {
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "no component {name} in {}: run scripts/build-hooks first",
        dist.display()
    );
}

/// One engine for the whole test binary, caching compiled components in the target
/// directory so later runs skip the slow compile of the Python hooks.
pub fn engine() -> Arc<Hooks> {
    static ENGINE: OnceLock<Arc<Hooks>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hook-cache");
            Arc::new(Hooks::new(Some(cache)).expect("hook engine"))
        })
        .clone()
}

/// A hook spec for a built component.
pub fn spec(name: &str, component_name: &str, grant: Grant, settings: &[(&str, &str)]) -> HookSpec {
    HookSpec {
        name: name.into(),
        component: component(component_name),
        grant,
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// What a run deploys: a leaf with its chain and key.
pub fn material(leaf: &Leaf, endpoint: &str) -> Material {
    Material::new(
        endpoint.into(),
        "site".into(),
        leaf.chain.iter().map(|c| c.to_vec()).collect(),
        Secret::new(leaf.key.secret_der().to_vec()),
    )
}

/// Runs a hook on a blocking thread, as the daemon does.
pub async fn run(spec: &HookSpec, material: Material, extra: &[(&str, &str)]) -> HookRun {
    let engine = engine();
    let spec = spec.clone();
    let extra: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        engine.run(
            &spec,
            material.into(),
            &extra,
            rt,
            tlsward::clock::SystemClock.now(),
        )
    })
    .await
    .expect("hook thread")
}
