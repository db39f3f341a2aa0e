//! Backups that restore (issue 14): `tlsward backup create`, `verify` and `restore` through
//! the real binary on a real SQLite store; files refused when truncated, altered, for another
//! identity, and restores refused into a directory that is not empty; Debian's `age` CLI
//! decrypting a backup (plain age) only with the offline identity; kill -9 during `backup
//! create` at random moments; scheduled backups in `serve` with pruning, the offsite command,
//! the restore drill and their metrics; the alert rules under promtool; and a disaster
//! recovery end to end with Pebble and nginx.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use tlsward::store::{CertificateRow, KeySource, NewVersion, Secret, Store};

use crate::util::TestCa;
use crate::util::exposition::{assert_metric, metric};
use crate::util::http::get;
use crate::util::wait::eventually;

mod recovery;

fn tlsward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsward"))
        .args(args)
        .env_remove("TLSWARD_LOG")
        .output()
        .expect("tlsward runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An age identity file (0600) in `dir`, and its recipient.
fn identity(dir: &Path, name: &str) -> (PathBuf, String) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let id = age::x25519::Identity::generate();
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    writeln!(f, "# public key: {}", id.to_public()).unwrap();
    writeln!(f, "{}", id.to_string().expose_secret()).unwrap();
    (path, id.to_public().to_string())
}

/// A config in `dir` with its store in `dir/state` and `[backup]` lines `backup`.
fn config(dir: &Path, backup: &str) -> PathBuf {
    let path = dir.join("tlsward.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = \"state/tlsward.db\"\nkey_file = \"state/store.key\"\n\n[backup]\n{backup}\n"
        ),
    )
    .unwrap();
    path
}

fn open(dir: &Path) -> Store {
    Store::open(
        &dir.join("state/tlsward.db"),
        &KeySource::File(dir.join("state/store.key")),
    )
    .unwrap()
}

/// Fills the store in `dir` as issuance would: an account, `certs` certificates with one
/// version each (a real key and chain from a test CA), and `padding` journal entries.
fn fill(dir: &Path, certs: usize, padding: usize) -> Store {
    let store = open(dir);
    let now = 1_800_000_000;
    store
        .save_account(
            "https://acme.test/dir",
            "https://acme.test/acct/1",
            &Secret::new(br#"{"id":"https://acme.test/acct/1","key_pkcs8":"AAAA"}"#.to_vec()),
            now,
        )
        .unwrap();
    let ca = TestCa::root("Backup CA");
    for i in 0..certs {
        let name = format!("site{i}");
        let domain = format!("{name}.tlsward.test");
        store
            .upsert_certificate(
                &CertificateRow {
                    name: name.clone(),
                    domains: vec![domain.clone()],
                    key_type: "ecdsa-p256".into(),
                },
                now,
            )
            .unwrap();
        let leaf = ca.leaf(&[&domain]).build();
        let order = store.begin_order(&name, None, now).unwrap();
        let sha = tlsward::cert::sha256_hex(leaf.der());
        let key = Secret::new(leaf.key.secret_der().to_vec());
        store
            .complete_order(
                order,
                &NewVersion {
                    certificate: &name,
                    serial: &format!("{i:02x}"),
                    sha256: &sha,
                    not_before: now,
                    not_after: now + 86_400 * 90,
                    chain_pem: &crate::util::pem_chain(&leaf.chain),
                    key: &key,
                    ari_id: None,
                },
                now + i as i64,
            )
            .unwrap();
    }
    // Padding in one transaction (the store's own API syncs each entry).
    let mut conn = rusqlite::Connection::open(dir.join("state/tlsward.db")).unwrap();
    let tx = conn.transaction().unwrap();
    let detail = serde_json::json!({ "padding": "x".repeat(512) }).to_string();
    for _ in 0..padding {
        tx.execute(
            "INSERT INTO journal (at, kind, certificate, detail) VALUES (?1, 'test.padding', NULL, ?2)",
            rusqlite::params![now, detail],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    store
}

/// A store with two certificates and a config naming `recipient`; returns the config.
fn setup(dir: &Path, recipient: &str) -> PathBuf {
    let path = config(dir, &format!("recipients = [\"{recipient}\"]"));
    drop(fill(dir, 2, 0));
    path
}

#[test]
fn a_backup_verifies_restores_with_new_keys_and_is_plain_age() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (offline, recipient) = identity(d, "offline.key");
    let path = setup(d, &recipient);
    let file = d.join("out/b.age");
    std::fs::create_dir(d.join("out")).unwrap();
    let out = tlsward(&[
        "backup",
        "create",
        "--config",
        path.to_str().unwrap(),
        "--to",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 certificate(s), 2 version(s), 1 account(s)"),
        "{}",
        text(&out)
    );
    assert_eq!(mode(&file), 0o600);
    // No temporary file is left beside it, and no scratch directory beside the store.
    assert_eq!(std::fs::read_dir(d.join("out")).unwrap().count(), 1);
    assert!(std::fs::read_dir(d.join("state")).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tlsward-scratch")
    }),);

    let out = tlsward(&[
        "backup",
        "verify",
        file.to_str().unwrap(),
        "--identity",
        offline.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for line in [
        "OK, it restores",
        "certificates:   2",
        "versions:       2",
        "keys checked:   2 (each matches its certificate)",
        "accounts:       1 (credentials decrypt)",
        "newest version: site1 issued",
    ] {
        assert!(t.contains(line), "{line:?} missing from\n{t}");
    }
    assert!(
        !t.contains("AGE-SECRET-KEY") && !t.contains("PRIVATE KEY"),
        "{t}"
    );

    // Restore on a "new machine": another directory, the same config shape, no key yet.
    let new = tempfile::tempdir().unwrap();
    let new_config = config(new.path(), &format!("recipients = [\"{recipient}\"]"));
    let out = tlsward(&[
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--identity",
        offline.to_str().unwrap(),
        "--config",
        new_config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mode(&new.path().join("state")), 0o700);
    assert_eq!(mode(&new.path().join("state/tlsward.db")), 0o600);
    assert_eq!(mode(&new.path().join("state/store.key")), 0o600);
    let old_key = std::fs::read(d.join("state/store.key")).unwrap();
    let new_key = std::fs::read(new.path().join("state/store.key")).unwrap();
    assert_ne!(old_key, new_key, "the restored store has a key of its own");
    let (old, restored) = (open(d), open(new.path()));
    for name in ["site0", "site1"] {
        let (a, b) = (
            old.latest(name).unwrap().unwrap(),
            restored.latest(name).unwrap().unwrap(),
        );
        assert_eq!(
            (a.id, &a.sha256, &a.chain_pem),
            (b.id, &b.sha256, &b.chain_pem)
        );
        assert_eq!(
            old.version_key(a.id).unwrap(),
            restored.version_key(b.id).unwrap()
        );
    }
    assert_eq!(
        old.account("https://acme.test/dir").unwrap(),
        restored.account("https://acme.test/dir").unwrap()
    );
    // Sealed to the new key only: the old key no longer opens it.
    let wrong = Store::open(
        &new.path().join("state/tlsward.db"),
        &KeySource::File(d.join("state/store.key")),
    );
    assert!(
        wrong.is_err(),
        "the old store key still opens the restored store"
    );
    let journal = restored.journal_entries(None).unwrap();
    let last = journal.last().unwrap();
    assert_eq!(last.kind, "backup.restored");
    assert_eq!(last.detail["file"], "b.age");
    assert!(restored.check().unwrap().is_empty());

    // Debian's age decrypts it with the offline identity, and the plain text is the container.
    let out = Command::new("age")
        .args(["--decrypt", "--identity"])
        .arg(&offline)
        .arg(&file)
        .output()
        .expect("age (Debian package age) is installed");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        out.stdout.starts_with(b"tlsward-backup\n\x01M"),
        "not the container"
    );
    // Not with another identity, nor with the store's own key.
    let (other, _) = identity(d, "other.key");
    for id in [other, d.join("state/store.key")] {
        let out = Command::new("age")
            .args(["--decrypt", "--identity"])
            .arg(&id)
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "age decrypted with {}", id.display());
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn truncated_altered_foreign_files_and_occupied_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (offline, recipient) = identity(d, "offline.key");
    let path = setup(d, &recipient);
    let good = d.join("good.age");
    let out = tlsward(&[
        "backup",
        "create",
        "--config",
        path.to_str().unwrap(),
        "--to",
        good.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read(&good).unwrap();
    let verify = |file: &Path, id: &Path| {
        tlsward(&[
            "backup",
            "verify",
            file.to_str().unwrap(),
            "--identity",
            id.to_str().unwrap(),
        ])
    };

    let truncated = d.join("truncated.age");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let out = verify(&truncated, &offline);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("truncated or altered"),
        "{}",
        text(&out)
    );

    let flipped = d.join("flipped.age");
    let mut altered = bytes.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    std::fs::write(&flipped, &altered).unwrap();
    let out = verify(&flipped, &offline);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("truncated or altered"),
        "{}",
        text(&out)
    );

    // A byte flipped in the header (the recipients' stanzas): refused as well.
    let mut header = bytes.clone();
    header[40] ^= 0x01;
    std::fs::write(&flipped, &header).unwrap();
    let out = verify(&flipped, &offline);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // Another store's backup, for other recipients: this identity cannot open it.
    let other = tempfile::tempdir().unwrap();
    let (_, other_recipient) = identity(other.path(), "other.key");
    let other_config = setup(other.path(), &other_recipient);
    let foreign = d.join("foreign.age");
    let out = tlsward(&[
        "backup",
        "create",
        "--config",
        other_config.to_str().unwrap(),
        "--to",
        foreign.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = verify(&foreign, &offline);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no identity given can decrypt it"),
        "{}",
        text(&out)
    );

    // Not an age file at all.
    std::fs::write(&flipped, b"hello").unwrap();
    let out = verify(&flipped, &offline);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not an age file"), "{}", text(&out));

    // Restore into the directory of a live store: refused, the store untouched; --force does it.
    let before = std::fs::read(d.join("state/store.key")).unwrap();
    let out = tlsward(&[
        "backup",
        "restore",
        good.to_str().unwrap(),
        "--identity",
        offline.to_str().unwrap(),
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(std::fs::read(d.join("state/store.key")).unwrap(), before);
    // A refused file is refused by restore too, before anything is written.
    let empty = tempfile::tempdir().unwrap();
    let empty_config = config(empty.path(), &format!("recipients = [\"{recipient}\"]"));
    let out = tlsward(&[
        "backup",
        "restore",
        truncated.to_str().unwrap(),
        "--identity",
        offline.to_str().unwrap(),
        "--config",
        empty_config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!empty.path().join("state/tlsward.db").exists());
    let out = tlsward(&[
        "backup",
        "restore",
        good.to_str().unwrap(),
        "--identity",
        offline.to_str().unwrap(),
        "--config",
        path.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read(d.join("state/store.key")).unwrap(),
        before,
        "--force keeps the key"
    );
    assert_eq!(open(d).latest("site1").unwrap().unwrap().serial, "01");
}

#[test]
fn the_backup_section_is_validated() {
    let cases = [
        (
            "recipients = []",
            "backup.recipients: name at least one age recipient",
        ),
        (
            "recipients = [\"age1nope\"]",
            "backup.recipients[0]: \"age1nope\" is not an age X25519 recipient",
        ),
        (
            "recipients = [\"RECIPIENT\"]\nevery = \"6h\"",
            "backup.every: needs backup.dir",
        ),
        (
            "recipients = [\"RECIPIENT\"]\nevery = \"6h\"\ndir = \"b\"\nkeep = 0",
            "backup.keep: must be between 1 and 10000",
        ),
        (
            "recipients = [\"RECIPIENT\"]\nevery = \"6h\"\ndir = \"b\"\ncommand = [\"rclone\"]",
            "backup.command: \"rclone\" is not an absolute path",
        ),
        (
            "recipients = [\"RECIPIENT\"]\nevery = \"soon\"\ndir = \"b\"",
            "backup.every: \"soon\"",
        ),
    ];
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    for (body, expected) in cases {
        let body = body.replace("RECIPIENT", &recipient);
        let err =
            tlsward::config::load_str(Path::new("/x/tlsward.toml"), &format!("[backup]\n{body}\n"))
                .expect_err(&body);
        assert!(err.to_string().contains(expected), "{body}: {err}");
    }
    let ok = tlsward::config::load_str(
        Path::new("/x/tlsward.toml"),
        &format!("[backup]\nrecipients = [\"{recipient}\"]\nevery = \"6h\"\ndir = \"b\"\ncommand = [\"/usr/bin/rclone\", \"copy\"]\n"),
    )
    .unwrap();
    let b = ok.backup.unwrap();
    let s = b.schedule.unwrap();
    assert_eq!(
        (s.every, s.dir.as_path(), s.keep),
        (Duration::from_secs(6 * 3600), Path::new("/x/b"), 14)
    );
}

/// kill -9 of `backup create` at random moments, in a bounded loop: no file in the backup
/// directory is ever accepted by `verify` unless it is complete, and the next backup works.
#[test]
fn kill_9_during_backup_create_never_leaves_an_accepted_incomplete_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (offline, recipient) = identity(d, "offline.key");
    let path = config(d, &format!("recipients = [\"{recipient}\"]"));
    // A store big enough (some MB) that a backup takes a while.
    let expected = fill(d, 3, 8000).counts().unwrap();
    let out_dir = d.join("backups");
    std::fs::create_dir(&out_dir).unwrap();
    let ids = tlsward::backup::load_identities(&offline).unwrap();
    // How long a whole backup takes here: the kills land anywhere from the start to past
    // its end, so every outcome can occur.
    let started = std::time::Instant::now();
    let first = out_dir.join("first.age");
    let out = tlsward(&[
        "backup",
        "create",
        "--config",
        path.to_str().unwrap(),
        "--to",
        first.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let whole = started.elapsed().as_millis() as u64;
    const TRIES: usize = 16;
    let (mut none, mut partial, mut complete) = (0, 0, 0);
    let mut results = Vec::new();
    for i in 0..TRIES {
        let to = out_dir.join(format!("b{i}.age"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(["backup", "create", "--config"])
            .arg(&path)
            .arg("--to")
            .arg(&to)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..whole * 3 / 2)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        // Every file this try left (the backup, or a temporary file beside it).
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&out_dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.contains(&format!("b{i}.age")) {
                continue;
            }
            match tlsward::backup::verify(&p, &ids, d) {
                Ok(s) => {
                    // (A temporary file killed between its sync and its rename is whole.)
                    assert_eq!(
                        s.manifest.counts, expected,
                        "{name} verified but is incomplete"
                    );
                    assert_eq!(s.keys_checked, 3);
                    seen.push("complete");
                }
                Err(e) => {
                    assert!(
                        name.starts_with('.'),
                        "a refused file under the final name {name}: {e}"
                    );
                    seen.push("partial (refused)");
                }
            }
        }
        match seen.as_slice() {
            [] => none += 1,
            s if s.contains(&"complete") => complete += 1,
            _ => partial += 1,
        }
        results.push(format!("try {i}: {status} -> {seen:?}"));
    }
    println!(
        "kill -9 loop (a whole backup takes {whole} ms): {TRIES} tries: {none} left nothing, {partial} left only a refused temporary file, {complete} finished\n{}",
        results.join("\n")
    );
    // The next backup succeeds (and sweeps the scratch directories the kills left).
    let to = out_dir.join("after.age");
    let out = tlsward(&[
        "backup",
        "create",
        "--config",
        path.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        tlsward::backup::verify(&to, &ids, d)
            .unwrap()
            .manifest
            .counts,
        expected
    );
    let scratch: Vec<_> = std::fs::read_dir(d.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tlsward-scratch"))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// `serve` with `[backup] every`: a backup at start and each second, pruned to `keep`, each
/// shipped by the command and verified by the drill; the metrics say so, with no key bytes.
#[tokio::test(flavor = "multi_thread")]
async fn serve_backs_up_on_schedule_ships_drills_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_offline, recipient) = identity(d, "offline.key");
    let (drill, _) = identity(d, "drill.key");
    let ship = d.join("shipped");
    std::fs::create_dir(&ship).unwrap();
    let path = config(
        d,
        &format!(
            "recipients = [\"{recipient}\"]\ndrill_identity_file = \"drill.key\"\nevery = \"1s\"\ndir = \"backups\"\nkeep = 2\ncommand = [\"/bin/cp\", \"-t\", \"{}\"]\n",
            ship.display()
        ),
    );
    drop(fill(d, 1, 0));
    let daemon = crate::util::daemon::start(&path).await;
    let addr = daemon.addr;
    eventually(30, "three shipped backups", || {
        let ship = ship.clone();
        async move { std::fs::read_dir(&ship).map_or(0, Iterator::count) >= 3 }
    })
    .await;
    let m = get(addr, "/metrics").await.body;
    let value = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{m}"))
    };
    assert!(value("tlsward_backup_last_success_timestamp_seconds") > 1.0e9);
    assert!(value("tlsward_backup_last_drill_success_timestamp_seconds") > 1.0e9);
    assert!(value("tlsward_backup_size_bytes") > 1000.0);
    for stage in ["create", "ship", "drill"] {
        assert!(
            m.contains(&format!(
                "tlsward_backup_failures_total{{stage=\"{stage}\"}} 0"
            )),
            "{stage}\n{m}"
        );
    }
    assert!(!m.contains("AGE-SECRET-KEY") && !m.contains("PRIVATE KEY"));
    drop(daemon);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept: Vec<_> = std::fs::read_dir(d.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(kept.len() <= 2, "keep = 2, found {kept:?}");
    assert_eq!(mode(&d.join("backups")), 0o700);
    // What was shipped is a whole backup the drill identity opens.
    let ids = tlsward::backup::load_identities(&drill).unwrap();
    for shipped in std::fs::read_dir(&ship).unwrap() {
        let shipped = shipped.unwrap().path();
        let s = tlsward::backup::verify(&shipped, &ids, d).unwrap();
        assert_eq!(s.keys_checked, 1);
    }
}

/// A broken offsite command is counted under `ship`; the backup itself still counts.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_offsite_command_is_counted_as_ship() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_offline, recipient) = identity(d, "offline.key");
    let path = config(
        d,
        &format!(
            "recipients = [\"{recipient}\"]\nevery = \"1h\"\ndir = \"backups\"\ncommand = [\"/bin/false\"]\n"
        ),
    );
    drop(fill(d, 1, 0));
    let daemon = crate::util::daemon::start(&path).await;
    let addr = daemon.addr;
    eventually(30, "a ship failure", || async move {
        let body = get(addr, "/metrics").await.body;
        metric(&body, "tlsward_backup_failures_total", &[("stage", "ship")]) == Some(1.0)
    })
    .await;
    let m = get(addr, "/metrics").await.body;
    assert_metric(
        &m,
        "tlsward_backup_failures_total",
        &[("stage", "create")],
        0.0,
    );
    // No drill identity: no drill series, so the drill alert has nothing to compare.
    assert_eq!(
        metric(
            &m,
            "tlsward_backup_last_drill_success_timestamp_seconds",
            &[]
        ),
        None,
        "{m}"
    );
}

#[test]
fn backup_alerts_fire_and_stay_quiet_under_promtool() {
    let alerts = Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts");
    for args in [
        &["check", "rules", "backup.rules.yml"][..],
        &["test", "rules", "tests/backup.test.yml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&alerts)
            .output()
            .expect("promtool (Debian package prometheus) is installed");
        assert!(out.status.success(), "promtool {args:?}:\n{}", text(&out));
        assert!(text(&out).contains("SUCCESS"), "{}", text(&out));
    }
}

/// Adds a version to the store in `dir` whose private key is not its certificate's: what a
/// bug or a bad restore could leave, and what verify and the drill must catch.
fn add_mismatched_version(dir: &Path) {
    let store = open(dir);
    let ca = TestCa::root("Mismatch CA");
    let (leaf, other) = (
        ca.leaf(&["bad.tlsward.test"]).build(),
        ca.leaf(&["other.tlsward.test"]).build(),
    );
    store
        .upsert_certificate(
            &CertificateRow {
                name: "bad".into(),
                domains: vec!["bad.tlsward.test".into()],
                key_type: "ecdsa-p256".into(),
            },
            1_800_000_000,
        )
        .unwrap();
    let order = store.begin_order("bad", None, 1_800_000_000).unwrap();
    store
        .complete_order(
            order,
            &NewVersion {
                certificate: "bad",
                serial: "ff",
                sha256: &tlsward::cert::sha256_hex(leaf.der()),
                not_before: 1_800_000_000,
                not_after: 1_800_000_000 + 86_400,
                chain_pem: &crate::util::pem_chain(&leaf.chain),
                key: &Secret::new(other.key.secret_der().to_vec()),
                ari_id: None,
            },
            1_800_000_000,
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_that_would_not_restore_fails_verify_and_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (offline, recipient) = identity(d, "offline.key");
    let (_drill, _) = identity(d, "drill.key");
    let path = config(
        d,
        &format!(
            "recipients = [\"{recipient}\"]\ndrill_identity_file = \"drill.key\"\nevery = \"1h\"\ndir = \"backups\"\n"
        ),
    );
    drop(fill(d, 1, 0));
    add_mismatched_version(d);
    let file = d.join("b.age");
    let out = tlsward(&[
        "backup",
        "create",
        "--config",
        path.to_str().unwrap(),
        "--to",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = tlsward(&[
        "backup",
        "verify",
        file.to_str().unwrap(),
        "--identity",
        offline.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("version 2 of bad: the private key does not match the certificate"),
        "{}",
        text(&out)
    );

    let daemon = crate::util::daemon::start(&path).await;
    let addr = daemon.addr;
    eventually(30, "a drill failure", || async move {
        let body = get(addr, "/metrics").await.body;
        metric(
            &body,
            "tlsward_backup_failures_total",
            &[("stage", "drill")],
        ) == Some(1.0)
    })
    .await;
    let m = get(addr, "/metrics").await.body;
    assert_metric(
        &m,
        "tlsward_backup_last_drill_success_timestamp_seconds",
        &[],
        0.0,
    );
    assert_ne!(
        metric(&m, "tlsward_backup_last_success_timestamp_seconds", &[]),
        Some(0.0),
        "{m}"
    );
    assert_metric(
        &m,
        "tlsward_backup_failures_total",
        &[("stage", "create")],
        0.0,
    );
}
