//! Pure X.509 facts and checks over a presented chain and a point in time.
//!
//! Owns: parsing certificates ([`CertFacts`]), path validation with precise reasons, hostname
//! matching, expiry and validity, key and signature strength, chain order, the CA/Browser
//! Forum's maximum validity, and stapled OCSP. Works only on bytes plus `now`: it must not
//! know about sockets, files, clocks, HTTP or metrics, and it never logs.
//!
//! The public interface is [`analyze`], which turns a chain into [`ChainFacts`].

mod chain;
mod checks;
mod facts;
mod ocsp;
mod policy;
mod trust;

use std::time::SystemTime;

pub use checks::{Check, CheckKind, Finding, Reason, Severity, Status};
pub use facts::{CertFacts, Curve, KeyKind, sha256_hex};
pub use ocsp::{OcspCertStatus, OcspStaple};
pub use policy::{
    DEFAULT_CRIT_DAYS, DEFAULT_CRIT_FRACTION, DEFAULT_WARN_DAYS, DEFAULT_WARN_FRACTION,
    MIN_RSA_BITS, Policy, Threshold, max_validity_days,
};
pub use rustls_pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;
pub use trust::{Origin, TrustStore};

pub(crate) use chain::rfc3339;

/// Errors that stop analysis altogether.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// No certificate at all.
    #[error("no certificate was presented")]
    Empty,
    /// The leaf cannot be parsed as X.509.
    #[error("malformed certificate: {0}")]
    Malformed(String),
}

/// Everything tlsward learned about a presented chain: the facts and every check's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainFacts {
    /// The leaf (the first presented certificate).
    pub leaf: CertFacts,
    /// Every presented certificate that could be parsed, leaf first, in the order sent.
    pub chain: Vec<CertFacts>,
    /// Every check, in report order.
    pub checks: Vec<Check>,
    /// The stapled OCSP response, when the server sent one that could be read.
    pub ocsp: Option<OcspStaple>,
    /// Where the anchor of the validated path came from, when validation succeeded.
    pub anchor_origin: Option<Origin>,
    /// Fractional days from the analysis time to the leaf's notAfter.
    pub days_left: f64,
    /// The earliest notAfter among the presented certificates other than self-issued roots.
    pub earliest_not_after: OffsetDateTime,
}

impl ChainFacts {
    /// The worst severity among the checks, as a status.
    pub fn status(&self) -> Status {
        self.top()
            .and_then(|c| c.finding.as_ref())
            .map_or(Status::Ok, |f| f.severity.into())
    }

    /// The failed check that explains the status best: the most severe, then the earliest
    /// [`Reason`] in precedence order.
    pub fn top(&self) -> Option<&Check> {
        self.checks
            .iter()
            .filter(|c| c.finding.is_some())
            .min_by_key(|c| {
                let f = c.finding.as_ref().expect("filtered");
                (std::cmp::Reverse(f.severity), f.reason)
            })
    }

    /// The stable reason label of [`Self::top`].
    pub fn reason(&self) -> Option<Reason> {
        self.top()
            .and_then(|c| c.finding.as_ref())
            .map(|f| f.reason)
    }

    /// The check of the given kind.
    pub fn check(&self, kind: CheckKind) -> Option<&Check> {
        self.checks.iter().find(|c| c.kind == kind)
    }

    /// Adds or replaces a check (the prober adds the handshake's verdict).
    pub fn set_check(&mut self, check: Check) {
        match self.checks.iter_mut().find(|c| c.kind == check.kind) {
            Some(slot) => *slot = check,
            None => {
                self.checks.push(check);
                self.checks.sort_by_key(|c| c.kind);
            }
        }
    }
}

/// Analyzes a presented chain (leaf first) for `name` at `now`.
///
/// `ocsp` is a stapled OCSP response, if the server sent one. Only an empty chain or an
/// unparsable leaf is an error; every other problem is a failed [`Check`] inside the result, so
/// the leaf is reported even when verification fails.
pub fn analyze(
    chain: &[CertificateDer<'_>],
    name: &ServerName<'_>,
    ocsp: Option<&[u8]>,
    trust: &TrustStore,
    policy: &Policy,
    now: SystemTime,
) -> Result<ChainFacts, CertError> {
    let leaf_der = chain.first().ok_or(CertError::Empty)?;
    let leaf = CertFacts::parse(leaf_der)?;
    let now = OffsetDateTime::from(now);
    let mut facts = vec![leaf.clone()];
    let mut malformed = Vec::new();
    for (i, der) in chain.iter().enumerate().skip(1) {
        match CertFacts::parse(der) {
            Ok(f) => facts.push(f),
            Err(_) => malformed.push(i),
        }
    }

    let ee = webpki::EndEntityCert::try_from(leaf_der);
    let verdict = chain::verify_path(ee.as_ref(), &chain[1..], &facts, trust, now);
    let mut checks = vec![
        verdict.check,
        chain::check_hostname(ee.as_ref(), &leaf, name),
        check_expiry(&leaf, policy, now),
        check_validity_window(&leaf, now),
        check_keys(&facts),
        check_signatures(&facts),
        chain::check_order(&facts, &malformed),
        check_max_validity(&leaf, verdict.origin),
    ];
    let (ocsp, ocsp_check) = check_ocsp(ocsp, &leaf);
    checks.push(ocsp_check);

    let earliest_not_after = facts
        .iter()
        .filter(|f| !f.self_issued || std::ptr::eq(*f, &facts[0]))
        .map(|f| f.not_after)
        .min()
        .unwrap_or(leaf.not_after);
    Ok(ChainFacts {
        days_left: leaf.days_left(now),
        leaf,
        chain: facts,
        checks,
        ocsp,
        anchor_origin: verdict.origin,
        earliest_not_after,
    })
}

fn check_expiry(leaf: &CertFacts, policy: &Policy, now: OffsetDateTime) -> Check {
    let days = leaf.days_left(now);
    let kind = CheckKind::Expiry;
    if days <= 0.0 {
        return Check::fail(
            kind,
            Severity::Critical,
            Reason::CertExpired,
            format!(
                "expired {:.1} days ago, at {}",
                -days,
                rfc3339(leaf.not_after)
            ),
        );
    }
    let detail = format!("expires in {days:.1} days, at {}", rfc3339(leaf.not_after));
    let lifetime = (leaf.not_after - leaf.not_before).as_seconds_f64() / 86_400.0;
    let (warn, crit) = policy.thresholds_at(lifetime);
    if days < crit {
        Check::fail(
            kind,
            Severity::Critical,
            Reason::CertExpiring,
            format!("{detail} ({})", policy.describe(true, lifetime)),
        )
    } else if days < warn {
        Check::fail(
            kind,
            Severity::Warning,
            Reason::CertExpiring,
            format!("{detail} ({})", policy.describe(false, lifetime)),
        )
    } else {
        Check::pass(kind, detail)
    }
}

fn check_validity_window(leaf: &CertFacts, now: OffsetDateTime) -> Check {
    if leaf.not_before > now {
        let days = (leaf.not_before - now).as_seconds_f64() / 86_400.0;
        Check::fail(
            CheckKind::ValidityWindow,
            Severity::Critical,
            Reason::CertNotYetValid,
            format!(
                "not valid before {} ({days:.1} days from now)",
                rfc3339(leaf.not_before)
            ),
        )
    } else {
        Check::pass(
            CheckKind::ValidityWindow,
            format!("valid since {}", rfc3339(leaf.not_before)),
        )
    }
}

/// The leaf and every presented certificate that is not a self-issued root (a root's own key
/// and self-signature are not what the handshake relies on).
fn judged(facts: &[CertFacts]) -> impl Iterator<Item = (usize, &CertFacts)> {
    facts
        .iter()
        .enumerate()
        .filter(|(i, f)| *i == 0 || !f.self_issued)
}

fn position(i: usize) -> String {
    if i == 0 {
        "leaf".to_owned()
    } else {
        format!("certificate #{}", i + 1)
    }
}

fn check_keys(facts: &[CertFacts]) -> Check {
    let weak: Vec<String> = judged(facts)
        .filter_map(|(i, f)| {
            policy::key_weakness(f.public_key).map(|w| format!("{}: {w}", position(i)))
        })
        .collect();
    if weak.is_empty() {
        Check::pass(
            CheckKind::KeyStrength,
            format!("leaf key {}", facts[0].public_key),
        )
    } else {
        Check::fail(
            CheckKind::KeyStrength,
            Severity::Critical,
            Reason::WeakKey,
            weak.join("; "),
        )
    }
}

fn check_signatures(facts: &[CertFacts]) -> Check {
    let weak: Vec<String> = judged(facts)
        .filter(|(_, f)| f.weak_signature)
        .map(|(i, f)| format!("{} is signed with {}", position(i), f.signature_algorithm))
        .collect();
    if weak.is_empty() {
        Check::pass(
            CheckKind::SignatureAlgorithm,
            facts[0].signature_algorithm.clone(),
        )
    } else {
        Check::fail(
            CheckKind::SignatureAlgorithm,
            Severity::Critical,
            Reason::WeakSignature,
            weak.join("; "),
        )
    }
}

fn check_max_validity(leaf: &CertFacts, origin: Option<Origin>) -> Check {
    let period = policy::validity_period(leaf);
    let days = period.as_seconds_f64() / 86_400.0;
    let max = max_validity_days(leaf.not_before);
    let kind = CheckKind::MaxValidity;
    if period <= time::Duration::days(max) {
        return Check::pass(
            kind,
            format!("{days:.1}-day lifetime, within the {max}-day limit for its issue date"),
        );
    }
    let detail = format!(
        "{days:.1}-day lifetime exceeds the CA/Browser Forum limit of {max} days for its issue date"
    );
    if origin == Some(Origin::Public) {
        Check::fail(kind, Severity::Warning, Reason::MaxValidityExceeded, detail)
    } else {
        Check::pass(
            kind,
            format!("{detail}; not applied, as the chain does not lead to a public root"),
        )
    }
}

fn check_ocsp(staple: Option<&[u8]>, leaf: &CertFacts) -> (Option<OcspStaple>, Check) {
    let kind = CheckKind::Ocsp;
    let Some(der) = staple else {
        return (
            None,
            Check::pass(kind, "no stapled OCSP response".to_owned()),
        );
    };
    match ocsp::parse_staple(der, &leaf.serial) {
        Ok(s) if s.status == OcspCertStatus::Revoked => {
            let when = s
                .revocation_time
                .map(rfc3339)
                .unwrap_or_else(|| "an unknown time".into());
            let check = Check::fail(
                kind,
                Severity::Critical,
                Reason::OcspRevoked,
                format!("stapled OCSP response: revoked at {when}"),
            );
            (Some(s), check)
        }
        Ok(s) => {
            let check = Check::pass(
                kind,
                format!("stapled OCSP response: {}", s.status.as_str()),
            );
            (Some(s), check)
        }
        Err(e) => (
            None,
            Check::pass(kind, format!("stapled OCSP response is unreadable: {e}")),
        ),
    }
}

/// Chains the unit tests of other modules analyse.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::time::SystemTime;

    use super::{ChainFacts, Origin, Policy, ServerName, TrustStore, analyze};

    /// A self-signed certificate for `name`, served alone and trusted, analysed at `at` as
    /// for the server name `verified_as`.
    pub(crate) fn self_signed(name: &str, verified_as: &str, at: SystemTime) -> ChainFacts {
        let leaf = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let mut trust = TrustStore::empty();
        trust.add_all([leaf.cert.der()], Origin::Private);
        analyze(
            &[leaf.cert.der().clone()],
            &ServerName::try_from(verified_as.to_owned()).unwrap(),
            None,
            &trust,
            &Policy::new(),
            at,
        )
        .unwrap()
    }
}
