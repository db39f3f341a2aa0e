//! What operators ask for by hand: order a certificate now, approve a waiting deployment,
//! run one now. The command line does it through the running daemon's control channel when
//! there is one (these methods of the [`Reconciler`]), or by itself when there is none (the
//! free functions); both take the same path through the queue, so a request means the same
//! either way.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::{error, info};

use super::{DeployJob, Desired, EndpointSpec, Finished, QueueReason, Reconciler, job, unix};
use crate::issuer::{IssueError, Issuer};
use crate::store::{Deployment, DeploymentState, Store, StoreError, Version};

/// How many orders by hand may wait for the reconciler at once.
pub(super) const MANUAL_ORDERS: usize = 8;
/// The longest operator name journaled with a request.
const MAX_BY: usize = 64;

/// Why an operator's request was not done.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No such certificate, endpoint or deployment.
    #[error("{0}")]
    NotFound(String),
    /// It exists, but is not in a state that allows the request (already approved, running,
    /// never issued, no hook).
    #[error("{0}")]
    Conflict(String),
    /// The daemon cannot do it now (no ACME account, too many orders waiting, stopping).
    #[error("{0}")]
    Unavailable(String),
    /// The order was placed and failed.
    #[error("the order failed: {0}")]
    Issue(#[from] IssueError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RequestError {
    /// A stable name for the kind of failure.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Unavailable(_) => "unavailable",
            Self::Issue(_) => "order_failed",
            Self::Store(_) => "store",
        }
    }
}

/// An order by hand, waiting for the reconciler's loop (which holds the ACME account).
#[derive(Debug)]
pub(super) struct ManualOrder {
    name: String,
    force: bool,
    reply: oneshot::Sender<Result<Version, RequestError>>,
}

/// `who` as journaled: at most [`MAX_BY`] characters.
fn who(by: &str) -> String {
    by.chars().take(MAX_BY).collect()
}

/// The deployment `deploy run-now WHICH` runs: the open deployment with that id, or the open
/// one of the endpoint with that name, or else the endpoint's latest version, queued now as
/// `manual` (to retry after a failure).
pub fn pick_run_now(
    store: &Store,
    endpoints: &[EndpointSpec],
    which: &str,
    now: i64,
) -> Result<Deployment, RequestError> {
    let open = store.open_deployments()?;
    let d = match which.parse::<i64>() {
        Ok(id) => open.into_iter().find(|d| d.id == id).ok_or_else(|| {
            RequestError::NotFound(format!(
                "no queued deployment {id} (see `tlsward deploy list --all`)"
            ))
        })?,
        Err(_) => match open.into_iter().find(|d| d.endpoint == which) {
            Some(d) => d,
            None => {
                let e = endpoints.iter().find(|e| e.name == which).ok_or_else(|| {
                    RequestError::NotFound(format!("no endpoint or deployment {which:?}"))
                })?;
                let latest = store.latest(&e.certificate)?.ok_or_else(|| {
                    RequestError::Conflict(format!("{} has no issued version yet", e.certificate))
                })?;
                let id = store.queue_deployment(
                    &e.name,
                    latest.id,
                    QueueReason::Manual.as_str(),
                    None,
                    now,
                )?;
                store
                    .open_deployments()?
                    .into_iter()
                    .find(|d| d.id == id)
                    .ok_or_else(|| {
                        RequestError::Conflict("the queued deployment vanished".into())
                    })?
            }
        },
    };
    if d.state == DeploymentState::Running {
        return Err(RequestError::Conflict(format!(
            "deployment {} is already running",
            d.id
        )));
    }
    Ok(d)
}

/// The job that runs `d`: its endpoint's hook and target in `desired`.
pub fn job_of(d: &Deployment, desired: &Desired) -> Result<DeployJob, RequestError> {
    let e = desired
        .endpoints
        .iter()
        .find(|e| e.name == d.endpoint)
        .ok_or_else(|| {
            RequestError::NotFound(format!(
                "endpoint {} is no longer in the config",
                d.endpoint
            ))
        })?;
    if let Some(agent) = &e.agent {
        return Err(RequestError::Conflict(format!(
            "endpoint {} is deployed by agent {agent}: the running daemon tells the agent (start `tlsward serve`)",
            e.name
        )));
    }
    job(e, desired).ok_or_else(|| {
        RequestError::Conflict(format!(
            "endpoint {} has no hook (add hook = \"NAME\" to its [[endpoint]])",
            e.name
        ))
    })
}

/// Why a run-now deployment runs, as journaled: who asked, and their uid when the daemon
/// checked it.
pub fn run_now_trigger(by: &str, uid: Option<u32>) -> Value {
    let mut why = json!({ "trigger": "run_now", "by": who(by) });
    if let Some(uid) = uid {
        why["uid"] = json!(uid);
    }
    why
}

/// Lets waiting deployment `id` run without waiting for its window; `by` (and `uid`, when
/// the daemon checked it) is journaled.
pub fn approve(
    store: &Store,
    id: i64,
    by: &str,
    uid: Option<u32>,
    now: i64,
) -> Result<Deployment, RequestError> {
    let d = store
        .open_deployments()?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| {
            RequestError::NotFound(format!(
                "no queued deployment {id} (see `tlsward deploy list --all`)"
            ))
        })?;
    if d.state != DeploymentState::Waiting {
        return Err(RequestError::Conflict(format!(
            "deployment {id} is {}, not waiting",
            d.state
        )));
    }
    let mut detail = json!({ "approved_by": who(by), "window_skipped": true });
    if let Some(uid) = uid {
        detail["uid"] = json!(uid);
    }
    if !store.set_deployment_state(id, DeploymentState::Approved, &detail, now)? {
        return Err(RequestError::Conflict(format!(
            "deployment {id} changed while approving it; see `tlsward deploy list`"
        )));
    }
    Ok(d)
}

impl Reconciler {
    /// Orders a new version of certificate `name` now, through the reconciler's loop and its
    /// ACME account, as a renewal would be (same metrics, same journal). Without `force`,
    /// a certificate whose latest version is still valid is not ordered again.
    pub async fn order_now(&self, name: &str, force: bool) -> Result<Version, RequestError> {
        let (reply, answer) = oneshot::channel();
        let order = ManualOrder {
            name: name.to_owned(),
            force,
            reply,
        };
        self.manual_tx.try_send(order).map_err(|_| {
            RequestError::Unavailable(format!(
                "{MANUAL_ORDERS} orders are already waiting for the daemon; try again later"
            ))
        })?;
        answer.await.map_err(|_| {
            RequestError::Unavailable("the daemon stopped before placing the order".into())
        })?
    }

    /// Places an order by hand for the loop, with `issuer` when the account is reachable.
    pub(super) async fn manual_order(
        &self,
        order: ManualOrder,
        issuer: Option<&Issuer>,
        desired: &Desired,
    ) {
        let result = self.place_manual(&order, issuer, desired).await;
        let _ = order.reply.send(result);
    }

    async fn place_manual(
        &self,
        order: &ManualOrder,
        issuer: Option<&Issuer>,
        desired: &Desired,
    ) -> Result<Version, RequestError> {
        let name = &order.name;
        let spec = desired
            .certificates
            .iter()
            .find(|c| c.name == *name)
            .ok_or_else(|| {
                RequestError::NotFound(format!(
                    "no [[certificate]] named {name:?} in the daemon's config (reload it after editing)"
                ))
            })?;
        let latest = self.store.latest(name)?;
        let now = unix(self.clock.as_ref());
        if !order.force
            && let Some(v) = latest.as_ref().filter(|v| v.not_after > now)
        {
            return Err(RequestError::Conflict(format!(
                "{name} already has version {}, valid until {}; `tlsward cert renew {name}` orders another",
                v.id,
                time::OffsetDateTime::from_unix_timestamp(v.not_after)
                    .map_or_else(|_| v.not_after.to_string(), crate::cert::rfc3339)
            )));
        }
        let issuer = issuer.ok_or_else(|| {
            RequestError::Unavailable(format!(
                "the daemon cannot reach the ACME account at {} (see its log)",
                desired.acme.directory
            ))
        })?;
        info!(certificate = %name, reason = "manual", "ordering");
        let replaces = latest.and_then(|v| super::version_ari_id(&v));
        Ok(self.order(issuer, spec, replaces.as_deref()).await?)
    }

    /// [`approve`] in the daemon, which then looks at the queue at once.
    pub fn approve(&self, id: i64, by: &str, uid: Option<u32>) -> Result<Deployment, RequestError> {
        let d = approve(&self.store, id, by, uid, unix(self.clock.as_ref()))?;
        info!(deployment = id, endpoint = %d.endpoint, "deployment approved");
        self.notify.notify_one();
        Ok(d)
    }

    /// The deployment and job `deploy run-now WHICH` runs (see [`pick_run_now`]).
    pub fn prepare_run_now(&self, which: &str) -> Result<(Deployment, DeployJob), RequestError> {
        let desired = self.desired();
        let d = pick_run_now(
            &self.store,
            &desired.endpoints,
            which,
            unix(self.clock.as_ref()),
        )?;
        let job = job_of(&d, &desired)?;
        Ok((d, job))
    }

    /// Runs `d` now, window or not, as the reconciler runs deployments (same metrics, same
    /// journal), and waits for its end. It runs in a task of its own, so it is never cut off
    /// midway when the one who asked goes away.
    pub async fn run_now(
        self: &Arc<Self>,
        d: Deployment,
        job: DeployJob,
        why: Value,
    ) -> Result<Finished, RequestError> {
        match self.running.enter(d.id) {
            Ok(()) => {}
            Err(super::drain::Refused::Running) => {
                return Err(RequestError::Conflict(format!(
                    "deployment {} is already running",
                    d.id
                )));
            }
            Err(super::drain::Refused::Closed) => {
                return Err(RequestError::Unavailable(
                    "tlsward is shutting down; run it again after the restart".into(),
                ));
            }
        }
        let me = self.clone();
        let id = d.id;
        let task = tokio::spawn(async move {
            let finished = me.deployer.execute(&d, &job, why).await;
            me.running.leave(d.id);
            me.notify.notify_one();
            finished
        });
        match task.await {
            Ok(Ok(Some(finished))) => Ok(finished),
            Ok(Ok(None)) => Err(RequestError::Conflict(format!(
                "deployment {id} was claimed by another process"
            ))),
            Ok(Err(e)) => {
                error!(deployment = id, error = %e, "the deployment could not be recorded");
                Err(e.into())
            }
            Err(e) => Err(RequestError::Unavailable(format!(
                "the deployment's task failed: {e}"
            ))),
        }
    }
}
