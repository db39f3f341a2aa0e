//! Purpose-built evil guests against the sandbox: each escape is refused with its typed
//! reason or stopped (deadline, memory cap, stack), and the host keeps running.
//!
//! No assertion here depends on the machine's speed: every run that is not about its
//! deadline gets a generous one ([`GENEROUS`]), and the runs that must be stopped by their
//! deadline only check that it was the deadline that stopped them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tlsward::hooks::{Grant, HookFailure, HookRun, Hooks};

use crate::util::hooks::{material, run, spec};
use crate::util::{TestCa, TlsServer};

/// The deadline of every run that is not about its deadline: far beyond what a loaded
/// debug build needs (CPython's start-up alone can take seconds there).
const GENEROUS: Duration = Duration::from_secs(60);

fn grant(allowed: &Path, port: u16) -> Grant {
    Grant {
        write_paths: vec![allowed.to_path_buf()],
        commands: vec![vec!["/bin/true".into()]],
        http_hosts: vec![format!("127.0.0.1:{port}")],
        memory_bytes: 64 << 20,
        timeout: GENEROUS,
        ..Grant::default()
    }
}

/// The grant for the Python hooks here.
fn python_grant(allowed: &Path) -> Grant {
    grant(allowed, 1)
}

struct Attack {
    dir: tempfile::TempDir,
    allowed: PathBuf,
    server: TlsServer,
}

async fn setup() -> Attack {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::create_dir(dir.path().join("allowed-sibling")).unwrap();
    let ca = TestCa::root("Sandbox CA");
    let server = TlsServer::leaf(&ca.leaf(&["127.0.0.1"]).build())
        .start()
        .await;
    Attack {
        dir,
        allowed,
        server,
    }
}

async fn attack(a: &Attack, name: &str) -> HookRun {
    attack_with(a, name, grant(&a.allowed, a.server.addr.port()), &[]).await
}

/// An attack under `grant`, with extra settings.
async fn attack_with(a: &Attack, name: &str, grant: Grant, extra: &[(&str, &str)]) -> HookRun {
    let port = a.server.addr.port().to_string();
    let allowed = a.allowed.display().to_string();
    let leaf = TestCa::root("Deployed CA").leaf(&["site.test"]).build();
    let s = spec("evil", "evil", grant, &[]);
    let mut settings = vec![("attack", name), ("allowed_dir", &allowed), ("port", &port)];
    settings.extend_from_slice(extra);
    run(&s, material(&leaf, "web"), &settings).await
}

fn hook_error(run: &HookRun) -> String {
    match &run.outcome {
        Err(HookFailure::Hook(m)) => m.clone(),
        other => panic!("expected the hook to report refusals, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_escapes_are_refused_with_typed_errors() {
    let a = setup().await;
    // (attack, refusals expected in order: (tag, text in the message))
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "write-outside",
            &[
                (
                    "access-denied",
                    "/etc/tlsward-evil is not beneath write_paths",
                ),
                ("access-denied", "/tmp/evil.pem is not beneath write_paths"),
            ],
        ),
        ("traversal", &[("invalid-argument", "contains '..'")]),
        (
            "prefix-trick",
            &[(
                "access-denied",
                "allowed-sibling/x is not beneath write_paths",
            )],
        ),
        (
            "relative",
            &[("invalid-argument", "is not an absolute path")],
        ),
        (
            "setuid-mode",
            &[
                ("invalid-argument", "sets setuid"),
                ("invalid-argument", "lets group or others write"),
            ],
        ),
        (
            "key-world-readable",
            &[(
                "invalid-argument",
                "lets others read a file holding the private key",
            )],
        ),
        (
            "command",
            &[
                ("access-denied", "not one of the granted commands"),
                ("access-denied", "not one of the granted commands"),
            ],
        ),
        (
            "http-host",
            &[
                ("access-denied", "is not in http_hosts"),
                ("access-denied", "only https:// URLs are allowed"),
                ("access-denied", "is not in http_hosts"),
            ],
        ),
        (
            "key-convert",
            &[
                ("access-denied", "key_access = true"),
                ("access-denied", "key_access = true"),
                // What the guest saw of the key in its bundle.
                ("bundle.keyPem", "empty"),
            ],
        ),
    ];
    for (name, expected) in cases {
        let r = attack(&a, name).await;
        let msg = hook_error(&r);
        assert!(!msg.contains("ESCAPED"), "{name}: {msg}");
        let parts: Vec<&str> = msg.split(" | ").collect();
        assert_eq!(parts.len(), expected.len(), "{name}: {msg}");
        for (part, (tag, text)) in parts.iter().zip(expected.iter()) {
            assert!(part.starts_with(&format!("{tag}: ")), "{name}: {part}");
            assert!(
                part.contains(text),
                "{name}: {part:?} should mention {text:?}"
            );
        }
        assert!(r.written.is_empty(), "{name} wrote {:?}", r.written);
        assert!(r.commands.is_empty(), "{name} ran {:?}", r.commands);
        let denied = expected.iter().any(|(t, _)| *t == "access-denied");
        // The guest reports the key field itself; it is not a host call.
        let parts: Vec<&str> = parts
            .into_iter()
            .filter(|p| !p.starts_with("bundle."))
            .collect();
        assert!(parts.len() <= expected.len());
        assert_eq!(r.denied, denied, "{name}");
        assert_eq!(
            r.reason(),
            if denied {
                "access_denied"
            } else {
                "hook_error"
            },
            "{name}"
        );
    }
    // Nothing landed outside the granted directory, nor inside it.
    assert!(!Path::new("/etc/tlsward-evil").exists());
    assert!(!a.dir.path().join("escape.txt").exists());
    assert_eq!(std::fs::read_dir(&a.allowed).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(a.dir.path().join("allowed-sibling"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_inside_the_grant_does_not_lead_out() {
    let a = setup().await;
    let outside = a.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, a.allowed.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("f"), a.allowed.join("file-link")).unwrap();
    let leaf = TestCa::root("Deployed CA").leaf(&["site.test"]).build();
    // The stock pem-files hook, pointed through each link.
    for (path, text) in [
        (a.allowed.join("link/cert.pem"), "through a symbolic link"),
        (a.allowed.join("file-link"), "is a symbolic link"),
    ] {
        let s = spec(
            "files",
            "pem-files",
            python_grant(&a.allowed),
            &[("cert_path", path.to_str().unwrap())],
        );
        let r = run(&s, material(&leaf, "web"), &[]).await;
        let err = format!("{:?}", r.outcome);
        assert!(r.denied && err.contains(text), "{err}");
        let refused = r.calls.iter().find(|c| c.function == "write-cert").unwrap();
        assert!(
            refused.outcome.starts_with("access-denied: "),
            "{refused:?}"
        );
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn runaway_guests_are_stopped_and_the_host_keeps_running() {
    let a = setup().await;
    // An infinite loop: only its deadline can stop it, so a short one; the test checks that
    // the deadline is what stopped it, not how soon (a loaded machine may take longer).
    let short = Grant {
        timeout: Duration::from_secs(1),
        ..grant(&a.allowed, a.server.addr.port())
    };
    let t = Instant::now();
    let r = attack_with(&a, "loop", short, &[]).await;
    assert!(
        matches!(r.outcome, Err(HookFailure::Timeout(_))),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.reason(), "timeout");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());

    // The others run under the generous deadline: whatever stops them must be their own
    // limit, not time.
    // A memory bomb: the 64 MiB cap holds; the guest sees allocation fail.
    let r = attack(&a, "memory").await;
    assert!(
        matches!(r.outcome, Err(HookFailure::OutOfMemory(_))),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.reason(), "out_of_memory");

    // Unbounded recursion: a stack overflow trap.
    let r = attack(&a, "deep-recursion").await;
    match &r.outcome {
        Err(HookFailure::Trap(m)) => assert!(m.contains("stack overflow"), "{m}"),
        Err(HookFailure::Hook(m)) => assert!(m.contains("stack") || m.contains("recursion"), "{m}"),
        other => panic!("{other:?}"),
    }

    // A log flood: kept to the cap, the run still succeeds.
    let r = attack(&a, "log-flood").await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    let logged: usize = r
        .calls
        .iter()
        .filter(|c| c.function == "log")
        .map(|c| c.outcome.len())
        .sum();
    assert!(logged <= 64 << 10, "{logged} bytes of log kept");
    assert!(logged > 0);

    // Texts and calls without end: each text is cut to its cap, saying how much was dropped,
    // and calls beyond the cap are counted in one last entry.
    let r = attack(&a, "chatter").await;
    let cap = tlsward::hooks::host::MAX_MESSAGE;
    let dropped = |text: &str, n: usize| {
        assert!(text.len() <= cap + 40, "{} bytes kept", text.len());
        assert!(
            text.ends_with(&format!(" [{} more bytes dropped]", n - cap)),
            "{}",
            &text[text.len() - 40..]
        );
    };
    match &r.outcome {
        Err(HookFailure::Hook(m)) => dropped(m, 1 << 20),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.calls[0].function, "log");
    dropped(&r.calls[0].outcome, 100_000);
    let max = tlsward::hooks::host::MAX_CALLS;
    assert_eq!(r.calls.len(), max + 1);
    let last = r.calls.last().unwrap();
    assert_eq!(last.function, "dropped");
    assert_eq!(
        last.outcome,
        format!(
            "{} more host calls not recorded (the first {max} are kept)",
            3001 - max
        )
    );

    // After all that, the same engine runs a well-behaved hook normally.
    let leaf = TestCa::root("Deployed CA").leaf(&["site.test"]).build();
    let s = spec(
        "files",
        "pem-files",
        python_grant(&a.allowed),
        &[("cert_path", a.allowed.join("cert.pem").to_str().unwrap())],
    );
    let r = run(&s, material(&leaf, "web"), &[]).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert!(a.allowed.join("cert.pem").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wasi_runtime_sees_no_files_environment_network_or_processes() {
    let a = setup().await;
    let leaf = TestCa::root("Deployed CA").leaf(&["site.test"]).build();
    let s = spec("escape", "escape-py", python_grant(&a.allowed), &[]);
    // The test process itself has an environment (PATH, HOME): the guest must not see it.
    let r = run(&s, material(&leaf, "web"), &[]).await;
    let report: serde_json::Value = match &r.outcome {
        Ok(s) => serde_json::from_str(s).expect("a JSON report"),
        Err(e) => panic!("{e}"),
    };
    let obj = report.as_object().expect("an object");
    for attempt in [
        "/etc/passwd",
        "listdir /",
        "listdir .",
        "environ",
        "socket",
        "subprocess",
        "write /tmp/x",
    ] {
        let (k, v) = obj
            .iter()
            .find(|(k, _)| k.contains(attempt))
            .unwrap_or_else(|| panic!("no attempt {attempt} in {report}"));
        let v = v.as_str().unwrap_or_default();
        assert!(v.starts_with("refused"), "{k}: {v}");
    }
    for (k, v) in obj {
        assert!(
            !v.as_str().unwrap_or_default().starts_with("ESCAPED"),
            "{k}: {v}"
        );
    }
    assert!(r.written.is_empty() && r.calls.is_empty(), "{:?}", r.calls);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_asleep_in_the_wasi_runtime_is_abandoned_at_its_deadline() {
    let a = setup().await;
    let leaf = TestCa::root("Deployed CA").leaf(&["site.test"]).build();
    // Long enough for CPython to start and reach its sleep on a loaded machine (it takes
    // about 50 ms there), far shorter than the sleep.
    let deadline = Duration::from_secs(8);
    let mut g = python_grant(&a.allowed);
    g.timeout = deadline;
    let s = spec("sleepy", "escape-py", g, &[("sleep", "3600")]);
    let r = run(&s, material(&leaf, "web"), &[]).await;
    // From the guest's start (compiling it is not part of its deadline) to its abandonment.
    let took = r.timings.call;
    match &r.outcome {
        Err(HookFailure::Timeout(m)) => assert!(m.contains("abandoned"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.reason(), "timeout");
    // Not before its deadline and its grace, and long before the hour it asked to sleep: a
    // bound about behaviour (abandoned, not waited for), not about the machine's speed.
    assert!(
        took >= deadline && took < deadline + tlsward::hooks::ABANDON_GRACE + GENEROUS,
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_component_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x0d\0\x01\0garbage").unwrap();
    let leaf = TestCa::root("Deployed CA").leaf(&["site.test"]).build();
    let mut s = spec("bogus", "evil", Grant::default(), &[]);
    s.component = bogus;
    let r = run(&s, material(&leaf, "web"), &[]).await;
    assert!(
        matches!(r.outcome, Err(HookFailure::Load(_))),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.reason(), "load_error");
}

/// What the evil guest's `write-many` reports: writes that succeeded, refusals by tag.
#[derive(Debug, Default)]
struct Writes {
    ok: u64,
    denied: u64,
    other: Vec<String>,
}

fn write_many(a: &Attack, dir: &Path, count: u32) -> impl Future<Output = Writes> {
    let (dir, count) = (dir.display().to_string(), count.to_string());
    async move {
        let r = attack_with(
            a,
            "write-many",
            grant(&a.allowed, a.server.addr.port()),
            &[("dir", &dir), ("count", &count)],
        )
        .await;
        let report: serde_json::Value = match &r.outcome {
            Ok(s) => serde_json::from_str(s).expect("a JSON report"),
            Err(e) => panic!("{e}"),
        };
        let mut w = Writes {
            ok: report["ok"].as_u64().expect("ok"),
            ..Writes::default()
        };
        for (tag, n) in report["refused"].as_object().expect("refused") {
            if tag == "access-denied" {
                w.denied += n.as_u64().unwrap();
            } else {
                w.other.push(format!("{tag} x{n}: {}", report["first"]));
            }
        }
        w
    }
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Exchanges two directory entries (renameat2 `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).expect("RENAME_EXCHANGE");
}

/// Someone who may modify a directory inside the grant (the service's own user, when it owns
/// its certificate directory) exchanges it with a symbolic link to a directory outside, again
/// and again, while the guest writes hundreds of files and keys into it: every write lands in
/// the real directory or is refused, nothing lands outside, and no temporary file is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_directory_swapped_for_a_symlink_during_writes_does_not_lead_out() {
    let a = setup().await;
    let outside = a.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let (sub, swap) = (a.allowed.join("sub"), a.allowed.join("swap"));
    std::fs::create_dir(&sub).unwrap();
    std::os::unix::fs::symlink(&outside, &swap).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = std::thread::spawn({
        let (stop, sub, swap) = (stop.clone(), sub.clone(), swap.clone());
        move || {
            let mut swaps = 0u64;
            // Bounded, though the writes end it long before.
            while !stop.load(Ordering::Relaxed) && swaps < 100_000_000 {
                exchange(&sub, &swap);
                swaps += 1;
            }
            if swaps % 2 == 1 {
                exchange(&sub, &swap);
            }
            swaps
        }
    });
    // Rounds until the race was run both ways (some writes found the real directory, some
    // the link): a handful at most, as the swapper never rests.
    let mut total = Writes::default();
    for round in 0..10 {
        let w = write_many(&a, &sub, 400).await;
        let landed = names(&outside);
        assert!(
            landed.is_empty(),
            "round {round}: {} files outside the grant: {landed:?}",
            landed.len()
        );
        assert!(w.other.is_empty(), "round {round}: {:?}", w.other);
        total.ok += w.ok;
        total.denied += w.denied;
        if round >= 1 && total.ok > 0 && total.denied > 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!(
        "{} writes, {} refused, {swaps} swaps",
        total.ok, total.denied
    );
    assert!(total.ok > 0 && total.denied > 0, "{total:?}, {swaps} swaps");
    assert_eq!(names(&outside), Vec::<String>::new());
    assert!(sub.is_dir() && !sub.is_symlink());
    // Only the files the guest writes and their kept previous versions, each a regular file.
    for name in names(&sub) {
        let stem = name.strip_suffix(".tlsward-prev").unwrap_or(&name);
        let (f, n) = stem.split_at(1);
        let n = n.strip_suffix(".pem").unwrap_or(n);
        assert!(
            (f == "f" || f == "k") && n.parse::<u32>().is_ok(),
            "{name} left in the granted directory"
        );
        assert!(sub.join(&name).symlink_metadata().unwrap().is_file());
    }
}

/// The files a run wrote are put back through the same directory it wrote them in: when that
/// directory was replaced by a symbolic link after the run (during verification, say),
/// rollback refuses, and the files outside that the link points to stay as they were.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_through_a_directory_replaced_by_a_symlink_is_refused() {
    let a = setup().await;
    let outside = a.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let sub = a.allowed.join("sub");
    std::fs::create_dir(&sub).unwrap();
    // f0 and f2 exist (their previous versions are kept); the other four are new.
    std::fs::write(sub.join("f0"), "old f0\n").unwrap();
    std::fs::write(sub.join("f2"), "old f2\n").unwrap();
    let r = attack_with(
        &a,
        "write-many",
        grant(&a.allowed, a.server.addr.port()),
        &[("dir", &sub.display().to_string()), ("count", "6")],
    )
    .await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    let kept: Vec<bool> = r.written.iter().map(|w| w.previous.is_some()).collect();
    assert_eq!(
        kept,
        [true, false, true, false, false, false],
        "{:?}",
        r.written
    );

    // The directory is moved away and a link to `outside` put in its place; outside holds
    // files of the same names, the previous versions included.
    let moved = a.allowed.join("sub-moved");
    std::fs::rename(&sub, &moved).unwrap();
    std::os::unix::fs::symlink(&outside, &sub).unwrap();
    let decoys: Vec<String> = names(&moved);
    for name in &decoys {
        std::fs::write(outside.join(name), format!("decoy {name}\n")).unwrap();
    }
    let before_moved: Vec<(String, Vec<u8>)> = decoys
        .iter()
        .map(|n| (n.clone(), std::fs::read(moved.join(n)).unwrap()))
        .collect();

    let rt = tokio::runtime::Handle::current();
    let undo = tokio::task::spawn_blocking(move || Hooks::roll_back(&r, &rt, GENEROUS))
        .await
        .unwrap();
    assert!(!undo.ok());
    assert!(
        undo.restored.is_empty() && undo.removed.is_empty(),
        "{undo:?}"
    );
    assert_eq!(undo.errors.len(), 6, "{undo:?}");
    for e in &undo.errors {
        assert!(e.contains("symbolic link"), "{e}");
    }
    // Nothing outside moved, vanished or changed; nor did the real directory.
    assert_eq!(names(&outside), decoys);
    for name in &decoys {
        assert_eq!(
            std::fs::read_to_string(outside.join(name)).unwrap(),
            format!("decoy {name}\n")
        );
    }
    for (name, bytes) in &before_moved {
        assert_eq!(&std::fs::read(moved.join(name)).unwrap(), bytes, "{name}");
    }
}

/// With the directory back in place, the same rollback puts every file back.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_puts_back_what_a_run_wrote_beneath_the_grant() {
    let a = setup().await;
    let sub: PathBuf = a.allowed.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("f0"), "old f0\n").unwrap();
    let r = attack_with(
        &a,
        "write-many",
        grant(&a.allowed, a.server.addr.port()),
        &[("dir", &sub.display().to_string()), ("count", "2")],
    )
    .await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(names(&sub), ["f0", "f0.tlsward-prev", "k1.pem"]);
    let rt = tokio::runtime::Handle::current();
    let undo = tokio::task::spawn_blocking(move || Hooks::roll_back(&r, &rt, GENEROUS))
        .await
        .unwrap();
    assert!(undo.ok(), "{undo:?}");
    assert_eq!(undo.restored, [sub.join("f0")]);
    assert_eq!(undo.removed, [sub.join("k1.pem")]);
    assert_eq!(names(&sub), ["f0"]);
    assert_eq!(std::fs::read_to_string(sub.join("f0")).unwrap(), "old f0\n");
}
