//! The center's agent commands through the real binary on a real SQLite store:
//! `tlsward agent token create`, `agent list`, `agent revoke`; the token is printed once
//! and stored only as its hash; the agent CA's sealed keys travel through `backup verify`
//! and `backup restore`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use age::secrecy::ExposeSecret;
use serde_json::Value;
use tlsward::agent::ca::{AgentCa, token_sha256};
use tlsward::store::{KeySource, Store, TokenRefusal};

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

/// A config in `dir` with its store in `dir/state`, plus `extra`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("tlsward.toml");
    std::fs::write(
        &path,
        format!("[store]\npath = \"state/tlsward.db\"\nkey_file = \"state/store.key\"\n{extra}\n"),
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

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn token_create(config: &Path, name: &str, extra: &[&str]) -> Output {
    let mut args = vec!["agent", "token", "create", name, "-c", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    tlsward(&args)
}

/// Every byte of the store's files (the database, its WAL), to search.
fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for f in ["state/tlsward.db", "state/tlsward.db-wal"] {
        all.extend(std::fs::read(dir.join(f)).unwrap_or_default());
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_token_is_printed_once_stored_as_its_hash_and_used_once() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    let before = time::OffsetDateTime::now_utc();
    let out = token_create(&cfg, "web-01", &["--ttl", "2h", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = json(&out);
    let keys: Vec<&str> = shown.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["agent", "ca_sha256", "expires_at", "token"]);
    assert_eq!(shown["agent"], "web-01");
    let token = shown["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43, "32 bytes, base64url without padding");
    let expires = time::OffsetDateTime::parse(
        shown["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ttl = (expires - before).whole_seconds();
    assert!((7199..=7260).contains(&ttl), "{ttl}");
    // Nothing on stderr holds the token.
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&token));

    let store = open(d.path());
    let ca = AgentCa::load_or_create(&store, 0).unwrap();
    assert_eq!(shown["ca_sha256"], ca.fingerprint());
    // The database holds only the token's hash.
    drop(store);
    let bytes = store_bytes(d.path());
    assert!(!contains(&bytes, token.as_bytes()), "the token is in the store");
    assert!(contains(&bytes, token_sha256(&token).as_bytes()));
    let store = open(d.path());
    for e in store.journal_entries(None).unwrap() {
        assert!(!e.detail.to_string().contains(&token), "{e:?}");
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(
        store.consume_agent_token(&token_sha256(&token), now).unwrap(),
        Ok("web-01".to_owned())
    );
    assert_eq!(
        store.consume_agent_token(&token_sha256(&token), now).unwrap(),
        Err(TokenRefusal::Used)
    );

    // The table shows the enroll line with the same token and fingerprint; the CA is kept.
    let out = token_create(&cfg, "web-02", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("tlsward agent enroll "))
        .unwrap_or_else(|| panic!("{table}"));
    let token2 = table
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim();
    assert_ne!(token2, token);
    assert_eq!(
        line.trim(),
        format!(
            "tlsward agent enroll --server https://CENTER:PORT --token {token2} --ca-sha256 {} --state-dir /var/lib/tlsward-agent",
            ca.fingerprint()
        )
    );
}

#[test]
fn bad_names_and_ttls_are_refused_before_anything_is_stored() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    for (name, ttl) in [("-web", "1h"), ("web 01", "1h"), ("web\u{1b}[2J", "1h"), ("web-01", "0s"), ("web-01", "31d")] {
        let out = token_create(&cfg, name, &["--ttl", ttl]);
        assert_eq!(out.status.code(), Some(3), "{name:?} {ttl}: {}", text(&out));
        assert!(!text(&out).contains('\u{1b}'), "{}", text(&out));
    }
    assert!(!d.path().join("state/tlsward.db").exists());
}

#[test]
fn list_shows_agents_with_their_endpoints_and_revoke_refuses_them() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    let c = cfg.to_str().unwrap();
    for name in ["web-02", "web-01"] {
        let out = token_create(&cfg, name, &["-o", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let out = tlsward(&["agent", "list", "-c", c, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = json(&out);
    let agents = listed.as_array().unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(
        agents[0],
        serde_json::json!({
            "agent": "web-01", "enrolled_at": null, "last_seen": null,
            "identity_not_after": null, "version": null, "revoked": false,
            "revoked_at": null, "endpoints": [],
        })
    );
    assert_eq!(agents[1]["agent"], "web-02");

    // An enrolled agent (as the agent API records it) with a hostile version string.
    let store = open(d.path());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    store
        .enroll_agent("web-01", &"ab".repeat(32), now + 86400, "age1xyz", "1.0\u{1b}[31m", now)
        .unwrap();
    drop(store);
    let out = tlsward(&["agent", "list", "-c", c, "-o", "json"]);
    let listed = json(&out);
    assert_eq!(listed[0]["version"], "1.0\u{1b}[31m");
    assert!(listed[0]["enrolled_at"].as_str().unwrap().ends_with('Z'));
    assert!(listed[0]["identity_not_after"].is_string());
    let out = tlsward(&["agent", "list", "-c", c]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains('\u{1b}'), "{table}");
    assert!(table.contains("AGENT"), "{table}");
    let row = table.lines().find(|l| l.starts_with("web-01")).unwrap();
    assert!(row.contains("enrolled"), "{row}");
    let row = table.lines().find(|l| l.starts_with("web-02")).unwrap();
    assert!(row.contains("token issued"), "{row}");

    // A token made before the revocation dies with it.
    let pending = json(&token_create(&cfg, "web-01", &["-o", "json"]));
    let out = tlsward(&["agent", "revoke", "web-01", "-c", c]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = tlsward(&["agent", "revoke", "web-99", "-c", c]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("no agent \"web-99\""), "{}", text(&out));
    let listed = json(&tlsward(&["agent", "list", "-c", c, "-o", "json"]));
    assert_eq!(listed[0]["revoked"], true);
    assert!(listed[0]["revoked_at"].is_string());
    assert_eq!(listed[1]["revoked"], false);
    let store = open(d.path());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let row = store.agent_by_identity(&"ab".repeat(32)).unwrap().unwrap();
    assert!(row.revoked_at.is_some());
    assert_eq!(
        store
            .consume_agent_token(&token_sha256(pending["token"].as_str().unwrap()), now)
            .unwrap(),
        Err(TokenRefusal::Expired)
    );
    let kinds: Vec<String> = store
        .journal_entries(None)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("agent."))
        .collect();
    assert_eq!(
        kinds,
        [
            "agent.ca_created",
            "agent.token_created",
            "agent.token_created",
            "agent.enrolled",
            "agent.token_created",
            "agent.revoked",
            "agent.refused",
        ]
    );
}

/// An age identity file (0600) in `dir`, and its recipient.
fn identity(dir: &Path) -> (PathBuf, String) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let id = age::x25519::Identity::generate();
    let path = dir.join("offline.key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    writeln!(f, "{}", id.to_string().expose_secret()).unwrap();
    (path, id.to_public().to_string())
}

#[test]
fn backups_verify_and_restore_the_agent_ca_keys() {
    let d = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (offline, recipient) = identity(keys.path());
    let backup = format!("[backup]\nrecipients = [\"{recipient}\"]");
    let cfg = config(d.path(), &backup);
    let out = token_create(&cfg, "web-01", &["-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let fingerprint = json(&out)["ca_sha256"].as_str().unwrap().to_owned();
    let signing = AgentCa::load_or_create(&open(d.path()), 0)
        .unwrap()
        .signer()
        .public_base64();

    let file = keys.path().join("good.age");
    let out = tlsward(&["backup", "create", "-c", cfg.to_str().unwrap(), "--to", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = tlsward(&["backup", "verify", file.to_str().unwrap(), "--identity", offline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Restored under a new store key: the CA's keys were re-sealed, so the same CA loads.
    let new = tempfile::tempdir().unwrap();
    let new_cfg = config(new.path(), &backup);
    let out = tlsward(&[
        "backup", "restore", file.to_str().unwrap(), "--identity", offline.to_str().unwrap(),
        "--config", new_cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_ne!(
        std::fs::read(d.path().join("state/store.key")).unwrap(),
        std::fs::read(new.path().join("state/store.key")).unwrap()
    );
    let restored = AgentCa::load_or_create(&open(new.path()), 0).unwrap();
    assert_eq!(restored.fingerprint(), fingerprint);
    assert_eq!(restored.signer().public_base64(), signing);

    // A CA whose signing key no longer decrypts fails the check, naming the agent CA.
    {
        let conn = rusqlite::Connection::open(d.path().join("state/tlsward.db")).unwrap();
        conn.execute("UPDATE agent_ca SET signing_key_sealed = x'00010203'", [])
            .unwrap();
    }
    let broken = keys.path().join("broken.age");
    let out = tlsward(&["backup", "create", "-c", cfg.to_str().unwrap(), "--to", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = tlsward(&["backup", "verify", broken.to_str().unwrap(), "--identity", offline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("the agent CA: its bundle-signing key does not decrypt"), "{}", text(&out));
}
