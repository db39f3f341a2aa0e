//! ARI (RFC 9773): asking the CA for the renewal window of each certificate's newest
//! version, and of the certificate each endpoint actually serves.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tracing::{error, warn};

use super::{Desired, Reconciler, point_in_window, renewal_time, unix};
use crate::cert::CertFacts;
use crate::issuer::Issuer;
use crate::store::Version;

/// The soonest the CA's renewal window is asked for again (its Retry-After may say later).
pub const ARI_MIN_RECHECK: Duration = Duration::from_secs(5);
/// The longest between two looks at a renewal window (RFC 9773 §4.3 suggests polling at
/// least daily; this is more often, as short lifetimes make windows move fast).
pub const ARI_MAX_RECHECK: Duration = Duration::from_secs(6 * 3600);

/// The ARI identifier (RFC 9773 §4.1) of a stored version, computed from its leaf by
/// [`CertFacts::ari_id`], the same function that names the certificate an endpoint serves:
/// one identifier for a certificate, whichever way it is met, and the same for versions
/// an earlier release stored with another computation. `None` when the leaf names no
/// issuer key (or the stored chain has no parsable leaf).
pub fn version_ari_id(version: &Version) -> Option<String> {
    let chain = version.chain_der().ok()?;
    CertFacts::parse(chain.first()?).ok()?.ari_id()
}

/// When to ask the CA again, `retry` (its Retry-After, or the fallback) after `now`, kept
/// within [`ARI_MIN_RECHECK`]..=[`ARI_MAX_RECHECK`]: the one clamp both windows use, the
/// newest version's and the served certificate's.
fn recheck_at(now: i64, retry: Duration) -> i64 {
    let secs = retry
        .as_secs()
        .clamp(ARI_MIN_RECHECK.as_secs(), ARI_MAX_RECHECK.as_secs());
    now.saturating_add(secs as i64)
}

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
            let Some(ari_id) = version_ari_id(&version) else {
                continue;
            };
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
                    recheck_at(now, retry)
                }
                // No ARI at this CA: the lifetime fraction decides; look again much later.
                Ok(None) => recheck_at(now, ARI_MAX_RECHECK),
                Err(e) => {
                    warn!(certificate = %spec.name, error = %e, "renewal information unavailable");
                    recheck_at(now, ARI_MIN_RECHECK)
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
        let served: HashMap<Arc<str>, (String, String)> = self.results.with(|map| {
            map.values()
                .filter_map(|state| {
                    let leaf = state.last.first()?.leaf.as_ref()?;
                    Some((
                        state.spec.name.clone(),
                        (leaf.sha256_hex(), leaf.ari_id.as_deref()?.to_owned()),
                    ))
                })
                .collect()
        });
        let now = unix(self.clock.as_ref());
        for e in &desired.endpoints {
            let Some((sha256, id)) = served.get(e.target.as_str()) else {
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
                    next_check: recheck_at(now, retry),
                },
                // A certificate from another CA, or unknown to this one.
                Ok(None) | Err(_) => ServedWindow {
                    sha256: sha256.clone(),
                    window: None,
                    next_check: recheck_at(now, ARI_MAX_RECHECK),
                },
            };
            self.served_windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(e.name.clone(), window);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(chain_pem: String, stored: Option<&str>) -> Version {
        Version {
            id: 1,
            certificate: "web".into(),
            serial: "00800102".into(),
            sha256: String::new(),
            not_before: 0,
            not_after: 0,
            chain_pem,
            ari_id: stored.map(str::to_owned),
            issued_at: 0,
            ari_window: None,
            renew_at: None,
        }
    }

    #[test]
    fn a_versions_ari_identifier_is_its_leafs_from_the_certificate_facts() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ari.test".to_owned()]).unwrap();
        // The high bit set: the identifier carries DER's leading zero (`AIABAg`).
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x80, 0x01, 0x02]));
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &issuer).unwrap();
        let served = CertFacts::parse(leaf.der()).unwrap().ari_id().unwrap();
        assert!(served.ends_with(".AIABAg"), "{served}");
        // A stored column written another way (without the zero) does not decide.
        let v = version(
            format!("{}{}", leaf.pem(), ca_cert.pem()),
            Some("bogus.gAEC"),
        );
        assert_eq!(version_ari_id(&v), Some(served));
        // No authorityKeyIdentifier, or no leaf at all: no identifier.
        assert_eq!(version_ari_id(&version(ca_cert.pem(), None)), None);
        assert_eq!(version_ari_id(&version(String::new(), Some("x.y"))), None);
    }

    #[test]
    fn the_recheck_is_the_cas_retry_after_kept_within_the_bounds() {
        let now = 1_000_000;
        assert_eq!(recheck_at(now, Duration::from_secs(600)), now + 600);
        // A CA asking again at once, or never, is held to the bounds.
        assert_eq!(recheck_at(now, Duration::ZERO), now + 5);
        assert_eq!(
            recheck_at(now, Duration::from_secs(30 * 86_400)),
            now + 6 * 3600
        );
        assert_eq!(recheck_at(now, ARI_MAX_RECHECK), now + 6 * 3600);
        assert_eq!(recheck_at(now, ARI_MIN_RECHECK), now + 5);
    }
}
