//! ARI (RFC 9773): asking the CA for the renewal window of each certificate's newest
//! version, and of the certificate each endpoint actually serves.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::Duration;

use tracing::{error, warn};

use super::{Desired, Reconciler, point_in_window, renewal_time, unix};
use crate::issuer::Issuer;

/// The soonest the CA's renewal window is asked for again (its Retry-After may say later).
pub const ARI_MIN_RECHECK: Duration = Duration::from_secs(5);
/// The longest between two looks at a renewal window (RFC 9773 §4.3 suggests polling at
/// least daily; this is more often, as short lifetimes make windows move fast).
pub const ARI_MAX_RECHECK: Duration = Duration::from_secs(6 * 3600);

/// What the CA says about the certificate an endpoint serves.
#[derive(Debug, Clone)]
pub(super) struct ServedWindow {
    pub(super) sha256: String,
    pub(super) window: Option<(i64, i64)>,
    pub(super) next_check: i64,
}

impl Reconciler {
    /// Asks the CA for the renewal window of each certificate's newest version when due,
    /// and records the point chosen inside it.
    pub(super) async fn refresh_windows(&self, issuer: &Issuer, desired: &Desired) {
        for spec in &desired.certificates {
            let Some(version) = self.store.latest(&spec.name).ok().flatten() else {
                continue;
            };
            let Some(ari_id) = version.ari_id.clone() else {
                continue;
            };
            let now = unix(self.clock.as_ref());
            let due = self
                .ari_checks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&version.id)
                .copied();
            if due.is_some_and(|t| t > now) {
                continue;
            }
            let next = match issuer.renewal_window(&ari_id).await {
                Ok(Some((start, end, retry))) => {
                    // Never later than the lifetime fraction: a window that ends past the
                    // fallback (or past expiry, as Pebble's may) must not delay renewal.
                    let fallback = renewal_time(
                        version.not_before,
                        version.not_after,
                        desired.renew_fraction,
                    );
                    let at =
                        point_in_window((start, end), now, version.renew_at).min(fallback.max(now));
                    if let Err(e) = self
                        .store
                        .set_renewal_window(&version, (start, end), at, now)
                    {
                        error!(certificate = %spec.name, error = %e, "cannot record the renewal window");
                    }
                    now + retry
                        .as_secs()
                        .clamp(ARI_MIN_RECHECK.as_secs(), ARI_MAX_RECHECK.as_secs())
                        as i64
                }
                // No ARI at this CA: the lifetime fraction decides; look again much later.
                Ok(None) => now + ARI_MAX_RECHECK.as_secs() as i64,
                Err(e) => {
                    warn!(certificate = %spec.name, error = %e, "renewal information unavailable");
                    now + ARI_MIN_RECHECK.as_secs() as i64
                }
            };
            let mut checks = self
                .ari_checks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            checks.retain(|id, _| *id >= version.id || *id < 0);
            checks.insert(version.id, next);
        }
        self.refresh_served_windows(issuer, desired).await;
    }

    /// Asks the CA about the certificate each endpoint actually serves (RFC 9773 applies to
    /// any certificate it issued, deployed or not), so its advice about what is live, a
    /// revocation for instance, is seen even when the endpoint is behind on deployments.
    async fn refresh_served_windows(&self, issuer: &Issuer, desired: &Desired) {
        if !issuer.offers_ari() {
            return;
        }
        let served: HashMap<String, (String, String)> = self.results.with(|map| {
            map.values()
                .filter_map(|state| {
                    let facts = state.last.first()?.outcome.as_ref().ok()?;
                    Some((
                        state.spec.name.clone(),
                        (facts.leaf.sha256.clone(), facts.leaf.ari_id()?),
                    ))
                })
                .collect()
        });
        let now = unix(self.clock.as_ref());
        for e in &desired.endpoints {
            let Some((sha256, id)) = served.get(&e.target) else {
                continue;
            };
            let known = self
                .served_windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&e.name)
                .cloned();
            if known
                .as_ref()
                .is_some_and(|w| w.sha256 == *sha256 && w.next_check > now)
            {
                continue;
            }
            let window = match issuer.renewal_window(id).await {
                Ok(Some((start, end, retry))) => ServedWindow {
                    sha256: sha256.clone(),
                    window: Some((start, end)),
                    next_check: now
                        + retry
                            .as_secs()
                            .clamp(ARI_MIN_RECHECK.as_secs(), ARI_MAX_RECHECK.as_secs())
                            as i64,
                },
                // A certificate from another CA, or unknown to this one.
                Ok(None) | Err(_) => ServedWindow {
                    sha256: sha256.clone(),
                    window: None,
                    next_check: now + ARI_MAX_RECHECK.as_secs() as i64,
                },
            };
            self.served_windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(e.name.clone(), window);
        }
    }
}
