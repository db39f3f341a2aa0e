//! Thresholds and rules that are policy rather than path validation: expiry warnings, key and
//! signature strength, and the CA/Browser Forum's maximum validity.

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::facts::{CertFacts, KeyKind};

/// Default days before expiry at which a leaf turns `warning`.
pub const DEFAULT_WARN_DAYS: f64 = 21.0;
/// Default days before expiry at which a leaf turns `critical`.
pub const DEFAULT_CRIT_DAYS: f64 = 7.0;
/// The smallest RSA modulus that is not weak.
pub const MIN_RSA_BITS: usize = 2048;

/// The expiry thresholds a verdict is judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    warn_days: f64,
    crit_days: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy {
    /// The defaults: warn at [`DEFAULT_WARN_DAYS`], critical at [`DEFAULT_CRIT_DAYS`].
    pub const fn new() -> Self {
        Self {
            warn_days: DEFAULT_WARN_DAYS,
            crit_days: DEFAULT_CRIT_DAYS,
        }
    }

    /// Days left below which the leaf is a warning (overrides [`DEFAULT_WARN_DAYS`]).
    pub const fn with_warn_days(mut self, days: f64) -> Self {
        self.warn_days = days;
        self
    }

    /// Days left below which the leaf is critical (overrides [`DEFAULT_CRIT_DAYS`]).
    pub const fn with_crit_days(mut self, days: f64) -> Self {
        self.crit_days = days;
        self
    }

    /// The warning threshold in days.
    pub const fn warn_days(&self) -> f64 {
        self.warn_days
    }

    /// The critical threshold in days.
    pub const fn crit_days(&self) -> f64 {
        self.crit_days
    }
}

/// The CA/Browser Forum Baseline Requirements' maximum leaf validity for a certificate issued
/// at `issued` (BR §6.3.2, as amended by ballot SC-081): 398 days before 2026-03-15, then 200,
/// 100 from 2027-03-15, and 47 from 2029-03-15.
pub fn max_validity_days(issued: OffsetDateTime) -> i64 {
    if issued < datetime!(2026-03-15 00:00 UTC) {
        398
    } else if issued < datetime!(2027-03-15 00:00 UTC) {
        200
    } else if issued < datetime!(2029-03-15 00:00 UTC) {
        100
    } else {
        47
    }
}

/// A leaf's validity period as the BRs count it: notBefore and notAfter both inclusive.
pub(super) fn validity_period(leaf: &CertFacts) -> Duration {
    leaf.not_after - leaf.not_before + Duration::SECOND
}

/// Why a key is weak, or `None` when it is fine.
pub(super) fn key_weakness(key: KeyKind) -> Option<String> {
    match key {
        KeyKind::Rsa(bits) if bits < MIN_RSA_BITS => {
            Some(format!("RSA {bits}-bit key is below {MIN_RSA_BITS} bits"))
        }
        KeyKind::Dsa(bits) => Some(format!("DSA {bits}-bit key: DSA is no longer accepted")),
        KeyKind::Ec(super::facts::Curve::Other(bits)) if bits < 256 => {
            Some(format!("elliptic curve of {bits} bits is below 256"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_validity_follows_the_ballot_schedule() {
        assert_eq!(max_validity_days(datetime!(2026-03-14 23:59:59 UTC)), 398);
        assert_eq!(max_validity_days(datetime!(2026-03-15 00:00 UTC)), 200);
        assert_eq!(max_validity_days(datetime!(2027-03-14 12:00 UTC)), 200);
        assert_eq!(max_validity_days(datetime!(2027-03-15 00:00 UTC)), 100);
        assert_eq!(max_validity_days(datetime!(2029-03-15 00:00 UTC)), 47);
    }

    #[test]
    fn rsa_below_2048_and_dsa_are_weak() {
        assert!(key_weakness(KeyKind::Rsa(1024)).is_some());
        assert!(key_weakness(KeyKind::Rsa(2048)).is_none());
        assert!(key_weakness(KeyKind::Dsa(2048)).is_some());
        assert!(key_weakness(KeyKind::Ed25519).is_none());
    }

    #[test]
    fn policy_setters_override_defaults() {
        let p = Policy::new().with_warn_days(30.5).with_crit_days(2.0);
        assert_eq!(p.warn_days(), 30.5);
        assert_eq!(p.crit_days(), 2.0);
        assert_eq!(Policy::default().warn_days(), DEFAULT_WARN_DAYS);
    }
}
