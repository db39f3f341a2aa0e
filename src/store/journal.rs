//! The append-only journal, and the recorded endpoints (whose changes it records).

use rusqlite::{Connection, params};
use serde_json::Value;

use super::{EndpointRow, JournalEntry, Store, StoreError};

impl Store {
    /// Replaces the recorded endpoints with the configured ones, journaling the change when
    /// there is one.
    pub fn set_endpoints(&self, endpoints: &[EndpointRow], now: i64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current = endpoints_in(&tx)?;
        let mut wanted = endpoints.to_vec();
        wanted.sort();
        if current == wanted {
            return Ok(());
        }
        tx.execute("DELETE FROM endpoints", [])?;
        for e in &wanted {
            tx.execute(
                "INSERT INTO endpoints (name, certificate, target) VALUES (?1, ?2, ?3)",
                params![e.name, e.certificate, e.target],
            )?;
        }
        journal_in(
            &tx,
            now,
            "endpoints.set",
            None,
            &serde_json::json!({ "endpoints": wanted.iter().map(|e| serde_json::json!({ "name": e.name, "certificate": e.certificate, "target": e.target })).collect::<Vec<_>>() }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The recorded endpoints, by name.
    pub fn endpoints(&self) -> Result<Vec<EndpointRow>, StoreError> {
        endpoints_in(&self.conn())
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
}

/// The endpoints recorded in `conn` (a connection or a transaction), by name.
fn endpoints_in(conn: &Connection) -> Result<Vec<EndpointRow>, StoreError> {
    let mut stmt = conn.prepare("SELECT name, certificate, target FROM endpoints ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(EndpointRow {
            name: r.get(0)?,
            certificate: r.get(1)?,
            target: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Appends to the journal inside `conn`'s transaction.
pub(super) fn journal_in(
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
