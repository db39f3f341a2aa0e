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
mod agent_versions;
mod agents;
mod backup;
mod crypt;
mod deployments;
mod journal;
mod orders;
mod rollouts;
mod schema;
#[cfg(test)]
mod tests;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;
use serde_json::Value;

pub use crate::secret::Secret;
pub use account_keys::{AccountChange, AccountRow, PendingEnd, RetiredAccountKey};
pub use agent_versions::AgentCsr;
pub use agents::{AgentCaRow, AgentRow, TokenRefusal};
pub use backup::{Counts, SealedKey};
use crypt::Crypt;
pub use crypt::KeySource;
pub use deployments::DeploymentState;
pub use rollouts::{RolloutRow, RolloutState};

/// One deployment of a certificate version to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Row id.
    pub id: i64,
    /// The endpoint's name.
    pub endpoint: String,
    /// The version (row id in `versions`) it deploys.
    pub version: i64,
    /// Where it is in its life.
    pub state: DeploymentState,
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

/// One recorded endpoint: a place a certificate is deployed to, and the probe target that
/// shows what it serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointRow {
    /// Its configured name.
    pub name: String,
    /// The managed certificate it serves.
    pub certificate: String,
    /// The probe target (`host:port`) monitoring it.
    pub target: String,
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
    /// The key of this version is held by an agent (`key = "agent"`): the store has none.
    #[error("the key of this version is held by agent {0}")]
    KeyHeldByAgent(String),
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
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The one sealed value `sql` selects for `key` (at most one row), decrypted.
    fn unseal_one(&self, sql: &str, key: &str) -> Result<Option<Secret>, StoreError> {
        use rusqlite::OptionalExtension;
        let sealed: Option<Vec<u8>> = self.conn().query_row(sql, [key], |r| r.get(0)).optional()?;
        sealed.map(|s| self.crypt.decrypt(&s)).transpose()
    }
}
