//! What the reconciler works from: the endpoints bound to managed certificates, and the
//! whole desired state a config load produces (replaced on reload).

use std::sync::Arc;

use super::DeploySettings;
use super::window;
use crate::issuer::{AcmeSettings, CertificateSpec};

/// Renew when a third of the lifetime is left, unless configured otherwise.
pub const DEFAULT_RENEW_FRACTION: f64 = 1.0 / 3.0;

/// A probe target bound to a managed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Its name (the `endpoint` label).
    pub name: String,
    /// The managed certificate it should serve.
    pub certificate: String,
    /// The probe target (`host:port`, as in a `[[target]]`).
    pub target: String,
    /// The change window deployments to it wait for; `None` deploys at once.
    pub window: Option<window::Window>,
    /// The hook that deploys to it; `None`: tlsward only reports its drift.
    pub hook: Option<String>,
    /// Settings laid over the hook's own for this endpoint.
    pub settings: std::collections::BTreeMap<String, String>,
    /// The agent that deploys it (`agent = "NAME"`): its `hook` names a hook in that
    /// agent's own config, and the agent runs it; `None`: this host runs the hook.
    pub agent: Option<String>,
}

/// What the reconciler works from; replaced on reload.
#[derive(Debug, Clone)]
pub struct Desired {
    /// How to reach the CA.
    pub acme: AcmeSettings,
    /// Renewal fraction.
    pub renew_fraction: f64,
    /// Managed certificates.
    pub certificates: Vec<CertificateSpec>,
    /// Endpoints.
    pub endpoints: Vec<EndpointSpec>,
    /// Hooks by name.
    pub hooks: std::collections::BTreeMap<String, crate::hooks::HookSpec>,
    /// Every scheduled target (a deployment re-probes its endpoint's as monitoring does).
    pub targets: Vec<Arc<crate::schedule::TargetSpec>>,
    /// Verification and the emergency override.
    pub deploy: DeploySettings,
    /// Staged rollout policies, by certificate name; a certificate without one deploys to
    /// each endpoint independently.
    pub rollouts: std::collections::BTreeMap<String, super::RolloutPolicy>,
}
