//! Agents: endpoint hosts that subscribe to their certificates and pull them.
//!
//! The center (`serve` with `[agents]`) runs an mTLS listener (`server.rs`) with its own
//! agent CA (`ca.rs`); endpoints enroll once with a one-time token and the CA's pinned
//! fingerprint, then long-poll their desired state, fetch bundles the center signs
//! (`sign.rs`), deploy them with the same WASM hooks under the same grants inside their
//! window by their own clock, and report each step (`client/`). The wire types are in
//! `protocol.rs`; the reconciler answers for the desired state and the reports through
//! [`AgentBackend`].

pub mod ca;
pub mod client;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod sign;

use tokio::sync::watch;

use protocol::{AgentEndpoint, CsrSubmission, Report};

/// Why the center refused an agent's request; the agent API answers it with the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Malformed or inconsistent (400).
    #[error("{0}")]
    BadRequest(String),
    /// Not this agent's endpoint, certificate or deployment (403), journaled.
    #[error("{0}")]
    Forbidden(String),
    /// Out of step with the center (409): a deployment that is no longer open, a stale CSR.
    #[error("{0}")]
    Conflict(String),
}

/// What the agent API asks of the center's reconciler. The server has already checked the
/// agent's identity; the backend checks that what is asked is that agent's.
pub trait AgentBackend: Send + Sync + 'static {
    /// The endpoints bound to `agent` (`[[endpoint]] agent = ...`), in name order, with
    /// their latest versions, open deployments and wanted CSRs.
    fn endpoints_of(&self, agent: &str) -> Vec<AgentEndpoint>;
    /// A step `agent` reports.
    fn report(&self, agent: &str, report: &Report) -> Result<(), Refusal>;
    /// A CSR for a `key = "agent"` certificate of `agent`'s (its DER, already decoded).
    fn csr(&self, agent: &str, submission: &CsrSubmission, csr_der: &[u8]) -> Result<(), Refusal>;
    /// Bumps whenever `agent`'s desired state may have changed (a version stored, one of
    /// its deployments queued, reported or ended, a reload): its long polls wake on it and
    /// compare etags. Another agent's steps do not wake it.
    fn changes(&self, agent: &str) -> watch::Receiver<u64>;
}
