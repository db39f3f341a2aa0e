//! Writing a hook as hooks/README.md teaches: its examples are the guests `readme-py` and
//! `readme-js` (kept equal to the README here) and end refused calls with a clean error; a
//! hook built outside the tree with `scripts/build-hooks -o` runs with `tlsward hook run`;
//! `tlsward hook check` and the build tell a hook from an ELF binary, a core module or a
//! misspelled `deploy` export.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tlsward::hooks::{Grant, HookFailure, HookRun};

use crate::util::hooks::{component, material, run, spec};
use crate::util::{TestCa, fixture};

const GENEROUS: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tlsward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tlsward"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The fenced block of `lang` that follows `heading` in hooks/README.md.
fn readme_block(heading: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("hooks/README.md")).unwrap();
    let section = &readme[readme.find(heading).expect(heading)..];
    let fence = format!("```{lang}\n");
    let start = section.find(&fence).expect("the block") + fence.len();
    let len = section[start..].find("```\n").expect("its end");
    section[start..start + len].to_owned()
}

#[test]
fn readme_examples_are_the_test_guests() {
    for (heading, lang, file) in [
        ("### Python", "python", "tests/guests/readme-py/app.py"),
        ("### JavaScript", "js", "tests/guests/readme-js/hook.js"),
    ] {
        let guest = std::fs::read_to_string(repo().join(file)).unwrap();
        assert_eq!(
            readme_block(heading, lang),
            guest,
            "the {lang} example in hooks/README.md and {file} differ"
        );
    }
}

fn hook_error(r: &HookRun) -> &str {
    match &r.outcome {
        Err(HookFailure::Hook(m)) => m,
        other => panic!("expected a clean hook error, got {other:?}\n{:?}", r.calls),
    }
}

/// Each README example, run with a refused write, then a refused command, then granted.
#[tokio::test(flavor = "multi_thread")]
async fn readme_examples_turn_refused_calls_into_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().canonicalize().unwrap();
    let path = out.join("site.pem").display().to_string();
    let leaf = TestCa::root("Readme CA").leaf(&["site.test"]).build();
    for guest in ["readme-js", "readme-py"] {
        let grant = |commands: Vec<Vec<String>>| Grant {
            write_paths: vec![out.clone()],
            commands,
            timeout: GENEROUS,
            ..Grant::default()
        };
        let settings = [("path", path.as_str()), ("reload", "/bin/true")];

        // A write outside write_paths: Err naming the path and the grant, not a crash.
        let s = spec("readme", guest, grant(vec![]), &[("path", "/elsewhere/x.pem")]);
        let r = run(&s, material(&leaf, "web"), &[]).await;
        let e = hook_error(&r);
        assert!(
            e.starts_with("writing /elsewhere/x.pem: /elsewhere/x.pem is not beneath write_paths ["),
            "{guest}: {e}"
        );
        assert_eq!(r.reason(), "access_denied", "{guest}");

        // The file written, the command refused: a clean Err naming the command.
        let s = spec("readme", guest, grant(vec![]), &settings);
        let r = run(&s, material(&leaf, "web"), &[]).await;
        assert_eq!(
            hook_error(&r),
            "running /bin/true: [\"/bin/true\"] is not one of the granted commands (grant key: commands)",
            "{guest}"
        );
        assert_eq!(r.reason(), "access_denied", "{guest}");

        // Granted: ok.
        let s = spec("readme", guest, grant(vec![vec!["/bin/true".into()]]), &settings);
        let r = run(&s, material(&leaf, "web"), &[]).await;
        assert_eq!(
            r.outcome,
            Ok(format!("wrote {path}; ran /bin/true")),
            "{guest}: {:?}",
            r.calls
        );
        assert!(std::fs::read_to_string(&path).unwrap().contains("BEGIN CERTIFICATE"));
    }
}

#[test]
fn hook_check_tells_a_hook_from_other_files() {
    let check = |file: &Path| {
        tlsward()
            .args(["hook", "check"])
            .arg(file)
            .output()
            .unwrap()
    };
    let out = check(&component("readme-js"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with(
            "readme-js.wasm: a tlsward:hook@0.1.0 component; deploy with no settings answered err: path is required\n"
        ),
        "{}",
        text(&out)
    );
    for (file, says) in [
        (
            PathBuf::from(env!("CARGO_BIN_EXE_tlsward")),
            "not a WebAssembly component (it starts with ELF: a native executable or library)",
        ),
        (
            fixture("hooks/core-module"),
            "not a WebAssembly component (it is a core WebAssembly module of version 1",
        ),
    ] {
        let out = check(&file);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!("tlsward: {}: {says}", file.display())),
            "{}",
            text(&out)
        );
    }
}

/// `scripts/build-hooks -o OUT DIR`, rebuilding (-f), checked with this test's tlsward.
fn build_outside(src: &Path, out: &Path) -> Output {
    Command::new(repo().join("scripts/build-hooks"))
        .arg("-f")
        .arg("-o")
        .arg(out)
        .arg(src)
        .current_dir(src.parent().unwrap())
        .env("TLSWARD", env!("CARGO_BIN_EXE_tlsward"))
        .output()
        .unwrap()
}

#[test]
fn a_hook_built_outside_the_tree_runs_with_hook_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    assert!(!base.starts_with(repo()));
    let src = base.join("my-hook");
    std::fs::create_dir(&src).unwrap();
    std::fs::copy(repo().join("tests/guests/readme-js/hook.js"), src.join("hook.js")).unwrap();

    // Built where the user keeps it, the output where they ask.
    let wasm = base.join("my-hook.wasm");
    let out = build_outside(&src, &wasm);
    assert!(out.status.success(), "{}", text(&out));
    assert!(wasm.is_file(), "{}", text(&out));
    assert_eq!(
        std::fs::read_dir(&src).unwrap().count(),
        1,
        "nothing written into the source directory"
    );

    // Run by `tlsward hook run` from a config beside it.
    let certs = base.join("certs");
    std::fs::create_dir(&certs).unwrap();
    let bundle = base.join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let leaf = TestCa::root("Outside CA").leaf(&["site.test"]).build();
    std::fs::write(bundle.join("cert.pem"), crate::util::pem_chain(&leaf.chain)).unwrap();
    std::fs::write(
        bundle.join("key.pem"),
        pem::encode(&pem::Pem::new("PRIVATE KEY", leaf.key.secret_der().to_vec())),
    )
    .unwrap();
    let config = base.join("tlsward.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = \"{}\"\n\n[hook.mine]\ncomponent = \"my-hook.wasm\"\n\
             write_paths = [\"{}\"]\ncommands = [[\"/bin/true\"]]\ntimeout = \"120s\"\n\n\
             [hook.mine.settings]\npath = \"{}/site.pem\"\nreload = \"/bin/true\"\n",
            base.join("state").display(),
            certs.display(),
            certs.display()
        ),
    )
    .unwrap();
    let out = tlsward()
        .args(["hook", "run", "mine", "--config"])
        .arg(&config)
        .arg("--bundle")
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with(&format!(
            "  write-cert(pem-fullchain, {0}/site.pem, 0644) -> ok\n  run-command([\"/bin/true\"]) -> ok: exit 0\nresult: ok: wrote {0}/site.pem; ran /bin/true\n",
            certs.display()
        )),
        "{}",
        text(&out)
    );
    assert!(certs.join("site.pem").is_file());
}

#[test]
fn a_misspelled_deploy_export_fails_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let src = base.join("typo");
    std::fs::create_dir(&src).unwrap();
    let js = std::fs::read_to_string(repo().join("tests/guests/readme-js/hook.js")).unwrap();
    assert!(js.contains("export function deploy("));
    std::fs::write(
        src.join("hook.js"),
        js.replace("export function deploy(", "export function deplyo("),
    )
    .unwrap();
    let wasm = base.join("typo.wasm");
    let out = build_outside(&src, &wasm);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: calling deploy with no settings crashed (wasm trap: wasm `unreachable` instruction executed); a JavaScript hook does this when it has no `export function deploy` (a misspelled name)",
            src.display()
        )),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("built, but it is not a working hook"),
        "{}",
        text(&out)
    );
    assert!(!wasm.exists(), "no output for a broken hook");
}
