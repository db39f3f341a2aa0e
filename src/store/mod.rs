//! The store: one SQLite file in the state directory, the only place with SQL.
//!
//! Owns: managed certificates and every issued version, private keys and ACME account
//! credentials encrypted at rest (age, X25519), orders, endpoints, and an append-only journal.
//! Versioned migrations (`PRAGMA user_version`). Crash safety: WAL with full sync, and every
//! issuance recorded in one transaction, so a kill at any point leaves either the old state or
//! the new one; an order's CSR key is sealed into the order before finalize is sent, so an
//! interrupted order can still be completed. The database and key files are created 0600.
//! Must not know ACME, HTTP or probing.

mod account_keys;
mod crypt;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

pub use account_keys::{AccountChange, AccountRow, PendingEnd, RetiredAccountKey};
use crypt::Crypt;
pub use crypt::{KeySource, Secret};

/// Schema migrations, applied in order; the index + 1 is the `user_version` they bring.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE certificates (
    name       TEXT PRIMARY KEY,
    domains    TEXT NOT NULL,             -- JSON array
    key_type   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE versions (
    id          INTEGER PRIMARY KEY,
    certificate TEXT NOT NULL REFERENCES certificates(name),
    serial      TEXT NOT NULL,
    sha256      TEXT NOT NULL UNIQUE,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    chain_pem   TEXT NOT NULL,
    key_sealed  BLOB NOT NULL,            -- age-encrypted PKCS#8
    ari_id      TEXT,
    order_id    INTEGER REFERENCES orders(id),
    issued_at   INTEGER NOT NULL
);
CREATE INDEX versions_by_certificate ON versions(certificate, not_before);
CREATE TABLE accounts (
    directory   TEXT PRIMARY KEY,
    account_url TEXT NOT NULL,
    creds_sealed BLOB NOT NULL,           -- age-encrypted instant-acme credentials
    created_at  INTEGER NOT NULL
);
CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    certificate TEXT NOT NULL REFERENCES certificates(name),
    url         TEXT,
    status      TEXT NOT NULL,            -- pending, valid, failed
    replaces    TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    problem     TEXT                      -- the CA's problem document (JSON)
);
CREATE TABLE endpoints (
    name        TEXT PRIMARY KEY,
    certificate TEXT NOT NULL,
    target      TEXT NOT NULL
);
CREATE TABLE journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    certificate TEXT,
    detail      TEXT NOT NULL             -- JSON
);
CREATE TRIGGER journal_append_only_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER journal_append_only_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
"#,
    r#"
-- ARI (RFC 9773): the CA's suggested renewal window and the point chosen inside it.
ALTER TABLE versions ADD COLUMN ari_start INTEGER;
ALTER TABLE versions ADD COLUMN ari_end INTEGER;
ALTER TABLE versions ADD COLUMN renew_at INTEGER;
"#,
    r#"
-- Deployments of a version to an endpoint. One open (waiting/approved/running) deployment per
-- endpoint; a newer version supersedes an open one. Rows are kept as history.
CREATE TABLE deployments (
    id          INTEGER PRIMARY KEY,
    endpoint    TEXT NOT NULL,
    version     INTEGER NOT NULL REFERENCES versions(id),
    state       TEXT NOT NULL,            -- waiting, approved, running, verified, failed,
                                          -- rolled_back, superseded
    reason      TEXT NOT NULL,            -- why it was queued: renewed, drift, manual
    not_before  INTEGER,                  -- when its change window opens; NULL = at once
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    detail      TEXT                      -- JSON: the last step's outcome
);
CREATE UNIQUE INDEX deployments_one_open ON deployments(endpoint)
    WHERE state IN ('waiting', 'approved', 'running');
"#,
    r#"
-- Resuming an order after a crash: the directory it was placed with, and the private key its
-- CSR is made with, sealed before finalize is sent (cleared once the order is over). A status
-- can now also be 'abandoned' (the problem column then says why).
ALTER TABLE orders ADD COLUMN directory TEXT;
ALTER TABLE orders ADD COLUMN key_sealed BLOB;
"#,
    account_keys::MIGRATION,
];

/// States a deployment can be in while it is still to run.
const OPEN_STATES: &str = "('waiting', 'approved', 'running')";

/// One deployment of a certificate version to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Row id.
    pub id: i64,
    /// The endpoint's name.
    pub endpoint: String,
    /// The version (row id in `versions`) it deploys.
    pub version: i64,
    /// waiting, approved, running, verified, failed, rolled_back or superseded.
    pub state: String,
    /// Why it was queued: renewed, foreign, unreachable, regressed or manual (the reconciler's
    /// `QueueReason`).
    pub reason: String,
    /// When its window opens (unix seconds); `None` = at once.
    pub not_before: Option<i64>,
    /// When it was queued.
    pub created_at: i64,
    /// When its state last changed (for a verified one: when it was verified).
    pub updated_at: i64,
}

/// A store problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The database file could not be created or secured.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The store key is missing, unreadable or not private.
    #[error("store key: {0}")]
    Key(String),
    /// Encryption or decryption failed.
    #[error("encryption: {0}")]
    Crypto(String),
    /// The database is newer than this tlsward.
    #[error("the database has schema version {found}, newer than this tlsward's {known}")]
    TooNew {
        /// Its version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// Stored data that does not parse.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// One managed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRow {
    /// Its configured name.
    pub name: String,
    /// The names it covers.
    pub domains: Vec<String>,
    /// `ecdsa-p256`, `ecdsa-p384` or `rsa-2048`.
    pub key_type: String,
}

/// One issued version of a certificate (its key stays sealed until asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Row id.
    pub id: i64,
    /// The certificate it belongs to.
    pub certificate: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// The leaf's SHA-256 fingerprint.
    pub sha256: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Leaf and chain, PEM.
    pub chain_pem: String,
    /// The ARI certificate identifier, when known.
    pub ari_id: Option<String>,
    /// When it was stored (unix seconds).
    pub issued_at: i64,
    /// The CA's suggested renewal window (unix seconds), when it has one (ARI).
    pub ari_window: Option<(i64, i64)>,
    /// The renewal time chosen inside that window.
    pub renew_at: Option<i64>,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// Sequence number.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// What happened (`order.started`, `order.valid`, `version.stored`, ...).
    pub kind: String,
    /// The certificate concerned.
    pub certificate: Option<String>,
    /// Details.
    pub detail: Value,
}

/// A new version to store.
#[derive(Debug)]
pub struct NewVersion<'a> {
    /// The certificate.
    pub certificate: &'a str,
    /// Serial, hex.
    pub serial: &'a str,
    /// Fingerprint.
    pub sha256: &'a str,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// PEM chain.
    pub chain_pem: &'a str,
    /// The private key (PKCS#8 DER), sealed before it touches the disk.
    pub key: &'a Secret,
    /// ARI identifier.
    pub ari_id: Option<&'a str>,
}

/// An order still `pending` in the store: interrupted by a crash (or still running in the one
/// process that placed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOrder {
    /// Row id.
    pub id: i64,
    /// The certificate it is for.
    pub certificate: String,
    /// The directory it was placed with (`None` for orders recorded before it was kept).
    pub directory: Option<String>,
    /// The CA's URL for it, once the CA answered the new-order request.
    pub url: Option<String>,
    /// The ARI identifier of the version it replaces, as sent.
    pub replaces: Option<String>,
    /// When it was started (unix seconds).
    pub started_at: i64,
    /// Whether the private key for its CSR is stored (sealed) with it.
    pub has_key: bool,
}

/// The SQLite store.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    crypt: Crypt,
    path: PathBuf,
}

impl Store {
    /// Opens the store at `path` with its key, creating both on first use: the database
    /// (0600, in a 0700 directory) and, for a key file, a new age identity beside it.
    ///
    /// The two are only ever created together. An existing database whose key file is gone,
    /// or an existing key (a file, or the environment) whose database is missing or empty,
    /// is refused with what to do: silently starting over would mean a new ACME account and
    /// every certificate ordered again, and a new key could decrypt nothing stored so far.
    pub fn open(path: &Path, key: &KeySource) -> Result<Self, StoreError> {
        Self::open_with(path, key, Create::IfNew)
    }

    /// Opens a store for reading, creating nothing: for commands that only look. Where no
    /// store exists yet (neither database nor key file), this is an empty store in memory,
    /// so `cert list` on a new installation lists every certificate as never issued.
    pub fn open_existing(path: &Path, key: &KeySource) -> Result<Self, StoreError> {
        let key_missing = matches!(key, KeySource::File(f) if !f.exists());
        if key_missing && !path.exists() {
            let mut conn = Connection::open_in_memory()?;
            Self::migrate(&mut conn)?;
            return Ok(Self {
                conn: Mutex::new(conn),
                crypt: Crypt::ephemeral(),
                path: path.to_owned(),
            });
        }
        Self::open_with(path, key, Create::Never)
    }

    /// Creates a new, empty store at `path` for an existing key (one from the environment, or
    /// a key file provisioned beforehand): `tlsward store init`.
    pub fn init(path: &Path, key: &KeySource) -> Result<Self, StoreError> {
        Self::open_with(path, key, Create::WithExistingKey)
    }

    fn open_with(path: &Path, key: &KeySource, create: Create) -> Result<Self, StoreError> {
        let file_err = |why: String| StoreError::File {
            path: path.to_owned(),
            why,
        };
        let key_file = match key {
            KeySource::File(f) => Some(f.as_path()),
            KeySource::Env(_) => None,
        };
        let key_exists = key_file.is_none_or(Path::exists);
        // Opening an existing file creates nothing new; a missing one is created (0600) only
        // once it is clear that a new store is wanted.
        let existing = if path.exists() {
            Some(Connection::open(path)?)
        } else {
            None
        };
        let db_state = match &existing {
            None => DbState::Missing,
            Some(conn) => DbState::of(conn)?,
        };
        match (db_state, key_exists, create) {
            (DbState::Missing, false, Create::Never) => {
                return Err(file_err(
                    "no store here yet (`tlsward serve` or `tlsward cert issue` creates it)".into(),
                ));
            }
            (_, false, Create::Never) => {
                return Err(StoreError::Key(format!(
                    "{} is missing: restore it from your backup (without it the store's keys \
                     cannot be decrypted)",
                    key_file.unwrap_or(Path::new("")).display()
                )));
            }
            (DbState::Missing | DbState::Empty, true, Create::IfNew | Create::Never) => {
                let how = match db_state {
                    DbState::Missing => "is missing",
                    _ => "is empty",
                };
                let key_name = match key {
                    KeySource::File(f) => f.display().to_string(),
                    KeySource::Env(v) => format!("the key in ${v}"),
                };
                return Err(file_err(format!(
                    "the database {how}, but {key_name} exists: if the database was lost, \
                     restore it from a backup (starting over means a new ACME account and \
                     every certificate ordered again); for a new store with this key, run \
                     `tlsward store init --config FILE`"
                )));
            }
            (DbState::Missing | DbState::Empty, false, Create::WithExistingKey) => {
                return Err(StoreError::Key(format!(
                    "{} does not exist: `store init` is for an existing key; \
                     `tlsward serve` creates a store and its key together",
                    key_file.unwrap_or(Path::new("")).display()
                )));
            }
            (DbState::Initialized, _, Create::WithExistingKey) => {
                return Err(file_err("a store already exists here".into()));
            }
            _ => {}
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_private_dir(dir).map_err(|e| file_err(e.to_string()))?;
        }
        if db_state == DbState::Missing {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                // Another process created it first.
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(file_err(e.to_string())),
            }
        }
        let conn = match existing {
            Some(conn) => conn,
            None => Connection::open(path)?,
        };
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        if !key_exists {
            // The database is new, or was created by a run that stopped before it made
            // the key: a new key is safe only while nothing is sealed under an old one.
            let held = holds_data(&conn)?;
            if held > 0 {
                return Err(StoreError::Key(format!(
                    "{} is missing, but {} holds {held} sealed record(s) encrypted to it: \
                     restore the key file from your backup (a new key could not decrypt them)",
                    key_file.unwrap_or(Path::new("")).display(),
                    path.display()
                )));
            }
        }
        // The schema before the key: a run killed in between leaves a database with no data
        // and no key, which the next start completes, never a key beside an empty database.
        let mut conn = conn;
        Self::migrate(&mut conn)?;
        let crypt = Crypt::load(key)?;
        let store = Self {
            conn: Mutex::new(conn),
            crypt,
            path: path.to_owned(),
        };
        store.check_key()?;
        Ok(store)
    }

    /// Decrypts one sealed record, so a wrong key is refused at open, not at first use.
    fn check_key(&self) -> Result<(), StoreError> {
        let sealed: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT creds_sealed FROM accounts UNION ALL SELECT key_sealed FROM versions LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(sealed) = sealed {
            self.crypt.decrypt(&sealed).map_err(|_| {
                StoreError::Key(format!(
                    "the store key does not decrypt {}: is it the key this store was created with?",
                    self.path.display()
                ))
            })?;
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the missing migrations in one write transaction: a second process opening
    /// the store at the same moment waits, then finds the schema current.
    fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        for sql in MIGRATIONS.iter().skip(version as usize) {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        Ok(())
    }

    /// The schema version.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Checks the database: SQLite's own integrity check, and that every stored version
    /// belongs to a completed order with its journal entry. Returns the problems found.
    pub fn check(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut problems = Vec::new();
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if integrity != "ok" {
            problems.push(format!("integrity_check: {integrity}"));
        }
        let orphans: i64 = conn.query_row(
            "SELECT count(*) FROM versions v LEFT JOIN orders o ON o.id = v.order_id WHERE o.status IS NOT 'valid'",
            [],
            |r| r.get(0),
        )?;
        if orphans > 0 {
            problems.push(format!("{orphans} version(s) without a completed order"));
        }
        let versions: i64 = conn.query_row("SELECT count(*) FROM versions", [], |r| r.get(0))?;
        let journaled: i64 = conn.query_row(
            "SELECT count(*) FROM journal WHERE kind = 'version.stored'",
            [],
            |r| r.get(0),
        )?;
        if versions != journaled {
            problems.push(format!(
                "{versions} version(s) but {journaled} version.stored journal entries"
            ));
        }
        Ok(problems)
    }

    /// Records or updates a managed certificate's definition.
    pub fn upsert_certificate(&self, c: &CertificateRow, now: i64) -> Result<(), StoreError> {
        let domains = serde_json::to_string(&c.domains).expect("strings serialize");
        self.conn().execute(
            "INSERT INTO certificates (name, domains, key_type, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET domains = excluded.domains, key_type = excluded.key_type",
            params![c.name, domains, c.key_type, now],
        )?;
        Ok(())
    }

    /// Every managed certificate, by name.
    pub fn certificates(&self) -> Result<Vec<CertificateRow>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, domains, key_type FROM certificates ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (name, domains, key_type) = row?;
            let domains = serde_json::from_str(&domains)
                .map_err(|e| StoreError::Corrupt(format!("domains of {name}: {e}")))?;
            Ok(CertificateRow {
                name,
                domains,
                key_type,
            })
        })
        .collect()
    }

    /// Replaces the recorded endpoints (name, certificate, probe target) with the configured
    /// ones, journaling the change when there is one.
    pub fn set_endpoints(
        &self,
        endpoints: &[(String, String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current: Vec<(String, String, String)> = {
            let mut stmt =
                tx.prepare("SELECT name, certificate, target FROM endpoints ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut wanted = endpoints.to_vec();
        wanted.sort();
        if current == wanted {
            return Ok(());
        }
        tx.execute("DELETE FROM endpoints", [])?;
        for (name, certificate, target) in &wanted {
            tx.execute(
                "INSERT INTO endpoints (name, certificate, target) VALUES (?1, ?2, ?3)",
                params![name, certificate, target],
            )?;
        }
        journal_in(
            &tx,
            now,
            "endpoints.set",
            None,
            &serde_json::json!({ "endpoints": wanted.iter().map(|(n, c, t)| serde_json::json!({ "name": n, "certificate": c, "target": t })).collect::<Vec<_>>() }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The recorded endpoints: (name, certificate, target), by name.
    pub fn endpoints(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, certificate, target FROM endpoints ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends to the journal.
    pub fn journal(
        &self,
        now: i64,
        kind: &str,
        certificate: Option<&str>,
        detail: &Value,
    ) -> Result<(), StoreError> {
        journal_in(&self.conn(), now, kind, certificate, detail)
    }

    /// Journal entries, oldest first, optionally for one certificate.
    pub fn journal_entries(
        &self,
        certificate: Option<&str>,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, at, kind, certificate, detail FROM journal WHERE ?1 IS NULL OR certificate = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![certificate], |r| {
            Ok(JournalEntry {
                id: r.get(0)?,
                at: r.get(1)?,
                kind: r.get(2)?,
                certificate: r.get(3)?,
                detail: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or(Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queues `version` for `endpoint`, to run from `not_before` (its change window), and
    /// returns the deployment's id. An open deployment of the same version is kept (and its
    /// id returned); an open one of another version is superseded. Journaled, in one
    /// transaction, so a restart finds the queue as it was.
    pub fn queue_deployment(
        &self,
        endpoint: &str,
        version: i64,
        reason: &str,
        not_before: Option<i64>,
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let open: Option<(i64, i64)> = tx
            .query_row(
                &format!(
                    "SELECT id, version FROM deployments WHERE endpoint = ?1 AND state IN {OPEN_STATES}"
                ),
                params![endpoint],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let certificate: Option<String> = tx
            .query_row(
                "SELECT certificate FROM versions WHERE id = ?1",
                params![version],
                |r| r.get(0),
            )
            .optional()?;
        match open {
            Some((id, v)) if v == version => return Ok(id),
            Some((id, _)) => {
                tx.execute(
                    "UPDATE deployments SET state = 'superseded', updated_at = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
                journal_in(
                    &tx,
                    now,
                    "deployment.superseded",
                    certificate.as_deref(),
                    &serde_json::json!({ "deployment": id, "endpoint": endpoint, "by_version": version }),
                )?;
            }
            None => {}
        }
        tx.execute(
            "INSERT INTO deployments (endpoint, version, state, reason, not_before, created_at, updated_at) \
             VALUES (?1, ?2, 'waiting', ?3, ?4, ?5, ?5)",
            params![endpoint, version, reason, not_before, now],
        )?;
        let id = tx.last_insert_rowid();
        journal_in(
            &tx,
            now,
            "deployment.queued",
            certificate.as_deref(),
            &serde_json::json!({
                "deployment": id, "endpoint": endpoint, "version": version,
                "reason": reason, "not_before": not_before,
            }),
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Deployments still to run (waiting, approved or running), oldest first.
    pub fn open_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.deployments_where(&format!("state IN {OPEN_STATES}"), [])
    }

    /// Every deployment, oldest first (the history `deploy list --all` shows).
    pub fn all_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.deployments_where("1", [])
    }

    fn deployments_where(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<Deployment>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, endpoint, version, state, reason, not_before, created_at, updated_at \
             FROM deployments WHERE {filter} ORDER BY id"
        ))?;
        let rows = stmt.query_map(args, |r| {
            Ok(Deployment {
                id: r.get(0)?,
                endpoint: r.get(1)?,
                version: r.get(2)?,
                state: r.get(3)?,
                reason: r.get(4)?,
                not_before: r.get(5)?,
                created_at: r.get(6)?,
                updated_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Takes a waiting or approved deployment to `running`, journaling `detail` (why it
    /// runs now). Returns false when it is not waiting or approved any more, so two
    /// processes (the daemon and `deploy run-now`) cannot both run it.
    pub fn claim_deployment(&self, id: i64, detail: &Value, now: i64) -> Result<bool, StoreError> {
        self.move_deployment(id, "running", "('waiting', 'approved')", detail, now)
    }

    /// The newest deployment of `version` to `endpoint` that was not superseded, if any:
    /// a version that failed there is not queued again by itself.
    pub fn deployment_of(
        &self,
        endpoint: &str,
        version: i64,
    ) -> Result<Option<Deployment>, StoreError> {
        Ok(self
            .deployments_where(
                "endpoint = ?1 AND version = ?2 AND state != 'superseded'",
                params![endpoint, version],
            )?
            .pop())
    }

    /// Every deployment of `version` to `endpoint`, superseded ones included, oldest first:
    /// the history the queue rule reads (how often a regression was queued again).
    pub fn deployments_of(
        &self,
        endpoint: &str,
        version: i64,
    ) -> Result<Vec<Deployment>, StoreError> {
        self.deployments_where("endpoint = ?1 AND version = ?2", params![endpoint, version])
    }

    /// The detail recorded with a deployment's last state change.
    pub fn deployment_detail(&self, id: i64) -> Result<Value, StoreError> {
        let text: Option<String> = self.conn().query_row(
            "SELECT detail FROM deployments WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null))
    }

    /// Moves an open deployment to `state` (approved, running, verified, failed,
    /// rolled_back), journaling `detail`. Returns false when it is not open any more (already
    /// finished or superseded), so two actors cannot both finish it.
    pub fn set_deployment_state(
        &self,
        id: i64,
        state: &str,
        detail: &Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.move_deployment(id, state, OPEN_STATES, detail, now)
    }

    /// Moves a deployment in one of the `from` states (an SQL list) to `to`, journaling
    /// `deployment.<to>` with `detail`, in one transaction; false when it was in none of them.
    fn move_deployment(
        &self,
        id: i64,
        to: &str,
        from: &str,
        detail: &Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            &format!(
                "UPDATE deployments SET state = ?2, updated_at = ?3, detail = ?4 \
                 WHERE id = ?1 AND state IN {from}"
            ),
            params![id, to, now, detail.to_string()],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        let certificate: Option<String> = tx.query_row(
            "SELECT v.certificate FROM deployments d JOIN versions v ON v.id = d.version WHERE d.id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        journal_in(
            &tx,
            now,
            &format!("deployment.{to}"),
            certificate.as_deref(),
            &serde_json::json!({ "deployment": id, "detail": detail }),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Starts an order: a row in `pending` state and a journal entry, in one transaction.
    pub fn begin_order(
        &self,
        certificate: &str,
        replaces: Option<&str>,
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO orders (certificate, status, replaces, started_at) VALUES (?1, 'pending', ?2, ?3)",
            params![certificate, replaces, now],
        )?;
        let id = tx.last_insert_rowid();
        journal_in(
            &tx,
            now,
            "order.started",
            Some(certificate),
            &serde_json::json!({ "order": id, "replaces": replaces }),
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Records the ACME order URL and the directory it belongs to (so an interrupted order can
    /// be found again, by the account that placed it).
    pub fn set_order_url(&self, id: i64, directory: &str, url: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE orders SET url = ?2, directory = ?3 WHERE id = ?1",
            params![id, url, directory],
        )?;
        Ok(())
    }

    /// Seals the private key an order's CSR is made with into the order, with a journal entry,
    /// in one transaction. Called before finalize is sent: a crash after the CA received it
    /// leaves the key with the order, so the certificate the CA issues can still be stored.
    pub fn seal_order_key(
        &self,
        id: i64,
        certificate: &str,
        key: &Secret,
        now: i64,
    ) -> Result<(), StoreError> {
        let sealed = self.crypt.encrypt(key)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE orders SET key_sealed = ?2 WHERE id = ?1 AND status = 'pending'",
            params![id, sealed],
        )?;
        if changed == 0 {
            return Err(StoreError::Corrupt(format!("order {id} is not pending")));
        }
        journal_in(
            &tx,
            now,
            "order.finalizing",
            Some(certificate),
            &serde_json::json!({ "order": id }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The private key sealed with a pending order, decrypted; `None` when it has none.
    pub fn order_key(&self, id: i64) -> Result<Option<Secret>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT key_sealed FROM orders WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        sealed.map(|s| self.crypt.decrypt(&s)).transpose()
    }

    /// Records that a renewal order went out without `replaces`, because the CA refused the
    /// order that named the version it replaces (`problem`), with a journal entry.
    pub fn drop_order_replaces(
        &self,
        id: i64,
        certificate: &str,
        problem: &Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let replaced: Option<String> = tx.query_row(
            "SELECT replaces FROM orders WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE orders SET replaces = NULL WHERE id = ?1",
            params![id],
        )?;
        journal_in(
            &tx,
            now,
            "order.replaces_refused",
            Some(certificate),
            &serde_json::json!({ "order": id, "replaces": replaced, "problem": problem }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a pending order abandoned: it cannot complete (`reason`, a stable label, and
    /// `detail`, e.g. the CA's problem document, are kept), with a journal entry, in one
    /// transaction. Its sealed key, if any, is dropped: no certificate was issued for it.
    /// Returns false when the order was not pending any more.
    pub fn abandon_order(
        &self,
        id: i64,
        certificate: &str,
        reason: &str,
        detail: &Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let document = serde_json::json!({ "reason": reason, "detail": detail });
        let changed = tx.execute(
            "UPDATE orders SET status = 'abandoned', finished_at = ?2, problem = ?3, key_sealed = NULL
             WHERE id = ?1 AND status = 'pending'",
            params![id, now, document.to_string()],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        journal_in(
            &tx,
            now,
            "order.abandoned",
            Some(certificate),
            &serde_json::json!({ "order": id, "reason": reason, "detail": detail }),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Marks an order failed with the CA's problem document.
    pub fn fail_order(
        &self,
        id: i64,
        certificate: &str,
        problem: &Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE orders SET status = 'failed', finished_at = ?2, problem = ?3, key_sealed = NULL
             WHERE id = ?1",
            params![id, now, problem.to_string()],
        )?;
        journal_in(
            &tx,
            now,
            "order.failed",
            Some(certificate),
            &serde_json::json!({ "order": id, "problem": problem }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a newly issued version and completes its order, atomically: after a crash
    /// there is either no trace of the version and the order is still pending, or both.
    pub fn complete_order(
        &self,
        order: i64,
        v: &NewVersion<'_>,
        now: i64,
    ) -> Result<i64, StoreError> {
        let sealed = self.crypt.encrypt(v.key)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO versions (certificate, serial, sha256, not_before, not_after, chain_pem, key_sealed, ari_id, order_id, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![v.certificate, v.serial, v.sha256, v.not_before, v.not_after, v.chain_pem, sealed, v.ari_id, order, now],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE orders SET status = 'valid', finished_at = ?2, key_sealed = NULL WHERE id = ?1",
            params![order, now],
        )?;
        journal_in(
            &tx,
            now,
            "version.stored",
            Some(v.certificate),
            &serde_json::json!({ "order": order, "version": id, "serial": v.serial, "sha256": v.sha256, "not_after": v.not_after }),
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Orders still pending (interrupted by a crash or still running), oldest first,
    /// optionally only those of one certificate.
    pub fn pending_orders(
        &self,
        certificate: Option<&str>,
    ) -> Result<Vec<PendingOrder>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, certificate, directory, url, replaces, started_at, key_sealed IS NOT NULL
             FROM orders WHERE status = 'pending' AND (?1 IS NULL OR certificate = ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![certificate], |r| {
            Ok(PendingOrder {
                id: r.get(0)?,
                certificate: r.get(1)?,
                directory: r.get(2)?,
                url: r.get(3)?,
                replaces: r.get(4)?,
                started_at: r.get(5)?,
                has_key: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every version of a certificate, newest first.
    pub fn versions(&self, certificate: &str) -> Result<Vec<Version>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, certificate, serial, sha256, not_before, not_after, chain_pem, ari_id, issued_at, ari_start, ari_end, renew_at
             FROM versions WHERE certificate = ?1 ORDER BY not_before DESC, id DESC",
        )?;
        let rows = stmt.query_map(params![certificate], |r| {
            Ok(Version {
                id: r.get(0)?,
                certificate: r.get(1)?,
                serial: r.get(2)?,
                sha256: r.get(3)?,
                not_before: r.get(4)?,
                not_after: r.get(5)?,
                chain_pem: r.get(6)?,
                ari_id: r.get(7)?,
                issued_at: r.get(8)?,
                ari_window: match (r.get::<_, Option<i64>>(9)?, r.get::<_, Option<i64>>(10)?) {
                    (Some(a), Some(b)) => Some((a, b)),
                    _ => None,
                },
                renew_at: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the CA's renewal window for a version and the time chosen inside it, and
    /// journals it when it changed.
    pub fn set_renewal_window(
        &self,
        version: &Version,
        window: (i64, i64),
        renew_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        if version.ari_window == Some(window) && version.renew_at == Some(renew_at) {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE versions SET ari_start = ?2, ari_end = ?3, renew_at = ?4 WHERE id = ?1",
            params![version.id, window.0, window.1, renew_at],
        )?;
        journal_in(
            &tx,
            now,
            "ari.window",
            Some(&version.certificate),
            &serde_json::json!({ "version": version.id, "start": window.0, "end": window.1, "renew_at": renew_at }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The newest version of a certificate.
    pub fn latest(&self, certificate: &str) -> Result<Option<Version>, StoreError> {
        Ok(self.versions(certificate)?.into_iter().next())
    }

    /// The version with this fingerprint, if tlsward issued it.
    pub fn version_by_sha256(&self, sha256: &str) -> Result<Option<Version>, StoreError> {
        self.version_where("sha256", sha256)
    }

    /// A version by its row id.
    pub fn version_by_id(&self, id: i64) -> Result<Option<Version>, StoreError> {
        self.version_where("id", id)
    }

    /// The version whose unique `column` (a constant: `id` or `sha256`) equals `value`.
    fn version_where(
        &self,
        column: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<Option<Version>, StoreError> {
        let conn = self.conn();
        let found: Option<(String, i64)> = conn
            .query_row(
                &format!("SELECT certificate, id FROM versions WHERE {column} = ?1"),
                params![value],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        drop(conn);
        match found {
            Some((c, id)) => Ok(self.versions(&c)?.into_iter().find(|v| v.id == id)),
            None => Ok(None),
        }
    }

    /// The private key of a version, decrypted.
    pub fn version_key(&self, id: i64) -> Result<Secret, StoreError> {
        let sealed: Vec<u8> = self.conn().query_row(
            "SELECT key_sealed FROM versions WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        self.crypt.decrypt(&sealed)
    }

    /// The stored ACME account credentials for a directory, decrypted.
    pub fn account(&self, directory: &str) -> Result<Option<Secret>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT creds_sealed FROM accounts WHERE directory = ?1",
                params![directory],
                |r| r.get(0),
            )
            .optional()?;
        sealed.map(|s| self.crypt.decrypt(&s)).transpose()
    }

    /// Saves ACME account credentials (encrypted).
    pub fn save_account(
        &self,
        directory: &str,
        account_url: &str,
        creds: &Secret,
        now: i64,
    ) -> Result<(), StoreError> {
        let sealed = self.crypt.encrypt(creds)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO accounts (directory, account_url, creds_sealed, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(directory) DO UPDATE SET account_url = excluded.account_url, creds_sealed = excluded.creds_sealed",
            params![directory, account_url, sealed, now],
        )?;
        journal_in(
            &tx,
            now,
            "account.saved",
            None,
            &serde_json::json!({ "directory": directory, "account": account_url }),
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn journal_in(
    conn: &Connection,
    now: i64,
    kind: &str,
    certificate: Option<&str>,
    detail: &Value,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO journal (at, kind, certificate, detail) VALUES (?1, ?2, ?3, ?4)",
        params![now, kind, certificate, detail.to_string()],
    )?;
    Ok(())
}

/// What `Store::open_with` may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    /// The database and its key together, when neither exists.
    IfNew,
    /// Nothing.
    Never,
    /// A new database for a key that exists already.
    WithExistingKey,
}

/// The database file before opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbState {
    Missing,
    /// Exists but has no schema (0 bytes, or a run stopped before its first migration).
    Empty,
    Initialized,
}

impl DbState {
    fn of(conn: &Connection) -> Result<Self, rusqlite::Error> {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        Ok(if tables == 0 {
            Self::Empty
        } else {
            Self::Initialized
        })
    }
}

/// How many records of the store's content exist (accounts, certificates, versions, orders);
/// zero for a database that has no schema yet.
fn holds_data(conn: &Connection) -> Result<i64, rusqlite::Error> {
    let mut total = 0;
    for table in ["accounts", "certificates", "versions", "orders"] {
        let exists: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )?;
        if exists > 0 {
            total += conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
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
        store.complete_order(order, &v, at).unwrap()
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
        let id = store.complete_order(a, &v, 7).unwrap();
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
        assert_eq!(all[0].state, "superseded");
        // A superseded deployment cannot be finished; an open one finishes exactly once.
        let ok = serde_json::json!({ "served": "bb" });
        assert!(!store.set_deployment_state(d1, "verified", &ok, 7).unwrap());
        assert!(store.set_deployment_state(d2, "verified", &ok, 7).unwrap());
        assert!(!store.set_deployment_state(d2, "failed", &ok, 8).unwrap());
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
        let err =
            Store::open(&dir.path().join("state/tlsward.db"), &KeySource::File(key)).unwrap_err();
        assert!(
            err.to_string().contains(&format!("owned by uid {other}")),
            "{err}"
        );
    }
}
