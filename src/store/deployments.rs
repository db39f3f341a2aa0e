//! Deployments of a version to an endpoint: the queue, its claims and its finished states.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{OptionalExtension, ToSql, params};
use serde_json::Value;

use super::journal::journal_in;
use super::{Deployment, Store, StoreError};

/// Where a deployment is in its life. Queued `Waiting` (for its change window), maybe
/// `Approved` by an operator, `Running` once claimed, `Installed` when an agent reports it
/// wrote the new version (agent endpoints only), then `Verified`, `Failed` or `RolledBack`;
/// an open one is `Superseded` when a newer version is queued instead.
///
/// [`as_str`](Self::as_str) is the only place the names exist: the database column, the
/// journal kinds (`deployment.<state>`), metric labels and the CLI's output all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeploymentState {
    /// Queued, waiting for its change window.
    Waiting,
    /// Let run by an operator without waiting for its window.
    Approved,
    /// Claimed: its hook runs or the endpoint is being verified.
    Running,
    /// An agent reports it installed the new version; the center verifies it is served.
    Installed,
    /// The endpoint served the new certificate.
    Verified,
    /// It did not deploy, and nothing was rolled back.
    Failed,
    /// It did not deploy, and what the hook did was rolled back.
    RolledBack,
    /// A newer version was queued for the endpoint before it ran.
    Superseded,
}

impl DeploymentState {
    /// Every state, in the order of a deployment's life.
    pub const ALL: [Self; 8] = [
        Self::Waiting,
        Self::Approved,
        Self::Running,
        Self::Installed,
        Self::Verified,
        Self::Failed,
        Self::RolledBack,
        Self::Superseded,
    ];

    /// The states of a deployment still to run (at most one per endpoint).
    pub const OPEN: [Self; 4] = [
        Self::Waiting,
        Self::Approved,
        Self::Running,
        Self::Installed,
    ];

    /// The states a deployment that ran ends in.
    pub const FINISHED: [Self; 3] = [Self::Verified, Self::Failed, Self::RolledBack];

    /// Its name, as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Approved => "approved",
            Self::Running => "running",
            Self::Installed => "installed",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::Superseded => "superseded",
        }
    }

    /// The state of this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the deployment is still to run (waiting, approved, running or installed).
    pub const fn is_open(self) -> bool {
        matches!(
            self,
            Self::Waiting | Self::Approved | Self::Running | Self::Installed
        )
    }

    /// Whether the deployment ran to its end (verified, failed or rolled back).
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Verified | Self::Failed | Self::RolledBack)
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for DeploymentState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for DeploymentState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        Self::parse(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown deployment state {name:?}").into()))
    }
}

impl serde::Serialize for DeploymentState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for DeploymentState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown deployment state {name:?}")))
    }
}

/// `states` as an SQL list, `('waiting', 'approved')`, for `state IN ...`. The names are
/// constants, never input, so they can be written into the statement.
pub(super) fn sql_list(states: &[DeploymentState]) -> String {
    let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", names.join(", "))
}

impl Store {
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
                    "SELECT id, version FROM deployments WHERE endpoint = ?1 AND state IN {}",
                    sql_list(&DeploymentState::OPEN)
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
                    "UPDATE deployments SET state = ?3, updated_at = ?2 WHERE id = ?1",
                    params![id, now, DeploymentState::Superseded],
                )?;
                journal_in(
                    &tx,
                    now,
                    &journal_kind(DeploymentState::Superseded),
                    certificate.as_deref(),
                    &serde_json::json!({ "deployment": id, "endpoint": endpoint, "by_version": version }),
                )?;
            }
            None => {}
        }
        tx.execute(
            "INSERT INTO deployments (endpoint, version, state, reason, not_before, created_at, updated_at) \
             VALUES (?1, ?2, ?6, ?3, ?4, ?5, ?5)",
            params![endpoint, version, reason, not_before, now, DeploymentState::Waiting],
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

    /// Deployments still to run (waiting, approved, running or installed), oldest first.
    pub fn open_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.deployments_where(
            &format!("state IN {}", sql_list(&DeploymentState::OPEN)),
            [],
        )
    }

    /// The open deployment of `endpoint`, if any (at most one, by the `deployments_one_open`
    /// index, which this query reads).
    pub fn open_deployment(&self, endpoint: &str) -> Result<Option<Deployment>, StoreError> {
        Ok(self
            .deployments_where(
                &format!(
                    "endpoint = ?1 AND state IN {}",
                    sql_list(&DeploymentState::OPEN)
                ),
                [endpoint],
            )?
            .pop())
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
        let mut stmt = conn.prepare_cached(&format!(
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
        use DeploymentState::{Approved, Running, Waiting};
        self.move_deployment(id, Running, &[Waiting, Approved], detail, now)
    }

    /// Takes a running deployment to `installed` (an agent reports it wrote the version),
    /// journaling `detail`; false when it is not running any more.
    pub fn install_deployment(
        &self,
        id: i64,
        detail: &Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        use DeploymentState::{Installed, Running};
        self.move_deployment(id, Installed, &[Running], detail, now)
    }

    /// A deployment by its id, in any state.
    pub fn deployment(&self, id: i64) -> Result<Option<Deployment>, StoreError> {
        Ok(self.deployments_where("id = ?1", params![id])?.pop())
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
                "endpoint = ?1 AND version = ?2 AND state != ?3",
                params![endpoint, version, DeploymentState::Superseded],
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
        state: DeploymentState,
        detail: &Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.move_deployment(id, state, &DeploymentState::OPEN, detail, now)
    }

    /// Moves a deployment in one of the `from` states to `to`, journaling
    /// `deployment.<to>` with `detail`, in one transaction; false when it was in none of them.
    fn move_deployment(
        &self,
        id: i64,
        to: DeploymentState,
        from: &[DeploymentState],
        detail: &Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            &format!(
                "UPDATE deployments SET state = ?2, updated_at = ?3, detail = ?4 \
                 WHERE id = ?1 AND state IN {}",
                sql_list(from)
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
            &journal_kind(to),
            certificate.as_deref(),
            &serde_json::json!({ "deployment": id, "detail": detail }),
        )?;
        tx.commit()?;
        Ok(true)
    }
}

/// The journal kind of a move to `state`: `deployment.<state>`.
fn journal_kind(state: DeploymentState) -> String {
    format!("deployment.{state}")
}
