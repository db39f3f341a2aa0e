//! What backups need from the store: a consistent snapshot of the live database
//! (`VACUUM INTO`, never a copy of the file), the store's key, counts for the manifest,
//! every sealed record decrypted for a check, and a restore that re-seals every record for
//! another key.
//!
//! Knows nothing of the backup file format or its encryption (that is `crate::backup`).

use std::path::Path;

use rusqlite::{Connection, params};

use super::crypt::Crypt;
use super::{KeySource, Secret, Store, StoreError};

/// Every column holding a record sealed to the store key: (table, key column, sealed column).
const SEALED: &[(&str, &str, &str)] = &[
    ("versions", "id", "key_sealed"),
    ("accounts", "directory", "creds_sealed"),
    ("orders", "id", "key_sealed"),
    ("retired_account_keys", "id", "creds_sealed"),
    ("pending_account_keys", "directory", "creds_sealed"),
    ("agent_ca", "id", "ca_key_sealed"),
    ("agent_ca", "id", "signing_key_sealed"),
];

/// How many rows each part of a store holds (a backup's manifest carries them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Managed certificates.
    pub certificates: i64,
    /// Issued versions (each with its private key).
    pub versions: i64,
    /// ACME accounts.
    pub accounts: i64,
    /// Orders, finished or not.
    pub orders: i64,
    /// Deployments, history included.
    pub deployments: i64,
    /// Journal entries.
    pub journal: i64,
}

/// One sealed record, decrypted (or not) for a check.
#[derive(Debug)]
pub enum SealedKey {
    /// A version's private key, with the chain it must match.
    Version {
        /// The version's row id.
        id: i64,
        /// Its certificate's name.
        certificate: String,
        /// When it was issued (unix seconds).
        issued_at: i64,
        /// Its chain (PEM), leaf first.
        chain_pem: String,
        /// The decrypted PKCS#8 key, or why it did not decrypt.
        key: Result<Secret, String>,
    },
    /// An ACME account's credentials.
    Account {
        /// The directory URL it belongs to.
        directory: String,
        /// The decrypted credentials, or why they did not decrypt.
        credentials: Result<Secret, String>,
    },
    /// The CSR key of an order still in progress.
    Order {
        /// The order's row id.
        id: i64,
        /// Whether it decrypted (the error otherwise).
        key: Result<(), String>,
    },
    /// An ACME account key kept beside the account: one a rollover or an import replaced
    /// (`retired_account_keys`), or the new key of a rollover under way
    /// (`pending_account_keys`).
    AccountKey {
        /// The table it is in.
        table: &'static str,
        /// Its row (the id, or the directory of a pending key).
        row: String,
        /// Whether it decrypts, or why not.
        key: Result<(), String>,
    },
    /// The agent CA's key (with the certificate it must match) and the bundle-signing key.
    AgentCa {
        /// The CA certificate, PEM.
        ca_cert_pem: String,
        /// The decrypted CA key (PKCS#8), or why it did not decrypt.
        ca_key: Result<Secret, String>,
        /// The decrypted bundle-signing key (Ed25519 PKCS#8), or why it did not decrypt.
        signing_key: Result<Secret, String>,
    },
}

impl Store {
    /// Writes a consistent snapshot of the database to `path`, which must not exist, while
    /// other connections (a running `serve`) go on reading and writing: SQLite's
    /// `VACUUM INTO` reads inside one transaction.
    pub fn snapshot_to(&self, path: &Path) -> Result<(), StoreError> {
        let target = path.to_str().ok_or_else(|| StoreError::File {
            path: path.to_owned(),
            why: "the path is not UTF-8".into(),
        })?;
        self.conn().execute("VACUUM INTO ?1", params![target])?;
        Ok(())
    }

    /// The store's age identity, for a backup that carries it inside its own encryption.
    pub fn key_text(&self) -> Secret {
        self.crypt.identity_text()
    }

    /// How many rows each part holds.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let conn = self.conn();
        let n = |table: &str| -> Result<i64, StoreError> {
            Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
        };
        Ok(Counts {
            certificates: n("certificates")?,
            versions: n("versions")?,
            accounts: n("accounts")?,
            orders: n("orders")?,
            deployments: n("deployments")?,
            journal: n("journal")?,
        })
    }

    /// Every sealed record decrypted with the store key: version keys, account
    /// credentials, the CSR keys of orders in progress, and the agent CA's keys.
    pub fn sealed_keys(&self) -> Result<Vec<SealedKey>, StoreError> {
        let conn = self.conn();
        let mut out = Vec::new();
        let mut st = conn.prepare(
            // A version whose key an agent holds has nothing sealed here (an empty blob).
            "SELECT id, certificate, issued_at, chain_pem, key_sealed FROM versions \
             WHERE length(key_sealed) > 0 ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        for row in rows {
            let (id, certificate, issued_at, chain_pem, sealed) = row?;
            out.push(SealedKey::Version {
                id,
                certificate,
                issued_at,
                chain_pem,
                key: self.crypt.decrypt(&sealed).map_err(|e| e.to_string()),
            });
        }
        let mut st = conn.prepare("SELECT directory, creds_sealed FROM accounts")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        for row in rows {
            let (directory, sealed) = row?;
            out.push(SealedKey::Account {
                directory,
                credentials: self.crypt.decrypt(&sealed).map_err(|e| e.to_string()),
            });
        }
        let mut st =
            conn.prepare("SELECT id, key_sealed FROM orders WHERE key_sealed IS NOT NULL")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        for row in rows {
            let (id, sealed) = row?;
            out.push(SealedKey::Order {
                id,
                key: self
                    .crypt
                    .decrypt(&sealed)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            });
        }
        for (table, query) in [
            (
                "retired_account_keys",
                "SELECT CAST(id AS TEXT), creds_sealed FROM retired_account_keys",
            ),
            (
                "pending_account_keys",
                "SELECT directory, creds_sealed FROM pending_account_keys",
            ),
        ] {
            let mut st = conn.prepare(query)?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            for row in rows {
                let (row, sealed) = row?;
                out.push(SealedKey::AccountKey {
                    table,
                    row,
                    key: self
                        .crypt
                        .decrypt(&sealed)
                        .map(drop)
                        .map_err(|e| e.to_string()),
                });
            }
        }
        // A store opened from an older snapshot has the table (migrations ran at open).
        let mut st = conn
            .prepare("SELECT ca_cert_pem, ca_key_sealed, signing_key_sealed FROM agent_ca")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        for row in rows {
            let (ca_cert_pem, ca_key, signing_key) = row?;
            out.push(SealedKey::AgentCa {
                ca_cert_pem,
                ca_key: self.crypt.decrypt(&ca_key).map_err(|e| e.to_string()),
                signing_key: self.crypt.decrypt(&signing_key).map_err(|e| e.to_string()),
            });
        }
        Ok(out)
    }

    /// Restores the snapshot at `snapshot` (sealed to the identity in `old_key`) as the
    /// store at `path` with the key `key` (a key file is created if missing): every sealed
    /// record is decrypted with the old key and sealed again to the new one, in a copy
    /// beside `path` that is renamed into place only when complete. Existing database files
    /// at `path` are replaced. Then opens it and journals `backup.restored` with `detail`.
    pub fn restore_snapshot(
        snapshot: &Path,
        old_key: &KeySource,
        path: &Path,
        key: &KeySource,
        now: i64,
        detail: &serde_json::Value,
    ) -> Result<Self, StoreError> {
        let file_err = |p: &Path, why: String| StoreError::File {
            path: p.to_owned(),
            why,
        };
        let old = Crypt::load(old_key)?;
        // A key file this restore creates is removed again if the restore fails, so that a
        // second try finds the directory as the first did.
        let created_key = match key {
            KeySource::File(f) if !f.exists() => Some(f.clone()),
            _ => None,
        };
        let new = Crypt::load(key)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::files::create_private_dir(dir).map_err(|e| file_err(dir, e.to_string()))?;
        let tmp = dir.join(format!(
            ".restore.{}.{}.db",
            std::process::id(),
            fastrand::u64(..)
        ));
        let result = (|| {
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut src =
                    std::fs::File::open(snapshot).map_err(|e| file_err(snapshot, e.to_string()))?;
                let mut dst = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| file_err(&tmp, e.to_string()))?;
                std::io::copy(&mut src, &mut dst).map_err(|e| file_err(&tmp, e.to_string()))?;
                dst.sync_all().map_err(|e| file_err(&tmp, e.to_string()))?;
            }
            let mut conn = Connection::open(&tmp)?;
            reseal(&mut conn, &old, &new)?;
            drop(conn);
            for suffix in ["-wal", "-shm"] {
                let mut side = path.as_os_str().to_owned();
                side.push(suffix);
                match std::fs::remove_file(&side) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(file_err(Path::new(&side), e.to_string())),
                }
            }
            std::fs::rename(&tmp, path).map_err(|e| file_err(path, e.to_string()))?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| file_err(dir, e.to_string()))
        })();
        let _ = std::fs::remove_file(&tmp);
        if result.is_err()
            && let Some(f) = created_key
        {
            let _ = std::fs::remove_file(f);
        }
        result?;
        let store = Self::open(path, key)?;
        store.journal(now, "backup.restored", None, detail)?;
        Ok(store)
    }
}

/// Decrypts every sealed record with `old` and seals it to `new`, in one transaction.
fn reseal(conn: &mut Connection, old: &Crypt, new: &Crypt) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for (table, id, column) in SEALED {
        // A snapshot from an older schema lacks the newer tables (the store adds them when
        // it is next opened, empty).
        let present: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [table],
            |r| r.get(0),
        )?;
        if !present {
            continue;
        }
        let rows: Vec<(rusqlite::types::Value, Vec<u8>)> = {
            let mut st = tx.prepare(&format!(
                "SELECT {id}, {column} FROM {table} WHERE length({column}) > 0"
            ))?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        for (key, sealed) in rows {
            let plain = old.decrypt(&sealed)?;
            let resealed = new.encrypt(&plain)?;
            tx.execute(
                &format!("UPDATE {table} SET {column} = ?1 WHERE {id} = ?2"),
                params![resealed, key],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}
