//! Placing orders and counting how they end: one order, the orders a crash left pending,
//! and the back-off after a failure.

use std::sync::PoisonError;
use std::time::Duration;

use tracing::{error, info, warn};

use super::metrics::OrderLabels;
use super::{Desired, Reconciler, unix};
use crate::issuer::{CertificateSpec, Issuer, Resumption};

/// The first retry delay after a failed order; it doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest wait between retries of a failing certificate.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

impl Reconciler {
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
