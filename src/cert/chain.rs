//! Path validation (webpki) with precise reasons, and the order of the presented chain.

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;

use super::checks::{Check, CheckKind, Reason, Severity};
use super::facts::CertFacts;
use super::trust::{Origin, TrustStore};

/// The outcome of path validation: the check, and the origin of the anchor reached.
pub(crate) struct PathVerdict {
    pub(crate) check: Check,
    pub(crate) origin: Option<Origin>,
}

/// Validates the leaf `ee` (as webpki parsed it) with `intermediates` (whatever the server
/// sent after the leaf) against `trust` at `now` for server authentication (RFC 5280 §6 as
/// webpki implements it).
pub(crate) fn verify_path(
    ee: Result<&webpki::EndEntityCert<'_>, &webpki::Error>,
    intermediates: &[CertificateDer<'_>],
    facts: &[CertFacts],
    trust: &TrustStore,
    now: OffsetDateTime,
) -> PathVerdict {
    let fail = |reason: Reason, detail: String| PathVerdict {
        check: Check::fail(CheckKind::Chain, Severity::Critical, reason, detail),
        origin: None,
    };
    let ee = match ee {
        Ok(ee) => ee,
        Err(e) => return fail(Reason::ChainInvalid, format!("leaf is unusable: {e}")),
    };
    let unix = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    let result = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        trust.webpki_anchors(),
        intermediates,
        unix,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    match result {
        Ok(path) => {
            let (origin, name) = match trust.describe(path.anchor()) {
                Some((o, n)) => (Some(o), n.to_owned()),
                None => (None, "a trust anchor".to_owned()),
            };
            let depth = path.intermediate_certificates().count();
            PathVerdict {
                check: Check::pass(
                    CheckKind::Chain,
                    format!("trusted: {depth} intermediate(s) to {name}"),
                ),
                origin,
            }
        }
        Err(e) => {
            let (reason, detail) = classify(&e, facts, trust, now);
            fail(reason, detail)
        }
    }
}

/// Turns a webpki error into a precise reason, looking at the chain where webpki's error
/// does not say which certificate was at fault.
fn classify(
    err: &webpki::Error,
    facts: &[CertFacts],
    trust: &TrustStore,
    now: OffsetDateTime,
) -> (Reason, String) {
    use webpki::Error as E;
    let leaf = &facts[0];
    let intermediates = || facts.iter().skip(1).filter(|f| !f.self_issued);
    match err {
        E::CertExpired { .. } => {
            if leaf.not_after < now {
                (
                    Reason::CertExpired,
                    format!("the leaf expired at {}", rfc3339(leaf.not_after)),
                )
            } else if let Some(i) = intermediates().find(|f| f.not_after < now) {
                let when = rfc3339(i.not_after);
                (
                    Reason::IntermediateExpired,
                    format!("intermediate {} expired at {when}", i.subject),
                )
            } else {
                (
                    Reason::ChainInvalid,
                    "a certificate on the path has expired".into(),
                )
            }
        }
        E::CertNotValidYet { .. } => {
            if leaf.not_before > now {
                let when = rfc3339(leaf.not_before);
                (
                    Reason::CertNotYetValid,
                    format!("the leaf is not valid before {when}"),
                )
            } else if let Some(i) = intermediates().find(|f| f.not_before > now) {
                let when = rfc3339(i.not_before);
                let subject = &i.subject;
                (
                    Reason::IntermediateNotYetValid,
                    format!("intermediate {subject} is not valid before {when}"),
                )
            } else {
                (
                    Reason::ChainInvalid,
                    "a certificate on the path is not yet valid".into(),
                )
            }
        }
        E::UnknownIssuer => unknown_issuer(facts, trust),
        E::InvalidSignatureForPublicKey => (
            Reason::BadSignature,
            "a signature in the chain does not verify".into(),
        ),
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            if let Some(weak) = facts.iter().find(|f| f.weak_signature && !f.self_issued) {
                let (subject, alg) = (&weak.subject, &weak.signature_algorithm);
                (
                    Reason::WeakSignature,
                    format!("{subject} is signed with {alg}, which is not accepted"),
                )
            } else if let Some(weak) = facts
                .iter()
                .find(|f| super::policy::key_weakness(f.public_key).is_some())
            {
                (
                    Reason::WeakKey,
                    format!(
                        "{} has a {} key, too weak to verify signatures with",
                        weak.subject, weak.public_key
                    ),
                )
            } else {
                (
                    Reason::ChainInvalid,
                    "the chain uses an unsupported signature algorithm".into(),
                )
            }
        }
        E::RequiredEkuNotFoundContext(_) => (
            Reason::ChainInvalid,
            "the leaf's extended key usage does not allow TLS server authentication".into(),
        ),
        E::CaUsedAsEndEntity => (Reason::ChainInvalid, "the leaf is a CA certificate".into()),
        E::EndEntityUsedAsCa => (
            Reason::ChainInvalid,
            "a certificate that is not a CA issued another certificate".into(),
        ),
        E::NameConstraintViolation => (
            Reason::ChainInvalid,
            "the leaf's names violate an issuer's name constraints".into(),
        ),
        E::PathLenConstraintViolated => (
            Reason::ChainInvalid,
            "the chain is longer than an issuer's pathLenConstraint allows".into(),
        ),
        E::MaximumPathDepthExceeded => (Reason::ChainInvalid, "the chain is too long".into()),
        other => (Reason::ChainInvalid, format!("invalid chain: {other}")),
    }
}

/// Splits "unknown issuer" into the cases an operator fixes differently.
fn unknown_issuer(facts: &[CertFacts], trust: &TrustStore) -> (Reason, String) {
    let leaf = &facts[0];
    if facts.len() == 1 && leaf.self_issued {
        return (
            Reason::SelfSigned,
            format!(
                "the leaf ({}) is self-signed and not a trust anchor",
                leaf.subject
            ),
        );
    }
    let top = &facts[linked_path(facts).last().copied().unwrap_or(0)];
    if top.self_issued {
        return (
            Reason::UnknownIssuer,
            format!(
                "the chain ends at {}, which is not a trust anchor",
                top.subject
            ),
        );
    }
    if std::ptr::eq(top, leaf) && !trust.has_issuer_of(leaf) {
        return (
            Reason::IncompleteChain,
            format!(
                "the server sent no certificate for the leaf's issuer ({}), and no trust anchor is that issuer",
                leaf.issuer
            ),
        );
    }
    (
        Reason::UnknownIssuer,
        format!(
            "issuer {} of {} is not a trust anchor",
            top.issuer, top.subject
        ),
    )
}

/// Indices of the presented certificates that chain from the leaf by issuer, in issuing
/// order (starting with 0, the leaf).
fn linked_path(facts: &[CertFacts]) -> Vec<usize> {
    let mut path = vec![0];
    let mut used = vec![false; facts.len()];
    used[0] = true;
    let mut cur = 0;
    while !facts[cur].self_issued {
        let next = (0..facts.len()).find(|&j| !used[j] && facts[cur].issued_by(&facts[j]));
        let Some(j) = next else { break };
        used[j] = true;
        path.push(j);
        cur = j;
    }
    path
}

/// Checks that the server sends its chain in issuing order with nothing extra
/// (RFC 8446 §4.4.2 asks for order; many clients still depend on it).
pub(crate) fn check_order(facts: &[CertFacts], malformed: &[usize]) -> Check {
    let path = linked_path(facts);
    let in_order = path.iter().enumerate().all(|(pos, &idx)| pos == idx);
    let extras: Vec<String> = (0..facts.len())
        .filter(|i| !path.contains(i))
        .map(|i| format!("#{} {}", i + 1, facts[i].subject))
        .chain(malformed.iter().map(|i| format!("#{} (malformed)", i + 1)))
        .collect();
    if !in_order {
        let order: Vec<String> = path.iter().map(|i| format!("#{}", i + 1)).collect();
        return Check::fail(
            CheckKind::ChainOrder,
            Severity::Warning,
            Reason::ChainMisordered,
            format!(
                "certificates are not in issuing order; the issuing order is {}",
                order.join(", ")
            ),
        );
    }
    if !extras.is_empty() {
        return Check::fail(
            CheckKind::ChainOrder,
            Severity::Warning,
            Reason::ChainExtraCerts,
            format!(
                "certificates that are not part of the chain: {}",
                extras.join(", ")
            ),
        );
    }
    Check::pass(
        CheckKind::ChainOrder,
        format!("{} certificate(s) in issuing order", path.len()),
    )
}

/// The name check: SAN only, wildcards cover one left-most label (RFC 6125 §6.4.3), no CN
/// fallback (§6.4.4).
pub(crate) fn check_hostname(
    ee: Result<&webpki::EndEntityCert<'_>, &webpki::Error>,
    leaf: &CertFacts,
    name: &ServerName<'_>,
) -> Check {
    let shown = match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => format!("{name:?}"),
    };
    let matches = ee.is_ok_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok());
    match matches {
        true => Check::pass(
            CheckKind::Hostname,
            format!("{shown} matches the certificate"),
        ),
        false if !leaf.has_san => Check::fail(
            CheckKind::Hostname,
            Severity::Critical,
            Reason::HostnameMismatch,
            format!(
                "the certificate has no subjectAltName, so it matches no name ({} is not used, RFC 6125 §6.4.4)",
                leaf.subject
            ),
        ),
        false => {
            let names: Vec<String> = leaf
                .dns_names
                .iter()
                .cloned()
                .chain(leaf.ip_addresses.iter().map(ToString::to_string))
                .collect();
            Check::fail(
                CheckKind::Hostname,
                Severity::Critical,
                Reason::HostnameMismatch,
                format!(
                    "{shown} is not covered by the certificate's names: {}",
                    names.join(", ")
                ),
            )
        }
    }
}

/// RFC 3339 in UTC, as used everywhere in reports.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
