//! Thresholds and rules that are policy rather than path validation: expiry warnings, key and
//! signature strength, and the CA/Browser Forum's maximum validity.

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::facts::{CertFacts, KeyKind};

/// Default days before expiry at which a long-lived leaf turns `warning`.
pub const DEFAULT_WARN_DAYS: f64 = 21.0;
/// Default days before expiry at which a long-lived leaf turns `critical`.
pub const DEFAULT_CRIT_DAYS: f64 = 7.0;
/// Default fraction of its lifetime left at which a short-lived leaf turns `warning`: a third,
/// where ACME clients renew.
pub const DEFAULT_WARN_FRACTION: f64 = 1.0 / 3.0;
/// Default fraction of its lifetime left at which a short-lived leaf turns `critical`.
pub const DEFAULT_CRIT_FRACTION: f64 = 1.0 / 6.0;
/// The smallest RSA modulus that is not weak.
pub const MIN_RSA_BITS: usize = 2048;

/// Lifetimes (days) at which a warning threshold is compared with a critical one.
/// Longest first, so that a refusal names the most familiar lifetime that shows the problem.
const SAMPLE_LIFETIMES: [f64; 9] = [398.0, 200.0, 100.0, 90.0, 47.0, 30.0, 10.0, 6.0, 1.0];

/// An expiry threshold: days left, a fraction of the certificate's own lifetime left, or
/// both, where the earlier of the two applies. Fixed days suit long-lived certificates; a
/// fraction suits short-lived ones, which fixed days would flag for their whole life.
///
/// Written `21d`, `33%` or `21d,33%` (a bare number is days).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// Days left; infinite when not set.
    days: f64,
    /// Fraction of the lifetime left; infinite when not set.
    fraction: f64,
}

impl Threshold {
    /// A fixed number of days left.
    pub const fn days(days: f64) -> Self {
        Self {
            days,
            fraction: f64::INFINITY,
        }
    }

    /// A fraction (0..=1) of the lifetime left.
    pub const fn fraction(fraction: f64) -> Self {
        Self {
            days: f64::INFINITY,
            fraction,
        }
    }

    /// Whichever of `days` and `fraction` of the lifetime comes later in a certificate's life.
    pub const fn both(days: f64, fraction: f64) -> Self {
        Self { days, fraction }
    }

    /// The threshold in days left for a certificate that lives `lifetime_days`.
    pub fn at(&self, lifetime_days: f64) -> f64 {
        self.days.min(self.fraction * lifetime_days.max(0.0))
    }

    /// The configured days, if any.
    pub fn fixed_days(&self) -> Option<f64> {
        self.days.is_finite().then_some(self.days)
    }

    /// The configured fraction, if any.
    pub fn lifetime_fraction(&self) -> Option<f64> {
        self.fraction.is_finite().then_some(self.fraction)
    }

    /// Bits that identify the threshold, for use as a map key.
    pub fn key(&self) -> (u64, u64) {
        (self.days.to_bits(), self.fraction.to_bits())
    }

    /// What decides at `lifetime_days`, for a check's detail: `21 days` or `33% of its
    /// 47-day lifetime`.
    fn describe(&self, lifetime_days: f64) -> String {
        let at = self.at(lifetime_days);
        if self.fraction.is_finite() && self.fraction * lifetime_days <= self.days {
            format!(
                "{at:.1} days, {}% of its {lifetime_days:.0}-day lifetime",
                percent(self.fraction)
            )
        } else {
            format!("{} days", trim(self.days))
        }
    }
}

impl std::str::FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Self::both(f64::INFINITY, f64::INFINITY);
        for part in s.split(',').map(str::trim) {
            let bad = || format!("{part:?} is not a threshold (use e.g. 21d, 33% or 21d,33%)");
            if let Some(p) = part.strip_suffix('%') {
                let v: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&v) || out.fraction.is_finite() {
                    return Err(bad());
                }
                out.fraction = v / 100.0;
            } else {
                let d = part.strip_suffix('d').unwrap_or(part);
                let v: f64 = d.trim().parse().map_err(|_| bad())?;
                if !(0.0..=3650.0).contains(&v) || out.days.is_finite() {
                    return Err(bad());
                }
                out.days = v;
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.fixed_days(), self.lifetime_fraction()) {
            (Some(d), Some(fr)) => write!(f, "{}d,{}%", trim(d), percent(fr)),
            (Some(d), None) => write!(f, "{}d", trim(d)),
            (None, Some(fr)) => write!(f, "{}%", percent(fr)),
            (None, None) => f.write_str("never"),
        }
    }
}

/// A fraction as a percentage with at most one decimal (`33.3`, `50`).
fn percent(fraction: f64) -> String {
    trim((fraction * 1000.0).round() / 10.0)
}

/// A number without a trailing `.0`.
fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// The expiry thresholds a verdict is judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    warn: Threshold,
    crit: Threshold,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy {
    /// The defaults: warning at 21 days or a third of the lifetime left, whichever comes
    /// later in the certificate's life; critical at 7 days or a sixth.
    pub const fn new() -> Self {
        Self {
            warn: Threshold::both(DEFAULT_WARN_DAYS, DEFAULT_WARN_FRACTION),
            crit: Threshold::both(DEFAULT_CRIT_DAYS, DEFAULT_CRIT_FRACTION),
        }
    }

    /// Days left below which the leaf is a warning, whatever its lifetime.
    pub const fn with_warn_days(self, days: f64) -> Self {
        self.with_warn(Threshold::days(days))
    }

    /// Days left below which the leaf is critical, whatever its lifetime.
    pub const fn with_crit_days(self, days: f64) -> Self {
        self.with_crit(Threshold::days(days))
    }

    /// The warning threshold.
    pub const fn with_warn(mut self, t: Threshold) -> Self {
        self.warn = t;
        self
    }

    /// The critical threshold.
    pub const fn with_crit(mut self, t: Threshold) -> Self {
        self.crit = t;
        self
    }

    /// The warning threshold.
    pub const fn warn(&self) -> Threshold {
        self.warn
    }

    /// The critical threshold.
    pub const fn crit(&self) -> Threshold {
        self.crit
    }

    /// Refuses a critical threshold that comes before the warning one for some lifetime
    /// (it would skip the warning), naming that lifetime.
    pub fn check(&self) -> Result<(), String> {
        for l in SAMPLE_LIFETIMES {
            let (w, c) = (self.warn.at(l), self.crit.at(l));
            if c > w {
                return Err(format!(
                    "the critical threshold {} comes before the warning threshold {} for a \
                     {l}-day certificate ({c:.1} > {w:.1} days left)",
                    self.crit, self.warn
                ));
            }
        }
        Ok(())
    }

    /// `(warning, critical)` in days left for a certificate of `lifetime_days`.
    pub fn thresholds_at(&self, lifetime_days: f64) -> (f64, f64) {
        (self.warn.at(lifetime_days), self.crit.at(lifetime_days))
    }

    /// The detail of a threshold that decided: `warning below 15.7 days, 33% of ...`.
    pub(super) fn describe(&self, critical: bool, lifetime_days: f64) -> String {
        if critical {
            format!("critical below {}", self.crit.describe(lifetime_days))
        } else {
            format!("warning below {}", self.warn.describe(lifetime_days))
        }
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
        assert_eq!(p.warn(), Threshold::days(30.5));
        assert_eq!(p.crit().fixed_days(), Some(2.0));
        assert_eq!(p.crit().lifetime_fraction(), None);
        assert_eq!(
            Policy::default().warn().fixed_days(),
            Some(DEFAULT_WARN_DAYS)
        );
    }
}

#[cfg(test)]
mod threshold_tests {
    use super::*;

    #[test]
    fn thresholds_parse_print_and_combine() {
        let t: Threshold = "21d,33%".parse().unwrap();
        assert_eq!(t, Threshold::both(21.0, 0.33));
        assert_eq!(t.to_string(), "21d,33%");
        assert_eq!("14".parse::<Threshold>().unwrap(), Threshold::days(14.0));
        assert_eq!("50%".parse::<Threshold>().unwrap().to_string(), "50%");
        for bad in ["", "x", "-1d", "120%", "1d,2d", "5%,6%", "4000d"] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
        // The earlier of the two in a certificate's life.
        assert_eq!(t.at(398.0), 21.0);
        assert!((t.at(47.0) - 15.51).abs() < 1e-9);
        assert_eq!(Policy::new().warn().to_string(), "21d,33.3%");
    }

    #[test]
    fn a_critical_threshold_above_the_warning_is_refused_with_the_lifetime() {
        let p = Policy::new().with_crit(Threshold::fraction(0.5));
        let e = p.check().unwrap_err();
        assert!(e.contains("for a 398-day certificate"), "{e}");
        assert!(Policy::new().check().is_ok());
        assert!(
            Policy::new()
                .with_warn_days(30.0)
                .with_crit_days(7.0)
                .check()
                .is_ok()
        );
    }
}
