//! Orders (placed, finalizing, completed with their version, failed or abandoned) and ACME
//! account credentials.

use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::journal::journal_in;
use super::{NewVersion, PendingOrder, Secret, Store, StoreError, Version};

impl Store {
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
    /// Returns the version as stored (no renewal window chosen yet).
    pub fn complete_order(
        &self,
        order: i64,
        v: &NewVersion<'_>,
        now: i64,
    ) -> Result<Version, StoreError> {
        let sealed = self.crypt.encrypt(v.key)?;
        self.complete(order, v, &sealed, None, now)
    }

    /// [`Self::complete_order`] for a `key = "agent"` certificate: the key stays with
    /// `holder` (the agent that sent the CSR), so `v.key` is not stored (an empty blob is),
    /// and the agent's CSR is dropped in the same transaction.
    pub fn complete_agent_order(
        &self,
        order: i64,
        v: &NewVersion<'_>,
        holder: &str,
        now: i64,
    ) -> Result<Version, StoreError> {
        self.complete(order, v, &[], Some(holder), now)
    }

    fn complete(
        &self,
        order: i64,
        v: &NewVersion<'_>,
        sealed: &[u8],
        holder: Option<&str>,
        now: i64,
    ) -> Result<Version, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO versions (certificate, serial, sha256, not_before, not_after, chain_pem, key_sealed, ari_id, order_id, issued_at, key_holder)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![v.certificate, v.serial, v.sha256, v.not_before, v.not_after, v.chain_pem, sealed, v.ari_id, order, now, holder],
        )?;
        let id = tx.last_insert_rowid();
        if holder.is_some() {
            tx.execute(
                "DELETE FROM agent_csrs WHERE certificate = ?1",
                params![v.certificate],
            )?;
        }
        tx.execute(
            "UPDATE orders SET status = 'valid', finished_at = ?2, key_sealed = NULL WHERE id = ?1",
            params![order, now],
        )?;
        journal_in(
            &tx,
            now,
            "version.stored",
            Some(v.certificate),
            &serde_json::json!({ "order": order, "version": id, "serial": v.serial, "sha256": v.sha256, "not_after": v.not_after, "key_holder": holder }),
        )?;
        tx.commit()?;
        Ok(Version {
            id,
            certificate: v.certificate.to_owned(),
            serial: v.serial.to_owned(),
            sha256: v.sha256.to_owned(),
            not_before: v.not_before,
            not_after: v.not_after,
            chain_pem: v.chain_pem.to_owned(),
            ari_id: v.ari_id.map(str::to_owned),
            issued_at: now,
            ari_window: None,
            renew_at: None,
        })
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

    /// The stored ACME account credentials for a directory, decrypted.
    pub fn account(&self, directory: &str) -> Result<Option<Secret>, StoreError> {
        self.unseal_one(
            "SELECT creds_sealed FROM accounts WHERE directory = ?1",
            directory,
        )
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
