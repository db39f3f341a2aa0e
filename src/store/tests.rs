//! The store's unit tests.

use rusqlite::Connection;

use super::deployments::sql_list;
use super::schema::MIGRATIONS;
use super::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("state/tlsward.db"),
        &KeySource::File(dir.path().join("state/store.key")),
    )
    .unwrap();
    (dir, store)
}

fn reopen(dir: &tempfile::TempDir) -> Store {
    Store::open(
        &dir.path().join("state/tlsward.db"),
        &KeySource::File(dir.path().join("state/store.key")),
    )
    .unwrap()
}

/// Records the managed certificate "www".
fn add_www(store: &Store) {
    let row = CertificateRow {
        name: "www".into(),
        domains: vec!["www.test".into()],
        key_type: "ecdsa-p256".into(),
    };
    store.upsert_certificate(&row, 1).unwrap();
}

/// Stores a version of "www" through an order, as the issuer does; returns its id.
fn issue(store: &Store, sha256: &str, at: i64, key: &Secret) -> i64 {
    let order = store.begin_order("www", None, at).unwrap();
    let v = NewVersion {
        certificate: "www",
        serial: "01",
        sha256,
        not_before: at,
        not_after: at + 100,
        chain_pem: "PEM",
        key,
        ari_id: None,
    };
    store.complete_order(order, &v, at).unwrap().id
}

#[test]
fn files_are_private_and_the_schema_is_current() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = open();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    for f in ["state/tlsward.db", "state/store.key"] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // Reopening migrates nothing and keeps the data.
    add_www(&store);
    drop(store);
    let again = reopen(&dir);
    assert_eq!(again.certificates().unwrap().len(), 1);
}

#[test]
fn keys_are_sealed_at_rest_and_the_journal_is_append_only() {
    let (dir, store) = open();
    add_www(&store);
    let key = Secret::new(b"-----PRIVATE KEY MATERIAL-----".to_vec());
    let id = issue(&store, "ab", 2, &key);
    assert_eq!(store.version_key(id).unwrap(), key);
    assert_eq!(store.latest("www").unwrap().unwrap().sha256, "ab");
    let raw = std::fs::read(dir.path().join("state/tlsward.db")).unwrap();
    let wal = std::fs::read(dir.path().join("state/tlsward.db-wal")).unwrap_or_default();
    let needle = b"PRIVATE KEY MATERIAL";
    assert!(
        !raw.windows(needle.len()).any(|w| w == needle)
            && !wal.windows(needle.len()).any(|w| w == needle)
    );
    let kinds: Vec<String> = store
        .journal_entries(Some("www"))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["order.started", "version.stored"]);
    let err = store.conn().execute("DELETE FROM journal", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(
        store
            .conn()
            .execute("UPDATE journal SET kind = 'x'", [])
            .is_err()
    );
    assert!(format!("{key:?}").contains("bytes") && !format!("{key:?}").contains("PRIVATE"));
}

#[test]
fn an_order_keeps_its_sealed_key_until_it_is_over_and_an_abandoned_one_says_why() {
    let (dir, store) = open();
    add_www(&store);
    let key = Secret::new(b"-----ORDER KEY MATERIAL-----".to_vec());
    let a = store.begin_order("www", Some("AKI.SERIAL"), 2).unwrap();
    store
        .set_order_url(a, "https://ca.test/dir", "https://ca.test/order/1")
        .unwrap();
    assert_eq!(store.order_key(a).unwrap(), None);
    store.seal_order_key(a, "www", &key, 3).unwrap();
    let b = store.begin_order("www", None, 4).unwrap();
    drop(store);
    // What a restart finds: both pending, the first with its URL, directory and key.
    let store = reopen(&dir);
    let pending = store.pending_orders(Some("www")).unwrap();
    assert_eq!(
        pending,
        [
            PendingOrder {
                id: a,
                certificate: "www".into(),
                directory: Some("https://ca.test/dir".into()),
                url: Some("https://ca.test/order/1".into()),
                replaces: Some("AKI.SERIAL".into()),
                started_at: 2,
                has_key: true,
            },
            PendingOrder {
                id: b,
                certificate: "www".into(),
                directory: None,
                url: None,
                replaces: None,
                started_at: 4,
                has_key: false,
            }
        ]
    );
    assert!(store.pending_orders(Some("other")).unwrap().is_empty());
    assert_eq!(store.order_key(a).unwrap(), Some(key.clone()));
    let raw = std::fs::read(dir.path().join("state/tlsward.db")).unwrap();
    let wal = std::fs::read(dir.path().join("state/tlsward.db-wal")).unwrap_or_default();
    let needle = b"ORDER KEY MATERIAL";
    assert!(
        !raw.windows(needle.len()).any(|w| w == needle)
            && !wal.windows(needle.len()).any(|w| w == needle)
    );
    // Abandoned once, with its reason; the second time it is not pending any more.
    let why = serde_json::json!({ "status": 404 });
    assert!(store.abandon_order(b, "www", "not_found", &why, 5).unwrap());
    assert!(!store.abandon_order(b, "www", "not_found", &why, 6).unwrap());
    let problem: String = store
        .conn()
        .query_row(
            "SELECT status || ' ' || problem FROM orders WHERE id = ?1",
            [b],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        problem,
        r#"abandoned {"detail":{"status":404},"reason":"not_found"}"#
    );
    // Completing the first stores the version and drops the order's copy of the key.
    let v = NewVersion {
        certificate: "www",
        serial: "01",
        sha256: "aa",
        not_before: 5,
        not_after: 105,
        chain_pem: "PEM",
        key: &key,
        ari_id: None,
    };
    let stored = store.complete_order(a, &v, 7).unwrap();
    // What it returns is what a read finds.
    assert_eq!(
        store.version_by_id(stored.id).unwrap(),
        Some(stored.clone())
    );
    assert_eq!((stored.issued_at, stored.serial.as_str()), (7, "01"));
    let id = stored.id;
    assert_eq!(store.version_key(id).unwrap(), key);
    assert_eq!(store.order_key(a).unwrap(), None);
    assert!(store.pending_orders(None).unwrap().is_empty());
    assert!(store.seal_order_key(a, "www", &key, 8).is_err());
    let kinds: Vec<String> = store
        .journal_entries(Some("www"))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "order.started",
            "order.finalizing",
            "order.started",
            "order.abandoned",
            "version.stored"
        ]
    );
    assert!(store.check().unwrap().is_empty());
}

#[test]
fn deployments_queue_supersede_survive_reopen_and_finish_once() {
    let (dir, store) = open();
    add_www(&store);
    let key = Secret::new(b"k".to_vec());
    let (v1, v2) = (issue(&store, "aa", 2, &key), issue(&store, "bb", 3, &key));
    let d1 = store
        .queue_deployment("lb", v1, "renewed", Some(50), 4)
        .unwrap();
    // Queuing the same version again keeps the one deployment.
    assert_eq!(
        store.queue_deployment("lb", v1, "drift", None, 5).unwrap(),
        d1
    );
    // Another endpoint has its own queue.
    let other = store
        .queue_deployment("mail", v1, "renewed", None, 5)
        .unwrap();
    // A newer version supersedes the waiting one.
    let d2 = store
        .queue_deployment("lb", v2, "renewed", Some(60), 6)
        .unwrap();
    assert_ne!(d1, d2);
    drop(store);
    let store = reopen(&dir);
    let queue = store.open_deployments().unwrap();
    let summary: Vec<_> = queue
        .iter()
        .map(|d| {
            (
                d.id,
                d.endpoint.as_str(),
                d.version,
                d.state.as_str(),
                d.not_before,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (other, "mail", v1, "waiting", None),
            (d2, "lb", v2, "waiting", Some(60))
        ]
    );
    let all = store.all_deployments().unwrap();
    assert_eq!(all[0].state, DeploymentState::Superseded);
    // A superseded deployment cannot be finished; an open one finishes exactly once.
    let ok = serde_json::json!({ "served": "bb" });
    assert!(
        !store
            .set_deployment_state(d1, DeploymentState::Verified, &ok, 7)
            .unwrap()
    );
    assert!(
        store
            .set_deployment_state(d2, DeploymentState::Verified, &ok, 7)
            .unwrap()
    );
    assert!(
        !store
            .set_deployment_state(d2, DeploymentState::Failed, &ok, 8)
            .unwrap()
    );
    let kinds: Vec<String> = store
        .journal_entries(Some("www"))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("deployment."))
        .collect();
    assert_eq!(
        kinds,
        [
            "deployment.queued",
            "deployment.queued",
            "deployment.superseded",
            "deployment.queued",
            "deployment.verified"
        ]
    );
}

#[test]
fn a_wrong_or_exposed_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = open();
    let creds = Secret::new(b"{\"id\":\"x\"}".to_vec());
    store
        .save_account("https://ca.test/dir", "https://ca.test/acct/1", &creds, 1)
        .unwrap();
    drop(store);
    let db = dir.path().join("state/tlsward.db");
    // A key of its own, made for another store.
    let other = dir.path().join("other/store.key");
    drop(
        Store::open(
            &dir.path().join("other/tlsward.db"),
            &KeySource::File(other.clone()),
        )
        .unwrap(),
    );
    let err = Store::open(&db, &KeySource::File(other)).unwrap_err();
    assert!(err.to_string().contains("does not decrypt"), "{err}");

    let key = dir.path().join("state/store.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Store::open(&db, &KeySource::File(key)).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

/// The files of a directory, recursively, relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn the_store_and_its_key_are_created_together_in_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = open();
    drop(store);
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("state"), 0o700);
    assert_eq!(mode("state/store.key"), 0o600);
    assert_eq!(mode("state/tlsward.db"), 0o600);
    // Read-only commands create nothing.
    let empty = tempfile::tempdir().unwrap();
    let looked = Store::open_existing(
        &empty.path().join("state/tlsward.db"),
        &KeySource::File(empty.path().join("state/store.key")),
    )
    .unwrap();
    assert!(looked.certificates().unwrap().is_empty());
    drop(looked);
    assert!(files(empty.path()).is_empty(), "{:?}", files(empty.path()));
}

#[test]
fn an_empty_or_missing_database_beside_an_existing_key_is_refused() {
    let (dir, store) = open();
    add_www(&store);
    drop(store);
    let db = dir.path().join("state/tlsward.db");
    let key = KeySource::File(dir.path().join("state/store.key"));
    let key_text = std::fs::read(dir.path().join("state/store.key")).unwrap();
    for f in ["state/tlsward.db-wal", "state/tlsward.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    // Truncated to 0 bytes (a botched copy, a full disk).
    std::fs::write(&db, b"").unwrap();
    let err = Store::open(&db, &key).unwrap_err();
    assert!(err.to_string().contains("database is empty"), "{err}");
    assert!(err.to_string().contains("store init"), "{err}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "nothing written");
    // Gone altogether.
    std::fs::remove_file(&db).unwrap();
    let err = Store::open(&db, &key).unwrap_err();
    assert!(err.to_string().contains("database is missing"), "{err}");
    assert!(!db.exists());
    assert_eq!(
        std::fs::read(dir.path().join("state/store.key")).unwrap(),
        key_text
    );
    // The operator who means it says so.
    let store = Store::init(&db, &key).unwrap();
    assert!(store.certificates().unwrap().is_empty());
    drop(store);
    assert!(
        Store::init(&db, &key).is_err(),
        "init never replaces a store"
    );
}

#[test]
fn a_lost_key_is_never_regenerated_for_a_store_with_data() {
    let (dir, store) = open();
    add_www(&store);
    let key_bytes = Secret::new(vec![7; 32]);
    issue(&store, "aa", 10, &key_bytes);
    drop(store);
    let db = dir.path().join("state/tlsward.db");
    let key_path = dir.path().join("state/store.key");
    std::fs::remove_file(&key_path).unwrap();
    for open in [Store::open, Store::open_existing] {
        let err = open(&db, &KeySource::File(key_path.clone())).unwrap_err();
        assert!(err.to_string().contains("restore"), "{err}");
        assert!(!key_path.exists(), "no new key was made");
    }
}

#[test]
fn a_store_created_by_a_run_that_stopped_before_its_key_is_finished() {
    // The database is created first; a kill before the key leaves a schema and no data.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tlsward.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(MIGRATIONS[0]).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    drop(conn);
    let key = KeySource::File(dir.path().join("store.key"));
    let store = Store::open(&db, &key).unwrap();
    add_www(&store);
    drop(store);
    assert!(dir.path().join("store.key").exists());
    assert!(Store::open_existing(&db, &key).is_ok());
}

#[test]
fn a_key_owned_by_another_user_is_refused() {
    use std::os::unix::fs::MetadataExt;
    let (dir, store) = open();
    drop(store);
    let key = dir.path().join("state/store.key");
    let me = std::fs::metadata(&key).unwrap().uid();
    let other = if me == 0 { 65534 } else { 0 };
    // Only root can give a file away; as anyone else this case cannot be set up.
    if std::os::unix::fs::chown(&key, Some(other), None).is_err() {
        assert_ne!(me, 0, "root must be able to chown");
        return;
    }
    let err = Store::open(&dir.path().join("state/tlsward.db"), &KeySource::File(key)).unwrap_err();
    assert!(
        err.to_string().contains(&format!("owned by uid {other}")),
        "{err}"
    );
}

#[test]
fn deployment_states_have_stable_names_and_one_list() {
    use DeploymentState::Superseded;
    let names: Vec<&str> = DeploymentState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "waiting",
            "approved",
            "running",
            "installed",
            "verified",
            "failed",
            "rolled_back",
            "superseded"
        ]
    );
    for s in DeploymentState::ALL {
        assert_eq!(DeploymentState::parse(s.as_str()), Some(s));
        assert_eq!(s.to_string(), s.as_str());
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        assert_eq!(
            serde_json::from_value::<DeploymentState>(s.as_str().into()).unwrap(),
            s
        );
        assert_eq!(s.is_open(), DeploymentState::OPEN.contains(&s), "{s}");
        assert_eq!(
            s.is_finished(),
            DeploymentState::FINISHED.contains(&s),
            "{s}"
        );
    }
    assert!(!Superseded.is_open() && !Superseded.is_finished());
    assert_eq!(DeploymentState::parse("rolled-back"), None);
    assert!(serde_json::from_value::<DeploymentState>("done".into()).is_err());
    // The migration's one-open-per-endpoint index names exactly the open states.
    let open = sql_list(&DeploymentState::OPEN);
    assert_eq!(open, "('waiting', 'approved', 'running', 'installed')");
    // The latest migration that recreates the index names exactly the open states.
    let index = MIGRATIONS
        .iter()
        .rev()
        .find(|m| m.contains("CREATE UNIQUE INDEX deployments_one_open"))
        .unwrap();
    assert!(
        index.contains(&format!("WHERE state IN {open};")),
        "{index}"
    );
}

#[test]
fn an_unknown_state_in_a_row_is_an_error_not_a_guess() {
    let (_dir, store) = open();
    add_www(&store);
    let v = issue(&store, "aa", 2, &Secret::new(b"k".to_vec()));
    let d = store.queue_deployment("lb", v, "renewed", None, 3).unwrap();
    // Written by a newer tlsward, say: the row is refused, not read as some other state.
    store
        .conn()
        .execute("UPDATE deployments SET state = 'paused' WHERE id = ?1", [d])
        .unwrap();
    let err = store.all_deployments().unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown deployment state \"paused\""),
        "{err}"
    );
}

#[test]
fn endpoints_are_recorded_by_name_and_journaled_only_when_they_change() {
    let (_dir, store) = open();
    let row = |name: &str, target: &str| EndpointRow {
        name: name.into(),
        certificate: "www".into(),
        target: target.into(),
    };
    let wanted = [row("web", "web.test:443"), row("lb", "lb.test:443")];
    store.set_endpoints(&wanted, 1).unwrap();
    store.set_endpoints(&wanted, 2).unwrap();
    assert_eq!(
        store.endpoints().unwrap(),
        [wanted[1].clone(), wanted[0].clone()]
    );
    store.set_endpoints(&wanted[..1], 3).unwrap();
    assert_eq!(store.endpoints().unwrap(), [wanted[0].clone()]);
    let set: Vec<_> = store
        .journal_entries(None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "endpoints.set")
        .map(|e| (e.at, e.detail))
        .collect();
    assert_eq!(set.len(), 2, "{set:?}");
    assert_eq!(
        set[0].1,
        serde_json::json!({ "endpoints": [
            { "name": "lb", "certificate": "www", "target": "lb.test:443" },
            { "name": "web", "certificate": "www", "target": "web.test:443" },
        ] })
    );
    assert_eq!(set[1].0, 3);
}

#[test]
fn a_versions_chain_is_read_back_as_der_once_and_a_bad_one_is_a_corrupt_record() {
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["www.example.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut version = Version {
        id: 7,
        certificate: "www".into(),
        serial: "01".into(),
        sha256: "ab".into(),
        not_before: 0,
        not_after: 1,
        chain_pem: format!("{}{}", leaf.pem(), leaf.pem()),
        ari_id: None,
        issued_at: 0,
        ari_window: None,
        renew_at: None,
    };
    let chain = version.chain_der().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].as_ref(), leaf.der().as_ref());
    for bad in [
        "",
        "PEM",
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    ] {
        version.chain_pem = bad.into();
        let e = version.chain_der().unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)), "{bad:?}: {e}");
        assert!(e.to_string().contains("version 7"), "{e}");
    }
}

/// Another process (the CLI) holds the write lock and commits while the serve queues a
/// deployment: the queueing waits for the lock and lands. A deferred transaction read first,
/// then wanted the write lock after the other commit and failed at once with "database is
/// locked" (its snapshot was stale), whatever the busy timeout.
#[test]
fn a_write_waits_for_another_process_s_commit_and_lands() {
    let (dir, serve) = open();
    add_www(&serve);
    let v1 = issue(&serve, "aa", 1, &Secret::new(b"k".to_vec()));
    let cli = Connection::open(dir.path().join("state/tlsward.db")).unwrap();
    cli.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    cli.execute_batch("CREATE TABLE scratch (x INTEGER)")
        .unwrap();
    cli.execute_batch("BEGIN IMMEDIATE; INSERT INTO scratch VALUES (1);")
        .unwrap();
    let committer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        cli.execute_batch("COMMIT").unwrap();
        cli
    });
    let queued = serve.queue_deployment("e1", v1, "renewed", None, 2);
    let cli = committer.join().unwrap();
    let id = queued.expect("the queueing waited for the other process's commit");
    assert_eq!(serve.open_deployment("e1").unwrap().unwrap().id, id);
    assert!(serve.open_deployment("elsewhere").unwrap().is_none());
    let n: i64 = cli
        .query_row("SELECT count(*) FROM scratch", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "the other process's write landed too");
}

#[test]
fn a_halted_rollout_resumes_its_failures_and_an_aborted_one_fails_what_waits() {
    let (dir, store) = open();
    add_www(&store);
    let key = Secret::new(vec![1, 2, 3]);
    let v = issue(&store, "aa", 1, &key);
    let a = store.queue_deployment("a", v, "renewed", None, 2).unwrap();
    let b = store.queue_deployment("b", v, "renewed", None, 2).unwrap();
    store.queue_deployment("c", v, "renewed", None, 2).unwrap();
    store
        .set_deployment_state(a, DeploymentState::RolledBack, &serde_json::json!({}), 3)
        .unwrap();
    // Not recorded yet: nothing to resume or abort.
    assert_eq!(
        store.resume_rollout("www", v, "resumed", "ops", 4).unwrap(),
        None
    );
    let row = RolloutRow {
        certificate: "www".into(),
        version: v,
        state: RolloutState::Halted,
        stage: Some(0),
        done_stages: 0,
        reason: Some("1 endpoint(s) failed".into()),
        halted_at: Some(3),
        created_at: 2,
        updated_at: 3,
    };
    store
        .save_rollout(
            &row,
            &[("rollout.halted", serde_json::json!({ "failed": ["a"] }))],
            3,
        )
        .unwrap();
    assert_eq!(reopen(&dir).rollout("www", v).unwrap(), Some(row.clone()));
    assert_eq!(
        store.resume_rollout("www", v, "resumed", "ops", 4).unwrap(),
        Some(vec!["a".to_owned()])
    );
    let again = store.deployment_of("a", v).unwrap().unwrap();
    assert_eq!(
        (again.state, again.reason.as_str()),
        (DeploymentState::Waiting, "resumed")
    );
    assert_eq!(
        store.rollout("www", v).unwrap().unwrap().state,
        RolloutState::Running
    );
    // Only a halted one resumes.
    assert_eq!(
        store.resume_rollout("www", v, "resumed", "ops", 5).unwrap(),
        None
    );
    store
        .set_deployment_state(b, DeploymentState::Running, &serde_json::json!({}), 5)
        .unwrap();
    assert_eq!(
        store.abort_rollout("www", v, "ops", 6).unwrap(),
        Some(vec!["a".to_owned(), "c".to_owned()])
    );
    assert_eq!(
        store.deployment_of("c", v).unwrap().unwrap().state,
        DeploymentState::Failed
    );
    // The running one is left to finish.
    assert_eq!(
        store.deployment_of("b", v).unwrap().unwrap().state,
        DeploymentState::Running
    );
    let latest = store.latest_rollouts().unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].state, RolloutState::Aborted);
    assert_eq!(store.abort_rollout("www", v, "ops", 7).unwrap(), None);
    let kinds: Vec<String> = store
        .journal_entries(Some("www"))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("rollout."))
        .collect();
    assert_eq!(
        kinds,
        ["rollout.halted", "rollout.resumed", "rollout.aborted"]
    );
}
