//! ACME accounts beyond the one current credential per directory: the account's row as
//! `acme account show` prints it, replacing the credentials (an import, a key rollover) in
//! one transaction with its journal entry, the replaced keys, kept sealed in their own table
//! so that a backup of the store still holds them, and the new key of a rollover under way,
//! sealed before the CA is asked, so a crash at any moment leaves the key the CA knows here.

use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::journal::journal_in;
use super::{Secret, Store, StoreError};

/// Migration 5: account keys replaced by an import or a rollover.
pub(super) const MIGRATION: &str = r#"
-- ACME account keys replaced by an import or a key rollover (RFC 8555 §7.3.5), kept sealed:
-- the old key is what a CA still knows if a rollover's answer was lost, and a backup holds it.
CREATE TABLE retired_account_keys (
    id           INTEGER PRIMARY KEY,
    directory    TEXT NOT NULL,
    account_url  TEXT NOT NULL,
    creds_sealed BLOB NOT NULL,           -- age-encrypted instant-acme credentials
    reason       TEXT NOT NULL,           -- import, rollover
    retired_at   INTEGER NOT NULL
);
-- The new key of a key rollover under way: sealed before the CA is asked, settled (made the
-- account's, or dropped) once the CA has answered or been asked which key it knows.
CREATE TABLE pending_account_keys (
    directory    TEXT PRIMARY KEY,
    creds_sealed BLOB NOT NULL,           -- age-encrypted instant-acme credentials
    started_at   INTEGER NOT NULL
);
"#;

/// The stored ACME account of a directory, without its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// The ACME directory URL.
    pub directory: String,
    /// The account URL the CA gave (the `kid`, and CAA's `accounturi`, RFC 8657).
    pub account_url: String,
    /// When this store got the account (created or imported), Unix seconds.
    pub created_at: i64,
}

/// Why an account's credentials were replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    /// An existing account key adopted from outside (`acme account import`).
    Imported,
    /// The account's key changed at the CA (`acme account rollover`).
    RolledOver,
}

impl AccountChange {
    /// Every change, for tests and docs.
    pub const ALL: [Self; 2] = [Self::Imported, Self::RolledOver];

    /// The stable name kept with a retired key.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Imported => "import",
            Self::RolledOver => "rollover",
        }
    }

    /// The journal entry's kind.
    pub const fn journal_kind(self) -> &'static str {
        match self {
            Self::Imported => "account.imported",
            Self::RolledOver => "account.rollover",
        }
    }
}

/// How a rollover's pending key ended other than by becoming the account's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingEnd {
    /// The CA refused the key change: the old key stays.
    Refused,
    /// Settled after an interruption: the CA does not know the pending key.
    Abandoned,
}

impl PendingEnd {
    /// The journal entry's kind.
    pub const fn journal_kind(self) -> &'static str {
        match self {
            Self::Refused => "account.rollover_refused",
            Self::Abandoned => "account.rollover_abandoned",
        }
    }
}

/// The journal kind of a rollover's start.
const ROLLOVER_STARTED: &str = "account.rollover_started";

/// An account key that was replaced, decrypted.
#[derive(Debug, Clone)]
pub struct RetiredAccountKey {
    /// Its row id.
    pub id: i64,
    /// The ACME directory URL.
    pub directory: String,
    /// The account URL it belonged to.
    pub account_url: String,
    /// Why it was replaced ([`AccountChange::as_str`]).
    pub reason: String,
    /// When, Unix seconds.
    pub retired_at: i64,
    /// The credentials as they were stored.
    pub creds: Secret,
}

impl Store {
    /// The stored account of `directory`, if there is one.
    pub fn account_row(&self, directory: &str) -> Result<Option<AccountRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT directory, account_url, created_at FROM accounts WHERE directory = ?1",
                params![directory],
                |r| {
                    Ok(AccountRow {
                        directory: r.get(0)?,
                        account_url: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Stores `creds` as the account of `directory`, in one transaction: the credentials it
    /// replaces (if any) go sealed into the retired keys, and the journal gets `change`'s
    /// entry with `detail`. An import sets the account's creation time to `now`; a rollover
    /// keeps it (the account is the same).
    pub fn replace_account(
        &self,
        directory: &str,
        account_url: &str,
        creds: &Secret,
        change: AccountChange,
        detail: &Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let sealed = self.crypt.encrypt(creds)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let old: Option<(String, Vec<u8>)> = tx
            .query_row(
                "SELECT account_url, creds_sealed FROM accounts WHERE directory = ?1",
                params![directory],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((old_url, old_sealed)) = old {
            tx.execute(
                "INSERT INTO retired_account_keys (directory, account_url, creds_sealed, reason, retired_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![directory, old_url, old_sealed, change.as_str(), now],
            )?;
        }
        // A pending rollover key is settled by this change: it is the new key (a rollover)
        // or belongs to the account replaced (an import), and is then kept with the retired.
        if change == AccountChange::Imported {
            tx.execute(
                "INSERT INTO retired_account_keys (directory, account_url, creds_sealed, reason, retired_at)
                 SELECT p.directory, a.account_url, p.creds_sealed, 'unsettled-rollover', ?2
                 FROM pending_account_keys p, accounts a WHERE p.directory = ?1 AND a.directory = ?1",
                params![directory, now],
            )?;
        }
        tx.execute(
            "DELETE FROM pending_account_keys WHERE directory = ?1",
            params![directory],
        )?;
        tx.execute(
            "INSERT INTO accounts (directory, account_url, creds_sealed, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(directory) DO UPDATE SET account_url = excluded.account_url,
                 creds_sealed = excluded.creds_sealed,
                 created_at = CASE WHEN ?5 THEN excluded.created_at ELSE accounts.created_at END",
            params![
                directory,
                account_url,
                sealed,
                now,
                change == AccountChange::Imported
            ],
        )?;
        journal_in(&tx, now, change.journal_kind(), None, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// Seals `creds` (the new key of a rollover about to be sent) as the pending key of
    /// `directory`, journaled as `account.rollover_started`. Refused while one is pending.
    pub fn begin_account_rollover(
        &self,
        directory: &str,
        creds: &Secret,
        detail: &Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let sealed = self.crypt.encrypt(creds)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO pending_account_keys (directory, creds_sealed, started_at) VALUES (?1, ?2, ?3)",
            params![directory, sealed, now],
        )?;
        journal_in(&tx, now, ROLLOVER_STARTED, None, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// The pending rollover key of `directory`, decrypted, if a rollover is unsettled.
    pub fn pending_account_key(&self, directory: &str) -> Result<Option<Secret>, StoreError> {
        self.unseal_one(
            "SELECT creds_sealed FROM pending_account_keys WHERE directory = ?1",
            directory,
        )
    }

    /// Drops the pending rollover key of `directory` (the CA does not have it), journaled.
    pub fn end_account_rollover(
        &self,
        directory: &str,
        end: PendingEnd,
        detail: &Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM pending_account_keys WHERE directory = ?1",
            params![directory],
        )?;
        journal_in(&tx, now, end.journal_kind(), None, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// The replaced account keys of `directory`, oldest first, decrypted.
    pub fn retired_account_keys(
        &self,
        directory: &str,
    ) -> Result<Vec<RetiredAccountKey>, StoreError> {
        let rows: Vec<(i64, String, String, Vec<u8>, String, i64)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT id, directory, account_url, creds_sealed, reason, retired_at
                 FROM retired_account_keys WHERE directory = ?1 ORDER BY id",
            )?;
            stmt.query_map(params![directory], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?
        };
        rows.into_iter()
            .map(|(id, directory, account_url, sealed, reason, retired_at)| {
                Ok(RetiredAccountKey {
                    id,
                    directory,
                    account_url,
                    reason,
                    retired_at,
                    creds: self.crypt.decrypt(&sealed)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeySource;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("tlsward.db"),
            &KeySource::File(dir.path().join("store.key")),
        )
        .unwrap();
        (dir, store)
    }

    const DIR: &str = "https://ca.test/dir";

    #[test]
    fn a_rollover_keeps_the_old_key_sealed_and_the_creation_time() {
        let (dir, store) = open();
        let first = Secret::new(b"first credentials".to_vec());
        store
            .save_account(DIR, "https://ca.test/acct/1", &first, 10)
            .unwrap();
        let second = Secret::new(b"second credentials".to_vec());
        let detail = serde_json::json!({ "account": "https://ca.test/acct/1" });
        store
            .replace_account(
                DIR,
                "https://ca.test/acct/1",
                &second,
                AccountChange::RolledOver,
                &detail,
                20,
            )
            .unwrap();
        assert_eq!(store.account(DIR).unwrap().unwrap(), second);
        let row = store.account_row(DIR).unwrap().unwrap();
        assert_eq!(row.account_url, "https://ca.test/acct/1");
        assert_eq!(row.created_at, 10, "a rollover is the same account");
        let retired = store.retired_account_keys(DIR).unwrap();
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0].creds, first);
        assert_eq!(retired[0].reason, "rollover");
        assert_eq!(retired[0].retired_at, 20);
        let last = store.journal_entries(None).unwrap().pop().unwrap();
        assert_eq!(last.kind, "account.rollover");

        // Sealed at rest: neither key's bytes are in the database file.
        drop(store);
        for file in ["tlsward.db", "tlsward.db-wal"] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
            for needle in [&b"first credentials"[..], b"second credentials"] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{file}");
            }
        }
    }

    #[test]
    fn a_pending_key_is_settled_by_the_rollover_or_kept_by_an_import() {
        let (_dir, store) = open();
        let old = Secret::new(b"old".to_vec());
        let new = Secret::new(b"new".to_vec());
        let d = serde_json::json!({});
        store
            .save_account(DIR, "https://ca.test/acct/1", &old, 1)
            .unwrap();
        store.begin_account_rollover(DIR, &new, &d, 2).unwrap();
        assert!(
            store.begin_account_rollover(DIR, &new, &d, 2).is_err(),
            "one at a time"
        );
        assert_eq!(store.pending_account_key(DIR).unwrap(), Some(new.clone()));
        assert_eq!(store.account(DIR).unwrap(), Some(old.clone()), "not yet");
        store
            .replace_account(
                DIR,
                "https://ca.test/acct/1",
                &new,
                AccountChange::RolledOver,
                &d,
                3,
            )
            .unwrap();
        assert_eq!(store.pending_account_key(DIR).unwrap(), None);

        store.begin_account_rollover(DIR, &old, &d, 4).unwrap();
        store
            .end_account_rollover(DIR, PendingEnd::Refused, &d, 5)
            .unwrap();
        assert_eq!(store.pending_account_key(DIR).unwrap(), None);
        assert_eq!(store.account(DIR).unwrap(), Some(new.clone()));

        let other = Secret::new(b"pending".to_vec());
        store.begin_account_rollover(DIR, &other, &d, 6).unwrap();
        let imported = Secret::new(b"imported".to_vec());
        store
            .replace_account(
                DIR,
                "https://ca.test/acct/2",
                &imported,
                AccountChange::Imported,
                &d,
                7,
            )
            .unwrap();
        assert_eq!(store.pending_account_key(DIR).unwrap(), None);
        let reasons: Vec<(String, Secret)> = store
            .retired_account_keys(DIR)
            .unwrap()
            .into_iter()
            .map(|k| (k.reason, k.creds))
            .collect();
        assert_eq!(
            reasons,
            [
                ("rollover".to_owned(), old),
                ("import".to_owned(), new),
                ("unsettled-rollover".to_owned(), other)
            ]
        );
        let kinds: Vec<String> = store
            .journal_entries(None)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "account.saved",
                "account.rollover_started",
                "account.rollover",
                "account.rollover_started",
                "account.rollover_refused",
                "account.rollover_started",
                "account.imported"
            ]
        );
    }

    #[test]
    fn an_import_into_an_empty_store_retires_nothing_and_sets_the_creation_time() {
        let (_dir, store) = open();
        let creds = Secret::new(b"imported".to_vec());
        store
            .replace_account(
                DIR,
                "https://ca.test/acct/7",
                &creds,
                AccountChange::Imported,
                &serde_json::json!({}),
                30,
            )
            .unwrap();
        assert_eq!(store.account_row(DIR).unwrap().unwrap().created_at, 30);
        assert!(store.retired_account_keys(DIR).unwrap().is_empty());
        assert!(
            store
                .account_row("https://other.test/dir")
                .unwrap()
                .is_none()
        );
        let kinds: Vec<_> = AccountChange::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(kinds, ["import", "rollover"]);
    }
}
