//! The vocabulary of a verdict: checks, findings, severities and stable reason labels.

use std::fmt;

/// How bad a failed check is, in the monitoring-plugin sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Needs attention soon (exit code 1).
    Warning,
    /// Broken now, or about to be (exit code 2).
    Critical,
}

/// The overall state of one probe or verification, ordered from best to worst for the
/// purpose of combining several results (see [`Status::worst`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Every check passed.
    Ok,
    /// At least one check warns, none is critical.
    Warning,
    /// At least one check is critical, or no certificate could be obtained.
    Critical,
    /// The probe could not be performed for a local reason.
    Unknown,
}

impl Status {
    /// The stable lowercase name used in JSON and tables.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Unknown => "unknown",
        }
    }

    /// The monitoring-plugin exit code: 0 ok, 1 warning, 2 critical, 3 unknown.
    pub const fn exit_code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Warning => 1,
            Self::Critical => 2,
            Self::Unknown => 3,
        }
    }

    /// Combines two results: critical beats unknown beats warning beats ok, so a run with one
    /// broken endpoint always exits 2.
    pub fn worst(self, other: Self) -> Self {
        let rank = |s: Self| match s {
            Self::Ok => 0,
            Self::Warning => 1,
            Self::Unknown => 2,
            Self::Critical => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Severity> for Status {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Warning => Self::Warning,
            Severity::Critical => Self::Critical,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a certificate check failed: a closed set of stable labels.
///
/// The declaration order is the order of precedence: when several checks fail with the same
/// severity, the earliest reason here becomes the report's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The leaf's notAfter is in the past.
    CertExpired,
    /// The leaf's notBefore is in the future.
    CertNotYetValid,
    /// An intermediate the server presented has expired.
    IntermediateExpired,
    /// An intermediate the server presented is not yet valid.
    IntermediateNotYetValid,
    /// The leaf is self-signed and not trusted.
    SelfSigned,
    /// The chain leads to an issuer that no trust anchor vouches for.
    UnknownIssuer,
    /// The server sent no certificate that issued its leaf.
    IncompleteChain,
    /// A signature in the chain does not verify.
    BadSignature,
    /// The chain relies on a broken signature algorithm (SHA-1, MD5).
    WeakSignature,
    /// The chain is invalid for another reason (EKU, constraints, malformed extensions...).
    ChainInvalid,
    /// The certificate's SANs do not cover the name that was asked for.
    HostnameMismatch,
    /// A key in the chain is too weak (RSA below 2048 bits, DSA).
    WeakKey,
    /// The stapled OCSP response says the leaf is revoked.
    OcspRevoked,
    /// The server demands a client certificate, and none was accepted.
    ClientCertRequired,
    /// The server speaks only TLS 1.0 or 1.1 (deprecated by RFC 8996); the certificate was read
    /// from the clear-text handshake.
    LegacyTlsVersion,
    /// The server speaks TLS 1.2 only with cipher suites modern clients refuse (RSA key
    /// exchange, CBC-only, 3DES, RC4); the certificate was read from the clear-text handshake.
    LegacyCipherSuite,
    /// The handshake failed after the server presented its certificate.
    HandshakeFailed,
    /// The leaf expires within the warning or critical threshold.
    CertExpiring,
    /// The server presents its chain out of order.
    ChainMisordered,
    /// The server presents certificates that are not part of its chain.
    ChainExtraCerts,
    /// The leaf's lifetime exceeds the CA/Browser Forum maximum for its issue date.
    MaxValidityExceeded,
}

impl Reason {
    /// Every reason, in declaration order (the order of precedence).
    pub const ALL: [Self; 21] = [
        Self::CertExpired,
        Self::CertNotYetValid,
        Self::IntermediateExpired,
        Self::IntermediateNotYetValid,
        Self::SelfSigned,
        Self::UnknownIssuer,
        Self::IncompleteChain,
        Self::BadSignature,
        Self::WeakSignature,
        Self::ChainInvalid,
        Self::HostnameMismatch,
        Self::WeakKey,
        Self::OcspRevoked,
        Self::ClientCertRequired,
        Self::LegacyTlsVersion,
        Self::LegacyCipherSuite,
        Self::HandshakeFailed,
        Self::CertExpiring,
        Self::ChainMisordered,
        Self::ChainExtraCerts,
        Self::MaxValidityExceeded,
    ];

    /// The stable label (used in JSON `reason` and as a metric label value).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CertExpired => "cert_expired",
            Self::CertNotYetValid => "cert_not_yet_valid",
            Self::IntermediateExpired => "intermediate_expired",
            Self::IntermediateNotYetValid => "intermediate_not_yet_valid",
            Self::SelfSigned => "self_signed",
            Self::UnknownIssuer => "unknown_issuer",
            Self::IncompleteChain => "incomplete_chain",
            Self::BadSignature => "bad_signature",
            Self::WeakSignature => "weak_signature",
            Self::ChainInvalid => "chain_invalid",
            Self::HostnameMismatch => "hostname_mismatch",
            Self::WeakKey => "weak_key",
            Self::OcspRevoked => "ocsp_revoked",
            Self::ClientCertRequired => "client_cert_required",
            Self::LegacyTlsVersion => "legacy_tls_version",
            Self::LegacyCipherSuite => "legacy_cipher_suite",
            Self::HandshakeFailed => "handshake_failed",
            Self::CertExpiring => "cert_expiring",
            Self::ChainMisordered => "chain_misordered",
            Self::ChainExtraCerts => "chain_extra_certs",
            Self::MaxValidityExceeded => "max_validity_exceeded",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one check looks at. The order is the order checks appear in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckKind {
    /// Path validation from the leaf to a trust anchor (RFC 5280 §6 as implemented by webpki).
    Chain,
    /// The leaf's SANs cover the expected name (RFC 6125 §6, no CN fallback).
    Hostname,
    /// Time left until the leaf's notAfter against the warning and critical thresholds.
    Expiry,
    /// The leaf's notBefore is not in the future.
    ValidityWindow,
    /// Key sizes and types of the leaf and presented intermediates.
    KeyStrength,
    /// Signature algorithms of the leaf and presented intermediates.
    SignatureAlgorithm,
    /// Order and membership of the presented chain.
    ChainOrder,
    /// The leaf's lifetime against the CA/Browser Forum maximum for its issue date.
    MaxValidity,
    /// The stapled OCSP response, when the server sent one.
    Ocsp,
    /// The TLS handshake after the certificate (signature proof, client authentication).
    Handshake,
}

impl CheckKind {
    /// Every check, in report order (the declaration order).
    pub const ALL: [Self; 10] = [
        Self::Chain,
        Self::Hostname,
        Self::Expiry,
        Self::ValidityWindow,
        Self::KeyStrength,
        Self::SignatureAlgorithm,
        Self::ChainOrder,
        Self::MaxValidity,
        Self::Ocsp,
        Self::Handshake,
    ];

    /// The stable name used as a JSON key and as the `check` metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chain => "chain",
            Self::Hostname => "hostname",
            Self::Expiry => "expiry",
            Self::ValidityWindow => "validity_window",
            Self::KeyStrength => "key_strength",
            Self::SignatureAlgorithm => "signature_algorithm",
            Self::ChainOrder => "chain_order",
            Self::MaxValidity => "max_validity",
            Self::Ocsp => "ocsp",
            Self::Handshake => "handshake",
        }
    }
}

/// Why a check failed and how much it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The stable label.
    pub reason: Reason,
}

/// The result of one check: passed (no finding) or failed (a finding), with a human detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Which check this is.
    pub kind: CheckKind,
    /// `None` when the check passed.
    pub finding: Option<Finding>,
    /// A short human explanation, for passes as well as failures.
    pub detail: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(kind: CheckKind, detail: impl Into<Option<String>>) -> Self {
        Self {
            kind,
            finding: None,
            detail: detail.into(),
        }
    }

    /// A failed check.
    pub fn fail(kind: CheckKind, severity: Severity, reason: Reason, detail: String) -> Self {
        Self {
            kind,
            finding: Some(Finding { severity, reason }),
            detail: Some(detail),
        }
    }

    /// Whether the check passed.
    pub fn ok(&self) -> bool {
        self.finding.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_status_prefers_critical_then_unknown_then_warning() {
        use Status::*;
        assert_eq!(Ok.worst(Warning), Warning);
        assert_eq!(Warning.worst(Unknown), Unknown);
        assert_eq!(Unknown.worst(Critical), Critical);
        assert_eq!(Critical.worst(Warning), Critical);
        assert_eq!(Critical.exit_code(), 2);
    }

    #[test]
    fn every_check_is_listed_once_in_report_order() {
        // The `match` fails to compile when a variant is added without a case here.
        let position = |k: CheckKind| match k {
            CheckKind::Chain => 0,
            CheckKind::Hostname => 1,
            CheckKind::Expiry => 2,
            CheckKind::ValidityWindow => 3,
            CheckKind::KeyStrength => 4,
            CheckKind::SignatureAlgorithm => 5,
            CheckKind::ChainOrder => 6,
            CheckKind::MaxValidity => 7,
            CheckKind::Ocsp => 8,
            CheckKind::Handshake => 9,
        };
        for (i, k) in CheckKind::ALL.iter().enumerate() {
            assert_eq!(position(*k), i, "{k:?}");
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }

    #[test]
    fn every_reason_is_listed_once_in_declaration_order_with_a_distinct_label() {
        // The `match` fails to compile when a variant is added without a case here.
        let position = |r: Reason| match r {
            Reason::CertExpired => 0,
            Reason::CertNotYetValid => 1,
            Reason::IntermediateExpired => 2,
            Reason::IntermediateNotYetValid => 3,
            Reason::SelfSigned => 4,
            Reason::UnknownIssuer => 5,
            Reason::IncompleteChain => 6,
            Reason::BadSignature => 7,
            Reason::WeakSignature => 8,
            Reason::ChainInvalid => 9,
            Reason::HostnameMismatch => 10,
            Reason::WeakKey => 11,
            Reason::OcspRevoked => 12,
            Reason::ClientCertRequired => 13,
            Reason::LegacyTlsVersion => 14,
            Reason::LegacyCipherSuite => 15,
            Reason::HandshakeFailed => 16,
            Reason::CertExpiring => 17,
            Reason::ChainMisordered => 18,
            Reason::ChainExtraCerts => 19,
            Reason::MaxValidityExceeded => 20,
        };
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(position(*r), i, "{r:?}");
        }
        let mut labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len());
    }

    #[test]
    fn reasons_rank_chain_problems_before_expiry_warnings() {
        assert!(Reason::CertExpired < Reason::UnknownIssuer);
        assert!(Reason::HostnameMismatch < Reason::CertExpiring);
        assert!(Reason::WeakKey < Reason::HandshakeFailed);
    }
}
