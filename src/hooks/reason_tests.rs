//! The hook-run reasons and how a failed run is classified: every reason listed in
//! [`HookRun::REASONS`], and out of memory told by type, not by text.

use std::time::Duration;

use wasmtime::Trap;

use super::host::MemoryCap;
use super::run::classify;
use super::{HookFailure, HookRun};

#[test]
fn out_of_memory_is_told_by_the_limiter_or_the_error_type_not_the_text() {
    let t = Duration::from_secs(1);
    // wasmtime's text when the cap refuses a memory at instantiation: without the
    // limiter's record it is a trap like any other error, whatever it says.
    let text = || wasmtime::Error::msg("memory minimum size of 3000 pages exceeds memory limits");
    assert!(matches!(classify(&text(), false, t), HookFailure::Trap(_)));
    assert!(matches!(
        classify(&text(), true, t),
        HookFailure::OutOfMemory(_)
    ));
    let oom = wasmtime::Error::from(wasmtime::OutOfMemory::new(1 << 30));
    assert!(matches!(
        classify(&oom, false, t),
        HookFailure::OutOfMemory(_)
    ));
    // The deadline's trap stays a timeout even when memory was refused on the way.
    let interrupt = wasmtime::Error::from(Trap::Interrupt);
    assert!(matches!(
        classify(&interrupt, true, t),
        HookFailure::Timeout(_)
    ));
    let unreachable = wasmtime::Error::from(Trap::UnreachableCodeReached);
    assert!(matches!(
        classify(&unreachable, false, t),
        HookFailure::Trap(_)
    ));
    assert!(matches!(
        classify(&unreachable, true, t),
        HookFailure::OutOfMemory(_)
    ));
}

#[test]
fn a_memory_larger_than_the_cap_at_instantiation_is_refused_by_the_limiter() {
    use wasmtime::ResourceLimiter;
    let mut cap = MemoryCap {
        cap: 64 << 20,
        used: 0,
        refused: false,
    };
    assert!(cap.memory_growing(0, 32 << 20, None).unwrap());
    assert!(!cap.refused);
    assert!(!cap.memory_growing(0, 200 << 20, None).unwrap());
    assert!(cap.refused);
}

#[test]
fn every_hook_run_reason_is_listed_and_the_list_has_nothing_else() {
    let failures = [
        HookFailure::Load("x".into()),
        HookFailure::Hook("x".into()),
        HookFailure::Timeout("x".into()),
        HookFailure::OutOfMemory("x".into()),
        HookFailure::Trap("x".into()),
    ];
    let mut seen = vec![
        HookRun {
            outcome: Ok("done".into()),
            ..HookRun::failed("h", HookFailure::Hook(String::new()))
        }
        .reason(),
    ];
    for f in failures {
        // Fails to compile when a variant is added without a case above.
        match &f {
            HookFailure::Load(_)
            | HookFailure::Hook(_)
            | HookFailure::Timeout(_)
            | HookFailure::OutOfMemory(_)
            | HookFailure::Trap(_) => {}
        }
        let mut run = HookRun::failed("h", f);
        seen.push(run.reason());
        // A refused call makes a guest's error (or its trap) `access_denied`.
        run.denied = true;
        seen.push(run.reason());
    }
    seen.sort_unstable();
    seen.dedup();
    let mut listed = HookRun::REASONS.to_vec();
    listed.sort_unstable();
    assert_eq!(seen, listed);
}
