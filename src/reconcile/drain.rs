//! Deployments running in this process, and draining them at shutdown: once the daemon's
//! [`Shutdown`](crate::shutdown::Shutdown) fires, no deployment starts, and the ones running
//! are waited for, so each ends in the journal as verified, failed or rolled back instead of
//! being found `running` (and marked interrupted) at the next start.
//!
//! A running deployment ends by itself: its hook runs under the grant's deadline, its
//! verification under `[deploy] verify_timeout`, and a rollback under the hook's deadline
//! again. The drain waits at most [`drain_limit`], the sum of those, as a last guard.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{error, info};

use super::{Desired, Reconciler};

/// Added to [`drain_limit`] for the probes and store writes around the hook runs.
pub const DRAIN_MARGIN: Duration = Duration::from_secs(30);

/// Why a deployment may not start in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// It is running already.
    Running,
    /// The daemon is shutting down.
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    ids: HashSet<i64>,
    closed: bool,
}

/// The deployments running in this process; closed for good at shutdown.
#[derive(Debug, Default)]
pub(super) struct Running {
    inner: Mutex<Inner>,
    /// Notified whenever a deployment leaves.
    left: Notify,
}

impl Running {
    /// Marks `id` running, unless it is already or the set is closed.
    pub(super) fn enter(&self, id: i64) -> Result<(), Refused> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.closed {
            return Err(Refused::Closed);
        }
        if inner.ids.insert(id) {
            Ok(())
        } else {
            Err(Refused::Running)
        }
    }

    /// `id` has ended (whatever its outcome).
    pub(super) fn leave(&self, id: i64) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ids
            .remove(&id);
        self.left.notify_waiters();
    }

    /// Closes the set (nothing enters again) and returns how many are running.
    fn close(&self) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.closed = true;
        inner.ids.len()
    }

    fn count(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ids
            .len()
    }

    /// Returns once no deployment is running.
    async fn empty(&self) {
        loop {
            // Registered before the count is read, so a `leave` in between still wakes it.
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            left.await;
        }
    }
}

/// The longest a drain waits: the longest hook deadline twice (the run, and a rollback or a
/// redeploy of the previous version), verification twice (after each), plus
/// [`DRAIN_MARGIN`].
pub fn drain_limit(desired: &Desired) -> Duration {
    let hook = desired
        .hooks
        .values()
        .map(|h| h.grant.timeout)
        .max()
        .unwrap_or_default();
    (hook + desired.deploy.verify_timeout) * 2 + DRAIN_MARGIN
}

// === impl Reconciler ===

impl Reconciler {
    /// Stops deployments from starting (in the loop or by `run-now`) and waits for the
    /// running ones to end, up to [`drain_limit`]. Returns how many were still running then
    /// (0 when every one ended); those are marked interrupted at the next start.
    pub async fn drain(&self) -> usize {
        let running = self.running.close();
        if running == 0 {
            return 0;
        }
        let limit = drain_limit(&self.desired());
        info!(deployments = running, limit = %humantime::format_duration(limit), "waiting for running deployments to end");
        match tokio::time::timeout(limit, self.running.empty()).await {
            Ok(()) => {
                info!("running deployments ended");
                0
            }
            Err(_) => {
                let left = self.running.count();
                error!(deployments = left, limit = %humantime::format_duration(limit), "deployments still running at shutdown; check their endpoints");
                left
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_set_refuses_new_deployments_and_empties_as_they_leave() {
        let r = std::sync::Arc::new(Running::default());
        assert_eq!(r.enter(1), Ok(()));
        assert_eq!(r.enter(1), Err(Refused::Running));
        assert_eq!(r.enter(2), Ok(()));
        assert_eq!(r.close(), 2);
        assert_eq!(r.enter(3), Err(Refused::Closed));
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.empty().await })
        };
        r.leave(1);
        // One is still running: the waiter cannot have returned.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        r.leave(2);
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("empty returns once the last one left")
            .unwrap();
        assert_eq!(r.count(), 0);
    }
}
