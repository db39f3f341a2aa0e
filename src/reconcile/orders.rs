//! Placing orders and counting how they end: one order, the orders a crash left pending,
//! and the back-off after a failure.

use std::sync::PoisonError;
use std::time::Duration;

use tracing::{error, info, warn};

use super::metrics::OrderLabels;
use super::{Desired, OrderReason, Reconciler, plan, unix, version_ari_id};
use crate::issuer::{CertificateSpec, Issuer, Resumption};

/// The first retry delay after a failed order; it doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest wait between retries of a failing certificate.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

impl Reconciler {
    /// Connects to the ACME account when there are certificates to manage and no account
    /// yet, or the directory changed (a reload); a fresh account first resumes the orders a
    /// crash interrupted. `issuer` is `None` afterwards when the CA cannot be reached.
    pub(super) async fn connect(&self, issuer: &mut Option<(String, Issuer)>, desired: &Desired) {
        if desired.certificates.is_empty()
            || issuer
                .as_ref()
                .is_some_and(|(dir, _)| *dir == desired.acme.directory)
        {
            return;
        }
        match Issuer::connect(
            desired.acme.clone(),
            &self.store,
            self.responder.clone(),
            self.clock.as_ref(),
        )
        .await
        {
            Ok(i) => {
                // Before anything is ordered: what a crash interrupted.
                self.resume(&i, desired).await;
                *issuer = Some((desired.acme.directory.clone(), i));
            }
            Err(e) => {
                error!(directory = %desired.acme.directory, error = %e, "cannot reach the ACME account");
                *issuer = None;
            }
        }
    }

    /// Orders what the plan says is due now; without an account, each counts as a
    /// `client` failure and is retried with back-off.
    pub(super) async fn order_due(&self, issuer: Option<&Issuer>, desired: &Desired) {
        let now = unix(self.clock.as_ref());
        let planned = plan(&self.states(desired), now, desired.renew_fraction);
        for (name, reason) in &planned.orders {
            let Some(spec) = desired.certificates.iter().find(|c| c.name == *name) else {
                continue;
            };
            // key = "agent": ordered once the agent's CSR is here (its desired state asks).
            if spec.agent_key.is_some() && !matches!(self.store.agent_csr(name), Ok(Some(_))) {
                self.agents.csr_due(name);
                continue;
            }
            let Some(iss) = issuer else {
                self.failed(name, "client", None);
                continue;
            };
            // A renewal names the version it replaces, so the CA can relax rate limits
            // and know the old one is going away (RFC 9773 §5).
            let replaces = match reason {
                OrderReason::Renewal => self
                    .store
                    .latest(name)
                    .ok()
                    .flatten()
                    .and_then(|v| version_ari_id(&v)),
                OrderReason::Missing => None,
            };
            info!(certificate = %name, reason = ?reason, "ordering");
            let _ = self.order(iss, spec, replaces.as_deref()).await;
        }
    }

    /// Orders a version of `spec`, counting the result in `tlsward_acme_orders_total` and
    /// scheduling the retry of a failure.
    pub(super) async fn order(
        &self,
        issuer: &Issuer,
        spec: &CertificateSpec,
        replaces: Option<&str>,
    ) -> Result<crate::store::Version, crate::issuer::IssueError> {
        let name = &spec.name;
        match issuer
            .issue(spec, &self.store, self.clock.as_ref(), replaces)
            .await
        {
            Ok(v) => {
                self.retries
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(name);
                self.metrics
                    .orders
                    .get_or_create(&OrderLabels {
                        result: "valid",
                        reason: "none",
                    })
                    .inc();
                self.metrics
                    .last_success
                    .set(unix(self.clock.as_ref()) as f64);
                info!(certificate = %name, serial = %v.serial, "stored new version");
                self.agents.bump();
                Ok(v)
            }
            Err(e) => {
                warn!(certificate = %name, error = %e, "order failed");
                self.failed(name, e.reason(), e.retry_after());
                Err(e)
            }
        }
    }

    /// Resumes the orders a crash left pending, counting each that ends in
    /// `tlsward_acme_orders_total` (`abandoned` with its reason, for those that cannot
    /// complete).
    pub(super) async fn resume(&self, issuer: &Issuer, desired: &Desired) {
        let resumed = match issuer
            .resume(&self.store, self.clock.as_ref(), &desired.certificates)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "cannot resume the interrupted orders");
                return;
            }
        };
        for r in resumed {
            let (result, reason) = match &r.outcome {
                Resumption::Stored(_) => ("valid", "none"),
                Resumption::Abandoned(why) => ("abandoned", why.as_str()),
                Resumption::Failed(e) => ("failed", e.reason()),
                Resumption::Kept(_) => continue,
            };
            self.metrics
                .orders
                .get_or_create(&OrderLabels { result, reason })
                .inc();
        }
    }

    /// Schedules the next attempt after a failure: exponential back-off, but never sooner
    /// than the CA's `Retry-After`.
    pub(super) fn failed(&self, name: &str, reason: &'static str, retry_after: Option<Duration>) {
        let now = unix(self.clock.as_ref());
        let mut retries = self.retries.lock().unwrap_or_else(PoisonError::into_inner);
        let attempts = retries.get(name).map_or(0, |(n, _)| *n) + 1;
        let backoff = (FIRST_RETRY * 2u32.saturating_pow(attempts - 1)).min(MAX_RETRY);
        let delay = retry_after.map_or(backoff, |ra| ra.max(backoff));
        retries.insert(name.to_owned(), (attempts, now + delay.as_secs() as i64));
        self.metrics
            .orders
            .get_or_create(&OrderLabels {
                result: "failed",
                reason,
            })
            .inc();
        self.metrics.last_failure.set(now as f64);
    }
}
