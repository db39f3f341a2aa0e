//! The wire format: versioned JSON lines, one request and the replies that answer it.

use serde::{Deserialize, Serialize};

use super::{ControlError, VERSION};
use crate::reconcile::{Outcome, RequestError};
use crate::store::DeploymentState;

/// What the command line asks the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// `cert issue|renew NAME`: order a version now. Without `force`, a certificate whose
    /// latest version is still valid is refused.
    CertIssue {
        /// The `[[certificate]]`.
        name: String,
        /// Order even when a valid version exists.
        force: bool,
    },
    /// `deploy approve ID`.
    DeployApprove {
        /// The deployment.
        id: i64,
        /// Who asks (journaled beside the uid the daemon sees).
        by: String,
    },
    /// `deploy run-now ID|ENDPOINT`.
    DeployRunNow {
        /// A deployment id or an endpoint name.
        deployment: String,
        /// Who asks (journaled beside the uid the daemon sees).
        by: String,
    },
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// A note while the work goes on; more lines follow.
    Progress(String),
    /// The new version of a certificate.
    Issued {
        /// The certificate.
        certificate: String,
        /// The version's id in the store.
        version: i64,
        /// Its serial number (hex).
        serial: String,
        /// Its leaf's SHA-256.
        sha256: String,
        /// Its notAfter (unix seconds).
        not_after: i64,
    },
    /// A deployment approved; the daemon runs it at once.
    Approved {
        /// The deployment.
        deployment: i64,
        /// Its endpoint.
        endpoint: String,
    },
    /// A deployment run to its end.
    Deployed {
        /// The deployment.
        deployment: i64,
        /// Its endpoint.
        endpoint: String,
        /// The hook that ran.
        hook: String,
        /// Verified, failed or rolled back.
        state: DeploymentState,
        /// What was journaled with it (hook calls, verification, rollback, error).
        detail: Box<Outcome>,
    },
    /// The request was not done.
    Error {
        /// not_found, conflict, unavailable, order_failed, store, bad_request, refused or
        /// busy.
        kind: String,
        /// What to tell the operator.
        message: String,
    },
}

impl Reply {
    pub(super) fn error(kind: &str, message: impl Into<String>) -> Self {
        Self::Error {
            kind: kind.to_owned(),
            message: message.into(),
        }
    }
}

impl From<RequestError> for Reply {
    fn from(e: RequestError) -> Self {
        Self::error(e.kind(), e.to_string())
    }
}

/// One line on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Line<T> {
    pub(super) v: u32,
    #[serde(flatten)]
    pub(super) body: T,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RequestBody<T> {
    pub(super) request: T,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ReplyBody<T> {
    pub(super) reply: T,
}

/// A request line, version first, so a newer client hears which version this daemon speaks.
pub(super) fn parse_request(line: &[u8]) -> Result<Request, Reply> {
    #[derive(Deserialize)]
    struct Versioned {
        v: u32,
    }
    let bad = |e: serde_json::Error| Reply::error("bad_request", e.to_string());
    let Versioned { v } = serde_json::from_slice(line).map_err(bad)?;
    if v != VERSION {
        return Err(Reply::error(
            "bad_request",
            format!("protocol version {v} is not spoken here (this daemon speaks {VERSION})"),
        ));
    }
    let line: Line<RequestBody<Request>> = serde_json::from_slice(line).map_err(bad)?;
    Ok(line.body.request)
}

/// A reply line; a reply in another version is refused.
pub(super) fn parse_reply(line: &[u8]) -> Result<Reply, ControlError> {
    let line: Line<ReplyBody<Reply>> =
        serde_json::from_slice(line).map_err(|e| ControlError::Protocol(e.to_string()))?;
    if line.v != VERSION {
        return Err(ControlError::Protocol(format!(
            "the daemon speaks protocol version {}, this tlsward {VERSION}",
            line.v
        )));
    }
    Ok(line.body.reply)
}
