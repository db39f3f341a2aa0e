//! Purpose-built evil guests against the sandbox: each escape is refused with its typed
//! reason or stopped (deadline, memory cap, stack), and the host keeps running.

use std::time::{Duration, Instant};

use tlsward::hooks::{Grant, HookFailure};

use crate::util::hooks::{material, run, spec};
use crate::util::{TestCa, TlsServer};

fn grant(allowed: &std::path::Path, port: u16) -> Grant {
    Grant {
        write_paths: vec![allowed.to_path_buf()],
        commands: vec![vec!["/bin/true".into()]],
        http_hosts: vec![format!("127.0.0.1:{port}")],
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(1),
        ..Grant::default()
    }
}

/// The grant for the Python hooks here: CPython's start-up in a loaded debug build can take
/// more than the evil guest's 1 s, and these runs are not about time.
fn python_grant(allowed: &std::path::Path) -> Grant {
    Grant {
        timeout: Duration::from_secs(60),
        ..grant(allowed, 1)
    }
}

struct Attack {
    dir: tempfile::TempDir,
    allowed: std::path::PathBuf,
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

async fn attack(a: &Attack, name: &str) -> tlsward::hooks::HookRun {
    let port = a.server.addr.port().to_string();
    let allowed = a.allowed.display().to_string();
    let leaf = TestCa::root("Deployed CA").leaf(&["site.test"]).build();
    let s = spec("evil", "evil", grant(&a.allowed, a.server.addr.port()), &[]);
    run(
        &s,
        material(&leaf, "web"),
        &[("attack", name), ("allowed_dir", &allowed), ("port", &port)],
    )
    .await
}

fn hook_error(run: &tlsward::hooks::HookRun) -> String {
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
    assert!(!std::path::Path::new("/etc/tlsward-evil").exists());
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
    // An infinite loop: stopped by the deadline (1 s), not much later.
    let t = Instant::now();
    let r = attack(&a, "loop").await;
    let took = t.elapsed();
    assert!(
        matches!(r.outcome, Err(HookFailure::Timeout(_))),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.reason(), "timeout");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );

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
    // Long enough for CPython to start in a loaded debug build, far shorter than the sleep.
    let mut g = python_grant(&a.allowed);
    g.timeout = Duration::from_secs(8);
    let s = spec("sleepy", "escape-py", g, &[("sleep", "3600")]);
    let r = run(&s, material(&leaf, "web"), &[]).await;
    // From the guest's start (compiling it is not part of its deadline) to its abandonment.
    let took = r.timings.call;
    match &r.outcome {
        Err(HookFailure::Timeout(m)) => assert!(m.contains("abandoned"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.reason(), "timeout");
    assert!(
        took >= Duration::from_secs(8)
            && took
                < Duration::from_secs(8) + tlsward::hooks::ABANDON_GRACE + Duration::from_secs(3),
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
