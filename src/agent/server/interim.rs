//! TEMPORARY, until the reconciler's own `impl AgentBackend for Reconciler`
//! (`src/reconcile/agents.rs`) is merged: delete this file and its `mod` line then. It
//! answers every agent with no endpoints and refuses reports and CSRs, so `serve` with
//! `[agents]` runs and enrolls agents meanwhile.

use tokio::sync::watch;

use crate::agent::protocol::{AgentEndpoint, CsrSubmission, Report};
use crate::agent::{AgentBackend, Refusal};
use crate::reconcile::Reconciler;

impl AgentBackend for Reconciler {
    fn endpoints_of(&self, _agent: &str) -> Vec<AgentEndpoint> {
        Vec::new()
    }

    fn report(&self, _agent: &str, _report: &Report) -> Result<(), Refusal> {
        Err(Refusal::Conflict(
            "the center does not take reports yet".into(),
        ))
    }

    fn csr(&self, _agent: &str, _: &CsrSubmission, _: &[u8]) -> Result<(), Refusal> {
        Err(Refusal::Conflict(
            "the center does not take CSRs yet".into(),
        ))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        watch::channel(0).1
    }
}
