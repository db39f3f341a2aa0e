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
        let s = spec(
            "readme",
            guest,
            grant(vec![]),
            &[("path", "/elsewhere/x.pem")],
        );
        let r = run(&s, material(&leaf, "web"), &[]).await;
        let e = hook_error(&r);
        assert!(
            e.starts_with(
                "writing /elsewhere/x.pem: /elsewhere/x.pem is not beneath write_paths ["
            ),
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
        let s = spec(
            "readme",
            guest,
            grant(vec![vec!["/bin/true".into()]]),
            &settings,
        );
        let r = run(&s, material(&leaf, "web"), &[]).await;
        assert_eq!(
            r.outcome,
            Ok(format!("wrote {path}; ran /bin/true")),
            "{guest}: {:?}",
            r.calls
        );
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
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
    std::fs::copy(
        repo().join("tests/guests/readme-js/hook.js"),
        src.join("hook.js"),
    )
    .unwrap();

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
        pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            leaf.key.secret_der().to_vec(),
        )),
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

// ---------------------------------------------------------------------------------------
// An appliance with a self-signed certificate, its token in a file or the environment.

const TOKEN: &str = "appliance-token-7f3a";
const DATA_NAME: &str = "appliance.test";

/// A self-signed certificate as `openssl req -x509` makes it (a CA: basicConstraints
/// CA:TRUE), for 127.0.0.1.
fn openssl_self_signed(dir: &Path) -> crate::util::Leaf {
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=appliance"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("CA:TRUE"),
        "openssl req -x509 makes a CA certificate"
    );
    crate::util::Leaf {
        chain: vec![rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap()],
        key: rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap(),
    }
}

/// A config with the stock http-appliance hook for `appliance`, `grant` and `settings`
/// lines added to its sections.
fn appliance_config(dir: &Path, appliance: &Appliance, grant: &str, settings: &str) -> PathBuf {
    let config = dir.join("tlsward.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = \"{state}\"\n\n[hook.fw]\ncomponent = \"{component}\"\n\
             http_hosts = [\"127.0.0.1:{port}\"]\nkey_access = true\ntimeout = \"120s\"\n{grant}\n\
             [hook.fw.settings]\nurl = \"https://127.0.0.1:{port}\"\npassword = \"upload-pass\"\n\
             poll_interval = \"0.05\"\n{settings}\n",
            state = cli_state_dir().display(),
            component = component("http-appliance").display(),
            port = appliance.api_port(),
        ),
    )
    .unwrap();
    config
}

/// Shared with hooks_stock's `hook run` tests: its cache spares the Python compile.
fn cli_state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hooks-stock-cli-state")
}

fn all_text(r: &HookRun) -> String {
    format!("{:?} {:?} {}", r.outcome, r.calls, r.output)
}

use crate::util::appliance::{Appliance, ApplianceMode};

#[tokio::test(flavor = "multi_thread")]
async fn a_self_signed_appliance_is_refused_unless_pinned_and_its_token_comes_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let api = openssl_self_signed(&base);
    let pin = tlsward::cert::sha256_hex(api.der());
    let data_ca = TestCa::root("Pinned Data CA");
    let old = data_ca.leaf(&[DATA_NAME]).build();
    let appliance = Appliance::start(
        &api,
        crate::util::TlsServer::leaf(&old),
        TOKEN,
        ApplianceMode::Honest,
    )
    .await;
    std::fs::write(base.join("token"), format!("{TOKEN}\n")).unwrap();
    let token_file = "token_file = \"token\"";
    let spec = |grant: &str| {
        let config = appliance_config(&base, &appliance, grant, token_file);
        tlsward::config::load(&config).unwrap().hooks["fw"].clone()
    };
    let new = data_ca.leaf(&[DATA_NAME]).build();

    // No pin: the CA certificate is refused as the server's leaf, and the error shows the
    // fingerprint to pin.
    let s = spec("");
    assert_eq!(
        s.settings["token"], TOKEN,
        "read from the file, newline dropped"
    );
    let r = run(&s, material(&new, "fw"), &[]).await;
    let e = hook_error(&r);
    assert!(
        e.contains(&format!(
            "failed: the server's certificate was refused: it is a CA certificate, not a \
             server's (CaUsedAsEndEntity; `openssl req -x509` makes self-signed certificates \
             so); its sha256 is {pin}: if that is the appliance's own certificate \
             (checked out of band), pin it with http_pin_sha256 = [\"{pin}\"]"
        )),
        "{e}"
    );

    // A wrong pin: refused, naming what the server presented.
    let wrong = "00".repeat(32);
    let r = run(
        &spec(&format!("http_pin_sha256 = [\"{wrong}\"]")),
        material(&new, "fw"),
        &[],
    )
    .await;
    let e = hook_error(&r);
    assert!(
        e.contains(&format!(
            "failed: the server's certificate (sha256 {pin}) is not one of http_pin_sha256"
        )),
        "{e}"
    );
    assert!(appliance.uploads().is_empty(), "{:?}", appliance.uploads());

    // The right pin, written the way openssl prints it: uploaded with the file's token.
    let openssl_form: Vec<String> = pin
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let r = run(
        &spec(&format!(
            "http_pin_sha256 = [\"{wrong}\", \"{}\"]",
            openssl_form.join(":")
        )),
        material(&new, "fw"),
        &[],
    )
    .await;
    assert_eq!(
        r.outcome,
        Ok("activated certificate c1".into()),
        "{:?}",
        r.calls
    );
    assert_eq!(
        appliance.uploads()[0].sha256.as_deref(),
        Some(tlsward::cert::sha256_hex(new.der()).as_str())
    );
    assert!(!all_text(&r).contains(TOKEN), "{}", all_text(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn hook_run_takes_the_token_from_the_environment_and_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let api = openssl_self_signed(&base);
    let pin = tlsward::cert::sha256_hex(api.der());
    let data_ca = TestCa::root("Env Data CA");
    let old = data_ca.leaf(&[DATA_NAME]).build();
    let appliance = Appliance::start(
        &api,
        crate::util::TlsServer::leaf(&old),
        TOKEN,
        ApplianceMode::Honest,
    )
    .await;
    let config = appliance_config(
        &base,
        &appliance,
        &format!("http_pin_sha256 = [\"{pin}\"]"),
        "token_env = \"TLSWARD_TEST_APPLIANCE_TOKEN\"",
    );
    let bundle = base.join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let new = data_ca.leaf(&[DATA_NAME]).build();
    std::fs::write(bundle.join("cert.pem"), crate::util::pem_chain(&new.chain)).unwrap();
    std::fs::write(
        bundle.join("key.pem"),
        pem::encode(&pem::Pem::new("PRIVATE KEY", new.key.secret_der().to_vec())),
    )
    .unwrap();
    let hook_run = |token: Option<&str>| {
        let mut cmd = tlsward();
        cmd.args(["hook", "run", "fw", "--config"])
            .arg(&config)
            .arg("--bundle")
            .arg(&bundle)
            .env_remove("TLSWARD_TEST_APPLIANCE_TOKEN");
        if let Some(t) = token {
            cmd.env("TLSWARD_TEST_APPLIANCE_TOKEN", t);
        }
        tokio::task::block_in_place(|| cmd.output().unwrap())
    };

    let out = hook_run(Some(TOKEN));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("result: ok: activated certificate c1\n"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(TOKEN), "{}", text(&out));

    // A wrong token from the environment: the appliance says 401; the token is not shown.
    let out = hook_run(Some("wrong-env-token"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("HTTP 401"), "{}", text(&out));
    assert!(!text(&out).contains("wrong-env-token"), "{}", text(&out));

    // Not set: a config error (3) naming the file, line and key.
    let out = hook_run(None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "{}:14: hook.fw.settings.token_env: environment variable TLSWARD_TEST_APPLIANCE_TOKEN is not set",
            config.display()
        )),
        "{}",
        text(&out)
    );
}

#[test]
fn secret_settings_mistakes_are_config_problems_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    std::fs::write(base.join("token"), "file-secret-9c1\r\n").unwrap();
    std::fs::write(base.join("big"), vec![b'x'; (64 << 10) + 1]).unwrap();
    let config = base.join("tlsward.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = \"{state}\"\n\n\
             [hook.a]\ncomponent = \"{component}\"\n\n\
             [hook.a.settings]\n\
             token = \"plain-secret-5d2\"\n\
             token_file = \"token\"\n\
             password_file = \"missing\"\n\
             key_file = \"big\"\n\
             both_file = \"token\"\n\
             both_env = \"HOME\"\n\
             ok_file = \"token\"\n",
            state = base.join("state").display(),
            component = component("readme-js").display(),
        ),
    )
    .unwrap();
    let err = tlsward::config::load(&config).unwrap_err();
    let file = config.display().to_string();
    let problems: Vec<String> = err
        .problems
        .iter()
        .map(|p| p.replace(&file, "tlsward.toml"))
        .collect();
    let big = base.join("big").display().to_string();
    let missing = base.join("missing").display().to_string();
    assert_eq!(
        problems,
        [
            "tlsward.toml:8: hook.a.settings.token: token_file is also set: give token one way only, as token, token_file or token_env".to_owned(),
            format!("tlsward.toml:10: hook.a.settings.password_file: {missing}: No such file or directory (os error 2)"),
            format!("tlsward.toml:11: hook.a.settings.key_file: {big}: is larger than 64 KiB"),
            "tlsward.toml:13: hook.a.settings.both_env: both_file is also set: give both one way only, as both, both_file or both_env".to_owned(),
        ],
        "{problems:#?}"
    );
    for secret in ["plain-secret-5d2", "file-secret-9c1"] {
        assert!(!format!("{err}").contains(secret), "{err}");
    }

    // Without the mistakes: `ok` is the file's content without its final CRLF.
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = \"{state}\"\n\n[hook.a]\ncomponent = \"{component}\"\n\n\
             [hook.a.settings]\nok_file = \"token\"\n",
            state = base.join("state").display(),
            component = component("readme-js").display(),
        ),
    )
    .unwrap();
    let c = tlsward::config::load(&config).unwrap();
    assert_eq!(c.hooks["a"].settings["ok"], "file-secret-9c1");
    assert!(!format!("{:?}", c.hooks["a"]).contains("file-secret-9c1"));
}
