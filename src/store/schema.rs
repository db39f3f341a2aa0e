//! Schema and migrations, and opening a store: which files may be created when, the key
//! check, and the consistency check.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};

use super::crypt::Crypt;
use super::{KeySource, Store, StoreError};

/// How long a statement waits for a lock another connection holds before it fails with
/// "database is locked" (set before the connection's first read).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Schema migrations, applied in order; the index + 1 is the `user_version` they bring.
pub(super) const MIGRATIONS: &[&str] = &[
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
    super::account_keys::MIGRATION,
    super::agents::MIGRATION,
    super::agent_versions::MIGRATION,
    super::rollouts::MIGRATION,
];

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
            let conn = Connection::open(path)?;
            // Before the first read: another process may hold a lock for a moment (a serve
            // switching a new database to WAL); without the timeout that is an instant
            // "database is locked".
            conn.busy_timeout(BUSY_TIMEOUT)?;
            Some(conn)
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
        let mut conn = match existing {
            Some(conn) => conn,
            None => Connection::open(path)?,
        };
        // Every transaction takes the write lock when it begins, waiting for it up to the
        // busy timeout: a deferred one that has read and then writes while another process
        // (the CLI) committed in between fails at once with "database is locked", and the
        // busy timeout cannot help it.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
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
                "SELECT creds_sealed FROM accounts UNION ALL SELECT key_sealed FROM versions \
                 UNION ALL SELECT ca_key_sealed FROM agent_ca LIMIT 1",
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

/// How many records of the store's content exist (accounts, certificates, versions, orders,
/// the agent CA);
/// zero for a database that has no schema yet.
fn holds_data(conn: &Connection) -> Result<i64, rusqlite::Error> {
    let mut total = 0;
    for table in ["accounts", "certificates", "versions", "orders", "agent_ca"] {
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
