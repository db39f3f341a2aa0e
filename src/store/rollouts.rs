//! Staged rollouts of a certificate's version (migration 8): where each one is
//! ([`RolloutState`], the one list of rollout states), the last stage whose start and the
//! stages whose verification were journaled, and why it halted. The decisions are the
//! reconciler's; this keeps them across restarts, and lets `tlsward rollout resume` and
//! `abort` act on them from another process.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{OptionalExtension, ToSql, params};
use serde_json::{Value, json};

use super::deployments::sql_list;
use super::journal::journal_in;
use super::{DeploymentState, Store, StoreError};

/// Migration 8: the `rollouts` table, one row per certificate and version that has a
/// rollout policy and deployments.
pub(super) const MIGRATION: &str = r#"
-- Staged rollouts (issue 15): canaries, batches, pauses and a failure budget per certificate.
CREATE TABLE rollouts (
    certificate TEXT NOT NULL,
    version     INTEGER NOT NULL REFERENCES versions(id),
    state       TEXT NOT NULL,            -- running, halted, aborted, complete
    stage       INTEGER,                  -- the last stage whose start was journaled (0 = canary)
    done_stages INTEGER NOT NULL,         -- how many stages' verification was journaled
    reason      TEXT,                     -- why it halted or was aborted
    halted_at   INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (certificate, version)
);
"#;

/// Where a rollout is. [`as_str`](Self::as_str) is the only place the names exist: the
/// database column, `tlsward rollout show`, and the `state` label of
/// `tlsward_rollout_state_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RolloutState {
    /// Stages are deploying, or waiting for their pause or their windows.
    Running,
    /// Failures exceeded the budget: nothing more starts until `rollout resume`.
    Halted,
    /// An operator stopped it (`rollout abort`): what had not started was failed.
    Aborted,
    /// Every endpoint is done.
    Complete,
}

impl RolloutState {
    /// Every state, in declaration order.
    pub const ALL: [Self; 4] = [Self::Running, Self::Halted, Self::Aborted, Self::Complete];

    /// Its name, as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Halted => "halted",
            Self::Aborted => "aborted",
            Self::Complete => "complete",
        }
    }

    /// The state of this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the rollout waits for an operator (halted or aborted).
    pub const fn is_stopped(self) -> bool {
        matches!(self, Self::Halted | Self::Aborted)
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for RolloutState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for RolloutState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        Self::parse(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown rollout state {name:?}").into()))
    }
}

impl serde::Serialize for RolloutState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One rollout, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    /// The certificate.
    pub certificate: String,
    /// The version (row id in `versions`) rolled out.
    pub version: i64,
    /// Where it is.
    pub state: RolloutState,
    /// The last stage whose start was journaled: 0 for the canaries, `n` for batch `n`.
    pub stage: Option<u32>,
    /// How many stages, from the first, were journaled verified.
    pub done_stages: u32,
    /// Why it halted or was aborted.
    pub reason: Option<String>,
    /// When it halted.
    pub halted_at: Option<i64>,
    /// When it was first recorded.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

const COLUMNS: &str =
    "certificate, version, state, stage, done_stages, reason, halted_at, created_at, updated_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RolloutRow> {
    Ok(RolloutRow {
        certificate: r.get(0)?,
        version: r.get(1)?,
        state: r.get(2)?,
        stage: r.get(3)?,
        done_stages: r.get(4)?,
        reason: r.get(5)?,
        halted_at: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

impl Store {
    /// The rollout of `version` of `certificate`, if one was recorded.
    pub fn rollout(
        &self,
        certificate: &str,
        version: i64,
    ) -> Result<Option<RolloutRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM rollouts WHERE certificate = ?1 AND version = ?2"),
                params![certificate, version],
                row,
            )
            .optional()?)
    }

    /// The newest rollout of each certificate, by certificate name.
    pub fn latest_rollouts(&self) -> Result<Vec<RolloutRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM rollouts r WHERE version = \
             (SELECT max(version) FROM rollouts WHERE certificate = r.certificate) \
             ORDER BY certificate"
        ))?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records `rollout` (inserted or replaced) and journals each of `entries` (kind,
    /// detail) for its certificate, in one transaction.
    pub fn save_rollout(
        &self,
        rollout: &RolloutRow,
        entries: &[(&str, Value)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO rollouts ({COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                rollout.certificate,
                rollout.version,
                rollout.state,
                rollout.stage,
                rollout.done_stages,
                rollout.reason,
                rollout.halted_at,
                rollout.created_at,
                rollout.updated_at,
            ],
        )?;
        for (kind, detail) in entries {
            journal_in(&tx, now, kind, Some(&rollout.certificate), detail)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Resumes a halted rollout: it runs again and `rollout.resumed` is journaled (with
    /// `by`), then every endpoint whose deployment of the version failed or was rolled
    /// back is queued again with `reason`. Returns those endpoints; `None` when the rollout
    /// was not halted.
    pub fn resume_rollout(
        &self,
        certificate: &str,
        version: i64,
        reason: &str,
        by: &str,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let failed: Vec<String> = {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let changed = tx.execute(
                "UPDATE rollouts SET state = ?3, reason = NULL, updated_at = ?4 \
                 WHERE certificate = ?1 AND version = ?2 AND state = ?5",
                params![
                    certificate,
                    version,
                    RolloutState::Running,
                    now,
                    RolloutState::Halted
                ],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            // Each endpoint's newest deployment of the version that was not superseded.
            let mut stmt = tx.prepare(&format!(
                "SELECT d.endpoint FROM deployments d WHERE d.version = ?1 AND d.id = \
                 (SELECT max(id) FROM deployments WHERE endpoint = d.endpoint AND version = ?1 \
                  AND state != 'superseded') AND d.state IN {} ORDER BY d.endpoint",
                sql_list(&[DeploymentState::Failed, DeploymentState::RolledBack])
            ))?;
            let failed = stmt
                .query_map(params![version], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            drop(stmt);
            journal_in(
                &tx,
                now,
                "rollout.resumed",
                Some(certificate),
                &json!({ "version": version, "by": by, "requeued": failed }),
            )?;
            tx.commit()?;
            failed
        };
        for endpoint in &failed {
            self.queue_deployment(endpoint, version, reason, None, now)?;
        }
        Ok(Some(failed))
    }

    /// Aborts a rollout that is running or halted: every waiting deployment of the version
    /// is failed with the reason "aborted", and `rollout.aborted` is journaled (with `by`).
    /// Returns the endpoints whose deployments were failed; `None` when the rollout was
    /// neither running nor halted.
    pub fn abort_rollout(
        &self,
        certificate: &str,
        version: i64,
        by: &str,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let reason = format!("aborted by {by}");
        let waiting: Vec<(i64, String)> = {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let changed = tx.execute(
                "UPDATE rollouts SET state = ?3, reason = ?4, updated_at = ?5 \
                 WHERE certificate = ?1 AND version = ?2 AND state IN (?6, ?7)",
                params![
                    certificate,
                    version,
                    RolloutState::Aborted,
                    reason,
                    now,
                    RolloutState::Running,
                    RolloutState::Halted,
                ],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            let mut stmt = tx.prepare(
                "SELECT id, endpoint FROM deployments WHERE version = ?1 AND state = ?2 \
                 ORDER BY endpoint",
            )?;
            let waiting = stmt
                .query_map(params![version, DeploymentState::Waiting], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<Vec<(i64, String)>, _>>()?;
            drop(stmt);
            journal_in(
                &tx,
                now,
                "rollout.aborted",
                Some(certificate),
                &json!({
                    "version": version,
                    "by": by,
                    "failed": waiting.iter().map(|(_, e)| e).collect::<Vec<_>>(),
                }),
            )?;
            tx.commit()?;
            waiting
        };
        let detail = json!({ "error": "aborted", "rollout": "aborted", "by": by });
        let mut failed = Vec::new();
        for (id, endpoint) in waiting {
            if self.set_deployment_state(id, DeploymentState::Failed, &detail, now)? {
                failed.push(endpoint);
            }
        }
        Ok(Some(failed))
    }
}
