//! The stock hooks (hooks/dist/*.wasm, built by scripts/build-hooks) in their sandbox, run by
//! the real host with a temporary directory as their grant, and what they leave behind read
//! by real consumers: `openssl`, Java's `keytool`, the appliance stand-in, a TLS probe. Also
//! the failures (a failing reload rolled back, paths and hosts outside the grant), and
//! `tlsward hook run` as a hook author runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use tlsward::cert::sha256_hex;
use tlsward::hooks::{Grant, HookFailure, HookRun, HookSpec, Hooks, Rollback, Written};

use crate::util::appliance::{Appliance, ApplianceMode, Upload};
use crate::util::hooks::{component, material, run, spec};
use crate::util::probe::{facts, probe};
use crate::util::tools::{Run, cert_pubkey, fails, key_pubkey, keytool, ok, openssl, pem_certs};
use crate::util::{Leaf, TestCa, TlsServer, mode, read, real_now};

/// A root and an intermediate valid at the real clock, which openssl and keytool judge by.
struct Pki {
    root: TestCa,
    intermediate: TestCa,
}

impl Pki {
    fn new() -> Self {
        let root = TestCa::root_at("Stock Hooks Root", real_now());
        let intermediate = root.intermediate("Stock Hooks Intermediate");
        Self { root, intermediate }
    }

    /// A fresh leaf for a.test: its chain is the leaf, then the intermediate.
    fn leaf(&self) -> Leaf {
        self.intermediate.leaf(&["a.test"]).build()
    }
}

/// A temporary directory, by its canonical path (the host reports written files so).
struct Dir {
    _dir: tempfile::TempDir,
    base: PathBuf,
}

impl Dir {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().canonicalize().expect("canonical tempdir");
        Self { _dir: dir, base }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// A path inside, as the string a setting holds.
    fn setting(&self, name: &str) -> String {
        self.path(name).to_str().expect("UTF-8 tempdir").to_owned()
    }

    /// The names of the entries, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.base)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// The deadline of every run here: none of them is about time, and CPython's start-up in a
/// loaded debug build can take seconds.
const GENEROUS: Duration = Duration::from_secs(120);

/// Write access to `dir` and exactly these commands.
fn grant(dir: &Dir, commands: &[&[&str]]) -> Grant {
    Grant {
        write_paths: vec![dir.base.clone()],
        commands: commands
            .iter()
            .map(|argv| argv.iter().map(|&s| s.to_owned()).collect())
            .collect(),
        timeout: GENEROUS,
        ..Grant::default()
    }
}

/// One PEM block exactly as the host writes it: base64 in 64-column lines, LF endings.
fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn cert_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

fn key_pem(leaf: &Leaf) -> String {
    pem_block("PRIVATE KEY", leaf.key.secret_der())
}

/// `path` with the host's suffix for the previous version of a file.
fn prev(path: &str) -> String {
    format!("{path}{}", tlsward::hooks::host::PREVIOUS_SUFFIX)
}

/// The run in full, for assertion messages.
fn shown(run: &HookRun) -> String {
    let calls: Vec<String> = run
        .calls
        .iter()
        .map(|c| format!("  {}({}) -> {}", c.function, c.args, c.outcome))
        .collect();
    format!(
        "outcome: {:?}\ncalls:\n{}\noutput: {}",
        run.outcome,
        calls.join("\n"),
        run.output
    )
}

/// The summary of a run that must have succeeded.
#[track_caller]
fn succeeded(run: &HookRun) -> &str {
    match &run.outcome {
        Ok(summary) => summary,
        Err(_) => panic!("the hook should have succeeded:\n{}", shown(run)),
    }
}

/// The hook's own error message, from a run where the hook returned an error.
#[track_caller]
fn hook_error(run: &HookRun) -> &str {
    match &run.outcome {
        Err(HookFailure::Hook(message)) => message,
        _ => panic!("the hook should have returned an error:\n{}", shown(run)),
    }
}

/// The host functions called, logs left out.
fn functions(run: &HookRun) -> Vec<&'static str> {
    run.calls
        .iter()
        .map(|c| c.function)
        .filter(|&f| f != "log")
        .collect()
}

/// `(function, args, outcome)` of every call but the logs.
fn calls(run: &HookRun) -> Vec<(&str, &str, &str)> {
    run.calls
        .iter()
        .filter(|c| c.function != "log")
        .map(|c| (c.function, c.args.as_str(), c.outcome.as_str()))
        .collect()
}

/// Everything a run reports that anyone could read: the summary or error, each call's
/// arguments and outcome, the guest's output.
fn everything_reported(run: &HookRun) -> String {
    let mut all = match &run.outcome {
        Ok(s) => s.clone(),
        Err(e) => e.to_string(),
    };
    for c in &run.calls {
        all.push_str(&format!("\n{} {} {}", c.function, c.args, c.outcome));
    }
    all.push('\n');
    all.push_str(&run.output);
    all
}

/// Undoes a run as the daemon does (on a blocking thread: it runs commands).
async fn roll_back(run: &HookRun) -> Rollback {
    let (run, rt) = (run.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || Hooks::roll_back(&run, &rt, GENEROUS))
        .await
        .expect("rollback thread")
}

fn chain_der(leaf: &Leaf) -> Vec<Vec<u8>> {
    leaf.chain.iter().map(|c| c.to_vec()).collect()
}

/// The five PEM files of a pem-files deployment, by setting, with their modes.
struct PemFiles {
    cert: String,
    chain: String,
    fullchain: String,
    key: String,
    combined: String,
}

impl PemFiles {
    fn in_dir(dir: &Dir) -> Self {
        Self {
            cert: dir.setting("cert.pem"),
            chain: dir.setting("chain.pem"),
            fullchain: dir.setting("fullchain.pem"),
            key: dir.setting("key.pem"),
            combined: dir.setting("combined.pem"),
        }
    }

    /// In the hook's order: `(setting, path, format, mode)`.
    fn all(&self) -> [(&'static str, &str, &'static str, u32); 5] {
        [
            ("cert_path", self.cert.as_str(), "pem-cert", 0o644),
            ("chain_path", self.chain.as_str(), "pem-chain", 0o644),
            (
                "fullchain_path",
                self.fullchain.as_str(),
                "pem-fullchain",
                0o644,
            ),
            ("key_path", self.key.as_str(), "pem-key", 0o600),
            (
                "combined_path",
                self.combined.as_str(),
                "pem-combined",
                0o600,
            ),
        ]
    }

    fn settings(&self) -> Vec<(&'static str, &str)> {
        self.all().iter().map(|&(s, p, _, _)| (s, p)).collect()
    }

    /// What each file must hold for `leaf`, in [`Self::all`]'s order.
    fn expected(leaf: &Leaf) -> [String; 5] {
        let (cert, intermediate) = (cert_pem(&leaf.chain[0]), cert_pem(&leaf.chain[1]));
        [
            cert.clone(),
            intermediate.clone(),
            format!("{cert}{intermediate}"),
            key_pem(leaf),
            format!("{cert}{intermediate}{}", key_pem(leaf)),
        ]
    }

    /// Asserts every file holds exactly `leaf`'s PEM, with its mode.
    #[track_caller]
    fn assert_hold(&self, leaf: &Leaf) {
        for ((setting, path, _, mode_bits), expected) in
            self.all().into_iter().zip(Self::expected(leaf))
        {
            assert_eq!(read(path), expected, "{setting} {path}");
            assert_eq!(
                mode(path),
                mode_bits,
                "{setting} {path}: mode {:o}",
                mode(path)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// pem-files

#[tokio::test(flavor = "multi_thread")]
async fn pem_files_writes_what_openssl_reads_then_checks_and_reloads() {
    let pki = Pki::new();
    let dir = Dir::new();
    let files = PemFiles::in_dir(&dir);
    let reloaded = dir.setting("reloaded");
    let reload = format!("/usr/bin/touch {reloaded}");
    let grant = grant(&dir, &[&["/bin/true"], &["/usr/bin/touch", &reloaded]]);
    let mut settings = files.settings();
    settings.extend([("check", "/bin/true"), ("reload", reload.as_str())]);
    let spec = spec("web", "pem-files", grant, &settings);

    let leaf = pki.leaf();
    let first = run(&spec, material(&leaf, "web"), &[]).await;
    assert_eq!(
        succeeded(&first),
        format!(
            "wrote {}, {}, {}, {}, {}; ran /bin/true; ran /usr/bin/touch {reloaded}",
            files.cert, files.chain, files.fullchain, files.key, files.combined
        )
    );
    assert_eq!(first.reason(), "none");
    assert!(!first.denied);

    // The calls, in order: five writes (the key files 0600), then check and reload.
    let mut expected_calls: Vec<(&str, String, &str)> = files
        .all()
        .iter()
        .map(|&(_, path, format, mode)| {
            ("write-cert", format!("{format}, {path}, {mode:04o}"), "ok")
        })
        .collect();
    expected_calls.push(("run-command", "[\"/bin/true\"]".into(), "ok: exit 0"));
    expected_calls.push((
        "run-command",
        format!("[\"/usr/bin/touch\", \"{reloaded}\"]"),
        "ok: exit 0",
    ));
    let expected_calls: Vec<(&str, &str, &str)> = expected_calls
        .iter()
        .map(|(f, a, o)| (*f, a.as_str(), *o))
        .collect();
    assert_eq!(calls(&first), expected_calls, "{}", shown(&first));
    assert_eq!(
        first.commands,
        [
            vec!["/bin/true".to_owned()],
            vec!["/usr/bin/touch".to_owned(), reloaded.clone()]
        ]
    );
    assert!(Path::new(&reloaded).is_file(), "the reload command ran");
    assert_eq!(
        first.written,
        files
            .all()
            .iter()
            .map(|&(_, path, _, _)| Written {
                path: path.into(),
                root: dir.base.clone(),
                previous: None
            })
            .collect::<Vec<_>>(),
        "new files: nothing to keep"
    );

    // The files hold exactly the right PEM, with the right modes.
    files.assert_hold(&leaf);

    // Real consumers: the key is the leaf's, and the chain verifies to the root.
    let leaf_pubkey = cert_pubkey(&files.cert);
    assert_eq!(
        key_pubkey(&files.key),
        leaf_pubkey,
        "key_path matches the leaf"
    );
    assert_eq!(
        key_pubkey(&files.combined),
        leaf_pubkey,
        "combined_path's key too"
    );
    assert_eq!(
        cert_pubkey(&files.fullchain),
        leaf_pubkey,
        "fullchain starts with the leaf"
    );
    let out = ok(&mut openssl(&[
        "pkey", "-noout", "-text", "-in", &files.key,
    ]));
    assert!(out.stdout.contains("Private-Key"), "{}", out.stdout);
    let root = dir.path("root.pem");
    std::fs::write(&root, pki.root.pem()).unwrap();
    let out = ok(openssl(&["verify", "-CAfile"]).arg(&root).args([
        "-untrusted",
        &files.chain,
        &files.cert,
    ]));
    assert_eq!(out.stdout.trim(), format!("{}: OK", files.cert));
    // Without the intermediate the leaf does not verify: chain.pem is what made it work.
    fails(openssl(&["verify", "-CAfile"]).arg(&root).arg(&files.cert));

    // A second deployment replaces every file and keeps the previous one beside it.
    let old = PemFiles::expected(&leaf);
    let new_leaf = pki.leaf();
    let second = run(&spec, material(&new_leaf, "web"), &[]).await;
    succeeded(&second);
    files.assert_hold(&new_leaf);
    for ((setting, path, _, mode_bits), old) in files.all().into_iter().zip(&old) {
        assert_eq!(
            &read(prev(path)),
            old,
            "{setting}: the previous file is kept"
        );
        // The previous key stays as private as it was.
        assert_eq!(
            mode(prev(path)),
            mode_bits,
            "{setting}: the previous file's mode"
        );
    }
    assert_eq!(
        second.written,
        files
            .all()
            .iter()
            .map(|&(_, path, _, _)| Written {
                path: path.into(),
                root: dir.base.clone(),
                previous: Some(prev(path).into())
            })
            .collect::<Vec<_>>()
    );
    assert_ne!(
        cert_pubkey(&files.cert),
        leaf_pubkey,
        "a new leaf, a new key"
    );
    assert_eq!(key_pubkey(&files.key), cert_pubkey(&files.cert));
}

#[tokio::test(flavor = "multi_thread")]
async fn pem_files_failing_reload_fails_and_is_rolled_back() {
    let pki = Pki::new();
    let dir = Dir::new();
    let (cert, fullchain, key) = (
        dir.setting("cert.pem"),
        dir.setting("fullchain.pem"),
        dir.setting("key.pem"),
    );
    // cert and key exist with old content; fullchain does not exist yet.
    std::fs::write(&cert, "OLD CERT\n").unwrap();
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&key, "OLD KEY\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let grant = grant(&dir, &[&["/bin/true"], &["/bin/false"]]);
    let spec = spec(
        "web",
        "pem-files",
        grant,
        &[
            ("cert_path", &cert),
            ("fullchain_path", &fullchain),
            ("key_path", &key),
            ("check", "/bin/true"),
            ("reload", "/bin/false"),
        ],
    );
    let leaf = pki.leaf();
    let run = run(&spec, material(&leaf, "web"), &[]).await;
    let message = hook_error(&run);
    assert!(
        message.starts_with("reload command /bin/false exited with 1"),
        "{}",
        shown(&run)
    );
    assert_eq!(run.reason(), "hook_error");
    assert!(!run.denied);
    assert_eq!(
        functions(&run),
        [
            "write-cert",
            "write-cert",
            "write-cert",
            "run-command",
            "run-command"
        ]
    );
    assert_eq!(
        calls(&run)[4],
        ("run-command", "[\"/bin/false\"]", "ok: exit 1")
    );
    // The run itself leaves the new files in place (the caller decides to roll back).
    assert_eq!(read(&cert), cert_pem(leaf.der()));
    assert_eq!(read(&key), key_pem(&leaf));
    assert_eq!(read(prev(&cert)), "OLD CERT\n");
    assert_eq!(read(prev(&key)), "OLD KEY\n");

    let undo = roll_back(&run).await;
    // Newest first: the key and the cert put back, the new fullchain removed.
    assert_eq!(undo.restored, [PathBuf::from(&key), PathBuf::from(&cert)]);
    assert_eq!(undo.removed, [PathBuf::from(&fullchain)]);
    // The commands run again so the service reloads the old files (the reload still fails).
    assert_eq!(
        undo.commands,
        [
            (vec!["/bin/true".to_owned()], 0),
            (vec!["/bin/false".to_owned()], 1)
        ]
    );
    assert_eq!(undo.errors.len(), 1, "{:?}", undo.errors);
    assert!(
        undo.errors[0].contains("/bin/false") && undo.errors[0].contains("exited 1"),
        "{:?}",
        undo.errors
    );
    assert_eq!(read(&cert), "OLD CERT\n");
    assert_eq!(read(&key), "OLD KEY\n");
    assert_eq!(mode(&key), 0o600);
    assert!(!Path::new(&fullchain).exists(), "the new file is gone");
    assert_eq!(dir.names(), ["cert.pem", "key.pem"], "no leftovers");
}

#[tokio::test(flavor = "multi_thread")]
async fn pem_files_path_outside_the_grant_is_refused() {
    let pki = Pki::new();
    let dir = Dir::new();
    let elsewhere = Dir::new();
    let cert = dir.setting("cert.pem");
    let outside = elsewhere.setting("key.pem");
    let spec = spec(
        "web",
        "pem-files",
        grant(&dir, &[]),
        &[("cert_path", &cert), ("key_path", &outside)],
    );
    let run = run(&spec, material(&pki.leaf(), "web"), &[]).await;
    let message = hook_error(&run);
    // The hook's message names the setting and the path; the host's refusal follows.
    assert!(
        message.starts_with(&format!(
            "writing key_path {outside}: not allowed by the grant: {outside} is not beneath write_paths [{}]",
            dir.base.display()
        )),
        "{}",
        shown(&run)
    );
    assert_eq!(run.reason(), "access_denied");
    assert!(run.denied);
    let calls = calls(&run);
    assert_eq!(calls.len(), 2, "{}", shown(&run));
    assert_eq!(calls[0].2, "ok");
    assert!(
        calls[1].2.starts_with(&format!(
            "access-denied: {outside} is not beneath write_paths"
        )),
        "{}",
        shown(&run)
    );
    assert!(elsewhere.names().is_empty(), "nothing written outside");

    // What was written before the refusal is undone.
    let undo = roll_back(&run).await;
    assert_eq!(undo.removed, [PathBuf::from(&cert)]);
    assert!(undo.ok(), "{:?}", undo.errors);
    assert!(dir.names().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn pem_files_settings_are_checked_before_anything_is_written() {
    let pki = Pki::new();
    let dir = Dir::new();
    let (cert, key) = (dir.setting("cert.pem"), dir.setting("key.pem"));
    // Each refused by the hook before its first host call (key_mode is used after the cert
    // is written, so a bad one must be caught up front).
    for (settings, expected) in [
        (
            vec![
                ("cert_path", cert.as_str()),
                ("key_path", key.as_str()),
                ("key_mode", "0644"),
            ],
            "key_mode 0644 would give every user access to the private key",
        ),
        (
            vec![
                ("cert_path", cert.as_str()),
                ("key_path", key.as_str()),
                ("key_mode", "0601"),
            ],
            "key_mode 0601 would give every user access to the private key",
        ),
        (
            vec![
                ("cert_path", cert.as_str()),
                ("key_path", key.as_str()),
                ("key_mode", "0400"),
            ],
            "key_mode 0400 must let the owner read and write the file, like 0600",
        ),
        (
            vec![("cert_path", cert.as_str()), ("mode", "0664")],
            "mode 0664 would let group or others write",
        ),
        (
            vec![("cert_path", cert.as_str()), ("mode", "0444")],
            "mode 0444 must let the owner read and write the file, like 0644",
        ),
        (
            vec![("cert_path", "relative.pem")],
            "cert_path must be an absolute path",
        ),
        (
            vec![("cert_path", cert.as_str()), ("key_path", cert.as_str())],
            "cert_path and key_path are the same file",
        ),
        (
            vec![("cert_path", cert.as_str()), ("nope", "1")],
            "unknown setting 'nope'",
        ),
        (
            vec![("reload", "/bin/true")],
            "set at least one of cert_path",
        ),
        (
            vec![("cert_path", cert.as_str()), ("reload", "'unclosed")],
            "reload \"'unclosed\" cannot be split",
        ),
    ] {
        let spec = spec(
            "web",
            "pem-files",
            grant(&dir, &[&["/bin/true"]]),
            &settings,
        );
        let run = run(&spec, material(&pki.leaf(), "web"), &[]).await;
        let message = hook_error(&run);
        assert!(
            message.starts_with(expected),
            "{settings:?}: {}",
            shown(&run)
        );
        assert!(functions(&run).is_empty(), "{settings:?}: {}", shown(&run));
        assert!(dir.names().is_empty(), "{settings:?}: {:?}", dir.names());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pem_files_key_never_enters_the_guest() {
    let pki = Pki::new();
    let dir = Dir::new();
    let (key, combined) = (dir.setting("key.pem"), dir.setting("combined.pem"));
    let grant = grant(&dir, &[&["/bin/true"]]);
    assert!(!grant.key_access);
    let spec = spec(
        "web",
        "pem-files",
        grant,
        &[
            ("key_path", &key),
            ("combined_path", &combined),
            ("reload", "/bin/true"),
        ],
    );
    let leaf = pki.leaf();
    let run = run(&spec, material(&leaf, "web"), &[]).await;
    succeeded(&run);
    // The host wrote the key the guest never saw.
    assert_eq!(read(&key), key_pem(&leaf));
    assert!(read(&combined).ends_with(&key_pem(&leaf)));
    assert_eq!(functions(&run), ["write-cert", "write-cert", "run-command"]);
    let reported = everything_reported(&run);
    assert!(!reported.contains("PRIVATE KEY"), "{reported}");
    // Nor any stretch of the key's base64 (lines of its PEM).
    for line in key_pem(&leaf).lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !reported.contains(line),
            "key material in the report:\n{reported}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// pkcs12

const P12_PASSWORD: &str = "s3cret";

/// Reads a PKCS#12 file with openssl: the algorithms `-info` reports, the leaf and
/// intermediate, a key that is the leaf's, and a refusal of a wrong password.
fn check_pkcs12(p12: &str, leaf: &Leaf, expect_info: &[&str]) {
    let pass = format!("pass:{P12_PASSWORD}");
    let info = ok(&mut openssl(&[
        "pkcs12", "-info", "-noout", "-passin", &pass, "-in", p12,
    ]));
    // -info writes the algorithms to stderr.
    let info = format!("{}{}", info.stdout, info.stderr);
    for expected in expect_info {
        assert!(
            info.contains(expected),
            "-info should say {expected:?}:\n{info}"
        );
    }
    let certs = ok(&mut openssl(&[
        "pkcs12", "-nokeys", "-passin", &pass, "-in", p12,
    ]));
    assert_eq!(
        pem_certs(&certs.stdout),
        chain_der(leaf),
        "the leaf, then the intermediate:\n{}",
        certs.stdout
    );
    let key = ok(&mut openssl(&[
        "pkcs12", "-nocerts", "-nodes", "-passin", &pass, "-in", p12,
    ]));
    // The friendlyName is the endpoint's name.
    assert!(key.stdout.contains("friendlyName: web"), "{}", key.stdout);
    let dir = tempfile::tempdir().unwrap();
    let (key_file, leaf_file) = (dir.path().join("key.pem"), dir.path().join("leaf.pem"));
    std::fs::write(&key_file, &key.stdout).unwrap();
    std::fs::write(&leaf_file, cert_pem(leaf.der())).unwrap();
    assert_eq!(
        key_pubkey(&key_file),
        cert_pubkey(&leaf_file),
        "the key is the leaf's"
    );
    let err = fails(&mut openssl(&[
        "pkcs12",
        "-nodes",
        "-passin",
        "pass:wrong",
        "-in",
        p12,
    ]));
    assert!(
        err.contains("invalid password") || err.contains("mac verify"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pkcs12_is_read_by_openssl_modern_and_legacy() {
    let pki = Pki::new();
    let dir = Dir::new();
    let leaf = pki.leaf();
    let p12 = dir.setting("site.p12");
    let spec = spec(
        "web",
        "pkcs12",
        grant(&dir, &[]),
        &[("path", &p12), ("password", P12_PASSWORD)],
    );
    let run1 = run(&spec, material(&leaf, "web"), &[]).await;
    assert_eq!(succeeded(&run1), format!("wrote {p12}"));
    assert_eq!(
        calls(&run1),
        [(
            "write-cert",
            format!("pkcs12, {p12}, 0600, password ****").as_str(),
            "ok"
        )]
    );
    assert!(
        !everything_reported(&run1).contains(P12_PASSWORD),
        "{}",
        shown(&run1)
    );
    assert_eq!(mode(&p12), 0o600);
    check_pkcs12(
        &p12,
        &leaf,
        &[
            "MAC: sha256",
            "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC",
            "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC",
        ],
    );

    // legacy = "true": 3DES and a SHA-1 MAC, still read by OpenSSL 3 without -legacy.
    let legacy = dir.setting("legacy.pfx");
    let run2 = run(
        &spec,
        material(&leaf, "web"),
        &[("path", &legacy), ("legacy", "true")],
    )
    .await;
    assert_eq!(succeeded(&run2), format!("wrote {legacy} (legacy PKCS#12)"));
    assert_eq!(
        calls(&run2)[0].1,
        format!("pkcs12-legacy, {legacy}, 0600, password ****")
    );
    assert_eq!(mode(&legacy), 0o600);
    check_pkcs12(
        &legacy,
        &leaf,
        &[
            "MAC: sha1",
            "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC",
            "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC",
        ],
    );

    // Refused before anything is written: no password, a bad legacy value, a readable mode.
    for (extra, expected) in [
        (vec![("password", "")], "password is required"),
        (
            vec![("legacy", "yes")],
            "legacy must be \"true\" or \"false\"",
        ),
        (
            vec![("mode", "0644")],
            "mode 0644 would give every user access to the private key",
        ),
    ] {
        let mut extra = extra;
        extra.push(("path", "/nonexistent/x.p12"));
        let run = run(&spec, material(&leaf, "web"), &extra).await;
        assert!(
            hook_error(&run).starts_with(expected),
            "{extra:?}: {}",
            shown(&run)
        );
        assert!(functions(&run).is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// jks

#[tokio::test(flavor = "multi_thread")]
async fn jks_is_read_by_keytool() {
    let pki = Pki::new();
    let dir = Dir::new();
    let leaf = pki.leaf();
    let jks = dir.setting("keystore.jks");
    let spec = spec(
        "tomcat",
        "jks",
        grant(&dir, &[]),
        &[
            ("path", &jks),
            ("password", "changeit"),
            ("alias", "tomcat"),
        ],
    );
    let run = run(&spec, material(&leaf, "web"), &[]).await;
    assert_eq!(succeeded(&run), format!("wrote {jks} (alias tomcat)"));
    assert_eq!(
        calls(&run),
        [(
            "write-cert",
            format!("jks, {jks}, 0600, password ****").as_str(),
            "ok"
        )]
    );
    assert!(!everything_reported(&run).contains("changeit"));
    assert_eq!(mode(&jks), 0o600);

    let out = ok(&mut keytool(&[
        "-list",
        "-v",
        "-storetype",
        "JKS",
        "-storepass",
        "changeit",
        "-keystore",
        &jks,
    ]));
    let text = out.stdout;
    assert!(text.contains("Your keystore contains 1 entry"), "{text}");
    assert!(text.contains("Alias name: tomcat\n"), "{text}");
    assert!(text.contains("Entry type: PrivateKeyEntry"), "{text}");
    assert!(text.contains("Certificate chain length: 2"), "{text}");
    // keytool prints `SHA256: AB:CD:...` for each certificate of the chain, leaf first.
    let fingerprints: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SHA256: "))
        .map(|f| f.replace(':', "").to_ascii_lowercase())
        .collect();
    assert_eq!(
        fingerprints,
        leaf.chain.iter().map(|c| sha256_hex(c)).collect::<Vec<_>>(),
        "{text}"
    );

    let err = fails(&mut keytool(&[
        "-list",
        "-storetype",
        "JKS",
        "-storepass",
        "wrong-pass",
        "-keystore",
        &jks,
    ]));
    assert!(err.contains("password was incorrect"), "{err}");
}

// ---------------------------------------------------------------------------------------
// http-appliance, against the stand-in (tests/util/appliance.rs)

const TOKEN: &str = "stock-hook-token";
const DATA_NAME: &str = "appliance.test";

/// The appliance, trusted through an `http_ca_file`, and the data CA of its TLS listener.
struct Lab {
    appliance: Appliance,
    data_ca: TestCa,
    ca_file: PathBuf,
    url: String,
    _dir: Dir,
}

impl Lab {
    async fn start() -> Self {
        // The host checks the API's certificate at the real clock.
        let api_ca = TestCa::root_at("Stock Appliance API CA", real_now());
        let api_leaf = api_ca.leaf(&["127.0.0.1"]).build();
        let data_ca = TestCa::root("Stock Appliance Data CA");
        let old = data_ca.leaf(&[DATA_NAME]).build();
        let appliance = Appliance::start(
            &api_leaf,
            TlsServer::leaf(&old),
            TOKEN,
            ApplianceMode::Honest,
        )
        .await;
        let dir = Dir::new();
        let ca_file = dir.path("api-ca.pem");
        std::fs::write(&ca_file, api_ca.pem()).unwrap();
        let url = format!("https://127.0.0.1:{}", appliance.api_port());
        Self {
            appliance,
            data_ca,
            ca_file,
            url,
            _dir: dir,
        }
    }

    fn grant(&self) -> Grant {
        Grant {
            http_hosts: vec![format!("127.0.0.1:{}", self.appliance.api_port())],
            http_ca_file: Some(self.ca_file.clone()),
            key_access: true,
            timeout: GENEROUS,
            ..Grant::default()
        }
    }

    fn spec(&self, grant: Grant) -> HookSpec {
        spec(
            "lb",
            "http-appliance",
            grant,
            &[
                ("url", &self.url),
                ("token", TOKEN),
                ("password", "upload-pass"),
                ("poll_interval", "0.05"),
            ],
        )
    }

    fn leaf(&self) -> Leaf {
        self.data_ca.leaf(&[DATA_NAME]).build()
    }

    /// The leaf the data plane serves, as a TLS probe sees it.
    async fn served(&self) -> String {
        let report = probe(self.appliance.data_plane(), DATA_NAME, self.data_ca.trust()).await;
        facts(&report).leaf.sha256.clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_appliance_uploads_activates_and_the_data_plane_serves_it() {
    let lab = Lab::start().await;
    let spec = lab.spec(lab.grant());
    let new = lab.leaf();
    let new_sha = sha256_hex(new.der());
    assert_ne!(lab.served().await, new_sha);

    let run1 = run(&spec, material(&new, "lb"), &[]).await;
    assert_eq!(succeeded(&run1), "activated certificate c1");
    let path = |p: &str| format!("{}{p}", lab.url);
    let http = |method: &str, p: &str, bytes: usize| format!("{method} {}, {bytes} bytes", path(p));
    let got = calls(&run1);
    assert_eq!(got.len(), 6, "{}", shown(&run1));
    assert_eq!((got[0].0, got[0].1), ("convert", "pkcs12, password ****"));
    let p12_len: usize = got[0]
        .2
        .strip_prefix("ok: ")
        .and_then(|s| s.strip_suffix(" bytes"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", shown(&run1)));
    assert_eq!(got[1].1, http("POST", "/api/v1/certificates", p12_len));
    assert!(got[1].2.starts_with("ok: 201"), "{}", shown(&run1));
    assert_eq!(
        got[2].1,
        http("POST", "/api/v1/certificates/c1/activate", 0)
    );
    assert!(got[2].2.starts_with("ok: 202"), "{}", shown(&run1));
    for call in &got[3..] {
        assert_eq!(
            (call.0, call.1),
            ("http", http("GET", "/api/v1/jobs/j1", 0).as_str())
        );
        assert!(call.2.starts_with("ok: 200"), "{}", shown(&run1));
    }
    let reported = everything_reported(&run1);
    for secret in ["upload-pass", TOKEN, "PRIVATE KEY"] {
        assert!(
            !reported.contains(secret),
            "{secret} in the report:\n{reported}"
        );
    }
    assert_eq!(
        lab.appliance.uploads(),
        [Upload {
            content_type: "application/x-pkcs12".into(),
            passphrase_ok: Some(true),
            sha256: Some(new_sha.clone()),
            status: 201,
        }]
    );
    assert_eq!(lab.appliance.active_sha256(), new_sha);
    assert_eq!(
        lab.served().await,
        new_sha,
        "the data plane serves the new leaf"
    );

    // format = "pem": one PEM file with the leaf, the chain and the key.
    let newer = lab.leaf();
    let run2 = run(
        &spec,
        material(&newer, "lb"),
        &[("format", "pem"), ("password", "")],
    )
    .await;
    assert_eq!(succeeded(&run2), "activated certificate c2");
    assert_eq!(calls(&run2)[0].1, "pem-combined");
    let uploads = lab.appliance.uploads();
    assert_eq!(uploads[1].content_type, "application/x-pem-file");
    assert_eq!(
        uploads[1].sha256.as_deref(),
        Some(sha256_hex(newer.der()).as_str())
    );
    assert_eq!(lab.served().await, sha256_hex(newer.der()));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_appliance_failures() {
    let lab = Lab::start().await;
    let new = lab.leaf();
    let before = lab.served().await;

    // A wrong token: the appliance answers 401 and the hook stops there.
    let spec = lab.spec(lab.grant());
    let run1 = run(&spec, material(&new, "lb"), &[("token", "wrong-token")]).await;
    let message = hook_error(&run1);
    assert!(
        message.starts_with("POST /api/v1/certificates: HTTP 401: "),
        "{}",
        shown(&run1)
    );
    assert!(!message.contains("wrong-token"), "{message}");
    assert_eq!(run1.reason(), "hook_error");
    assert_eq!(functions(&run1), ["convert", "http"]);

    // The appliance is not in http_hosts: the host refuses before connecting.
    let mut grant = lab.grant();
    grant.http_hosts = vec!["127.0.0.1:1".into()];
    let run2 = run(&lab.spec(grant), material(&new, "lb"), &[]).await;
    let message = hook_error(&run2);
    let hostport = format!("127.0.0.1:{}", lab.appliance.api_port());
    assert!(
        message.starts_with(&format!(
            "POST /api/v1/certificates: not allowed by the grant: {hostport} is not in http_hosts [127.0.0.1:1]"
        )),
        "{}",
        shown(&run2)
    );
    assert_eq!(run2.reason(), "access_denied");
    let last = calls(&run2)[1];
    assert_eq!(last.0, "http");
    assert!(last.2.starts_with("access-denied: "), "{}", shown(&run2));

    // Without key_access the hook refuses at once: it needs the key for the upload.
    let mut grant = lab.grant();
    grant.key_access = false;
    let run3 = run(&lab.spec(grant), material(&new, "lb"), &[]).await;
    assert!(
        hook_error(&run3).contains("key_access = true"),
        "{}",
        shown(&run3)
    );
    assert!(functions(&run3).is_empty(), "{}", shown(&run3));

    // The API's certificate not trusted (no http_ca_file): the TLS handshake fails.
    let mut grant = lab.grant();
    grant.http_ca_file = None;
    let run4 = run(&lab.spec(grant), material(&new, "lb"), &[]).await;
    let message = hook_error(&run4);
    assert!(
        message.starts_with(
            "POST /api/v1/certificates: failed: the server's certificate was refused: \
             invalid peer certificate: UnknownIssuer; its sha256 is "
        ),
        "{}",
        shown(&run4)
    );

    assert!(
        lab.appliance.uploads().is_empty(),
        "{:?}",
        lab.appliance.uploads()
    );
    assert_eq!(lab.served().await, before, "the data plane is untouched");
}

// ---------------------------------------------------------------------------------------
// `tlsward hook run`

/// The binary's state directory: kept between test runs in the target directory, so its
/// cache of compiled hooks spares later runs the compile of the Python hook.
fn cli_state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hooks-stock-cli-state")
}

fn tlsward(args: &[&str]) -> Run {
    crate::util::tools::run(Command::new(env!("CARGO_BIN_EXE_tlsward")).args(args))
}

#[tokio::test(flavor = "multi_thread")]
async fn hook_run_command_line() {
    let pki = Pki::new();
    let dir = Dir::new();
    let out_dir = dir.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let (fullchain, key) = (dir.setting("out/fullchain.pem"), dir.setting("out/key.pem"));
    let config = dir.path("tlsward.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = \"{state}\"\n\n\
             [hook.files]\ncomponent = \"{component}\"\nwrite_paths = [\"{out}\"]\n\
             commands = [[\"/bin/true\"]]\ntimeout = \"120s\"\n\n\
             [hook.files.settings]\nfullchain_path = \"{fullchain}\"\nkey_path = \"{key}\"\n",
            state = cli_state_dir().display(),
            component = component("pem-files").display(),
            out = out_dir.display(),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let leaf = pki.leaf();
    let bundle = dir.path("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(
        bundle.join("cert.pem"),
        format!("{}{}", cert_pem(&leaf.chain[0]), cert_pem(&leaf.chain[1])),
    )
    .unwrap();
    std::fs::write(bundle.join("key.pem"), key_pem(&leaf)).unwrap();
    let bundle = bundle.to_str().unwrap();
    let hook_run = |extra: &[&str]| {
        let mut args = vec![
            "hook", "run", "files", "--config", config, "--bundle", bundle,
        ];
        args.extend(extra);
        tlsward(&args)
    };

    // Granted: exit 0, every host call listed, then the result.
    let out = hook_run(&["--settings", "reload=/bin/true"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("hook files ("), "{}", out.stdout);
    assert_eq!(
        lines[1..],
        [
            format!("  write-cert(pem-fullchain, {fullchain}, 0644) -> ok"),
            format!("  write-cert(pem-key, {key}, 0600) -> ok"),
            "  run-command([\"/bin/true\"]) -> ok: exit 0".to_owned(),
            format!("result: ok: wrote {fullchain}, {key}; ran /bin/true"),
        ],
        "{}",
        out.stdout
    );
    assert_eq!(
        read(&fullchain),
        format!("{}{}", cert_pem(&leaf.chain[0]), cert_pem(&leaf.chain[1]))
    );
    assert_eq!(read(&key), key_pem(&leaf));

    // A command outside the grant: exit 1, the refusal shown; --rollback puts the files back.
    let out = hook_run(&["--settings", "reload=/bin/sh -c id", "--rollback"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "  run-command([\"/bin/sh\", \"-c\", \"id\"]) -> access-denied: [\"/bin/sh\", \"-c\", \"id\"] is not one of the granted commands"
        ),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("result: failed (access_denied): the hook failed: reload command /bin/sh -c id: not allowed by the grant"), "{}", out.stdout);
    for path in [&key, &fullchain] {
        assert!(
            out.stdout
                .contains(&format!("  rollback: restored {path}\n")),
            "{}",
            out.stdout
        );
        assert!(!Path::new(&prev(path)).exists());
    }
    assert_eq!(read(&key), key_pem(&leaf));

    // A SEC1 ("EC PRIVATE KEY") key: a usage error (3) that says how to convert it.
    let sec1 = dir.path("sec1");
    std::fs::create_dir(&sec1).unwrap();
    std::fs::copy(dir.path("bundle/cert.pem"), sec1.join("cert.pem")).unwrap();
    ok(openssl(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-noout",
        "-out",
    ])
    .arg(sec1.join("key.pem")));
    assert!(read(sec1.join("key.pem")).contains("BEGIN EC PRIVATE KEY"));
    let out = tlsward(&[
        "hook",
        "run",
        "files",
        "--config",
        config,
        "--bundle",
        sec1.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("must be PKCS#8"), "{}", out.stderr);
    assert!(
        out.stderr.contains("openssl pkcs8 -topk8 -nocrypt"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    // An unknown hook: 3, naming the hooks there are.
    let out = tlsward(&[
        "hook", "run", "nope", "--config", config, "--bundle", bundle,
    ]);
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("has no [hook.nope] (hooks: files)"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------
// The helpers the stock hooks share on purpose

/// The stock hooks' sources.
const STOCK_HOOKS: [&str; 4] = ["pem-files", "pkcs12", "jks", "http-appliance"];

/// The hooks that write files; they carry the whole helper block.
const FILE_HOOKS: [&str; 3] = ["pem-files", "pkcs12", "jks"];

/// The comment that opens each hook's helper block, which runs to the end of the file.
const HELPERS: &str =
    "# Helpers (each stock hook carries its own copy, so it reads and builds on its own).\n";

/// The helper block of a stock hook's app.py: from the [`HELPERS`] comment to the end.
fn helper_block(hook: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hooks")
        .join(hook)
        .join("app.py");
    let source = read(&path);
    assert_eq!(
        source.matches(HELPERS).count(),
        1,
        "{}: the helper block starts with {HELPERS:?}, once",
        path.display()
    );
    let at = source.find(HELPERS).expect("counted");
    source[at..].to_owned()
}

/// The top-level definitions (`def name(` and `NAME = `) of a Python block, by name, each
/// with its text up to the next one, trailing blank lines dropped.
fn definitions(block: &str) -> Vec<(String, String)> {
    let mut defs: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let name = line
            .strip_prefix("def ")
            .and_then(|rest| rest.split('(').next())
            .or_else(|| line.split_once(" = ").map(|(n, _)| n))
            .filter(|n| {
                !line.starts_with([' ', '#']) && n.chars().all(|c| c.is_alphanumeric() || c == '_')
            });
        match (name, defs.last_mut()) {
            (Some(name), _) => defs.push((name.to_owned(), format!("{line}\n"))),
            (None, Some((_, text))) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    for (_, text) in &mut defs {
        text.truncate(text.trim_end().len());
    }
    defs
}

#[test]
fn the_stock_hooks_share_their_helper_block_verbatim() {
    // The three hooks that write files carry the same block, byte for byte.
    let reference = helper_block(FILE_HOOKS[0]);
    for hook in &FILE_HOOKS[1..] {
        let block = helper_block(hook);
        if block != reference {
            let first = reference
                .lines()
                .zip(block.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(reference.lines().count().min(block.lines().count()));
            panic!(
                "hooks/{hook}/app.py's helper block differs from hooks/{}/app.py's at its line {}:\n  {:?}\n  {:?}",
                FILE_HOOKS[0],
                first + 1,
                reference.lines().nth(first),
                block.lines().nth(first)
            );
        }
    }
    let shared = definitions(&reference);
    let names: Vec<&str> = shared.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ERROR_KINDS",
            "call",
            "read_settings",
            "parse_mode",
            "parse_command",
            "run",
            "excerpt"
        ]
    );
    // Every hook, http-appliance included, has the error mapping and the settings check as
    // they are in the others. http-appliance's excerpt is its own on purpose: it shows an
    // HTTP body (bytes), where the others show a command's output.
    for hook in STOCK_HOOKS {
        let own = definitions(&helper_block(hook));
        for name in ["ERROR_KINDS", "call", "read_settings"] {
            let theirs = shared.iter().find(|(n, _)| n == name).map(|(_, t)| t);
            let mine = own.iter().find(|(n, _)| n == name).map(|(_, t)| t);
            assert_eq!(mine, theirs, "hooks/{hook}/app.py: {name}");
        }
        for (name, text) in &own {
            let theirs = shared.iter().find(|(n, _)| n == name).map(|(_, t)| t);
            if name != "excerpt" && theirs.is_some() {
                assert_eq!(Some(text), theirs, "hooks/{hook}/app.py: {name}");
            }
        }
    }
}
