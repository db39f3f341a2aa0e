//! The center's agents: the agent CA (its key and the bundle-signing key, sealed like every
//! other key), one-time enrollment tokens (only their SHA-256 is stored; consumed once, in
//! one transaction with the journal entry), and each agent's identity, last contact and
//! revocation.
//!
//! Tokens, identity keys and private keys never reach the journal: entries name the agent,
//! a reason, fingerprints and times.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::json;

use super::journal::journal_in;
use super::{Secret, Store, StoreError};

/// Migration 6: the agent CA, agents and their enrollment tokens.
pub(super) const MIGRATION: &str = r#"
-- The agent API's own CA (issue 13): one row. Its key and the Ed25519 key that signs the
-- bundles agents pin are sealed to the store key like every other key.
CREATE TABLE agent_ca (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    ca_cert_pem        TEXT NOT NULL,
    ca_key_sealed      BLOB NOT NULL,     -- age-encrypted PKCS#8 (ECDSA P-256)
    signing_key_sealed BLOB NOT NULL,     -- age-encrypted PKCS#8 (Ed25519)
    created_at         INTEGER NOT NULL
);
-- One row per agent name, made when its first token is; the identity is the SHA-256 of the
-- client certificate it was last issued.
CREATE TABLE agents (
    name               TEXT PRIMARY KEY,
    identity_sha256    TEXT,
    identity_not_after INTEGER,
    age_recipient      TEXT,
    version            TEXT,
    enrolled_at        INTEGER,
    last_seen          INTEGER,
    revoked_at         INTEGER
);
CREATE INDEX agents_by_identity ON agents(identity_sha256);
-- One-time enrollment tokens: only the SHA-256 (hex) of the token is kept.
CREATE TABLE agent_tokens (
    hash       TEXT PRIMARY KEY,
    agent      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
"#;

/// The stored agent CA, its keys decrypted.
pub struct AgentCaRow {
    /// The CA certificate, PEM.
    pub ca_cert_pem: String,
    /// The CA's private key, PKCS#8 DER.
    pub ca_key: Secret,
    /// The bundle-signing key, Ed25519 PKCS#8.
    pub signing_key: Secret,
}

impl std::fmt::Debug for AgentCaRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCaRow")
            .field("ca_cert_pem", &self.ca_cert_pem.len())
            .finish_non_exhaustive()
    }
}

/// One agent as the center knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    /// Its name (`[[endpoint]] agent = ...`).
    pub name: String,
    /// SHA-256 (lower hex) of its current client certificate's DER; `None` before it enrolled.
    pub identity_sha256: Option<String>,
    /// When that certificate expires (unix seconds).
    pub identity_not_after: Option<i64>,
    /// Its age X25519 recipient (`age1...`), for central keys sealed to it.
    pub age_recipient: Option<String>,
    /// The tlsward version it last reported.
    pub version: Option<String>,
    /// When it (last) enrolled.
    pub enrolled_at: Option<i64>,
    /// When it was last heard from.
    pub last_seen: Option<i64>,
    /// When it was revoked; `None` while it may connect.
    pub revoked_at: Option<i64>,
}

/// Why an enrollment token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No such token (never made, or mistyped).
    Unknown,
    /// Used already: tokens are single use.
    Used,
    /// Past its expiry (or voided by a revocation).
    Expired,
}

impl TokenRefusal {
    /// Every refusal, for tests and docs.
    pub const ALL: [Self; 3] = [Self::Unknown, Self::Used, Self::Expired];

    /// The stable label journaled as the reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "token_unknown",
            Self::Used => "token_used",
            Self::Expired => "token_expired",
        }
    }
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unknown => "the token is not known",
            Self::Used => "the token was used already",
            Self::Expired => "the token has expired",
        })
    }
}

const AGENT_COLUMNS: &str = "name, identity_sha256, identity_not_after, age_recipient, version, \
                             enrolled_at, last_seen, revoked_at";

fn agent_row(r: &Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        name: r.get(0)?,
        identity_sha256: r.get(1)?,
        identity_not_after: r.get(2)?,
        age_recipient: r.get(3)?,
        version: r.get(4)?,
        enrolled_at: r.get(5)?,
        last_seen: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

impl Store {
    /// The agent CA, if one was made.
    pub fn agent_ca(&self) -> Result<Option<AgentCaRow>, StoreError> {
        agent_ca_in(&self.conn(), self)
    }

    /// Stores `make()`'s CA (cert PEM, CA key PKCS#8, signing key PKCS#8) unless one exists
    /// (two processes racing keep the first: the check and the insert are one write
    /// transaction), and returns the stored one. Journals `agent.ca_created`.
    pub fn ensure_agent_ca(
        &self,
        make: impl FnOnce() -> Result<(String, Secret, Secret), StoreError>,
        now: i64,
    ) -> Result<AgentCaRow, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Some(row) = agent_ca_in(&tx, self)? {
            return Ok(row);
        }
        let (ca_cert_pem, ca_key, signing_key) = make()?;
        tx.execute(
            "INSERT INTO agent_ca (id, ca_cert_pem, ca_key_sealed, signing_key_sealed, created_at) \
             VALUES (1, ?1, ?2, ?3, ?4)",
            params![
                ca_cert_pem,
                self.crypt.encrypt(&ca_key)?,
                self.crypt.encrypt(&signing_key)?,
                now
            ],
        )?;
        journal_in(&tx, now, "agent.ca_created", None, &json!({}))?;
        tx.commit()?;
        Ok(AgentCaRow {
            ca_cert_pem,
            ca_key,
            signing_key,
        })
    }

    /// Records a one-time token for `agent` by its SHA-256 (the token itself is never
    /// stored), valid until `expires_at`; the agent's row is made if it has none, so
    /// `agent list` shows it before it enrolled. Journals `agent.token_created`.
    pub fn create_agent_token(
        &self,
        agent: &str,
        token_sha256: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO agent_tokens (hash, agent, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![token_sha256, agent, now, expires_at],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO agents (name) VALUES (?1)",
            params![agent],
        )?;
        journal_in(
            &tx,
            now,
            "agent.token_created",
            None,
            &json!({ "agent": agent, "expires_at": expires_at }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Uses the token whose SHA-256 is `token_sha256`, once: the agent it was made for, or
    /// why it is refused (journaled `agent.refused` with the reason). The check and the use
    /// are one transaction, so two enrollments racing with one token cannot both win.
    pub fn consume_agent_token(
        &self,
        token_sha256: &str,
        now: i64,
    ) -> Result<Result<String, TokenRefusal>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: Option<(String, i64, Option<i64>)> = tx
            .query_row(
                "SELECT agent, expires_at, used_at FROM agent_tokens WHERE hash = ?1",
                [token_sha256],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let outcome = match found {
            None => Err((None, TokenRefusal::Unknown)),
            Some((agent, _, Some(_))) => Err((Some(agent), TokenRefusal::Used)),
            Some((agent, expires_at, None)) if expires_at <= now => {
                Err((Some(agent), TokenRefusal::Expired))
            }
            Some((agent, _, None)) => {
                let n = tx.execute(
                    "UPDATE agent_tokens SET used_at = ?1 \
                     WHERE hash = ?2 AND used_at IS NULL AND expires_at > ?1",
                    params![now, token_sha256],
                )?;
                if n == 1 {
                    Ok(agent)
                } else {
                    Err((Some(agent), TokenRefusal::Used))
                }
            }
        };
        let result = match outcome {
            Ok(agent) => Ok(agent),
            Err((agent, why)) => {
                let mut detail = json!({ "reason": why.as_str() });
                if let Some(a) = &agent {
                    detail["agent"] = json!(a);
                }
                journal_in(&tx, now, "agent.refused", None, &detail)?;
                Err(why)
            }
        };
        tx.commit()?;
        Ok(result)
    }

    /// Records `name`'s new identity after it enrolled with a valid token: its client
    /// certificate's SHA-256 and expiry, its age recipient and version. A revoked name is
    /// reinstated (revoked_at cleared) and its old identity replaced. Journals
    /// `agent.enrolled`.
    pub fn enroll_agent(
        &self,
        name: &str,
        identity_sha256: &str,
        not_after: i64,
        age_recipient: &str,
        version: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO agents (name, identity_sha256, identity_not_after, age_recipient, version, \
                                 enrolled_at, last_seen, revoked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, NULL) \
             ON CONFLICT (name) DO UPDATE SET identity_sha256 = excluded.identity_sha256, \
                 identity_not_after = excluded.identity_not_after, \
                 age_recipient = excluded.age_recipient, version = excluded.version, \
                 enrolled_at = excluded.enrolled_at, last_seen = excluded.last_seen, \
                 revoked_at = NULL",
            params![name, identity_sha256, not_after, age_recipient, version, now],
        )?;
        journal_in(
            &tx,
            now,
            "agent.enrolled",
            None,
            &json!({
                "agent": name,
                "identity_sha256": identity_sha256,
                "identity_not_after": not_after,
                "version": version,
            }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces the identity of `name` (not revoked) with a renewed client certificate.
    /// Journals `agent.identity_renewed`; does nothing for an unknown or revoked agent.
    pub fn renew_agent_identity(
        &self,
        name: &str,
        identity_sha256: &str,
        not_after: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE agents SET identity_sha256 = ?2, identity_not_after = ?3, last_seen = ?4 \
             WHERE name = ?1 AND revoked_at IS NULL",
            params![name, identity_sha256, not_after, now],
        )?;
        if n == 1 {
            journal_in(
                &tx,
                now,
                "agent.identity_renewed",
                None,
                &json!({
                    "agent": name,
                    "identity_sha256": identity_sha256,
                    "identity_not_after": not_after,
                }),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The agent `name`, if known.
    pub fn agent(&self, name: &str) -> Result<Option<AgentRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE name = ?1"),
                [name],
                agent_row,
            )
            .optional()?)
    }

    /// The agent whose current client certificate has the SHA-256 `identity_sha256`
    /// (revoked or not: the caller decides).
    pub fn agent_by_identity(&self, identity_sha256: &str) -> Result<Option<AgentRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE identity_sha256 = ?1"),
                [identity_sha256],
                agent_row,
            )
            .optional()?)
    }

    /// Every agent, by name.
    pub fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))?;
        let rows = st.query_map([], agent_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that `name` was heard from now, running `version`.
    pub fn touch_agent(&self, name: &str, version: &str, now: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE agents SET last_seen = ?2, version = ?3 WHERE name = ?1",
            params![name, now, version],
        )?;
        Ok(())
    }

    /// Records when each of `seen`'s agents was last seen (`(name, unix seconds)`), in one
    /// transaction; a time older than the one stored changes nothing.
    pub fn agents_seen(&self, seen: &[(String, i64)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE agents SET last_seen = ?2 \
                 WHERE name = ?1 AND (last_seen IS NULL OR last_seen < ?2)",
            )?;
            for (name, at) in seen {
                stmt.execute(params![name, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A stamp that changes whenever an agent is revoked or reinstated, by this process or
    /// another (`tlsward agent revoke` writes the store from the CLI): the count of revoked
    /// agents and the sum of their revocation times. Held long polls recheck their identity
    /// only when it changes, so idle agents cost one small query every few seconds in all.
    pub fn revocation_stamp(&self) -> Result<(i64, i64), StoreError> {
        Ok(self.conn().query_row(
            "SELECT count(*), coalesce(sum(revoked_at), 0) FROM agents \
             WHERE revoked_at IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Revokes `name` at once: its identity is refused from now on, and its unused tokens
    /// are voided (a new token enrolls it again). `false` for an unknown agent. Journals
    /// `agent.revoked`; revoking a revoked agent changes nothing.
    pub fn revoke_agent(&self, name: &str, now: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let known: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM agents WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(revoked_at) = known else {
            return Ok(false);
        };
        if revoked_at.is_none() {
            tx.execute(
                "UPDATE agents SET revoked_at = ?2 WHERE name = ?1",
                params![name, now],
            )?;
            let voided = tx.execute(
                "UPDATE agent_tokens SET expires_at = ?2 \
                 WHERE agent = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![name, now],
            )?;
            journal_in(
                &tx,
                now,
                "agent.revoked",
                None,
                &json!({ "agent": name, "tokens_voided": voided }),
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Journals `agent.refused`: a request the agent API turned away, with the agent (when
    /// known), a reason label and the peer's address. Never pass a token or a key here.
    pub fn journal_agent_refused(
        &self,
        agent: Option<&str>,
        reason: &str,
        peer: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut detail = json!({ "reason": reason });
        if let Some(a) = agent {
            detail["agent"] = json!(a);
        }
        if let Some(p) = peer {
            detail["peer"] = json!(p);
        }
        journal_in(&self.conn(), now, "agent.refused", None, &detail)
    }
}

/// The agent CA in `conn` (a connection or a transaction), decrypted with `store`'s key.
fn agent_ca_in(conn: &Connection, store: &Store) -> Result<Option<AgentCaRow>, StoreError> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT ca_cert_pem, ca_key_sealed, signing_key_sealed FROM agent_ca WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(ca_cert_pem, ca_key, signing_key)| {
        Ok(AgentCaRow {
            ca_cert_pem,
            ca_key: store.crypt.decrypt(&ca_key)?,
            signing_key: store.crypt.decrypt(&signing_key)?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeySource;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("s/tlsward.db"),
            &KeySource::File(dir.path().join("s/store.key")),
        )
        .unwrap();
        (dir, store)
    }

    fn kinds(store: &Store) -> Vec<String> {
        store
            .journal_entries(None)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    #[test]
    fn a_token_is_used_once_and_never_after_its_expiry() {
        let (_d, store) = open();
        store.create_agent_token("web-01", "h1", 200, 100).unwrap();
        store.create_agent_token("web-02", "h2", 200, 100).unwrap();
        assert_eq!(
            store.consume_agent_token("nope", 150).unwrap(),
            Err(TokenRefusal::Unknown)
        );
        assert_eq!(
            store.consume_agent_token("h1", 150).unwrap(),
            Ok("web-01".into())
        );
        assert_eq!(
            store.consume_agent_token("h1", 151).unwrap(),
            Err(TokenRefusal::Used)
        );
        // Expiry is exclusive: at expires_at it is no longer valid.
        assert_eq!(
            store.consume_agent_token("h2", 200).unwrap(),
            Err(TokenRefusal::Expired)
        );
        let refused: Vec<_> = store
            .journal_entries(None)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "agent.refused")
            .map(|e| e.detail)
            .collect();
        assert_eq!(
            refused,
            vec![
                json!({"reason": "token_unknown"}),
                json!({"reason": "token_used", "agent": "web-01"}),
                json!({"reason": "token_expired", "agent": "web-02"}),
            ]
        );
    }

    #[test]
    fn an_agent_enrolls_is_revoked_and_enrolls_again_with_a_new_token() {
        let (_d, store) = open();
        store.create_agent_token("web-01", "t1", 1000, 10).unwrap();
        let listed = store.agents().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].enrolled_at, None);
        assert_eq!(
            store.consume_agent_token("t1", 20).unwrap(),
            Ok("web-01".into())
        );
        store
            .enroll_agent("web-01", "id1", 5000, "age1x", "0.1.0", 20)
            .unwrap();
        let row = store.agent_by_identity("id1").unwrap().unwrap();
        assert_eq!(row.name, "web-01");
        assert_eq!(row.enrolled_at, Some(20));
        assert_eq!(row.identity_not_after, Some(5000));
        assert_eq!(row.revoked_at, None);
        // A token made before the revocation is voided by it.
        store.create_agent_token("web-01", "t2", 1000, 25).unwrap();
        assert!(store.revoke_agent("web-01", 30).unwrap());
        assert!(!store.revoke_agent("web-99", 30).unwrap());
        assert_eq!(store.agent("web-01").unwrap().unwrap().revoked_at, Some(30));
        assert_eq!(
            store.consume_agent_token("t2", 31).unwrap(),
            Err(TokenRefusal::Expired)
        );
        // A revoked agent's renewal changes nothing.
        store
            .renew_agent_identity("web-01", "id-x", 9000, 32)
            .unwrap();
        assert_eq!(
            store
                .agent("web-01")
                .unwrap()
                .unwrap()
                .identity_sha256
                .as_deref(),
            Some("id1")
        );
        store.create_agent_token("web-01", "t3", 1000, 40).unwrap();
        assert_eq!(
            store.consume_agent_token("t3", 41).unwrap(),
            Ok("web-01".into())
        );
        store
            .enroll_agent("web-01", "id2", 6000, "age1y", "0.2.0", 41)
            .unwrap();
        let row = store.agent("web-01").unwrap().unwrap();
        assert_eq!(row.revoked_at, None);
        assert_eq!(row.identity_sha256.as_deref(), Some("id2"));
        assert!(store.agent_by_identity("id1").unwrap().is_none());
        store
            .renew_agent_identity("web-01", "id3", 7000, 50)
            .unwrap();
        store.touch_agent("web-01", "0.3.0", 60).unwrap();
        let row = store.agent("web-01").unwrap().unwrap();
        assert_eq!(
            (
                row.identity_sha256.as_deref(),
                row.identity_not_after,
                row.last_seen,
                row.version.as_deref()
            ),
            (Some("id3"), Some(7000), Some(60), Some("0.3.0"))
        );
        // Batched sightings: a later time is kept, an earlier one and an unknown agent
        // change nothing.
        store
            .agents_seen(&[("web-01".into(), 90), ("nobody".into(), 95)])
            .unwrap();
        store.agents_seen(&[("web-01".into(), 70)]).unwrap();
        assert_eq!(store.agent("web-01").unwrap().unwrap().last_seen, Some(90));
        assert!(store.agent("nobody").unwrap().is_none());
        assert_eq!(
            kinds(&store),
            [
                "agent.token_created",
                "agent.enrolled",
                "agent.token_created",
                "agent.revoked",
                "agent.refused",
                "agent.token_created",
                "agent.enrolled",
                "agent.identity_renewed",
            ]
        );
    }

    #[test]
    fn the_first_agent_ca_is_kept_and_its_keys_are_sealed() {
        let (_d, store) = open();
        assert!(store.agent_ca().unwrap().is_none());
        let made = store
            .ensure_agent_ca(
                || {
                    Ok((
                        "PEM".into(),
                        Secret::new(b"ca-key-bytes".to_vec()),
                        Secret::new(b"signing-key-bytes".to_vec()),
                    ))
                },
                5,
            )
            .unwrap();
        assert_eq!(made.ca_key.expose(), b"ca-key-bytes");
        let again = store
            .ensure_agent_ca(|| panic!("a CA exists: nothing is made"), 6)
            .unwrap();
        assert_eq!(again.ca_cert_pem, "PEM");
        assert_eq!(again.signing_key.expose(), b"signing-key-bytes");
        let raw = std::fs::read(store.path()).unwrap();
        let wal = std::fs::read(store.path().with_extension("db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(12).any(|w| w == b"ca-key-bytes"));
        }
        assert!(format!("{again:?}").find("key-bytes").is_none());
    }
}
