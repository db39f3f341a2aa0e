//! The agent API's wire types: JSON bodies of the center's `[agents]` listener, shared by
//! the center (`server`) and the agent (`client`). Version 1, under `/v1/`.
//!
//! | call | who | body | answer |
//! |---|---|---|---|
//! | `POST /v1/enroll` | no client certificate | [`EnrollRequest`] | [`EnrollResponse`] |
//! | `POST /v1/identity` | agent (mTLS) | [`RenewRequest`] | [`RenewResponse`] |
//! | `GET /v1/state?etag=E` | agent | - | [`DesiredState`], at once when its etag is not `E`, else when it changes or after [`LONG_POLL`] (up to a tenth less, at random) |
//! | `GET /v1/bundle/VERSION` | agent | - | [`SignedBundle`] |
//! | `POST /v1/csr` | agent | [`CsrSubmission`] | `202` |
//! | `POST /v1/report` | agent | [`Report`] | `204` |
//!
//! Errors are `{"error": "..."}` with 400 (a malformed body), 401 (no or unknown identity,
//! a bad or used token), 403 (not this agent's), 404, 413 (body over [`MAX_BODY`]).
//! Every field is bounded when read ([`MAX_BODY`]); names are config names, checked again
//! by whoever uses them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reconcile::window::WindowDef;

/// The longest a `GET /v1/state` waits for a change before answering with the same state.
pub const LONG_POLL: Duration = Duration::from_secs(60);
/// The largest request or response body either side reads.
pub const MAX_BODY: usize = 1 << 20;
/// Domain separation for bundle signatures: the signed message is this, then the payload.
pub const BUNDLE_CONTEXT: &[u8] = b"tlsward-bundle-v1\n";

/// `POST /v1/enroll`: an endpoint host asks for an identity with a one-time token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The token `tlsward agent token create` printed (never logged).
    pub token: String,
    /// A PKCS#10 request (PEM) for the agent's identity key, generated on the endpoint.
    pub csr_pem: String,
    /// The agent's age X25519 recipient (`age1...`): shared keys are sealed to it.
    pub age_recipient: String,
    /// The agent's tlsward version (shown by `agent list`, the `tlsward_agent_info` label).
    pub version: String,
}

/// The answer to an enrollment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    /// The agent's name (the token's).
    pub agent: String,
    /// Its client certificate (PEM), from the agent CA.
    pub certificate_pem: String,
    /// The agent CA's certificate (PEM): its SHA-256 is the pinned fingerprint.
    pub ca_pem: String,
    /// The center's bundle-signing public key: Ed25519, 32 bytes, base64.
    pub signing_key: String,
    /// When the client certificate expires (unix seconds).
    pub not_after: i64,
}

/// `POST /v1/identity`: a new client certificate for a new key, before the old one expires.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// A PKCS#10 request (PEM) for the new identity key.
    pub csr_pem: String,
    /// The agent's version.
    pub version: String,
}

/// The answer to a renewal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RenewResponse {
    /// The new client certificate (PEM).
    pub certificate_pem: String,
    /// When it expires (unix seconds).
    pub not_after: i64,
}

/// `GET /v1/state`: what this agent's endpoints should serve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// A digest of everything below: the same state has the same etag.
    pub etag: String,
    /// The agent's name.
    pub agent: String,
    /// Its endpoints, by name.
    pub endpoints: Vec<AgentEndpoint>,
}

/// Where an agent endpoint's private key comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// The center's key, sealed in the bundle to this agent's age recipient.
    #[default]
    Central,
    /// The agent's own key: it sends a CSR and the key never leaves the endpoint.
    Agent,
}

/// One endpoint bound to the agent (`[[endpoint]] agent = "NAME"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentEndpoint {
    /// The endpoint's name.
    pub name: String,
    /// Its managed certificate.
    pub certificate: String,
    /// The probe target (`host:port`) the center probes, and the agent probes locally.
    pub target: String,
    /// The SNI the center sends, when it differs from the target's host.
    pub server_name: Option<String>,
    /// The addresses the center connects to instead of resolving the target's host
    /// (`[[target]] connect_to`); the agent's local probe uses them too. Absent when empty,
    /// so an agent older than this field still reads the state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect_to: Vec<std::net::SocketAddr>,
    /// The probe profile (a shipped one, or one in the agent's config).
    pub profile: String,
    /// The hook in the agent's own config that deploys it.
    pub hook: String,
    /// Settings laid over that hook's own.
    pub settings: BTreeMap<String, String>,
    /// The change window, evaluated by the agent's clock; `None`: at once.
    pub window: Option<WindowDef>,
    /// Where its key comes from.
    pub key: KeyMode,
    /// The version it should serve (the latest issued), if any is.
    pub version: Option<VersionRef>,
    /// The deployment the center has open for it, if any.
    pub deployment: Option<DeploymentOrder>,
    /// With `key = "agent"`: the center needs a CSR for a new version.
    pub csr_wanted: Option<CsrWanted>,
}

/// A version, as named in the desired state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VersionRef {
    /// Its id (`GET /v1/bundle/ID`).
    pub id: i64,
    /// The SHA-256 of its leaf (hex): what the endpoint must then serve.
    pub sha256: String,
    /// Its leaf's not-after (unix seconds).
    pub not_after: i64,
}

/// What the center asks of an open deployment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Instruction {
    /// Deploy the version when the window is open.
    Deploy,
    /// Deploy it now, window or not (approved, an emergency, `deploy run-now`).
    DeployNow,
    /// Put the previous version back: the center did not see the new one served.
    RollBack,
}

/// An open deployment of an agent endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeploymentOrder {
    /// The deployment's id (in reports).
    pub id: i64,
    /// The version it deploys.
    pub version: VersionRef,
    /// What to do.
    pub instruction: Instruction,
    /// Why a roll back is asked for (`verify_timeout`, `window_closed`).
    pub why: Option<String>,
}

/// A CSR the center waits for (`key = "agent"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CsrWanted {
    /// The names the certificate must have, in order.
    pub domains: Vec<String>,
    /// The key type (`ecdsa-p256`, `ecdsa-p384`, `rsa2048`, ...), as in `[[certificate]] key_type`.
    pub key_type: String,
    /// Echoed in the submission so that a stale CSR is not used for a later order.
    pub nonce: String,
}

/// `POST /v1/csr`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CsrSubmission {
    /// The certificate.
    pub certificate: String,
    /// The nonce of the [`CsrWanted`] it answers.
    pub nonce: String,
    /// The PKCS#10 request (PEM).
    pub csr_pem: String,
}

/// `GET /v1/bundle/ID`: a version, signed by the center.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignedBundle {
    /// The [`BundlePayload`] as JSON, base64 (standard, padded).
    pub payload: String,
    /// Ed25519 over [`BUNDLE_CONTEXT`] then the payload's bytes, base64.
    pub signature: String,
}

/// What a bundle carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundlePayload {
    /// The agent it was made for: another agent refuses it.
    pub agent: String,
    /// The certificate.
    pub certificate: String,
    /// The version's id.
    pub version: i64,
    /// The SHA-256 of the leaf (hex); the agent checks it against the chain.
    pub sha256: String,
    /// The chain, leaf first (PEM).
    pub chain_pem: String,
    /// Where the key is.
    pub key: KeyMode,
    /// With [`KeyMode::Central`]: the PKCS#8 key, age-encrypted to the agent's recipient,
    /// base64 ([`super::sign::seal_to`]). `None` with [`KeyMode::Agent`].
    pub sealed_key: Option<String>,
    /// When the center signed it (unix seconds).
    pub signed_at: i64,
}

/// One step an agent reports (`POST /v1/report`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ReportEvent {
    /// It started the deployment's hook (its window is open, or it was told to deploy now).
    Started,
    /// The hook succeeded and the local probe saw `sha256`.
    Installed,
    /// The hook failed and nothing needed undoing.
    Failed,
    /// The hook or the local probe failed, or the center asked: the previous version is back.
    RolledBack,
    /// A restarted agent found the service's files changed and redeployed its local copy.
    Redeployed,
    /// Nothing new: the agent is alive (sent with each full resync).
    Heartbeat,
}

impl ReportEvent {
    /// Its name, as sent and journaled (`agent.<name>`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Installed => "installed",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::Redeployed => "redeployed",
            Self::Heartbeat => "heartbeat",
        }
    }
}

/// `POST /v1/report`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The endpoint (`None` with a heartbeat).
    pub endpoint: Option<String>,
    /// The deployment, when the step belongs to one.
    pub deployment: Option<i64>,
    /// What happened.
    pub event: ReportEvent,
    /// The leaf the endpoint now serves, as the agent's local probe saw it.
    pub sha256: Option<String>,
    /// When the endpoint's window next opens, by the agent's clock (unix seconds).
    pub next_window: Option<i64>,
    /// The hook's calls and results, the local probe, an error: JSON, shown escaped.
    pub detail: serde_json::Value,
}

/// Whether `name` is a valid agent name: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}` (names become
/// metric labels, file names and certificate subjects).
pub fn is_agent_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod name_tests {
    use super::is_agent_name;

    #[test]
    fn agent_names_are_short_and_plain() {
        for good in ["web-01", "a", "W.eb_1", &"x".repeat(63)] {
            assert!(is_agent_name(good), "{good}");
        }
        for bad in [
            "",
            "-web",
            ".x",
            "web 01",
            "wéb",
            "a/b",
            "a\u{1b}",
            &"x".repeat(64),
        ] {
            assert!(!is_agent_name(bad), "{bad:?}");
        }
    }
}
