//! Probing: connect, handshake with a recording verifier, and report what was seen.
//!
//! Owns sockets (in `tls.rs`) and the shape of one probe's result, [`ProbeReport`]. A failed
//! probe is data: [`ProbeReport::outcome`] is `Err(ProbeFailure)` only when no certificate was
//! seen; a certificate that fails verification is still [`ChainFacts`] with failed checks. Must
//! not know HTTP serving, SQL or metrics. The CLI, `/probe`, the scheduler and deployment
//! verification all probe through one function, [`Prober::round`] (the first address or each,
//! as a [`Round`] says), which catches a panic so that a bug in one probe becomes that
//! probe's [`ProbeFailure::Internal`] instead of taking down a loop or a batch.

mod caught;
pub(crate) mod json;
pub mod legacy;
mod round;
mod starttls;
mod target;
mod tls;
mod trust;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use json::{JsonReport, report_json};
pub use round::Round;
pub use starttls::{Protocol, StartTlsError, upgrade as starttls_upgrade};
pub use target::{DEFAULT_PORT, Host, Resolve, ResolveError, Target, TargetError};
pub use tls::{Prober, resolve};
pub use trust::{ClientIdentity, TrustError, load_trust, read_pem_certs};

use crate::cert::{ChainFacts, Policy, Reason, Status, TrustStore};

/// Default time budget for one probe: DNS, connect and handshake together.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to probe: the settings shared by many targets. Plain data, built by the CLI or config.
#[derive(Debug, Clone)]
pub struct Module {
    /// The protocol spoken before TLS (plain TLS, or a STARTTLS upgrade).
    pub protocol: Protocol,
    /// Time budget for one probe, from the first DNS query to the end of the handshake.
    pub timeout: Duration,
    /// Expiry thresholds.
    pub policy: Policy,
    /// Trust anchors for chain validation.
    pub trust: Arc<TrustStore>,
    /// A client certificate for endpoints that require mutual TLS.
    pub client_identity: Option<Arc<ClientIdentity>>,
    /// ALPN protocols to offer, if any.
    pub alpn: Vec<Vec<u8>>,
}

impl Module {
    /// A module with default timeout and thresholds that trusts `trust`.
    pub fn new(trust: Arc<TrustStore>) -> Self {
        Self {
            protocol: Protocol::Tls,
            timeout: DEFAULT_TIMEOUT,
            policy: Policy::new(),
            trust,
            client_identity: None,
            alpn: Vec::new(),
        }
    }
}

/// What was negotiated on a completed handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The IANA-style suite name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher_suite: String,
    /// The negotiated ALPN protocol, if any.
    pub alpn: Option<String>,
}

/// Why a probe saw no certificate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeFailure {
    /// The host name did not resolve.
    #[error("cannot resolve host: {0}")]
    Resolve(String),
    /// The peer actively refused the connection.
    #[error("connection refused")]
    ConnectRefused,
    /// No TCP connection within the timeout.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// Another connect error (unreachable network, ...).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The server would not upgrade to TLS (STARTTLS not offered or declined).
    #[error("{protocol} STARTTLS refused: {detail}")]
    StartTlsRefused {
        /// The protocol.
        protocol: Protocol,
        /// What the server said.
        detail: String,
    },
    /// The STARTTLS exchange broke (garbage, closed connection, oversized replies).
    #[error("{protocol} STARTTLS failed: {detail}")]
    StartTlsFailed {
        /// The protocol.
        protocol: Protocol,
        /// What went wrong.
        detail: String,
    },
    /// The STARTTLS exchange did not finish within the timeout.
    #[error("{0} STARTTLS timed out")]
    StartTlsTimeout(Protocol),
    /// Connected, but the server sent no certificate within the timeout.
    #[error("TLS handshake timed out after {0:?} without a certificate")]
    HandshakeTimeout(Duration),
    /// The peer answered with something that is not TLS (plain HTTP, SSH, ...).
    #[error("the server does not speak TLS on this port: {0}")]
    NotTls(rustls::Error),
    /// The peer closed the connection before sending a certificate.
    #[error("the server closed the connection during the handshake")]
    Closed,
    /// The peer reset the connection before sending a certificate.
    #[error("the server reset the connection during the handshake")]
    Reset,
    /// The TLS handshake failed before a certificate arrived (alert, no common version...).
    #[error("TLS handshake failed: {0}")]
    Tls(rustls::Error),
    /// The server's handshake is larger than any sane chain (a hostile or broken endpoint).
    #[error("the server's certificate chain is too large: {0}")]
    ChainTooLarge(String),
    /// The leaf the server sent cannot be parsed.
    #[error("the server's certificate is malformed: {0}")]
    MalformedCertificate(String),
    /// Another I/O error during the handshake.
    #[error("I/O error: {0}")]
    Io(String),
    /// The probe itself failed (a bug in tlsward, e.g. a panic), so nothing is known about
    /// the endpoint: the report's status is [`Status::Unknown`], not critical.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProbeFailure {
    /// Every value [`Self::reason`] returns.
    pub const REASONS: [&'static str; 18] = [
        "dns_failed",
        "connect_refused",
        "connect_timeout",
        "connect_failed",
        "starttls_refused",
        "starttls_failed",
        "starttls_timeout",
        "handshake_timeout",
        "not_tls",
        "connection_closed",
        "connection_reset",
        "tls_alert",
        "tls_incompatible",
        "tls_error",
        "chain_too_large",
        "malformed_certificate",
        "io_error",
        "internal_error",
    ];

    /// The stable reason label, one of [`Self::REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Resolve(_) => "dns_failed",
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout(_) => "connect_timeout",
            Self::Connect(_) => "connect_failed",
            Self::StartTlsRefused { .. } => "starttls_refused",
            Self::StartTlsFailed { .. } => "starttls_failed",
            Self::StartTlsTimeout(_) => "starttls_timeout",
            Self::HandshakeTimeout(_) => "handshake_timeout",
            Self::NotTls(_) => "not_tls",
            Self::Closed => "connection_closed",
            Self::Reset => "connection_reset",
            Self::Tls(rustls::Error::AlertReceived(_)) => "tls_alert",
            Self::Tls(rustls::Error::PeerIncompatible(_)) => "tls_incompatible",
            Self::Tls(_) => "tls_error",
            Self::ChainTooLarge(_) => "chain_too_large",
            Self::MalformedCertificate(_) => "malformed_certificate",
            Self::Io(_) => "io_error",
            Self::Internal(_) => "internal_error",
        }
    }

    /// Classifies an I/O error from the handshake by walking its source chain for the rustls
    /// error inside (tokio-rustls wraps it in `io::Error`).
    pub(crate) fn from_handshake_error(err: &io::Error) -> Self {
        match find_rustls_error(err) {
            Some(e @ rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType))
            | Some(
                e @ rustls::Error::InvalidMessage(rustls::InvalidMessage::UnknownProtocolVersion),
            ) => Self::NotTls(e.clone()),
            Some(
                e @ rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::CertificatePayloadTooLarge
                    | rustls::InvalidMessage::HandshakePayloadTooLarge
                    | rustls::InvalidMessage::MessageTooLarge,
                ),
            ) => Self::ChainTooLarge(e.to_string()),
            Some(e) => Self::Tls(e.clone()),
            None => match err.kind() {
                io::ErrorKind::UnexpectedEof => Self::Closed,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => Self::Reset,
                _ => Self::Io(err.to_string()),
            },
        }
    }
}

/// A short, quoted, printable prefix of untrusted bytes (a peer's reply, a panic message that
/// may quote one) for error messages and logs: printable ASCII as is, `"` and `\` escaped, any
/// other byte as `\t`, `\r`, `\n` or `\xNN`, cut after at most `max` characters with `...`.
/// It never decodes, so it cannot split a character or let a terminal escape through.
pub(crate) fn escape_prefix(bytes: &[u8], max: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(max.min(bytes.len().saturating_mul(4)) + 5);
    out.push('"');
    for &b in bytes {
        let width = match b {
            b'"' | b'\\' | b'\t' | b'\r' | b'\n' => 2,
            0x20..=0x7e => 1,
            _ => 4,
        };
        if out.len() - 1 + width > max {
            out.push_str("...");
            break;
        }
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// The rustls error somewhere in `err`'s source chain, if any.
pub(crate) fn find_rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

/// The result of probing one target.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The target as `host:port`.
    pub target: String,
    /// The address that was connected to, once known.
    pub address: Option<SocketAddr>,
    /// The name that was sent as SNI and verified (a DNS name or an IP address).
    pub server_name: String,
    /// Wall time of the whole probe.
    pub duration: Duration,
    /// What the handshake negotiated, when it completed.
    pub tls: Option<TlsInfo>,
    /// The certificate facts, or why there are none.
    pub outcome: Result<ChainFacts, ProbeFailure>,
}

impl ProbeReport {
    /// The report of a probe of `target` that failed before any address was reached (a
    /// name that does not resolve, a bug caught in the probe), after `duration`.
    pub fn unreached(target: &Target, duration: Duration, failure: ProbeFailure) -> Self {
        Self {
            target: target.to_string(),
            address: None,
            server_name: target.verify_name(),
            duration,
            tls: None,
            outcome: Err(failure),
        }
    }

    /// ok / warning / critical: a probe that saw no certificate is critical, except one that
    /// failed for an internal reason, which is unknown (it says nothing about the endpoint).
    pub fn status(&self) -> Status {
        match &self.outcome {
            Ok(facts) => facts.status(),
            Err(ProbeFailure::Internal(_)) => Status::Unknown,
            Err(_) => Status::Critical,
        }
    }

    /// Every value [`Self::reason`] returns (when it is not `None`): a certificate check's
    /// ([`Reason::ALL`]) or a failure's ([`ProbeFailure::REASONS`]).
    pub fn reasons() -> impl Iterator<Item = &'static str> {
        Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(ProbeFailure::REASONS)
    }

    /// The stable reason label, or `None` when everything passed; one of
    /// [`Self::reasons`].
    pub fn reason(&self) -> Option<&'static str> {
        match &self.outcome {
            Ok(facts) => facts.reason().map(|r| r.as_str()),
            Err(f) => Some(f.reason()),
        }
    }

    /// The human explanation for [`Self::reason`].
    pub fn error(&self) -> Option<String> {
        match &self.outcome {
            Ok(facts) => facts.top().and_then(|c| c.detail.clone()),
            Err(f) => Some(f.to_string()),
        }
    }

    /// Whether the probe produced certificate facts that pass every check.
    pub fn success(&self) -> bool {
        self.status() == Status::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One failure of each kind; the `match` fails to compile when a variant is added
    /// without a case here.
    fn one_of_each() -> Vec<ProbeFailure> {
        let all = vec![
            ProbeFailure::Resolve("x".into()),
            ProbeFailure::ConnectRefused,
            ProbeFailure::ConnectTimeout(Duration::ZERO),
            ProbeFailure::Connect("x".into()),
            ProbeFailure::StartTlsRefused {
                protocol: Protocol::Smtp,
                detail: "x".into(),
            },
            ProbeFailure::StartTlsFailed {
                protocol: Protocol::Smtp,
                detail: "x".into(),
            },
            ProbeFailure::StartTlsTimeout(Protocol::Smtp),
            ProbeFailure::HandshakeTimeout(Duration::ZERO),
            ProbeFailure::NotTls(rustls::Error::General("x".into())),
            ProbeFailure::Closed,
            ProbeFailure::Reset,
            ProbeFailure::Tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure,
            )),
            ProbeFailure::Tls(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13,
            )),
            ProbeFailure::Tls(rustls::Error::General("x".into())),
            ProbeFailure::ChainTooLarge("x".into()),
            ProbeFailure::MalformedCertificate("x".into()),
            ProbeFailure::Io("x".into()),
            ProbeFailure::Internal("x".into()),
        ];
        for f in &all {
            match f {
                ProbeFailure::Resolve(_)
                | ProbeFailure::ConnectRefused
                | ProbeFailure::ConnectTimeout(_)
                | ProbeFailure::Connect(_)
                | ProbeFailure::StartTlsRefused { .. }
                | ProbeFailure::StartTlsFailed { .. }
                | ProbeFailure::StartTlsTimeout(_)
                | ProbeFailure::HandshakeTimeout(_)
                | ProbeFailure::NotTls(_)
                | ProbeFailure::Closed
                | ProbeFailure::Reset
                | ProbeFailure::Tls(_)
                | ProbeFailure::ChainTooLarge(_)
                | ProbeFailure::MalformedCertificate(_)
                | ProbeFailure::Io(_)
                | ProbeFailure::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_failure_reason_is_listed_and_the_list_has_nothing_else() {
        let seen: Vec<&str> = one_of_each().iter().map(ProbeFailure::reason).collect();
        assert_eq!(seen, ProbeFailure::REASONS);
    }

    #[test]
    fn a_reports_reasons_are_the_checks_and_the_failures_without_overlap() {
        let all: Vec<&str> = ProbeReport::reasons().collect();
        let mut distinct = all.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        for f in one_of_each() {
            let target: Target = "x.test:443".parse().unwrap();
            let report = ProbeReport::unreached(&target, Duration::ZERO, f);
            assert!(all.contains(&report.reason().unwrap()));
        }
        for r in Reason::ALL {
            assert!(all.contains(&r.as_str()), "{r:?}");
        }
    }
}
