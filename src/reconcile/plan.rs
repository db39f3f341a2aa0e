//! Pure planning: given what is stored and what endpoints serve, at `now`, what to do.

/// When a certificate is due for renewal without ARI: when `fraction` of its lifetime is left
/// (RFC 8555 leaves timing to the client; ACME clients conventionally renew at a third).
pub fn renewal_time(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    not_after - (lifetime * fraction).round() as i64
}

/// Where to renew inside the CA's suggested window (RFC 9773 §4.2: a uniformly random point,
/// so clients do not all renew at once): keeps `chosen` if it is still inside the window,
/// else draws a new point; a window already over means now.
pub fn point_in_window((start, end): (i64, i64), now: i64, chosen: Option<i64>) -> i64 {
    if end <= now {
        return now;
    }
    if let Some(t) = chosen.filter(|t| (start..=end).contains(t)) {
        return t;
    }
    let from = start.max(now);
    from + ((end - from) as f64 * fastrand::f64()) as i64
}

/// A managed certificate as planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertState {
    /// Its name.
    pub name: String,
    /// (notBefore, notAfter) of the newest stored version.
    pub latest: Option<(i64, i64)>,
    /// When a failed order may be retried (unix seconds), if one failed.
    pub retry_after: Option<i64>,
    /// The renewal time chosen inside the CA's ARI window, when it has one; it replaces the
    /// lifetime fraction.
    pub renew_at: Option<i64>,
}

/// Why an order is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderReason {
    /// No version was ever issued.
    Missing,
    /// The newest version reached its renewal time.
    Renewal,
}

/// What to do now, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Certificates to order now, with why.
    pub orders: Vec<(String, OrderReason)>,
    /// The earliest future time something becomes due (unix seconds).
    pub next: Option<i64>,
}

/// Plans orders for `certs` at `now`.
pub fn plan(certs: &[CertState], now: i64, fraction: f64) -> Plan {
    let mut orders = Vec::new();
    let mut next: Option<i64> = None;
    let mut later = |t: i64| next = Some(next.map_or(t, |n| n.min(t)));
    for c in certs {
        if let Some(retry) = c.retry_after.filter(|r| *r > now) {
            later(retry);
            continue;
        }
        match c.latest {
            None => orders.push((c.name.clone(), OrderReason::Missing)),
            Some((nb, na)) => {
                let due = c.renew_at.unwrap_or_else(|| renewal_time(nb, na, fraction));
                if due <= now {
                    orders.push((c.name.clone(), OrderReason::Renewal));
                } else {
                    later(due);
                }
            }
        }
    }
    Plan { orders, next }
}

/// Whether an endpoint serves the latest version of its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// It serves the latest version.
    InSync,
    /// It serves an older version tlsward issued.
    Stale,
    /// It serves a certificate tlsward never issued for it.
    Foreign,
    /// It could not be probed, or nothing has been issued yet to compare with.
    Missing,
}

impl Drift {
    /// Every value [`Self::reason`] returns (when it is not `None`).
    pub const REASONS: [&'static str; 3] = ["stale", "foreign", "missing"];

    /// The stable reason label (`None` when in sync), one of [`Self::REASONS`].
    pub const fn reason(self) -> Option<&'static str> {
        match self {
            Self::InSync => None,
            Self::Stale => Some("stale"),
            Self::Foreign => Some("foreign"),
            Self::Missing => Some("missing"),
        }
    }
}

/// Compares the served leaf (`served`, a fingerprint) with the versions of the certificate
/// (`versions`, newest first).
pub fn drift(served: Option<&str>, versions: &[&str]) -> Drift {
    match (served, versions.first()) {
        (None, _) | (_, None) => Drift::Missing,
        (Some(s), Some(latest)) if s == *latest => Drift::InSync,
        (Some(s), _) if versions.contains(&s) => Drift::Stale,
        _ => Drift::Foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drift_reason_is_listed_and_in_sync_has_none() {
        let seen: Vec<&str> = [Drift::InSync, Drift::Stale, Drift::Foreign, Drift::Missing]
            .into_iter()
            .filter_map(|d| match d {
                // Fails to compile when a variant is added without a case here.
                Drift::InSync | Drift::Stale | Drift::Foreign | Drift::Missing => d.reason(),
            })
            .collect();
        assert_eq!(seen, Drift::REASONS);
        assert_eq!(Drift::InSync.reason(), None);
    }

    const DAY: i64 = 86_400;

    fn cert(name: &str, latest: Option<(i64, i64)>) -> CertState {
        CertState {
            name: name.into(),
            latest,
            retry_after: None,
            renew_at: None,
        }
    }

    #[test]
    fn renews_at_the_fraction_of_the_lifetime_left() {
        assert_eq!(renewal_time(0, 90 * DAY, 1.0 / 3.0), 60 * DAY);
        assert_eq!(renewal_time(0, 6 * DAY, 1.0 / 3.0), 4 * DAY);
        assert_eq!(
            renewal_time(0, 47 * DAY, 1.0 / 3.0),
            47 * DAY - (47 * DAY) / 3
        );
    }

    #[test]
    fn plans_missing_and_due_certificates_and_the_next_wakeup() {
        let certs = [
            cert("new", None),
            cert("due", Some((0, 90 * DAY))),
            cert("fresh", Some((50 * DAY, 140 * DAY))),
            cert("short", Some((60 * DAY, 66 * DAY))),
        ];
        let p = plan(&certs, 61 * DAY, 1.0 / 3.0);
        assert_eq!(
            p.orders,
            [
                ("new".to_owned(), OrderReason::Missing),
                ("due".to_owned(), OrderReason::Renewal)
            ]
        );
        assert_eq!(p.next, Some(64 * DAY), "the 6-day certificate is due first");
    }

    #[test]
    fn an_ari_window_overrides_the_fraction() {
        let mut c = cert("ari", Some((0, 90 * DAY)));
        c.renew_at = Some(30 * DAY);
        assert_eq!(plan(&[c.clone()], 29 * DAY, 1.0 / 3.0).next, Some(30 * DAY));
        assert_eq!(
            plan(&[c], 30 * DAY, 1.0 / 3.0).orders.len(),
            1,
            "due inside the window, long before 60 days"
        );
    }

    /// A random point inside an ARI window (RFC 9773 §4.2), or now when the window has passed.
    #[test]
    fn window_points_stay_inside() {
        for _ in 0..100 {
            let t = point_in_window((100, 200), 50, None);
            assert!((100..=200).contains(&t));
        }
        assert_eq!(point_in_window((100, 200), 500, None), 500);
        assert_eq!(
            point_in_window((100, 200), 50, Some(150)),
            150,
            "a chosen point inside stays"
        );
        let moved = point_in_window((300, 400), 50, Some(150));
        assert!(
            (300..=400).contains(&moved),
            "a window that moved gets a new point"
        );
    }

    #[test]
    fn a_failed_order_waits_for_its_retry_time() {
        let mut c = cert("new", None);
        c.retry_after = Some(100);
        let p = plan(&[c.clone()], 50, 1.0 / 3.0);
        assert!(p.orders.is_empty());
        assert_eq!(p.next, Some(100));
        assert_eq!(plan(&[c], 100, 1.0 / 3.0).orders.len(), 1);
    }

    #[test]
    fn drift_table() {
        let versions = ["v3", "v2", "v1"];
        assert_eq!(drift(Some("v3"), &versions), Drift::InSync);
        assert_eq!(drift(Some("v1"), &versions), Drift::Stale);
        assert_eq!(drift(Some("other"), &versions), Drift::Foreign);
        assert_eq!(drift(None, &versions), Drift::Missing);
        assert_eq!(drift(Some("v1"), &[]), Drift::Missing);
        assert_eq!(Drift::Stale.reason(), Some("stale"));
    }
}
