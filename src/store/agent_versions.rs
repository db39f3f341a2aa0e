//! What agent endpoints add to versions and deployments (migration 7): the `installed`
//! deployment state's place in the one-open index, versions whose key an agent holds
//! (`key = "agent"`: the store keeps an empty key and the agent's name), and the CSRs agents
//! send for such certificates, kept until the version ordered with one is stored.

use rusqlite::{OptionalExtension, params};

use super::journal::journal_in;
use super::{Store, StoreError};

/// Migration 7: `installed` joins the open states of the one-open-per-endpoint index,
/// versions get `key_holder`, and agents' CSRs get a table.
pub(super) const MIGRATION: &str = r#"
-- Agents (issue 13). A deployment an agent reports installed is still open until the center
-- sees it served ('installed' between 'running' and 'verified').
DROP INDEX deployments_one_open;
CREATE UNIQUE INDEX deployments_one_open ON deployments(endpoint)
    WHERE state IN ('waiting', 'approved', 'running', 'installed');
-- NULL: the center's key is in key_sealed; else the agent that holds the key, and key_sealed
-- is an empty blob (the key never left that endpoint).
ALTER TABLE versions ADD COLUMN key_holder TEXT;
-- The CSR an agent sent for a key = "agent" certificate, answering the nonce the center asked
-- with; kept until the version ordered with it is stored (a resumed order finalizes with it).
CREATE TABLE agent_csrs (
    certificate TEXT PRIMARY KEY,
    agent       TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    csr_der     BLOB NOT NULL,
    received_at INTEGER NOT NULL
);
"#;

/// A CSR an agent sent for a `key = "agent"` certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCsr {
    /// The certificate.
    pub certificate: String,
    /// The agent that sent it (and holds its key).
    pub agent: String,
    /// The nonce of the request it answers.
    pub nonce: String,
    /// The PKCS#10 request, DER.
    pub csr_der: Vec<u8>,
    /// When it arrived (unix seconds).
    pub received_at: i64,
}

impl Store {
    /// Keeps `csr` for its certificate, replacing an earlier one, journaled
    /// `agent.csr_received` (the detail names the agent and the nonce, not the request).
    pub fn put_agent_csr(&self, csr: &AgentCsr) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO agent_csrs (certificate, agent, nonce, csr_der, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(certificate) DO UPDATE SET agent = excluded.agent, \
             nonce = excluded.nonce, csr_der = excluded.csr_der, received_at = excluded.received_at",
            params![
                csr.certificate,
                csr.agent,
                csr.nonce,
                csr.csr_der,
                csr.received_at
            ],
        )?;
        journal_in(
            &tx,
            csr.received_at,
            "agent.csr_received",
            Some(&csr.certificate),
            &serde_json::json!({ "agent": csr.agent, "nonce": csr.nonce }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The CSR kept for `certificate`, if any.
    pub fn agent_csr(&self, certificate: &str) -> Result<Option<AgentCsr>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT certificate, agent, nonce, csr_der, received_at FROM agent_csrs \
                 WHERE certificate = ?1",
                params![certificate],
                |r| {
                    Ok(AgentCsr {
                        certificate: r.get(0)?,
                        agent: r.get(1)?,
                        nonce: r.get(2)?,
                        csr_der: r.get(3)?,
                        received_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Forgets the CSR kept for `certificate` (a CSR the CA refused, a certificate that no
    /// longer has `key = "agent"`); true when there was one.
    pub fn drop_agent_csr(&self, certificate: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM agent_csrs WHERE certificate = ?1",
            params![certificate],
        )? > 0)
    }

    /// The agent that holds version `id`'s key, `None` when the store holds it.
    pub fn version_key_holder(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT key_holder FROM versions WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }
}
