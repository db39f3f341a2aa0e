//! ACME issuance through instant-acme: the one place that holds the account and answers
//! challenges (RFC 8555).
//!
//! Owns: the ACME account (created once, credentials sealed in the store), orders for several
//! names, HTTP-01 through the built-in responder, keys and CSRs, and recording every order
//! and version in the store. Must not know probing, HTTP serving of metrics or deploy hooks.

mod account;
mod agent_csr;
mod dns01;
mod http;
mod http01;
mod order;
mod portable;
mod resume;

use std::path::PathBuf;
use std::time::Duration;

use instant_acme::{Account, RetryPolicy};
use serde_json::{Value, json};

pub use agent_csr::check_csr;
pub use dns01::{Dns01, Rfc2136Settings};
pub use http::https_client;
pub use http01::Http01Responder;
pub use portable::{
    AccountError, AccountSummary, Confirmed, ImportedKey, KeyOrigin, Rollover, account_summary,
    adopt, confirm_with_ca, export_account, parse_identities, parse_recipients, rollover,
    thumbprint,
};
pub use resume::{AbandonReason, ORDER_LIFETIME, Resumed, Resumption};

use crate::secret::Secret;
use crate::store::StoreError;

/// Default polling of orders: quick first, backing off, for up to two minutes.
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// How to reach the ACME server.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The directory URL.
    pub directory: String,
    /// Contact URIs (`mailto:...`).
    pub contact: Vec<String>,
    /// A PEM root to trust for a private ACME server (instead of the system's roots).
    pub ca_file: Option<PathBuf>,
    /// External account binding: key id and HMAC key (base64url).
    pub eab: Option<(String, Secret)>,
    /// How orders are polled.
    pub retry: RetryPolicy,
    /// Where DNS-01 challenges are published, for certificates that use DNS-01.
    pub dns01: Option<Dns01>,
}

/// How a certificate's names are proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengeKind {
    /// HTTP-01 through tlsward's responder.
    #[default]
    Http01,
    /// DNS-01 through RFC 2136 updates (needed for wildcards).
    Dns01,
}

/// The key type of a managed certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 (the default).
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
}

impl KeyType {
    /// The stable name used in config and the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
        }
    }
}

/// A certificate tlsward manages.
#[derive(Debug, Clone)]
pub struct CertificateSpec {
    /// Its name in config and the store.
    pub name: String,
    /// The DNS names it covers.
    pub domains: Vec<String>,
    /// Its key type.
    pub key_type: KeyType,
    /// How its names are proven.
    pub challenge: ChallengeKind,
    /// The ACME profile to order with (e.g. `shortlived`), used when the CA offers it.
    pub profile: Option<String>,
    /// `key = "agent"`: the key is made by this agent, which sends a CSR; the store never
    /// holds it. `None`: the center makes and seals the key.
    pub agent_key: Option<String>,
}

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CA answered with a problem document (RFC 7807).
    #[error("the CA refused: {detail} ({kind})")]
    Problem {
        /// The problem type URN.
        kind: String,
        /// Its explanation.
        detail: String,
        /// The whole document, as kept in the store.
        document: Value,
        /// How long the CA asked to wait (its `Retry-After`), when it said.
        retry_after: Option<Duration>,
    },
    /// The order did not become ready or valid in time.
    #[error("the order did not complete in time")]
    Timeout,
    /// The CA sent a certificate tlsward cannot use: no parsable leaf, or not for the key the
    /// order's CSR was made with.
    #[error("unusable certificate from the CA: {0}")]
    BadCertificate(String),
    /// The order became invalid (a challenge failed).
    #[error("the order became {0}")]
    Invalid(String),
    /// The CA offers no challenge tlsward can answer.
    #[error("no HTTP-01 challenge for {0}")]
    NoChallenge(String),
    /// Publishing a DNS-01 record failed.
    #[error("DNS update: {0}")]
    Dns(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else from the ACME client (network, TLS, JSON).
    #[error("ACME client: {0}")]
    Client(String),
}

impl IssueError {
    /// Every value [`Self::reason`] returns.
    pub const REASONS: [&'static str; 9] = [
        "rate_limited",
        "ca_problem",
        "timeout",
        "bad_certificate",
        "challenge_failed",
        "no_challenge",
        "dns_update",
        "store",
        "client",
    ];

    /// The stable reason label, one of [`Self::REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Problem { kind, .. } if kind.ends_with(":rateLimited") => "rate_limited",
            Self::Problem { .. } => "ca_problem",
            Self::Timeout => "timeout",
            Self::BadCertificate(_) => "bad_certificate",
            Self::Invalid(_) => "challenge_failed",
            Self::NoChallenge(_) => "no_challenge",
            Self::Dns(_) => "dns_update",
            Self::Store(_) => "store",
            Self::Client(_) => "client",
        }
    }

    /// Whether the error says nothing about the order itself: no answer (network, timeout),
    /// the store failing, or the CA failing or asking to wait (a 5xx problem, a rate limit).
    /// Any other problem document is the CA's verdict.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout | Self::Client(_) | Self::Store(_) => true,
            Self::Problem { kind, document, .. } => {
                kind.ends_with(":rateLimited")
                    || kind.ends_with(":badNonce")
                    || document["status"].as_u64().is_some_and(|s| s >= 500)
            }
            Self::BadCertificate(_) | Self::Invalid(_) | Self::NoChallenge(_) | Self::Dns(_) => {
                false
            }
        }
    }

    /// How long to wait before trying again, when the CA said (rate limits).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Problem { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Attaches the `Retry-After` the HTTP layer saw to a problem answer.
    fn with_retry_after(mut self, seen: Option<Duration>) -> Self {
        if let (
            Self::Problem {
                retry_after,
                document,
                ..
            },
            Some(d),
        ) = (&mut self, seen)
        {
            *retry_after = Some(d);
            document["retry_after_seconds"] = json!(d.as_secs());
        }
        self
    }

    /// The document kept in the store for a failed order.
    pub fn document(&self) -> Value {
        match self {
            Self::Problem { document, .. } => document.clone(),
            other => json!({ "reason": other.reason(), "detail": other.to_string() }),
        }
    }
}

impl From<instant_acme::Error> for IssueError {
    fn from(e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(p) => {
                let subproblems: Vec<Value> = p
                    .subproblems
                    .iter()
                    .map(|s| json!({ "type": s.r#type, "detail": s.detail, "identifier": format!("{:?}", s.identifier) }))
                    .collect();
                let document = json!({ "type": p.r#type, "detail": p.detail, "status": p.status, "subproblems": subproblems });
                Self::Problem {
                    kind: p.r#type.clone().unwrap_or_default(),
                    detail: p.detail.clone().unwrap_or_default(),
                    document,
                    retry_after: None,
                }
            }
            instant_acme::Error::Timeout(_) => Self::Timeout,
            other => Self::Client(other.to_string()),
        }
    }
}

/// An ARI certificate identifier (`AKI.serial`, base64url) as instant-acme wants it.
fn certificate_id(id: &str) -> Result<instant_acme::CertificateIdentifier<'_>, IssueError> {
    let (aki, serial) = id
        .split_once('.')
        .ok_or_else(|| IssueError::Client(format!("ARI identifier {id:?} is not AKI.serial")))?;
    Ok(instant_acme::CertificateIdentifier {
        authority_key_identifier: std::borrow::Cow::Borrowed(aki),
        serial: std::borrow::Cow::Borrowed(serial),
    })
}

use crate::clock::unix_seconds as unix;

/// An ACME account ready to order.
pub struct Issuer {
    account: Account,
    settings: AcmeSettings,
    responder: Http01Responder,
    retry_after: http::RetryAfter,
    /// The status of the CA's last answer.
    status: http::LastStatus,
    /// Whether the CA's directory offers ARI (`renewalInfo`).
    ari: bool,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("directory", &self.settings.directory)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, status: u16) -> IssueError {
        IssueError::Problem {
            kind: kind.into(),
            detail: String::new(),
            document: json!({ "type": kind, "status": status }),
            retry_after: None,
        }
    }

    #[test]
    fn every_issue_error_reason_is_listed_and_the_list_has_nothing_else() {
        let all = [
            problem("urn:ietf:params:acme:error:rateLimited", 429),
            problem("urn:ietf:params:acme:error:unauthorized", 403),
            IssueError::Timeout,
            IssueError::BadCertificate("x".into()),
            IssueError::Invalid("invalid".into()),
            IssueError::NoChallenge("x".into()),
            IssueError::Dns("x".into()),
            IssueError::Store(StoreError::Corrupt("x".into())),
            IssueError::Client("x".into()),
        ];
        // The `match` fails to compile when a variant is added without a case above.
        for e in &all {
            match e {
                IssueError::Problem { .. }
                | IssueError::Timeout
                | IssueError::BadCertificate(_)
                | IssueError::Invalid(_)
                | IssueError::NoChallenge(_)
                | IssueError::Dns(_)
                | IssueError::Store(_)
                | IssueError::Client(_) => {}
            }
        }
        let seen: Vec<&str> = all.iter().map(IssueError::reason).collect();
        assert_eq!(seen, IssueError::REASONS);
    }

    /// After finalize, only a transient error keeps an order pending for resumption.
    #[test]
    fn the_cas_verdict_is_final_and_a_failure_to_answer_is_not() {
        let transient = [
            IssueError::Timeout,
            IssueError::Client("connection reset".into()),
            problem("urn:ietf:params:acme:error:serverInternal", 500),
            problem("urn:ietf:params:acme:error:rateLimited", 429),
            problem("urn:ietf:params:acme:error:badNonce", 400),
        ];
        for e in &transient {
            assert!(e.is_transient(), "{e}");
        }
        let verdicts = [
            problem("urn:ietf:params:acme:error:badCSR", 400),
            problem("urn:ietf:params:acme:error:orderNotReady", 403),
            IssueError::Invalid("invalid".into()),
            IssueError::BadCertificate("not for the order's key".into()),
        ];
        for e in &verdicts {
            assert!(!e.is_transient(), "{e}");
        }
    }
}
